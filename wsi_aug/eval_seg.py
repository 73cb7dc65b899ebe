"""eval-seg: does synthetic data help a segmentation U-Net?

For each synthetic ratio r, U-Nets are trained (one per seed) on samples drawn from the real
training split (positive and negative patches) and the synthetic set, a fraction r of them
synthetic (r = 0: real only; r = 1: synthetic only), selected on the real validation split and
scored on the real test split only. Each ratio is one cached configuration,
``<work>/eval-seg/<config-hash>.zarr`` (stage "eval-seg", per-seed metrics as a table), so a sweep
that adds a ratio only trains the new one; the sweep's ``results.csv``, ``results.md`` and
``dice.png`` are written to ``<work>/eval-seg/``.

Pixel scores (Dice, IoU) are taken on the raw thresholded U-Net output; object scores count only
connected components of at least ``min_object_area`` µm² after hole filling, in the prediction
and in the ground truth (see `wsi_aug.metrics.object_scores`).
"""

from __future__ import annotations

import csv
import json
import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wsi_aug import store
from wsi_aug.errors import WsiAugError
from wsi_aug.store import StageResult, WorkDir

STAGE = "eval-seg"
EXTRACT_MADE_BY = "wsi-aug extract SLIDES"
SYNTH_MADE_BY = "wsi-aug synthesize --n N"
METRICS = ("dice", "mean_dice", "iou", "obj_precision", "obj_recall", "obj_f1")
METRIC_TITLES = {
    "dice": "Dice (pooled)",
    "mean_dice": "Dice (per patch)",
    "iou": "IoU",
    "obj_precision": "Obj. precision",
    "obj_recall": "Obj. recall",
    "obj_f1": "Obj. F1",
}


# --- sampling -----------------------------------------------------------------------------------


def draw_training_indices(
    n_real: int, n_synth: int, ratio: float, n_samples: int, rng: np.random.Generator
) -> list[tuple[str, int]]:
    """One epoch's training samples: ``round(ratio * n_samples)`` synthetic, the rest real.

    Each source is visited in shuffled whole passes (so every patch is seen before any repeats)
    and the two are interleaved at random. Returns ``("real" | "synthetic", index)`` pairs.
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"synthetic ratio must be in [0, 1], not {ratio}")
    n_syn = round(ratio * n_samples)
    n_re = n_samples - n_syn
    if n_syn and n_synth == 0:
        raise ValueError(f"ratio {ratio} needs synthetic patches, but there are none")
    if n_re and n_real == 0:
        raise ValueError(f"ratio {ratio} needs real training patches, but there are none")
    out = [("real", int(i)) for i in _passes(n_real, n_re, rng)]
    out += [("synthetic", int(i)) for i in _passes(n_synth, n_syn, rng)]
    return [out[i] for i in rng.permutation(len(out))]


def _passes(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    if k == 0:
        return np.zeros(0, np.int64)
    return np.concatenate([rng.permutation(n) for _ in range(math.ceil(k / n))])[:k]


def parse_ratios(values: Sequence[str | float]) -> list[float]:
    """Ratios from numbers or comma lists ("0,0.5,1"), de-duplicated in order; each in [0, 1]."""
    out: list[float] = []
    for v in values:
        for part in str(v).split(","):
            part = part.strip()
            if not part:
                continue
            try:
                r = float(part)
            except ValueError:
                raise WsiAugError(
                    f"--synthetic-ratio {part!r}: not a number; give e.g. 0.5 or 0,0.5,1"
                ) from None
            if not 0.0 <= r <= 1.0:
                raise WsiAugError(f"--synthetic-ratio {part}: must be between 0 and 1")
            if r not in out:
                out.append(r)
    if not out:
        raise WsiAugError("--synthetic-ratio: no ratio given; give e.g. 0.5 or 0,0.5,1")
    return out


# --- results files ------------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    if isinstance(v, float | np.floating):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def write_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Rows of equal keys as a CSV file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        for r in rows:
            writer.writerow({k: _fmt(v) if isinstance(v, float) else v for k, v in r.items()})
    return path


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _summary_row(ratio: float, per_seed: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "synthetic_ratio": ratio,
        "seeds": len(per_seed),
        "n_real": int(per_seed[0]["n_real"]) if per_seed else 0,
        "n_synthetic": int(per_seed[0]["n_synthetic"]) if per_seed else 0,
    }
    for m in METRICS:
        vals = np.array([float(r[m]) for r in per_seed])
        row[f"{m}_mean"] = float(vals.mean()) if len(vals) else float("nan")
        row[f"{m}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
    return row


def summary_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The results table: metric mean ± std over seeds, one row per ratio."""
    header = ["synthetic ratio", "real", "synthetic", "seeds", *(METRIC_TITLES[m] for m in METRICS)]
    body = [
        [
            f"{r['synthetic_ratio']:g}",
            r["n_real"],
            r["n_synthetic"],
            r["seeds"],
            *(f"{r[m + '_mean']:.3f} ± {r[m + '_std']:.3f}" for m in METRICS),
        ]
        for r in rows
    ]
    return markdown_table(header, body)


def plot_metrics(rows: Sequence[Mapping[str, Any]], path: Path, title: str = "") -> Path:
    """Dice (pooled and per patch) and object F1 against the synthetic ratio, ± std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = sorted(rows, key=lambda r: r["synthetic_ratio"])
    x = [r["synthetic_ratio"] for r in order]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for m, marker in (("dice", "o"), ("mean_dice", "s"), ("obj_f1", "^")):
        ax.errorbar(
            x,
            [r[f"{m}_mean"] for r in order],
            yerr=[r[f"{m}_std"] for r in order],
            marker=marker,
            capsize=3,
            label=METRIC_TITLES[m],
        )
    ax.set_xlabel("fraction of synthetic training samples")
    ax.set_ylabel("score on the real test split")
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:  # wrapped: a long configuration line must not run off the figure
        ax.set_title(textwrap.fill(title, 64), fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _write_outputs(folder: Path, rows: Sequence[Mapping[str, Any]], title: str) -> dict[str, Path]:
    """results.csv, results.md and dice.png for summary rows, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    csv_path = write_csv(rows, folder / "results.csv")
    md_path = folder / "results.md"
    md_path.write_text((f"{title}\n\n" if title else "") + summary_markdown(rows))
    png = plot_metrics(rows, folder / "dice.png", title)
    return {"csv": csv_path, "markdown": md_path, "plot": png}


# --- data ---------------------------------------------------------------------------------------


@dataclass
class _Data:
    """The real patches by split and the synthetic set (loaded once per eval-seg call)."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    synth_x: np.ndarray | None
    synth_y: np.ndarray | None


def _split_indices(work: WorkDir) -> tuple[dict[str, np.ndarray], int, np.ndarray]:
    """Patch rows of each split, the patch size and every patch's pixel size (µm/px); no test
    patch is a user error."""
    g = store.open_stage(work.patches, stage="extract", made_by=EXTRACT_MADE_BY)
    table = store.read_table(g, "table")
    split = table["split"]
    out = {s: np.flatnonzero(split == s) for s in ("train", "val", "test")}
    if len(out["test"]) == 0:
        raise WsiAugError(
            f"{work.patches}: no patches in the test split; re-run `wsi-aug extract` with "
            "--split so that some slides go to the test set"
        )
    return out, int(g["images"].shape[1]), np.asarray(table["mpp"], np.float64)


def _load(work: WorkDir, splits: Mapping[str, np.ndarray], synthetic: bool) -> _Data:
    g = store.open_stage(work.patches, stage="extract", made_by=EXTRACT_MADE_BY)
    images, masks = g["images"][:], g["masks"][:]
    sx = sy = None
    if synthetic:
        s = store.open_stage(work.synthetic, stage="synthetic", made_by=SYNTH_MADE_BY)
        sx, sy = s["images"][:], s["masks"][:]
    tr, va, te = splits["train"], splits["val"], splits["test"]
    return _Data(images[tr], masks[tr], images[va], masks[va], images[te], masks[te], sx, sy)


def min_area_pixels(min_object_area: float, mpp: np.ndarray) -> np.ndarray:
    """An area in µm² as pixels of patches of pixel size ``mpp`` (µm/px, one per patch).

    A centre-cropped (valid-padding) prediction keeps its patch's pixel size, so the same
    value applies to it.
    """
    return float(min_object_area) / np.asarray(mpp, np.float64) ** 2


def _center_crop_stack(x: np.ndarray, size: int) -> np.ndarray:
    h, w = x.shape[1:3]
    top, left = (h - size) // 2, (w - size) // 2
    return x[:, top : top + size, left : left + size]


# --- the stage ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalSegResult:
    """The sweep's summary rows (one per ratio), per-seed rows, output files and stores."""

    rows: list[dict[str, Any]]
    per_seed: list[dict[str, Any]]
    table: str  # the Markdown table
    csv: Path
    markdown: Path
    plot: Path
    stores: list[StageResult]

    @property
    def cached(self) -> bool:
        return all(s.cached for s in self.stores)

    @property
    def path(self) -> Path:
        """The folder of the results people look at (``<work>/eval-seg``)."""
        return self.csv.parent


def config_params(ratio: float, **params: Any) -> dict[str, Any]:
    """The parameters that define one eval-seg configuration (and its cache key)."""
    return {"synthetic_ratio": float(ratio), **params}


def config_path(work: WorkDir, params: Mapping[str, Any]) -> Path:
    """``<work>/eval-seg/<12-hex config hash>.zarr`` (the hash ignores input fingerprints, so a
    rebuilt upstream replaces that configuration's results rather than adding a folder)."""
    h = store.fingerprint_value(dict(params)).removeprefix("sha256:")[:12]
    return work.eval_seg / f"{h}.zarr"


def _run_seed(
    data: _Data,
    *,
    ratio: float,
    seed: int,
    real_fraction: float,
    samples_per_epoch: int | None,
    min_area_px: float | np.ndarray,
    train_kwargs: Mapping[str, Any],
    progress: bool,
) -> dict[str, Any]:
    """Train one U-Net for (ratio, seed) and score it on the real test split.

    ``min_area_px``: the object scores' minimum component area in pixels, a number or one per
    test patch (see `wsi_aug.metrics.object_scores`).
    """
    from wsi_aug.metrics import segmentation_metrics
    from wsi_aug.seg.train import crop_masks, predict, train_unet

    n_train = len(data.train_x)
    k_real = 0
    real_idx = np.zeros(0, np.int64)
    if ratio < 1.0 and n_train:
        k_real = max(1, round(real_fraction * n_train))
        real_idx = np.sort(np.random.default_rng([seed, 0]).choice(n_train, k_real, replace=False))
    n_synth = len(data.synth_x) if (ratio > 0 and data.synth_x is not None) else 0
    parts_x, parts_y = [], []
    sizes = [data.train_x.shape[1]] + ([data.synth_x.shape[1]] if n_synth else [])
    size = min(sizes)
    if k_real:
        parts_x.append(_center_crop_stack(data.train_x[real_idx], size))
        parts_y.append(_center_crop_stack(data.train_y[real_idx], size))
    if n_synth:
        parts_x.append(_center_crop_stack(data.synth_x, size))
        parts_y.append(_center_crop_stack(data.synth_y, size))
    pool_x = np.concatenate(parts_x) if len(parts_x) > 1 else parts_x[0]
    pool_y = np.concatenate(parts_y) if len(parts_y) > 1 else parts_y[0]
    n_samples = samples_per_epoch or (k_real or n_train or n_synth)

    def sampler(rng: np.random.Generator) -> list[int]:
        draw = draw_training_indices(k_real, n_synth, ratio, n_samples, rng)
        return [i if src == "real" else k_real + i for src, i in draw]

    model, hist = train_unet(
        pool_x,
        pool_y,
        data.val_x,
        data.val_y,
        seed=seed,
        sampler=sampler,
        samples_per_epoch=n_samples,
        progress=progress,
        desc=f"U-Net r={ratio:g} seed {seed}",
        **train_kwargs,
    )
    pred = predict(model, data.test_x, batch_size=train_kwargs.get("batch_size", 8))
    scores = segmentation_metrics(
        pred, crop_masks(data.test_y, pred.shape[1:]), min_area=min_area_px
    )
    return {
        "synthetic_ratio": ratio,
        "seed": seed,
        "n_real": int(k_real),
        "n_synthetic": int(n_synth),
        "samples_per_epoch": int(n_samples),
        "n_test": len(data.test_x),
        "best_epoch": hist.best_epoch,
        "best_val_dice": hist.best_val_dice,
        **scores,
        "seconds": hist.seconds,
    }


def eval_seg(
    work: Path,
    *,
    synthetic_ratios: Sequence[float] = (0.5,),
    real_fraction: float = 1.0,
    seeds: int = 3,
    seed: int = 0,
    epochs: int = 50,
    samples_per_epoch: int | None = None,
    batch_size: int = 8,
    lr: float = 1e-4,
    width: float = 1.0,
    batch_norm: bool = False,
    padding: str = "same",
    augment: bool = True,
    min_object_area: float = 1000.0,
    device: str = "auto",
    force: bool = False,
    progress: bool = True,
) -> EvalSegResult:
    """Train and score U-Nets for each synthetic ratio over ``seeds`` seeds (seed, seed+1, ...).

    Returns the summary (mean and std over seeds of pooled Dice, mean per-patch Dice, IoU and
    object precision/recall/F1 on the real test split) and writes results.csv, results.md and
    dice.png to ``<work>/eval-seg/``. Configurations already computed come from the cache.

    Dice and IoU score the raw thresholded output. The object scores count connected components
    (8-connected, holes filled) of at least ``min_object_area`` µm², converted to pixels with
    each test patch's pixel size, in both the prediction (fragments are not false positives)
    and the ground truth (slivers cut by the patch border are not misses); 0 counts every
    component of the raw output. It is part of each configuration's cache key.
    """
    from wsi_aug.device import resolve_device
    from wsi_aug.seg.unet import output_size

    wd = WorkDir(Path(work))
    ratios = parse_ratios(list(synthetic_ratios))
    if not 0.0 < real_fraction <= 1.0:
        raise WsiAugError(f"--real-fraction {real_fraction}: must be in (0, 1]")
    if seeds < 1:
        raise WsiAugError(f"--seeds {seeds}: must be at least 1")
    if padding not in ("same", "valid"):
        raise WsiAugError(f"--padding {padding}: use same or valid")
    if not (math.isfinite(min_object_area) and min_object_area >= 0):
        raise WsiAugError(
            f"--min-object-area {min_object_area}: must be an area >= 0 in µm² "
            "(e.g. 1000; 0 disables the clean-up)"
        )
    splits, size, mpp = _split_indices(wd)
    min_area_px = min_area_pixels(min_object_area, mpp[splits["test"]])
    if output_size(size, 5, padding) <= 0:
        raise WsiAugError(
            f"{wd.patches}: {size}-px patches are too small for the valid-padding U-Net "
            "(it needs at least 188 px); use --padding same"
        )
    if len(splits["train"]) == 0 and min(ratios) < 1.0:
        raise WsiAugError(
            f"{wd.patches}: no patches in the train split; re-run `wsi-aug extract` with --split "
            "so that some slides go to the training set"
        )
    inputs_real = {"patches": store.stage_fingerprint(wd.patches)}
    inputs_synth: dict[str, str] = {}
    if max(ratios) > 0:
        store.open_stage(wd.synthetic, stage="synthetic", made_by=SYNTH_MADE_BY)
        inputs_synth = {"synthetic": store.stage_fingerprint(wd.synthetic)}
    dev = resolve_device(device)
    seed_list = list(range(seed, seed + seeds))
    shared = {
        "real_fraction": float(real_fraction),
        "seeds": seed_list,
        "epochs": int(epochs),
        "samples_per_epoch": samples_per_epoch,
        "batch_size": int(batch_size),
        "lr": float(lr),
        "width": float(width),
        "depth": 5,
        "batch_norm": bool(batch_norm),
        "padding": padding,
        "augment": bool(augment),
        "min_object_area": float(min_object_area),
    }
    train_kwargs = {
        "epochs": int(epochs),
        "batch_size": int(batch_size),
        "lr": float(lr),
        "width": float(width),
        "batch_norm": bool(batch_norm),
        "padding": padding,
        "augment": bool(augment),
        "device": dev,
    }
    data: _Data | None = None
    rows: list[dict[str, Any]] = []
    per_seed_all: list[dict[str, Any]] = []
    results: list[StageResult] = []
    for ratio in ratios:
        params = config_params(ratio, **shared)
        inputs = {**inputs_real, **(inputs_synth if ratio > 0 else {})}
        path = config_path(wd, params)
        res = store.cached_result(path, stage=STAGE, params=params, inputs=inputs, force=force)
        if res is None:
            if data is None:
                data = _load(wd, splits, synthetic=bool(inputs_synth))
            with store.build(path, stage=STAGE, params=params, inputs=inputs, resumable=True) as g:
                done = json.loads(g.attrs.get("seed_rows", "{}"))  # resumes an interrupted run
                for s in seed_list:
                    if str(s) in done:
                        continue
                    done[str(s)] = _run_seed(
                        data,
                        ratio=ratio,
                        seed=s,
                        real_fraction=real_fraction,
                        samples_per_epoch=samples_per_epoch,
                        min_area_px=min_area_px,
                        train_kwargs=train_kwargs,
                        progress=progress,
                    )
                    g.attrs["seed_rows"] = json.dumps(done)
                per_seed = [done[str(s)] for s in seed_list]
                store.write_table(g, "per_seed", {k: [r[k] for r in per_seed] for k in per_seed[0]})
                summary = _summary_row(ratio, per_seed)
                g.attrs["summary"] = json.dumps(summary)  # JSON text: NaN-safe
                g.attrs["device"] = str(dev)
                _write_outputs(
                    Path(g.store.root), [summary], f"eval-seg, synthetic ratio {ratio:g}"
                )
                write_csv(per_seed, Path(g.store.root) / "per_seed.csv")
            res = StageResult(path, False, store.read_meta(path) or {})
        table = store.read_table(
            store.open_stage(path, stage=STAGE, made_by="wsi-aug eval-seg"), "per_seed"
        )
        per_seed = [
            {k: (v[i].item() if hasattr(v[i], "item") else v[i]) for k, v in table.items()}
            for i in range(len(next(iter(table.values()))))
        ]
        results.append(res)
        per_seed_all += per_seed
        rows.append(_summary_row(ratio, per_seed))
    title = (
        f"eval-seg: {len(seed_list)} seed(s), {epochs} epochs, width {width:g}, "
        f"real fraction {real_fraction:g}, objects >= {min_object_area:g} µm²"
    )
    files = _write_outputs(wd.eval_seg, rows, title)
    write_csv(per_seed_all, wd.eval_seg / "results_per_seed.csv")
    return EvalSegResult(
        rows=rows,
        per_seed=per_seed_all,
        table=summary_markdown(rows),
        csv=files["csv"],
        markdown=files["markdown"],
        plot=files["plot"],
        stores=results,
    )
