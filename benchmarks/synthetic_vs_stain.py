"""Does GAN data beat classical stain augmentation? The experiment of issue #9, section 4.

One command, resumable (every finished U-Net is a line of ``OUT/runs.jsonl``)::

    python benchmarks/synthetic_vs_stain.py --data ../shared/data --out wsi-aug-work/s4

1. HuBMAP PAS tiles, split by tile (train / val / test, as examples/cross_lab.py
   ``--within-hubmap``), extracted at --size px and --mpp µm/px with two negatives per glomerulus;
   the 16 AIDPATH PAS tiles (another lab and scanner) extracted the same way as a second test set.
2. GAN variants (`benchmarks/gan_variants.py`, one budget each): ``paper`` (pipelines/paper.toml),
   ``recommended`` (pipelines/recommended.toml: resize-then-convolve upsampling), ``no-ms``
   (μ = 0) and ``no-structure`` (mask-only condition); each synthesizes --n patches from augmented
   conditions, and eval-gan compares the sets (C2ST, spectrum, ...) in one table.
3. U-Nets (eval-seg's `train_seed`: its drawing, augmentation and selection on real val Dice) for
   every seed x real fraction x augmentation x (ratio 0, or ratio > 0 x variant), each scored on
   the HuBMAP test tiles and on the AIDPATH tiles with the same model. Each run records its
   validation curve; ``curves.png`` shows them, so a plateau (or not) can be seen.

Written to OUT: ``runs.jsonl`` (one U-Net per line), ``table.md`` / ``table.csv`` (mean ± std over
seeds and the paired difference against ratio 0 with the same seed, fraction and augmentation),
``dice.png``, ``curves.png``, ``realism.md`` (eval-gan's table). Small sets: about 455 HuBMAP and
20 AIDPATH glomeruli; say so wherever the figures go.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "examples"))

VARIANTS: dict[str, dict[str, Any]] = {
    "paper": {},
    "recommended": {"upsample": "resize"},
    "no-ms": {"ms_weight": 0.0},
    "no-structure": {"no_structure": True},
}
METRICS = ("dice", "obj_f1")


def build_aidpath(data: Path, work: Path, size: int, mpp: float) -> Path:
    """The AIDPATH tiles, every one a test patch source, at the experiment's size and mpp."""
    from wsi_aug.stages.extract import extract

    aid = data / "aidpath-pas-tiles"
    rows = ["slide,annotation,patient,split,mpp"]
    for p in sorted((aid / "images").glob("*.png")):
        rows.append(f"{p.resolve()},{(aid / 'masks' / p.name).resolve()},aid-{p.stem},test,0.5")
    work.mkdir(parents=True, exist_ok=True)
    manifest = work / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    extract(work, manifest=manifest, size=size, mpp=mpp, negatives=2, mask_channel=0, seed=0,
            progress=False)
    return work


def run_variants(args: argparse.Namespace, base: Path) -> Path:
    """gan_variants.py for the four variants (it reuses those already trained)."""
    out = args.out / "variants"
    spec = args.out / "variants.json"
    spec.write_text(json.dumps(VARIANTS))
    cmd = [
        sys.executable, str(REPO / "benchmarks" / "gan_variants.py"), "--work", str(base),
        "--data", str(args.data), "--out", str(out), "--size", str(args.size), "--mpp",
        str(args.mpp), "--epochs", "1000", "--max-steps", str(args.gan_steps), "--ngf",
        str(args.ngf), "--n", str(args.n), "--variants", str(spec), "--device", args.device,
    ]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return out


def realism(args: argparse.Namespace, variants: Path) -> Path:
    """eval-gan on the paper variant's work folder, the other variants' sets beside it."""
    from wsi_aug.stages.eval_gan import eval_gan

    first, *rest = VARIANTS
    others = tuple(f"{v}={variants / 'work' / v}" for v in rest)
    t = time.perf_counter()
    res = eval_gan(variants / "work" / first, synthetic=others, unet_epochs=args.realism_epochs,
                   unet_samples_per_epoch=256, device=args.device, progress=False)
    out = args.out / "realism.md"
    text = res.markdown.read_text()
    out.write_text(f"eval-gan ({time.perf_counter() - t:.0f} s)\n\n{text}\n")
    return out


def load_sets(base: Path, aid: Path, variants: Path, names: list[str],
              extra: dict[str, Path]) -> dict[str, Any]:
    """Real splits, AIDPATH test patches and each variant's synthetic patches, in memory."""
    from wsi_aug.stages.extract import PatchStore
    from wsi_aug.stages.synthesize import SyntheticStore

    patches = PatchStore.open(base)
    images, masks = patches.read_all()
    sets: dict[str, Any] = {}
    for split in ("train", "val", "test"):
        rows = patches.select(split)
        sets[split] = (images[rows], masks[rows], patches.table.mpp[rows])
    ap = PatchStore.open(aid)
    ai, am = ap.read_all()
    rows = ap.select("test")
    sets["aidpath"] = (ai[rows], am[rows], ap.table.mpp[rows])
    for v in names:
        sx, sy, _ = SyntheticStore.open(extra.get(v, variants / "work" / v)).read_all()
        sets[f"synthetic:{v}"] = (sx, sy)
    return sets


def one_run(sets: dict[str, Any], cfg: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Train one U-Net for `cfg` and score it on both test sets."""
    from wsi_aug.eval_seg import SegData, min_area_pixels, train_seed
    from wsi_aug.metrics import segmentation_metrics
    from wsi_aug.seg.augment import augment_config
    from wsi_aug.seg.train import crop_masks, predict

    tx, ty, _ = sets["train"]
    vx, vy, _ = sets["val"]
    hx, hy, _ = sets["test"]
    sx = sy = None
    if cfg["ratio"] > 0:
        sx, sy = sets[f"synthetic:{cfg['variant']}"]
    data = SegData(tx, ty, vx, vy, hx, hy, sx, sy)
    aug = augment_config(cfg["augment"], args.stain_sigma)
    t = time.perf_counter()
    model, hist, counts = train_seed(
        data, ratio=cfg["ratio"], seed=cfg["seed"], real_fraction=cfg["real_fraction"],
        samples_per_epoch=args.samples_per_epoch,
        train_kwargs={"epochs": args.epochs, "batch_size": 8, "lr": args.lr, "width": args.width,
                      "batch_norm": False, "padding": "same", "augment": aug or False,
                      "precision": args.precision, "device": args.device},
        progress=False,
    )
    row = {**cfg, **counts, "best_epoch": hist.best_epoch, "best_val_dice": hist.best_val_dice,
           "val_curve": [round(v, 4) for v in hist.val_dice], "seconds": time.perf_counter() - t}
    for name in ("test", "aidpath"):
        x, y, mpp = sets[name]
        pred = predict(model, x, batch_size=16)
        scores = segmentation_metrics(pred, crop_masks(y, pred.shape[1:]),
                                      min_area=min_area_pixels(args.min_object_area, mpp))
        label = "hubmap" if name == "test" else "aidpath"
        row.update({f"{label}_{k}": float(scores[k]) for k in METRICS})
    return row


def configs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every U-Net of the grid, seed by seed (a cut-short run still covers the grid); ratio 0
    has no variant."""
    out = []
    for seed, frac, aug in product(range(args.seeds), args.fractions, args.augments):
        out.append({"real_fraction": frac, "augment": aug, "seed": seed, "ratio": 0.0,
                    "variant": "-"})
        for ratio, v in product([r for r in args.ratios if r > 0], args.variants):
            out.append({"real_fraction": frac, "augment": aug, "seed": seed, "ratio": ratio,
                        "variant": v})
        if aug == args.extra_augment:  # the condition sources (#11): one ratio, one augmentation
            for v in args.extra_variants:
                out.append({"real_fraction": frac, "augment": aug, "seed": seed,
                            "ratio": args.extra_ratio, "variant": v})
    return out


def key(cfg: dict[str, Any]) -> str:
    return json.dumps({k: cfg[k] for k in ("real_fraction", "augment", "seed", "ratio",
                                            "variant")}, sort_keys=True)


def summarise(rows: list[dict[str, Any]], out: Path) -> Path:
    """Mean ± std over seeds and the paired gain over ratio 0 (same seed, fraction, augment)."""
    from wsi_aug.eval_seg import markdown_table, write_csv

    base = {(r["real_fraction"], r["augment"], r["seed"]): r for r in rows if r["ratio"] == 0}
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        g = (r["real_fraction"], r["augment"], r["ratio"], r["variant"])
        groups.setdefault(g, []).append(r)
    table = []
    for (frac, aug, ratio, variant), rs in sorted(groups.items()):
        line: dict[str, Any] = {"real_fraction": frac, "augment": aug, "ratio": ratio,
                                "variant": variant, "seeds": len(rs),
                                "best_epoch": float(np.mean([r["best_epoch"] for r in rs]))}
        for test, m in product(("hubmap", "aidpath"), METRICS):
            vals = np.array([r[f"{test}_{m}"] for r in rs])
            line[f"{test}_{m}"] = f"{vals.mean():.3f} ± {vals.std():.3f}"
            gains = [r[f"{test}_{m}"] - base[(frac, aug, r["seed"])][f"{test}_{m}"]
                     for r in rs if (frac, aug, r["seed"]) in base]
            if ratio > 0 and gains:
                g = np.array(gains)
                line[f"{test}_{m}_gain"] = f"{g.mean():+.3f} ± {g.std():.3f}"
            else:
                line[f"{test}_{m}_gain"] = ""
        line["seconds"] = float(np.mean([r["seconds"] for r in rs]))
        table.append(line)
    write_csv(table, out / "table.csv")
    cols = ["real_fraction", "augment", "ratio", "variant", "seeds", "hubmap_dice",
            "hubmap_dice_gain", "aidpath_dice", "aidpath_dice_gain", "hubmap_obj_f1",
            "aidpath_obj_f1", "aidpath_obj_f1_gain", "best_epoch", "seconds"]
    titles = ["real frac.", "augment", "ratio", "GAN", "seeds", "HuBMAP Dice", "gain",
              "AIDPATH Dice", "gain", "HuBMAP obj. F1", "AIDPATH obj. F1", "gain",
              "best epoch", "s/U-Net"]
    md = markdown_table(titles, [[line[c] for c in cols] for line in table])
    path = out / "table.md"
    path.write_text(md + "\n")
    return path


def pivot(rows: list[dict[str, Any]], out: Path) -> Path:
    """``pivot.md``: Dice per test set, one row per (real fraction, augmentation), one column per
    synthetic set and ratio (real only first): mean ± std over seeds."""
    from wsi_aug.eval_seg import markdown_table

    cols = sorted({(r["ratio"], r["variant"]) for r in rows},
                  key=lambda c: (c[0] > 0, c[0], list(VARIANTS).index(c[1])
                                 if c[1] in VARIANTS else len(VARIANTS), c[1]))
    parts = []
    for test in ("aidpath", "hubmap"):
        for metric in METRICS:
            lines = []
            for frac, aug in sorted({(r["real_fraction"], r["augment"]) for r in rows},
                                    key=lambda g: (-g[0], g[1])):
                line: list[Any] = [f"{frac:g}", aug]
                for ratio, v in cols:
                    vals = [r[f"{test}_{metric}"] for r in rows if r["real_fraction"] == frac
                            and r["augment"] == aug and r["ratio"] == ratio and r["variant"] == v]
                    line.append(f"{np.mean(vals):.3f} ± {np.std(vals):.3f} ({len(vals)})"
                                if vals else "")
                lines.append(line)
            head = ["real frac.", "augment"] + [
                "real only" if ratio == 0 else f"{v} r={ratio:g}" for ratio, v in cols]
            name = {"aidpath": "HuBMAP → AIDPATH", "hubmap": "within HuBMAP (by tile)"}[test]
            parts.append(f"### {name}: {metric.replace('_', ' ')} (mean ± std over seeds "
                         f"(n))\n\n" + markdown_table(head, lines))
    path = out / "pivot.md"
    path.write_text("\n\n".join(parts) + "\n")
    return path


def plots(rows: list[dict[str, Any]], out: Path, epochs: int) -> None:
    """``curves.png`` (validation Dice per epoch, every run) and ``dice.png`` (test Dice)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    names = sorted({r["variant"] for r in rows} - {"-"}, key=lambda v: (v not in VARIANTS, v))
    palette = ("tab:red", "tab:green", "tab:blue", "tab:orange", "tab:purple", "tab:brown",
               "tab:pink", "tab:olive")
    colours = {"-": "black", **dict(zip(names, palette))}
    for r in rows:
        axes[0 if r["augment"] == "geometric" else 1].plot(
            range(1, len(r["val_curve"]) + 1), r["val_curve"], color=colours[r["variant"]],
            alpha=0.35, lw=0.8)
    for ax, aug in zip(axes, ("geometric", "stain")):
        ax.set_title(f"validation Dice per epoch, augment {aug}")
        ax.set_xlabel("epoch")
        ax.set_xlim(1, epochs)
        ax.set_ylim(0, 1)
    handles = [plt.Line2D([], [], color=c, label="real only" if v == "-" else v)
               for v, c in colours.items()]
    axes[1].legend(handles=handles, loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    groups = sorted({(r["real_fraction"], r["augment"], r["ratio"], r["variant"]) for r in rows})
    for ax, test in zip(axes, ("hubmap", "aidpath")):
        labels, means, stds, cols = [], [], [], []
        for g in groups:
            vals = [r[f"{test}_dice"] for r in rows
                    if (r["real_fraction"], r["augment"], r["ratio"], r["variant"]) == g]
            labels.append(f"f{g[0]:g} {g[1][:4]} r{g[2]:g} {g[3]}")
            means.append(np.mean(vals))
            stds.append(np.std(vals))
            cols.append(colours[g[3]])
        ax.barh(range(len(labels)), means, xerr=stds, color=cols, alpha=0.8)
        ax.set_yticks(range(len(labels)), labels, fontsize=6)
        ax.set_title(f"test Dice ({'HuBMAP, by tile' if test == 'hubmap' else 'AIDPATH'})")
        ax.set_xlim(0, 1)
    fig.tight_layout()
    fig.savefig(out / "dice.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path,
                    default=Path(os.environ.get("WSI_AUG_DATA", "../shared/data")))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--mpp", type=float, default=4.0)
    ap.add_argument("--ngf", type=int, default=16)
    ap.add_argument("--gan-steps", type=int, default=1600)
    ap.add_argument("--n", type=int, default=500, help="synthetic patches per variant")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.25])
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    ap.add_argument("--augments", nargs="+", default=["geometric", "stain"])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--extra-variants", nargs="*", default=[],
                    help="further sets (--set) trained at --extra-ratio and --extra-augment only")
    ap.add_argument("--extra-ratio", type=float, default=0.5)
    ap.add_argument("--extra-augment", default="geometric")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=WORK",
                    help="a further synthetic set (a work folder with synthesize.zarr) as variant "
                         "NAME, e.g. the recommended GAN on learned conditions")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--samples-per-epoch", type=int, default=256)
    ap.add_argument("--width", type=float, default=0.125)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--stain-sigma", type=float, default=0.05)
    ap.add_argument("--precision", default="bf16", help="U-Net training: fp32 or bf16")
    ap.add_argument("--min-object-area", type=float, default=1000.0)
    ap.add_argument("--realism-epochs", type=int, default=10)
    ap.add_argument("--skip-realism", action="store_true")
    ap.add_argument("--stop-after-gan", action="store_true", help="data, GANs and realism only")
    ap.add_argument("--summarise-only", action="store_true",
                    help="tables and plots from OUT/runs.jsonl, no training")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    if args.summarise_only:
        rows = [json.loads(line) for line in (args.out / "runs.jsonl").read_text().splitlines()]
        print(summarise(rows, args.out).read_text())
        print(pivot(rows, args.out).read_text())
        plots(rows, args.out, args.epochs)
        return

    from gan_variants import build_base

    base = args.out / "base"
    build_base(args.data, base, args.size, args.mpp)
    aid = build_aidpath(args.data, args.out / "aidpath", args.size, args.mpp)
    variants = run_variants(args, base)
    if not args.skip_realism:
        print(realism(args, variants).read_text(), flush=True)
    if args.stop_after_gan:
        return
    extra = dict(item.split("=", 1) for item in args.set)
    sets = load_sets(base, aid, variants, [*args.variants, *args.extra_variants],
                     {k: Path(v) for k, v in extra.items()})
    print({k: len(v[0]) for k, v in sets.items()}, flush=True)

    log = args.out / "runs.jsonl"
    done = {}
    if log.is_file():
        for line in log.read_text().splitlines():
            r = json.loads(line)
            done[key(r)] = r
    todo = [c for c in configs(args) if key(c) not in done]
    print(f"{len(done)} U-Nets done, {len(todo)} to train", flush=True)
    for i, cfg in enumerate(todo, 1):
        twin = {**cfg, "real_fraction": args.fractions[0]}
        if cfg["ratio"] == 1.0 and key(twin) in done:
            # synthetic only: no real patch is drawn, so every real fraction trains the same U-Net
            row = {**done[key(twin)], "real_fraction": cfg["real_fraction"],
                   "same_as_fraction": args.fractions[0]}
        else:
            row = one_run(sets, cfg, args)
        done[key(cfg)] = row
        with log.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"[{i}/{len(todo)}] {key(cfg)}: HuBMAP Dice {row['hubmap_dice']:.3f}, AIDPATH "
              f"Dice {row['aidpath_dice']:.3f}, best epoch {row['best_epoch']}, "
              f"{row['seconds']:.0f} s", flush=True)
    rows = [done[key(c)] for c in configs(args) if key(c) in done]
    print(summarise(rows, args.out).read_text())
    print(pivot(rows, args.out).read_text())
    plots(rows, args.out, args.epochs)
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
