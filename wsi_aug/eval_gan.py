"""eval-gan: how good is the synthetic set, measured against the real patches without downloads.

* diversity: mean pairwise L1 and 1 - MS-SSIM between synthetic images of different conditions
  (source patches), divided by the same for real patches; mode collapse drives it far below 1;
* structure fidelity: IoU between the structure map a synthetic image was made from and the map
  recomputed from it with the thresholding recorded in structure.zarr;
* mask consistency: Dice of a U-Net trained on real patches, applied to the synthetic images,
  against their masks (and, for reference, its Dice on the real test split);
* colour fidelity: Wasserstein distance between real and synthetic per-channel distributions in
  RGB and in the haematoxylin and eosin channels (`skimage.color.rgb2hed`);
* a Fréchet distance between the real-trained U-Net's bottleneck features (global average pooled)
  of real and synthetic images, beside the same between two halves of the real set as a floor;
* realism (`wsi_aug.realism`): a classifier two-sample test (held-out accuracy of a small CNN told
  to tell real from synthetic, 0.5 = indistinguishable, with a 95 % interval) and the radially
  averaged power spectrum (distance of the log spectra, high-frequency share, peak).

`measure` computes them all for one or several synthetic sets against the same real patches, and
every image-set measure once more between two halves of the real set: the floor row
(`FLOOR`). The eval-gan stage (`wsi_aug.stages.eval_gan`) caches and writes them.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wsi_aug.errors import WsiAugError
from wsi_aug.eval_seg import markdown_table, write_csv
from wsi_aug.metrics import (
    colour_distance,
    dice,
    diversity,
    frechet_distance,
    iou_per_patch,
    mean_dice,
)
from wsi_aug.realism import (
    Spectrum,
    c2st,
    radial_spectrum,
    real_halves,
    save_spectrum_plot,
    spectrum_metrics,
)

DESCRIPTIONS: dict[str, str] = {
    "n_real": "real patches compared (the synthetic set's source patches where known)",
    "n_synthetic": "synthetic patches compared",
    "l1_real": "mean pairwise L1 between real patches ([0, 1] units)",
    "l1_synthetic": "mean pairwise L1 between synthetic patches of different conditions",
    "l1_ratio": "synthetic / real pairwise L1: about 1 is good, far below 1 is mode collapse",
    "ms_ssim_div_real": "mean pairwise 1 - MS-SSIM between real patches",
    "ms_ssim_div_synthetic": "mean pairwise 1 - MS-SSIM between synthetic patches",
    "ms_ssim_div_ratio": "synthetic / real 1 - MS-SSIM: about 1 is good, far below 1 is collapse",
    "structure_iou": "IoU of input structure map and the one recomputed from the image (1 best)",
    "mask_dice": "real-trained U-Net on synthetic images vs their masks, pooled Dice (1 best)",
    "mask_mean_dice": "the same, mean per-patch Dice",
    "unet_real_test_dice": "reference: the same U-Net's pooled Dice on the real test split",
    "rgb_emd": "colour distance, mean RGB channel Wasserstein distance (0-255 units; 0 best)",
    "he_emd": "stain distance, mean H and E channel Wasserstein distance (OD x100; 0 best)",
    "frechet_unet": "Fréchet distance of U-Net bottleneck features, real vs synthetic (0 best)",
    "frechet_unet_real_halves": "reference: the same between two random halves of the real set",
    "c2st_accuracy": "classifier two-sample test: held-out accuracy of a CNN telling real from "
    "synthetic (0.5 = indistinguishable, 1 = always told apart)",
    "c2st_low": "lower end of the 95 % (Wilson) interval of that accuracy",
    "c2st_high": "upper end of that interval",
    "c2st_n_test": "held-out patches per set the accuracy is measured on",
    "spectrum_distance": "mean |difference| of log10 radially averaged power spectra above DC "
    "(decades; 0 best)",
    "spectrum_hf_share": "share of the grey image power above 0.25 cycles/px",
    "spectrum_hf_ratio": "share of that power above 0.25 cycles/px, synthetic / real: about 1 "
    "is good, well above 1 is grid texture",
    "spectrum_peak_freq": "frequency (cycles/px) where the log spectrum most exceeds the real one "
    "(0.5, 0.25: checkerboard or grid artefacts)",
    "spectrum_peak_excess": "that excess, log10 units (0 = nowhere above the real spectrum)",
}

FLOOR = "real halves"  # the floor row's label: every measure between two halves of the real set
FLOOR_NOTE = (
    "floor: each measure between two random halves of the real set (half as many images a side, "
    "so the C2ST interval is wider); the mask Dice is the U-Net's on the real test split"
)
# The comparison table's columns (one row per set plus the floor row).
SUMMARY = (
    "c2st_accuracy",
    "spectrum_distance",
    "spectrum_hf_ratio",
    "spectrum_peak_freq",
    "frechet_unet",
    "l1_ratio",
    "ms_ssim_div_ratio",
    "structure_iou",
    "mask_dice",
    "rgb_emd",
    "he_emd",
)


# --- image-set comparison -----------------------------------------------------------------------


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b > 0 else float("nan")


def image_set_metrics(
    real: np.ndarray,
    other: np.ndarray,
    *,
    n_pairs: int = 200,
    seed: int = 0,
    real_groups: np.ndarray | None = None,
    other_groups: np.ndarray | None = None,
    encoder: Any | None = None,
    batch_size: int = 8,
) -> dict[str, float]:
    """Diversity, colour and (given a U-Net ``encoder``) Fréchet measures of ``other`` vs ``real``.

    Both are uint8 (N, H, W, 3) stacks. Pairs for diversity join images of different groups
    (e.g. source patches) where groups are given. Real against real gives ratios near 1; a
    generator that outputs one image gives ratios near 0.
    """
    rng = np.random.default_rng(seed)
    d_real = diversity(real, n_pairs=n_pairs, rng=rng, groups=real_groups)
    d_other = diversity(other, n_pairs=n_pairs, rng=rng, groups=other_groups)
    out: dict[str, float] = {
        "n_real": len(real),
        "n_synthetic": len(other),
        "l1_real": d_real["l1"],
        "l1_synthetic": d_other["l1"],
        "l1_ratio": _ratio(d_other["l1"], d_real["l1"]),
        "ms_ssim_div_real": d_real["ms_ssim_div"],
        "ms_ssim_div_synthetic": d_other["ms_ssim_div"],
        "ms_ssim_div_ratio": _ratio(d_other["ms_ssim_div"], d_real["ms_ssim_div"]),
    }
    colour = colour_distance(real, other, rng=rng)
    out["rgb_emd"], out["he_emd"] = colour["rgb_emd"], colour["he_emd"]
    if encoder is not None:
        from wsi_aug.seg.train import encoder_features

        fr = encoder_features(encoder, real, batch_size)
        fo = encoder_features(encoder, other, batch_size)
        out["frechet_unet"] = frechet_distance(fr, fo)
        half = rng.permutation(len(fr))
        k = len(fr) // 2
        out["frechet_unet_real_halves"] = frechet_distance(fr[half[:k]], fr[half[k:]])
    return out


# --- structure fidelity -------------------------------------------------------------------------


def otsu_structure_map(image: np.ndarray) -> np.ndarray:
    """Fallback structure map: pixels darker than the Otsu threshold of the grey image."""
    from wsi_aug.imaging import is_flat, otsu_threshold

    grey = np.asarray(image, np.float32).mean(axis=-1)
    if is_flat(grey):
        return np.zeros(grey.shape, np.uint8)
    return (grey < otsu_threshold(grey)).astype(np.uint8)


def structure_function(
    params: Mapping[str, Any], probe: np.ndarray | None = None
) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    """The structure stage's thresholding with its recorded ``params``, and a name for it.

    Uses `wsi_aug.structure.structure_map`. FALLBACK: where that module is absent, or it rejects
    the recorded parameters on the ``probe`` image (e.g. a store made by test factories), an Otsu
    threshold on grey (`otsu_structure_map`) is used instead, with a warning, and the name
    returned says so; the name is written beside the structure IoU in the results.
    """
    try:
        from wsi_aug.structure import structure_map
    except ImportError:
        reason = "wsi_aug.structure.structure_map not available"
    else:

        def fn(image: np.ndarray) -> np.ndarray:
            return np.asarray(structure_map(image, **params), np.uint8)

        if probe is None:
            return fn, f"structure_map({params.get('method', '')})"
        try:
            fn(probe)
            return fn, f"structure_map({params.get('method', '')})"
        except (TypeError, ValueError, KeyError, WsiAugError) as exc:
            reason = f"structure_map rejected the recorded parameters ({exc})"
    warnings.warn(f"eval-gan structure fidelity: {reason}; using an Otsu fallback", stacklevel=2)
    return otsu_structure_map, f"otsu-fallback: {reason}"


def structure_iou(
    images: np.ndarray, maps: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]
) -> float:
    """Mean per-image IoU between the input structure ``maps`` and ``fn`` applied to ``images``."""
    if len(images) == 0:
        return float("nan")
    recomputed = np.stack([fn(im) for im in images])
    return float(iou_per_patch(recomputed, maps).mean())


# --- the stage ----------------------------------------------------------------------------------


def metrics_markdown(metrics: Mapping[str, float], notes: Mapping[str, str]) -> str:
    """One row per metric: name, value and what it means."""
    rows = [[k, v, notes.get(k) or DESCRIPTIONS.get(k, "")] for k, v in metrics.items()]
    return markdown_table(["metric", "value", "meaning"], rows)


def _c2st_cell(m: Mapping[str, float]) -> str:
    acc = m.get("c2st_accuracy", float("nan"))
    if not np.isfinite(acc):
        return "nan"
    low, high = m.get("c2st_low", float("nan")), m.get("c2st_high", float("nan"))
    return f"{acc:.3f} [{low:.3f}, {high:.3f}]"


def summary_markdown(sets: Mapping[str, Mapping[str, float]]) -> str:
    """The comparison table: one row per set (the floor row included), the `SUMMARY` columns."""
    header = ["set", "c2st_accuracy [95 % CI]", *SUMMARY[1:]]
    rows = [
        [label, _c2st_cell(m), *(float(m.get(k, float("nan"))) for k in SUMMARY[1:])]
        for label, m in sets.items()
    ]
    return markdown_table(header, rows)


def results_markdown(sets: Mapping[str, Mapping[str, float]], notes: Mapping[str, str]) -> str:
    """The comparison table, what its columns mean, then every set's full metric table."""
    legend = "\n".join(
        f"- `{k}`: {notes.get(k) or DESCRIPTIONS[k]}" for k in SUMMARY
    )
    parts = [summary_markdown(sets), legend + f"\n- `{FLOOR}`: {FLOOR_NOTE}\n"]
    for label, m in sets.items():
        parts.append(f"### {label}\n\n" + metrics_markdown(m, notes))
    return "\n".join(parts)


def _source_indices(src: np.ndarray | None, n_patches: int, n: int) -> np.ndarray:
    """The provenance's source patch indices, or -1 each where unknown or out of range."""
    if src is None or len(src) != n:
        return np.full(n, -1)
    try:
        s = np.asarray(src).astype(np.int64)
    except ValueError:
        return np.full(n, -1)
    s[(s < 0) | (s >= n_patches)] = -1
    return s


def _save_grid(
    path: Path,
    real: np.ndarray,
    src: np.ndarray,
    synth_x: np.ndarray,
    synth_s: np.ndarray,
    synth_y: np.ndarray,
    pred: np.ndarray,
    rows: np.ndarray,
    title: str = "eval-gan: real and synthetic patches",
) -> Path:
    from wsi_aug.figures import save_grid

    blank = np.zeros_like(synth_x[0])
    grid = [
        [
            real[src[i]] if src[i] >= 0 else blank,
            synth_s[i],
            synth_x[i],
            synth_y[i],
            pred[i],
        ]
        for i in rows
    ]
    return save_grid(
        grid,
        path,
        column_titles=["real source", "structure", "synthetic", "synthetic mask", "U-Net (real)"],
        title=title,
    )


@dataclass(frozen=True)
class SyntheticSet:
    """One synthetic set to measure: its label, images, masks, structure maps and, where they
    index the same real patches, the source patch of each image."""

    label: str
    images: np.ndarray
    masks: np.ndarray
    structure: np.ndarray
    source_index: np.ndarray | None = None


@dataclass
class Measured:
    """What `measure` found: per set (the floor row last) the metrics, notes, and the figures."""

    sets: dict[str, dict[str, float]]
    notes: dict[str, str]
    structure_method: str
    unet_best_epoch: int
    unet: Any  # the real-trained U-Net
    figures: dict[str, Callable[[Path], Path]]  # file name -> draws that PNG at a path

    @property
    def metrics(self) -> dict[str, float]:
        """The first set's metrics."""
        return next(iter(self.sets.values()))

    def save(self, folder: Path) -> None:
        """``unet.safetensors`` and the figures (``grid.png``, ``spectrum.png``) into `folder`."""
        from wsi_aug.seg.unet import save_unet

        save_unet(self.unet, folder / "unet.safetensors", {"trained_on": "real train split"})
        for name, draw in self.figures.items():
            draw(folder / name)


def _realism(
    real: np.ndarray,
    other: np.ndarray,
    real_spectrum: Spectrum,
    c2st_options: Mapping[str, Any],
    seed: int,
) -> tuple[dict[str, float], Spectrum]:
    """C2ST and spectrum measures of ``other`` against ``real`` (C2ST skipped at 0 epochs)."""
    out: dict[str, float] = {}
    if int(c2st_options.get("epochs", 1)) > 0:
        out.update(c2st(real, other, seed=seed, **c2st_options).as_dict())
    spec = radial_spectrum(other)
    out.update(spectrum_metrics(real_spectrum, spec))
    return out, spec


def measure(
    images: np.ndarray,
    masks: np.ndarray,
    splits: Mapping[str, np.ndarray],
    *,
    synthetic: Sequence[SyntheticSet],
    structure_params: Mapping[str, Any],
    n_pairs: int,
    seed: int,
    unet_epochs: int,
    unet_width: float,
    unet_samples_per_epoch: int | None,
    batch_size: int,
    max_images: int,
    grid_rows: int,
    device: Any,
    c2st_options: Mapping[str, Any] | None = None,
    progress: bool = True,
    where: str = "patches",
) -> Measured:
    """Every eval-gan measure of each synthetic set against the same real patches, and the floor.

    The real reference is the sets' source patches where known (else all patches);
    ``max_images`` caps the images (of each set) used for every measure; the real-trained U-Net
    (``unet_width`` x 64 base filters, ``unet_epochs``; a narrow one is a good enough instrument
    and keeps CPU runs short) is trained once and returned to be saved. ``c2st_options`` go to
    `wsi_aug.realism.c2st` (``epochs`` 0: no C2ST).
    """
    from wsi_aug.seg.train import crop_masks, predict, train_unet

    if not synthetic:
        raise WsiAugError("eval-gan: no synthetic set given; run `wsi-aug synthesize` first")
    labels = [s.label for s in synthetic]
    if len(set(labels)) != len(labels) or FLOOR in labels:
        raise WsiAugError(
            f"eval-gan: synthetic set labels {labels} repeat or use {FLOOR!r}; "
            "name each set as LABEL=PATH"
        )
    for s in synthetic:
        if len(s.images) == 0:
            raise WsiAugError(
                f"the synthetic set {s.label!r} holds no images; rerun `wsi-aug synthesize`"
            )
    train, val, test = (splits[s] for s in ("train", "val", "test"))
    if len(train) == 0:
        raise WsiAugError(
            f"{where}: no patches in the train split; re-run `wsi-aug extract` with "
            "--split so that some slides go to the training set"
        )
    c2o = dict(c2st_options or {})
    c2o.setdefault("device", device)
    srcs = [_source_indices(s.source_index, len(images), len(s.images)) for s in synthetic]
    rng = np.random.default_rng(seed)
    # The real reference set: the synthetic sets' source patches where known, else all.
    known = np.concatenate([x[x >= 0] for x in srcs])
    ref = np.unique(known) if len(known) >= 2 else np.arange(len(images))
    ref_idx = np.sort(rng.choice(ref, min(len(ref), max_images), replace=False))
    chosen = []
    for s, src in zip(synthetic, srcs):
        idx = np.sort(rng.choice(len(s.images), min(len(s.images), max_images), replace=False))
        chosen.append((s.images[idx], s.masks[idx], s.structure[idx], src[idx]))

    model, hist = train_unet(
        images[train],
        masks[train],
        images[val],
        masks[val],
        epochs=unet_epochs,
        batch_size=batch_size,
        width=unet_width,
        seed=seed,
        samples_per_epoch=unet_samples_per_epoch,
        device=device,
        progress=progress,
        desc="eval-gan U-Net (real)",
    )
    if len(test):
        tp = predict(model, images[test], batch_size=batch_size)
        test_dice = dice(tp, crop_masks(masks[test], tp.shape[1:]))
    else:
        test_dice = float("nan")
    real = images[ref_idx]
    real_spec = radial_spectrum(real)
    fn, method = structure_function(dict(structure_params), probe=images[0])
    order = list(DESCRIPTIONS)
    sets: dict[str, dict[str, float]] = {}
    spectra: dict[str, Spectrum] = {}
    figures: dict[str, Callable[[Path], Path]] = {}
    for k, (s, (sx, sy, ss, src)) in enumerate(zip(synthetic, chosen)):
        groups = np.where(src >= 0, src, -1 - np.arange(len(sx)))  # unknown: its own group
        metrics = image_set_metrics(
            real,
            sx,
            n_pairs=n_pairs,
            seed=seed,
            other_groups=groups,
            encoder=model,
            batch_size=batch_size,
        )
        metrics["structure_iou"] = structure_iou(sx, ss, fn)
        pred = predict(model, sx, batch_size=batch_size)
        target = crop_masks(sy, pred.shape[1:])
        metrics["mask_dice"] = dice(pred, target)
        metrics["mask_mean_dice"] = mean_dice(pred, target)
        metrics["unet_real_test_dice"] = test_dice
        more, spectra[s.label] = _realism(real, sx, real_spec, c2o, seed)
        metrics.update(more)
        sets[s.label] = {m: float(metrics[m]) for m in order if m in metrics}
        rows = np.sort(rng.choice(len(sx), min(grid_rows, len(sx)), replace=False))
        name = "grid.png" if k == 0 else f"grid-{_file_label(s.label)}.png"
        figures[name] = _grid_drawer(images, src, sx, ss, sy, pred, rows, s.label)

    # The floor: every image-set measure between two halves of the real reference.
    ha, hb = real_halves(len(real), np.random.default_rng(seed))
    floor = image_set_metrics(real[ha], real[hb], n_pairs=n_pairs, seed=seed)
    floor["frechet_unet"] = sets[labels[0]].get("frechet_unet_real_halves", float("nan"))
    floor["mask_dice"] = test_dice
    spec_a = radial_spectrum(real[ha])
    more, spec_b = _realism(real[ha], real[hb], spec_a, c2o, seed)
    floor.update(more)
    sets[FLOOR] = {m: float(floor[m]) for m in order if m in floor}

    def spectrum_png(path: Path) -> Path:
        return save_spectrum_plot(path, real_spec, spectra, (spec_a, spec_b))

    figures["spectrum.png"] = spectrum_png
    notes = {"structure_iou": f"{DESCRIPTIONS['structure_iou']}; thresholding: {method}"}
    return Measured(sets, notes, method, int(hist.best_epoch), model, figures)


def _file_label(label: str) -> str:
    """A label as a safe file-name part."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label) or "set"


def _grid_drawer(
    images: np.ndarray,
    src: np.ndarray,
    sx: np.ndarray,
    ss: np.ndarray,
    sy: np.ndarray,
    pred: np.ndarray,
    rows: np.ndarray,
    label: str,
) -> Callable[[Path], Path]:
    def draw(path: Path) -> Path:
        title = f"eval-gan: real and synthetic patches ({label})"
        return _save_grid(path, images, src, sx, ss, sy, pred, rows, title)

    return draw


def result_rows(
    sets: Mapping[str, Mapping[str, float]], notes: Mapping[str, str]
) -> list[dict[str, Any]]:
    """The long table: one row per set and metric (set, metric, value, meaning)."""
    return [
        {"set": label, "metric": k, "value": v, "meaning": notes.get(k) or DESCRIPTIONS.get(k, "")}
        for label, m in sets.items()
        for k, v in m.items()
    ]


def write_tables(
    folder: Path, sets: Mapping[str, Mapping[str, float]], notes: Mapping[str, str]
) -> dict[str, Path]:
    """``results.csv`` (long), ``results.md`` (comparison table and per set) and ``results.json``
    (set -> metric -> value) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    csv_path = write_csv(result_rows(sets, notes), folder / "results.csv")
    md = folder / "results.md"
    md.write_text("eval-gan: synthetic vs real patches\n\n" + results_markdown(sets, notes))
    (folder / "results.json").write_text(
        json.dumps({k: dict(v) for k, v in sets.items()}, indent=1)
    )
    return {"csv": csv_path, "markdown": md}
