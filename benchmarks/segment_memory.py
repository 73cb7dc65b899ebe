"""Peak memory and speed of `wsi-aug segment` on a large pyramidal slide.

Writes a SIDE x SIDE px pyramidal JPEG TIFF (0.25 µm/px; tiles streamed from a generator, so
writing it holds a few tiles, not the image): glass with some tissue blobs carrying dark round
"glomeruli". Then, in a fresh subprocess each (peak RSS = ru_maxrss of that process alone):

* ``segment`` with a U-Net (random weights, the default architecture at --width) saved as a
  model file, at --mpp;
* the bare forward pass of the same U-Net on as many tiles (no reading, no stitching).

Prints peak RSS, tiles/s of both and their ratio. A quick check::

    python benchmarks/segment_memory.py --side 8000            # seconds
    python benchmarks/segment_memory.py --side 40000 --device cuda

Peak RSS should stay about flat as --side grows (the probability buffer is one band of tiles).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TILE = 512
MPP = 0.25


def _blobs(side: int, seed: int) -> list[tuple[float, float, float]]:
    """Tissue blobs (cx, cy, r) covering about a fifth of the slide."""
    rng = np.random.default_rng(seed)
    n = 6
    r = side * 0.1
    return [(float(rng.uniform(r, side - r)), float(rng.uniform(r, side - r)), r) for _ in range(n)]


def _tile(
    y0: int, x0: int, ts: int, scale: int, blobs: list[tuple[float, float, float]]
) -> np.ndarray:
    """One tile of level `scale` (level-0 px per px) at level pixels (y0, x0)."""
    yy, xx = np.mgrid[y0 : y0 + ts, x0 : x0 + ts].astype(np.float32) * scale
    out = np.empty((ts, ts, 3), np.uint8)
    out[:] = (243, 241, 245)
    tissue = np.zeros((ts, ts), bool)
    for cx, cy, r in blobs:
        tissue |= (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
    out[tissue] = (222, 160, 200)
    glom = tissue & ((np.sin(xx / 300.0) * np.sin(yy / 300.0)) > 0.85)
    out[glom] = (150, 50, 120)
    return out


def write_slide(path: Path, side: int, seed: int = 0) -> None:
    """The pyramidal TIFF, level by level (each half the last) until under 1024 px."""
    import tifffile

    blobs = _blobs(side, seed)
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        scale, level = 1, 0
        while True:
            size = -(-side // scale)

            def tiles(size: int = size, scale: int = scale) -> Iterator[np.ndarray]:
                for y0 in range(0, size, TILE):
                    for x0 in range(0, size, TILE):
                        yield _tile(y0, x0, TILE, scale, blobs)

            px_per_cm = 1e4 / (MPP * scale)
            tif.write(
                tiles(),
                shape=(size, size, 3),
                dtype=np.uint8,
                tile=(TILE, TILE),
                photometric="rgb",
                compression="jpeg",
                resolution=(px_per_cm, px_per_cm),
                resolutionunit="CENTIMETER",
                subfiletype=1 if level else 0,
                metadata=None,
            )
            if size < 1024:
                break
            scale, level = scale * 2, level + 1


def _child_segment(slide: str, model: str, work: str, device: str) -> dict[str, float]:
    import resource

    from wsi_aug.stages.segment import segment

    t = time.perf_counter()
    res = segment(work, inputs=(Path(slide),), model=Path(model), device=device,
                  progress=False, force=True)
    row = res.rows[0]
    return {
        "seconds": time.perf_counter() - t,
        "tiles": row["tiles"],
        "tiles_per_s": row["tiles_per_s"],
        "objects": row["objects"],
        "max_buffer_rows": row["max_buffer_rows"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _child_forward(model: str, tiles: int, device: str, batch: int) -> dict[str, float]:
    import resource

    import torch

    from wsi_aug.seg.apply import load_model, probabilities

    dev = torch.device(device if device != "auto" else ("cuda" if torch.cuda.is_available()
                                                      else "cpu"))
    net, spec = load_model(model, dev)
    x = np.random.default_rng(0).integers(0, 255, (batch, spec.patch_size, spec.patch_size, 3),
                                          dtype=np.uint8)
    probabilities(net, x, dev)  # warm-up
    t = time.perf_counter()
    done = 0
    while done < tiles:
        probabilities(net, x, dev)
        done += batch
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return {
        "tiles_per_s": done / (time.perf_counter() - t),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _run_child(*args: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                         check=True)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--side", type=int, default=8000, help="slide side in level-0 px")
    ap.add_argument("--mpp", type=float, default=1.0, help="the model's pixel size (µm/px)")
    ap.add_argument("--patch", type=int, default=256, help="the model's patch size")
    ap.add_argument("--width", type=float, default=0.25, help="U-Net width multiplier")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--keep", type=Path, default=None, help="folder to keep slide and work in")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "segment":
            print(json.dumps(_child_segment(rest[0], rest[1], rest[2], args.device)))
        else:
            print(json.dumps(_child_forward(rest[0], int(rest[1]), args.device, 16)))
        return

    import torch

    from wsi_aug.seg.apply import ModelSpec, save_model
    from wsi_aug.seg.unet import UNet

    root = args.keep or Path(tempfile.mkdtemp(prefix="segment-memory-"))
    root.mkdir(parents=True, exist_ok=True)
    slide = root / f"big-{args.side}.tif"
    if not slide.is_file():
        t = time.perf_counter()
        write_slide(slide, args.side)
        print(f"wrote {slide} ({slide.stat().st_size / 1e6:.0f} MB) in "
              f"{time.perf_counter() - t:.0f} s")
    model = root / "model.safetensors"
    net = UNet(width=args.width, generator=torch.Generator().manual_seed(0))
    save_model(net, ModelSpec(patch_size=args.patch, mpp=args.mpp, padding="same", depth=5,
                              width=args.width, batch_norm=False), model)
    seg = _run_child("--device", args.device, "--child", "segment", str(slide), str(model),
                     str(root / "work"))
    fwd = _run_child("--device", args.device, "--child", "forward", str(model),
                     str(max(64, min(int(seg["tiles"]), 2000))))
    print(
        f"side {args.side} px at {MPP} µm/px, model {args.patch} px at {args.mpp} µm/px, width "
        f"{args.width}: {seg['tiles']:.0f} tiles, {seg['objects']:.0f} objects in "
        f"{seg['seconds']:.1f} s\n"
        f"  segment: {seg['tiles_per_s']:.1f} tiles/s, peak RSS {seg['peak_rss_mb']:.0f} MB "
        f"(band buffer {seg['max_buffer_rows']:.0f} rows)\n"
        f"  bare forward: {fwd['tiles_per_s']:.1f} tiles/s, peak RSS {fwd['peak_rss_mb']:.0f} MB"
        f"\n  segment / forward speed: {seg['tiles_per_s'] / fwd['tiles_per_s']:.2f}"
    )


if __name__ == "__main__":
    main()
