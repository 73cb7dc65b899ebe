"""eval-seg: does synthetic data help a segmentation U-Net?

For each synthetic ratio r, U-Nets are trained (one per seed) on samples drawn from the real
training split (positive and negative patches) and the synthetic set, a fraction r of them
synthetic (r = 0: real only; r = 1: synthetic only), selected on the real validation split and
scored on the real test split only. The stage (`wsi_aug.stages.eval_seg`) caches each ratio as
one configuration and writes the sweep's summary.

Pixel scores (Dice, IoU) are taken on the raw thresholded U-Net output; object scores count only
connected components of at least ``min_object_area`` µm² after hole filling, in the prediction
and in the ground truth (see `wsi_aug.metrics.object_scores`).
"""

from __future__ import annotations

import csv
import math
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch is imported where a U-Net is trained
    from wsi_aug.seg.train import TrainHistory
    from wsi_aug.seg.unet import UNet

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


# --- results files ------------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    if isinstance(v, float | np.floating):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def write_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Rows as a CSV file: the columns of all rows in first-seen order, blank where missing
    (per-seed rows of configurations cached by older versions lack newer columns)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=names, restval="")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: _fmt(v) if isinstance(v, float) else v for k, v in r.items()})
    return path


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def summary_row(ratio: float, per_seed: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
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


def _mean_std(mean: float, std: float, seeds: int) -> str:
    """``0.512 ± 0.013`` over several seeds; just ``0.512`` for one (no spread to show)."""
    return f"{mean:.3f} ± {std:.3f}" if seeds > 1 else f"{mean:.3f}"


def summary_markdown(
    rows: Sequence[Mapping[str, Any]], settings: Sequence[str] = ()
) -> str:
    """The results table: metric mean ± std over seeds (the mean alone for one seed).

    `settings` are extra leading columns (keys of the rows), for a table of configurations that
    differ in more than the ratio.
    """
    header = [
        *settings,
        "synthetic ratio",
        "real",
        "synthetic",
        "seeds",
        *(METRIC_TITLES[m] for m in METRICS),
    ]
    body = [
        [
            *(_fmt(r[k]) for k in settings),
            f"{r['synthetic_ratio']:g}",
            r["n_real"],
            r["n_synthetic"],
            r["seeds"],
            *(_mean_std(r[m + "_mean"], r[m + "_std"], r["seeds"]) for m in METRICS),
        ]
        for r in rows
    ]
    return markdown_table(header, body)


def all_configurations(
    entries: Sequence[tuple[Mapping[str, Any], Sequence[Mapping[str, Any]]]],
) -> tuple[list[dict[str, Any]], list[str]]:
    """Summary rows of several configurations, each with the settings that differ among them.

    `entries` are (configuration parameters, per-seed rows). Returns the rows (sorted by those
    settings, then the ratio) and the names of the differing settings (the table's first columns).
    """
    keys = sorted({k for params, _ in entries for k in params} - {"synthetic_ratio"})

    def value(params: Mapping[str, Any], k: str) -> Any:
        if k == "augment":  # the old bool keys: True colour, False none
            v = params.get(k, True)
            return ("colour" if v else "none") if isinstance(v, bool) else v
        if k == "stain_normalize":  # absent from the key when off
            return params.get(k, "none")
        v = params.get(k)
        if k == "stain_sigma" and value(params, "augment") != "stain":
            return "-"
        return ",".join(map(str, v)) if isinstance(v, list) else v

    # Augmentation and normalisation always show: each ratio compares with the real-only row
    # of the same two settings.
    always = ["augment", "stain_normalize"]
    keys = [k for k in keys if k not in always]
    varying = always + [k for k in keys if len({repr(value(p, k)) for p, _ in entries}) > 1]
    rows = []
    for params, per_seed in entries:
        row = {k: value(params, k) for k in varying}
        row.update(summary_row(float(params["synthetic_ratio"]), per_seed))
        rows.append(row)
    rows.sort(key=lambda r: (*(repr(r[k]) for k in varying), r["synthetic_ratio"]))
    return rows, varying


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


def write_outputs(folder: Path, rows: Sequence[Mapping[str, Any]], title: str) -> dict[str, Path]:
    """results.csv, results.md and dice.png for summary rows, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    csv_path = write_csv(rows, folder / "results.csv")
    md_path = folder / "results.md"
    md_path.write_text((f"{title}\n\n" if title else "") + summary_markdown(rows))
    png = plot_metrics(rows, folder / "dice.png", title)
    return {"csv": csv_path, "markdown": md_path, "plot": png}


# --- data ---------------------------------------------------------------------------------------


@dataclass
class SegData:
    """The real patches by split and the synthetic set (loaded once per eval-seg call)."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    synth_x: np.ndarray | None
    synth_y: np.ndarray | None
    stain_normalize: str = "none"
    stain_reference: int | None = None  # index into train_x (synth_x when no train patches)
    stain_fallbacks: dict[str, int] = field(default_factory=dict)  # patches left as they were

    @classmethod
    def load(
        cls,
        patches: Any,
        splits: Mapping[str, np.ndarray],
        synthetic: Any = None,
        stain_normalize: str = "none",
    ) -> SegData:
        """From a patch store (with row indices per split) and an optional synthetic store;
        with `stain_normalize` (macenko, reinhard) every patch normalised, see `normalized`."""
        images, masks = patches.read_all()
        sx = sy = None
        if synthetic is not None:
            sx, sy, _ = synthetic.read_all()
        tr, va, te = splits["train"], splits["val"], splits["test"]
        data = cls(images[tr], masks[tr], images[va], masks[va], images[te], masks[te], sx, sy)
        return data.normalized(stain_normalize) if stain_normalize != "none" else data

    def normalized(self, method: str) -> SegData:
        """A copy with every image stain-normalised to one reference training patch.

        The reference is fitted on training data only: the train patch whose mean colour is
        closest to the train split's median (`wsi_aug.seg.stain.reference_order`; the synthetic
        set when the train split is empty). Failures per set are in ``stain_fallbacks``.
        """
        from wsi_aug.seg.stain import StainNormalizer

        ref_set = self.train_x if len(self.train_x) or self.synth_x is None else self.synth_x
        norm = StainNormalizer(method, ref_set)  # type: ignore[arg-type]
        fallbacks: dict[str, int] = {}
        sets = {"train": self.train_x, "val": self.val_x, "test": self.test_x}
        if self.synth_x is not None:
            sets["synthetic"] = self.synth_x
        out: dict[str, np.ndarray] = {}
        for name, x in sets.items():
            out[name], fallbacks[name] = norm.normalize_stack(x)
        return SegData(
            out["train"], self.train_y, out["val"], self.val_y, out["test"], self.test_y,
            out.get("synthetic"), self.synth_y,
            stain_normalize=method, stain_reference=norm.reference, stain_fallbacks=fallbacks,
        )


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


# --- one U-Net ---------------------------------------------------------------------------------


def run_seed(
    data: SegData,
    *,
    ratio: float,
    seed: int,
    real_fraction: float,
    samples_per_epoch: int | None,
    min_area_px: float | np.ndarray,
    train_kwargs: Mapping[str, Any],
    progress: bool,
    keep: Callable[[UNet, TrainHistory, dict[str, int]], None] | None = None,
) -> dict[str, Any]:
    """Train one U-Net for (ratio, seed) and score it on the real test split.

    ``min_area_px``: the object scores' minimum component area in pixels, a number or one per
    test patch (see `wsi_aug.metrics.object_scores`). ``keep`` is given the trained model, its
    history and counts (eval-seg --keep-models saves it).
    """
    from wsi_aug.metrics import segmentation_metrics
    from wsi_aug.seg.train import crop_masks, predict

    model, hist, counts = train_seed(
        data,
        ratio=ratio,
        seed=seed,
        real_fraction=real_fraction,
        samples_per_epoch=samples_per_epoch,
        train_kwargs=train_kwargs,
        progress=progress,
    )
    if keep is not None:
        keep(model, hist, counts)
    pred = predict(model, data.test_x, batch_size=train_kwargs.get("batch_size", 8))
    scores = segmentation_metrics(
        pred, crop_masks(data.test_y, pred.shape[1:]), min_area=min_area_px
    )
    return {
        "synthetic_ratio": ratio,
        "seed": seed,
        "n_real": counts["n_real"],
        "n_synthetic": counts["n_synthetic"],
        "samples_per_epoch": counts["samples_per_epoch"],
        "n_test": len(data.test_x),
        "best_epoch": hist.best_epoch,
        "best_val_dice": hist.best_val_dice,
        **scores,
        "seconds": hist.seconds,
    }


def train_seed(
    data: SegData,
    *,
    ratio: float,
    seed: int,
    real_fraction: float,
    samples_per_epoch: int | None,
    train_kwargs: Mapping[str, Any],
    progress: bool,
) -> tuple[UNet, TrainHistory, dict[str, int]]:
    """Draw the training data of (ratio, seed) and train one U-Net, selected on val Dice.

    eval-seg (`run_seed`) and train-seg share it, so a kept model is the one eval-seg scored.
    Returns the model, its history and the counts (n_real, n_synthetic, samples_per_epoch,
    patch_size: the side the training patches were centre-cropped to).
    """
    from wsi_aug.seg.train import train_unet

    n_train = len(data.train_x)
    k_real = 0
    real_idx = np.zeros(0, np.int64)
    if ratio < 1.0 and n_train:
        k_real = max(1, round(real_fraction * n_train))
        real_idx = np.sort(np.random.default_rng([seed, 0]).choice(n_train, k_real, replace=False))
    sx, sy = data.synth_x, data.synth_y
    use_synth = ratio > 0 and sx is not None and sy is not None
    n_synth = len(sx) if use_synth and sx is not None else 0
    parts_x, parts_y = [], []
    size = min([data.train_x.shape[1]] + ([sx.shape[1]] if n_synth and sx is not None else []))
    if k_real:
        parts_x.append(_center_crop_stack(data.train_x[real_idx], size))
        parts_y.append(_center_crop_stack(data.train_y[real_idx], size))
    if n_synth and sx is not None and sy is not None:
        parts_x.append(_center_crop_stack(sx, size))
        parts_y.append(_center_crop_stack(sy, size))
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
    counts = {
        "n_real": int(k_real),
        "n_synthetic": int(n_synth),
        "samples_per_epoch": int(n_samples),
        "patch_size": int(size),
    }
    return model, hist, counts
