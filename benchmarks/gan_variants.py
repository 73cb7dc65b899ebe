"""Train GAN variants at one budget on the same patches and compare them side by side.

Given a work folder with ``extract.zarr`` and ``structure.zarr`` (or ``--data`` to build one from
the HuBMAP tiles of ../shared/data, as examples/cross_lab.py does), each variant gets its own work
folder ``OUT/work/NAME`` holding links to those two stores (their fingerprints come from their
metadata, not their path, so the links count as the same inputs) and is trained with the same
size, epochs, width and seed, then synthesizes ``--n`` patches from the same conditions.
Written to ``OUT``: ``variants.csv`` / ``variants.md`` (wall times, last-epoch losses, cheap image
statistics, and eval-gan's measures with ``--eval-gan``) and ``grid.png`` (one row per variant,
the same conditions in each column, the conditions themselves on top: mask red, structure grey).
Per-variant wall times are printed as they finish; a rerun reuses the variants already trained.

    python benchmarks/gan_variants.py --data ../shared/data --work wsi-aug-work/variants-base \\
        --out wsi-aug-work/variants --size 128 --mpp 2.0 --epochs 30 --ngf 16 --n 500
    python benchmarks/gan_variants.py --work W --out O --only paper,ms-ceiling --epochs 1
    python benchmarks/gan_variants.py --work W --out O --variants my-variants.json

``--variants FILE.json``: {"name": {train-gan option: value, ...}, ...} instead of the built-in
list (VARIANTS below). The image statistics: ``diversity`` = mean L1 (0-255) between pairs of
synthetic images over that of real pairs (near 1 is the real spread; far below: collapse);
``hf ratio`` = high-frequency energy (mean |image - its 2x2 box blur|) of the synthetic images over
the real ones' (well above 1: checkerboard-like texture). They are quick indications only; eval-gan
is the measurement.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

VARIANTS: dict[str, dict[str, Any]] = {
    "paper": {},
    "no-ms": {"ms_weight": 0.0},
    "ms-ceiling": {"ms_ceiling": 0.6},  # about the real pairs' ratio on HuBMAP
    "ms-lowpass": {"ms_downsample": 4},
    "resize-upsample": {"upsample": "resize"},
    "patchgan": {"disc": "patch"},
    "spectral-norm": {"spectral_norm": True},
}
STORES = ("extract", "structure")
LOSSES = ("d_loss", "g_adv", "g_l1", "g_ms")


def build_base(data: Path, work: Path, size: int, mpp: float) -> None:
    """extract + structure of the HuBMAP tiles (train/val/test by tile), as cross_lab does."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    from cross_lab import write_manifest

    from wsi_aug.stages.extract import extract
    from wsi_aug.stages.structure import structure

    manifest = write_manifest(data, work / "manifest.csv", within_hubmap=True, seed=0)
    extract(work, manifest=manifest, size=size, mpp=mpp, negatives=2, mask_channel=0, seed=0)
    structure(work, min_size=4)


def variant_work(base: Path, folder: Path, copy: bool) -> Path:
    """A work folder whose extract and structure stores are the base's (links, or copies)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in STORES:
        src, dst = (base / f"{name}.zarr").resolve(), folder / f"{name}.zarr"
        if dst.is_symlink() or dst.exists():
            continue
        if copy:
            shutil.copytree(src, dst)
        else:
            os.symlink(src, dst, target_is_directory=True)
    return folder


def last_epoch_losses(csv_path: Path) -> dict[str, float]:
    """Mean of each loss over the last epoch in ``losses.csv``."""
    with csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    last = rows[-1]["epoch"]
    rows = [r for r in rows if r["epoch"] == last]
    return {k: float(np.mean([float(r[k]) for r in rows])) for k in LOSSES}


def pair_l1(images: np.ndarray, rng: np.random.Generator, n_pairs: int = 200) -> float:
    """Mean absolute difference (0-255) between random pairs of different images."""
    if len(images) < 2:
        return float("nan")
    a = rng.integers(len(images), size=n_pairs)
    b = (a + rng.integers(1, len(images), size=n_pairs)) % len(images)
    return float(
        np.mean([np.abs(images[i].astype(np.float32) - images[j]).mean() for i, j in zip(a, b)])
    )


def real_ratio(real: Any, rng: np.random.Generator, n_pairs: int = 200) -> float:
    """The real pairs' d_G / d_x of L_ms (images and conditions in [-1, 1]): a guide for τ."""
    from wsi_aug.gan.data import condition_array

    if len(real) < 2:
        return float("nan")
    x = condition_array(real.masks, real.maps, False)
    y = real.images.astype(np.float32) / 127.5 - 1.0
    a = rng.integers(len(real), size=n_pairs)
    b = (a + rng.integers(1, len(real), size=n_pairs)) % len(real)
    d_x = np.array([np.abs(x[i] - x[j]).mean() for i, j in zip(a, b)])
    d_y = np.array([np.abs(y[i] - y[j]).mean() for i, j in zip(a, b)])
    keep = d_x > 0
    return float(np.mean(d_y[keep] / d_x[keep]))


def high_freq(images: np.ndarray) -> float:
    """Mean |image - 2x2 box blur of it| (0-255): what a checkerboard texture raises."""
    x = images[: min(len(images), 500)].astype(np.float32)
    n, h, w, c = x.shape
    blur = x.reshape(n, h // 2, 2, w // 2, 2, c).mean((2, 4))
    up = blur.repeat(2, 1).repeat(2, 2)
    return float(np.abs(x - up).mean())


def grid(rows: list[tuple[str, np.ndarray]], out: Path) -> Path:
    """One labelled row of images per entry (same columns = same conditions)."""
    from PIL import Image, ImageDraw

    label_w = 130
    size = rows[0][1].shape[1]
    cols = max(len(r[1]) for r in rows)
    canvas = Image.new("RGB", (label_w + cols * (size + 2), len(rows) * (size + 2)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (name, images) in enumerate(rows):
        y = i * (size + 2)
        draw.text((4, y + size // 2 - 6), name, fill="black")
        for j, img in enumerate(images):
            canvas.paste(Image.fromarray(np.asarray(img, np.uint8)), (label_w + j * (size + 2), y))
    canvas.save(out)
    return out


def condition_images(masks: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """The conditions as RGB: structure map grey, glomerulus mask red on top."""
    rgb = np.repeat((maps[..., None] * 110 + 40).astype(np.uint8), 3, -1)
    rgb[masks > 0] = (rgb[masks > 0] * 0.4 + np.array([220, 40, 40]) * 0.6).astype(np.uint8)
    return rgb


def run_variant(
    name: str, overrides: dict[str, Any], folder: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Train one variant, synthesize from it (and eval-gan it); its row of the table."""
    import zarr

    from wsi_aug.stages.synthesize import synthesize
    from wsi_aug.stages.train_gan import train_gan

    options = {
        "epochs": args.epochs,
        "ngf": args.ngf,
        "ndf": args.ngf,
        "seed": args.seed,
        "checkpoint_every": args.epochs,
        "device": args.device,
        "max_steps": args.max_steps,
        **overrides,
    }
    t0 = time.perf_counter()
    trained = train_gan(folder, progress=args.progress, **options)
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    synth = synthesize(folder, n=args.n, seed=args.seed, device=args.device, progress=False)
    t_synth = time.perf_counter() - t0
    group = zarr.open_group(synth.path, mode="r")
    images = np.asarray(group["images"][:])
    masks = np.asarray(group["masks"][: args.columns])
    maps = np.asarray(group["structure"][: args.columns])
    meta = dict(zarr.open_group(trained.path, mode="r").attrs)
    row: dict[str, Any] = {
        "variant": name,
        "overrides": json.dumps(overrides, sort_keys=True),
        "train_s": round(t_train, 1),
        "synth_s": round(t_synth, 1),
        "cached": bool(trained.cached),
        "steps": meta.get("steps"),
        **{
            k: round(v, 4)
            for k, v in last_epoch_losses(folder / "train-gan" / "losses.csv").items()
        },
        "_images": images,
        "_conditions": (masks, maps),
    }
    if args.eval_gan:
        from wsi_aug.stages.eval_gan import eval_gan

        t0 = time.perf_counter()
        res = eval_gan(folder, unet_epochs=args.unet_epochs, device=args.device, progress=False)
        row["eval_gan_s"] = round(time.perf_counter() - t0, 1)
        row.update({k: round(float(v), 4) for k, v in res.metrics.items()})
    return row


def write_table(rows: list[dict[str, Any]], out: Path) -> tuple[Path, Path]:
    """``variants.csv`` and ``variants.md`` from the rows (private columns left out)."""
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if not k.startswith("_") and k not in cols]
    with (out / "variants.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, cols)
        w.writeheader()
        w.writerows([{k: r.get(k, "") for k in cols} for r in rows])
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(k, "")) for k in cols) + " |" for r in rows]
    (out / "variants.md").write_text("\n".join(lines) + "\n")
    return out / "variants.csv", out / "variants.md"


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="folder with extract + structure")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--data", type=Path, help="build --work from these HuBMAP tiles if missing")
    ap.add_argument("--size", type=int, default=128, help="patch size when building --work")
    ap.add_argument("--mpp", type=float, default=2.0, help="µm/px when building --work")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--max-steps", type=int, default=None, help="cap the steps (smoke tests)")
    ap.add_argument("--ngf", type=int, default=16, help="G and D width")
    ap.add_argument("--n", type=int, default=500, help="synthetic patches per variant")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--columns", type=int, default=6, help="samples per variant in grid.png")
    ap.add_argument("--variants", type=Path, help="JSON {name: {option: value}}")
    ap.add_argument("--only", default="", help="comma-separated variant names to run")
    ap.add_argument("--copy", action="store_true", help="copy the stores instead of linking")
    ap.add_argument("--eval-gan", action="store_true", help="also run eval-gan per variant")
    ap.add_argument("--unet-epochs", type=int, default=30, help="eval-gan's U-Net epochs")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args(argv)

    from wsi_aug.stages.structure import PairedStores

    variants = json.loads(args.variants.read_text()) if args.variants else dict(VARIANTS)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in variants]
        if unknown:
            ap.error(f"--only: unknown variant(s) {unknown}; known: {sorted(variants)}")
        variants = {n: variants[n] for n in names}
    if not (args.work / "extract.zarr").exists() and args.data is not None:
        build_base(args.data, args.work, args.size, args.mpp)
    pairs = PairedStores(args.work)  # fails with a clear message if the stores are missing
    real = pairs.load("train", positive=True)
    rng = np.random.default_rng(args.seed)
    real_l1, real_hf = pair_l1(real.images, rng), high_freq(real.images)
    ratio = real_ratio(real, rng)
    args.out.mkdir(parents=True, exist_ok=True)
    print(
        f"{len(real)} positive train patches of {pairs.patches.size} px; "
        f"{len(variants)} variant(s), {args.epochs} epoch(s), ngf {args.ngf}; real pairs' "
        f"d_img / d_cond (L_ms's ratio; a guide for ms_ceiling) = {ratio:.3f}"
    )
    rows = []
    for name, overrides in variants.items():
        folder = variant_work(args.work, args.out / "work" / name, args.copy)
        row = run_variant(name, overrides, folder, args)
        row["diversity"] = round(
            pair_l1(row["_images"], np.random.default_rng(args.seed)) / real_l1, 3
        )
        row["hf_ratio"] = round(high_freq(row["_images"]) / real_hf, 3)
        rows.append(row)
        print(
            f"{name:>18}: train {row['train_s']:.1f} s, synthesize {row['synth_s']:.1f} s"
            f"{' (cached)' if row['cached'] else ''}; diversity {row['diversity']}, "
            f"hf ratio {row['hf_ratio']}",
            flush=True,
        )
    csv_path, md_path = write_table(rows, args.out)
    masks, maps = rows[0]["_conditions"]
    for r in rows[1:]:  # same seed, same train patches: the same augmented conditions
        if not all(np.array_equal(a, b) for a, b in zip(r["_conditions"], (masks, maps))):
            print(f"note: {r['variant']} used other conditions than {rows[0]['variant']}")
    grid_rows = [("condition", condition_images(masks, maps))]
    grid_rows += [(r["variant"], r["_images"][: args.columns]) for r in rows]
    png = grid(grid_rows, args.out / "grid.png")
    print(md_path.read_text())
    print(f"wrote {csv_path}, {md_path}, {png}")
    return rows


if __name__ == "__main__":
    main()
