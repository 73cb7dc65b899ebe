"""Extraction speed: wsi_aug.extract patches/s against bare OpenSlide reads of the same windows.

Both sides run in this process, pinned to one core, on the same phantom slides (made here, or
given with --slides-dir). The baseline is what a user would write by hand: for each window,
``OpenSlide.read_region`` at the level extraction reads from, converted to an RGB numpy array.
Extraction does that plus pairing, annotation parsing, resampling to the exact target size, mask
rasterisation and the Zarr writes. The figure is the ratio of the two rates, measured in one run;
then the speed-up of ``--workers 2`` over one worker (all cores allowed), on heavier
per-slide work (larger patches and negatives), where process start-up (about 1 s) matters less.

    python benchmarks/extract_speed.py [--slides 6] [--size 256] [--mpp 1.0] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def _windows(slides: list[Path], size: int, mpp: float) -> list[tuple[Path, int, tuple, tuple]]:
    """The level and level-0 box of every window extraction will read."""
    from wsi_aug.annotations.read import read_annotations
    from wsi_aug.slides.open import open_slide

    out = []
    for path in slides:
        with open_slide(path) as s:
            mx, my = s.mpp
            level = s.best_level_for_mpp(mpp)
            ds = s.level_downsamples[level]
            for a in read_annotations(path.with_suffix(".geojson")).annotations:
                c = a.geometry.centroid
                w0, h0 = size * mpp / mx, size * mpp / my
                x0, y0 = round(c.x - w0 / 2), round(c.y - h0 / 2)
                out.append((path, level, (x0, y0), (round(w0 / ds), round(h0 / ds))))
    return out


def bare_openslide(windows) -> float:
    """Seconds to read every window with OpenSlide, as RGB arrays."""
    import openslide

    t = time.perf_counter()
    handles: dict[Path, openslide.OpenSlide] = {}
    for path, level, loc, size in windows:
        s = handles.get(path) or handles.setdefault(path, openslide.OpenSlide(str(path)))
        np.asarray(s.read_region(loc, level, size).convert("RGB"))
    for s in handles.values():
        s.close()
    return time.perf_counter() - t


def run_extract(
    slides_dir: Path, work: Path, size: int, mpp: float, workers: int, negatives: int = 0
) -> float:
    from wsi_aug.stages.extract import ExtractParams, extract

    params = ExtractParams(
        inputs=(slides_dir,), size=size, mpp=mpp, negatives=negatives, workers=workers
    )
    t = time.perf_counter()
    extract(work, params, force=True, progress=False)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--slides", type=int, default=8)
    ap.add_argument("--slides-dir", type=Path, default=None)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--mpp", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--negatives", type=int, default=40, help="per slide, for the workers part")
    ap.add_argument("--workers-size", type=int, default=512, help="patch size, workers part")
    ap.add_argument("--workers-mpp", type=float, default=0.5, help="patch mpp, workers part")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="wsi-aug-bench-"))
    slides_dir = args.slides_dir
    if slides_dir is None:
        from wsi_aug.phantom import make_phantom_dataset

        slides_dir = tmp / "slides"
        make_phantom_dataset(slides_dir, slides=args.slides, seed=0, width=4096, height=3072)
    slides = sorted(slides_dir.glob("*.tif"))
    windows = _windows(slides, args.size, args.mpp)
    n = len(windows)

    all_cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(all_cores)})  # one core for the ratio
    bare_openslide(windows)  # warm the page cache
    run_extract(slides_dir, tmp / "w1", args.size, args.mpp, 1)
    bare = min(bare_openslide(windows) for _ in range(args.repeat))
    ours = min(
        run_extract(slides_dir, tmp / "w1", args.size, args.mpp, 1) for _ in range(args.repeat)
    )
    os.sched_setaffinity(0, all_cores)
    neg, ws, wm = args.negatives, args.workers_size, args.workers_mpp
    one = min(run_extract(slides_dir, tmp / "w2", ws, wm, 1, neg) for _ in range(args.repeat))
    two = min(run_extract(slides_dir, tmp / "w2", ws, wm, 2, neg) for _ in range(args.repeat))
    import zarr

    from wsi_aug.store import WorkDir

    n_all = zarr.open_group(WorkDir(tmp / "w2").patches, mode="r")["images"].shape[0]

    print(
        f"machine: {platform.processor() or platform.machine()}, {len(all_cores)} cores, "
        f"Python {platform.python_version()}"
    )
    print(
        f"{len(slides)} phantom slides, {n} windows of {args.size} px at {args.mpp} µm/px, "
        f"best of {args.repeat}"
    )
    print("| measure | value |\n| --- | --- |")
    print(f"| bare OpenSlide read_region, one core | {n / bare:.1f} windows/s |")
    print(f"| wsi-aug extract, one core | {n / ours:.1f} patches/s |")
    print(f"| ratio extract / bare (aim >= 0.8) | {bare / ours:.2f} |")
    print(
        f"| extract --workers 1, all cores, {neg} negatives/slide | {n_all / one:.1f} patches/s |"
    )
    print(
        f"| extract --workers 2, all cores, {neg} negatives/slide | {n_all / two:.1f} patches/s |"
    )
    print(f"| speed-up of --workers 2 | {one / two:.2f}x |")


if __name__ == "__main__":
    main()
