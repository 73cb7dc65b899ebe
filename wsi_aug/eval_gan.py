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
  of real and synthetic images, beside the same between two halves of the real set as a floor.

`measure` computes them all; the eval-gan stage (`wsi_aug.stages.eval_gan`) caches and writes
them.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Mapping
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
}


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
        title="eval-gan: real and synthetic patches",
    )


@dataclass
class Measured:
    """What `measure` found: the metrics, notes, and what to save beside them."""

    metrics: dict[str, float]
    notes: dict[str, str]
    structure_method: str
    unet_best_epoch: int
    unet: Any  # the real-trained U-Net
    grid: Callable[[Path], Path]  # draws the grid PNG at a path

    def save(self, folder: Path) -> None:
        """``unet.safetensors`` and ``grid.png`` into `folder`."""
        from wsi_aug.seg.unet import save_unet

        save_unet(self.unet, folder / "unet.safetensors", {"trained_on": "real train split"})
        self.grid(folder / "grid.png")


def measure(
    images: np.ndarray,
    masks: np.ndarray,
    splits: Mapping[str, np.ndarray],
    *,
    synthetic: tuple[np.ndarray, np.ndarray, np.ndarray],
    source_index: np.ndarray | None,
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
    progress: bool = True,
    where: str = "patches",
) -> Measured:
    """Every eval-gan measure of a synthetic set (images, masks, structure) against the real one.

    ``max_images`` caps the images (of each set) used for every measure; the real-trained U-Net
    (``unet_width`` x 64 base filters, ``unet_epochs``; a narrow one is a good enough instrument
    and keeps CPU runs short) is returned to be saved.
    """
    from wsi_aug.seg.train import crop_masks, predict, train_unet

    sx, sy, ss = synthetic
    if len(sx) == 0:
        raise WsiAugError("the synthetic store holds no images; rerun `wsi-aug synthesize`")
    train, val, test = (splits[s] for s in ("train", "val", "test"))
    if len(train) == 0:
        raise WsiAugError(
            f"{where}: no patches in the train split; re-run `wsi-aug extract` with "
            "--split so that some slides go to the training set"
        )
    src = _source_indices(source_index, len(images), len(sx))
    rng = np.random.default_rng(seed)
    # The real reference set: the synthetic set's source patches where known, else all.
    ref = np.unique(src[src >= 0]) if (src >= 0).sum() >= 2 else np.arange(len(images))
    ref_idx = np.sort(rng.choice(ref, min(len(ref), max_images), replace=False))
    syn_idx = np.sort(rng.choice(len(sx), min(len(sx), max_images), replace=False))
    sx, sy, ss, src = sx[syn_idx], sy[syn_idx], ss[syn_idx], src[syn_idx]
    groups = np.where(src >= 0, src, -1 - np.arange(len(sx)))  # unknown: its own group

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
    metrics = image_set_metrics(
        images[ref_idx],
        sx,
        n_pairs=n_pairs,
        seed=seed,
        other_groups=groups,
        encoder=model,
        batch_size=batch_size,
    )
    fn, method = structure_function(dict(structure_params), probe=images[0])
    metrics["structure_iou"] = structure_iou(sx, ss, fn)
    pred = predict(model, sx, batch_size=batch_size)
    target = crop_masks(sy, pred.shape[1:])
    metrics["mask_dice"] = dice(pred, target)
    metrics["mask_mean_dice"] = mean_dice(pred, target)
    if len(test):
        tp = predict(model, images[test], batch_size=batch_size)
        metrics["unet_real_test_dice"] = dice(tp, crop_masks(masks[test], tp.shape[1:]))
    else:
        metrics["unet_real_test_dice"] = float("nan")
    order = [k for k in DESCRIPTIONS if k in metrics]
    metrics = {k: float(metrics[k]) for k in order}
    notes = {"structure_iou": f"{DESCRIPTIONS['structure_iou']}; thresholding: {method}"}
    rows = np.sort(rng.choice(len(sx), min(grid_rows, len(sx)), replace=False))

    def grid(path: Path) -> Path:
        return _save_grid(path, images, src, sx, ss, sy, pred, rows)

    return Measured(metrics, notes, method, int(hist.best_epoch), model, grid)


def write_tables(
    folder: Path, metrics: Mapping[str, float], notes: Mapping[str, str]
) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {"metric": k, "value": v, "meaning": notes.get(k) or DESCRIPTIONS.get(k, "")}
        for k, v in metrics.items()
    ]
    csv_path = write_csv(rows, folder / "results.csv")
    md = folder / "results.md"
    md.write_text("eval-gan: synthetic vs real patches\n\n" + metrics_markdown(metrics, notes))
    (folder / "results.json").write_text(json.dumps(dict(metrics), indent=1))
    return {"csv": csv_path, "markdown": md}
