"""Segmentation and image-set metrics (numpy/scipy/skimage; MS-SSIM from pytorch_msssim).

Segmentation (eval-seg): Dice pooled over a set, mean per-patch Dice, IoU, and object-level
precision/recall/F1 with connected components matched one-to-one at IoU >= 0.5 (optionally after
`clean_mask`: holes filled, components below a minimum area dropped).
Image sets (eval-gan): diversity (mean pairwise L1 and 1 - MS-SSIM), colour-distribution distance
(per-channel Wasserstein distance in RGB and in the H and E stains), IoU of structure maps and the
Fréchet distance between feature sets.

Conventions: a mask is any array whose non-zero pixels are foreground; where a ratio is 0/0
(nothing predicted and nothing to find) it counts as 1, since nothing was got wrong.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import linalg, ndimage
from scipy.optimize import linear_sum_assignment

# --- segmentation -------------------------------------------------------------------------------



Z95 = 1.959963984540054  # the two-sided 95 % normal quantile


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval (95 % by default) of ``k`` successes in ``n``; NaN for n = 0.

    Used for every accuracy the project reports with an interval (the C2ST of eval-gan, the
    perception test), so that both read alike.
    """
    if n <= 0:
        return float("nan"), float("nan")
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)

def _binary_pair(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, t = np.asarray(pred) != 0, np.asarray(target) != 0
    if p.shape != t.shape:
        raise ValueError(f"prediction {p.shape} and target {t.shape} differ in shape")
    return p, t


def _ratio(num: float, den: float) -> float:
    return 1.0 if den == 0 else float(num) / float(den)


def dice(pred: np.ndarray, target: np.ndarray) -> float:
    """Dice pooled over all pixels of the set: 2|P∩T| / (|P| + |T|); 1 when both are empty."""
    p, t = _binary_pair(pred, target)
    return _ratio(2 * int(np.count_nonzero(p & t)), int(np.count_nonzero(p) + np.count_nonzero(t)))


def iou(pred: np.ndarray, target: np.ndarray) -> float:
    """Intersection over union pooled over all pixels of the set; 1 when both are empty."""
    p, t = _binary_pair(pred, target)
    return _ratio(int(np.count_nonzero(p & t)), int(np.count_nonzero(p | t)))


def dice_per_patch(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Dice of each patch of (N, H, W) stacks; a patch where both are empty scores 1."""
    p, t = _binary_pair(pred, target)
    p, t = p.reshape(len(p), -1), t.reshape(len(t), -1)
    inter = np.count_nonzero(p & t, axis=1)
    den = np.count_nonzero(p, axis=1) + np.count_nonzero(t, axis=1)
    out = np.ones(len(p))
    nz = den > 0
    out[nz] = 2 * inter[nz] / den[nz]
    return out


def iou_per_patch(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """IoU of each patch of (N, H, W) stacks; a patch where both are empty scores 1."""
    p, t = _binary_pair(pred, target)
    p, t = p.reshape(len(p), -1), t.reshape(len(t), -1)
    inter = np.count_nonzero(p & t, axis=1)
    union = np.count_nonzero(p | t, axis=1)
    out = np.ones(len(p))
    nz = union > 0
    out[nz] = inter[nz] / union[nz]
    return out


def mean_dice(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean over patches of the per-patch Dice (both empty = 1)."""
    return float(dice_per_patch(pred, target).mean())


@dataclass(frozen=True)
class ObjectScores:
    """Object-level detection counts and scores over a set of patches."""

    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall, i.e. 2TP / (2TP + FP + FN); 1 when all are 0."""
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "precision": self.precision, "recall": self.recall, "f1": self.f1}


_EIGHT = np.ones((3, 3), bool)


def match_objects(
    pred: np.ndarray, target: np.ndarray, iou_threshold: float = 0.5
) -> tuple[int, int, int]:
    """(TP, FP, FN) of one (H, W) patch: 8-connected components matched one-to-one.

    A pair matches when its IoU is at least ``iou_threshold``; among candidate pairs the
    assignment maximising total IoU is taken (Hungarian), so no object is counted twice.
    """
    p, t = _binary_pair(pred, target)
    lp, n_p = ndimage.label(p, structure=_EIGHT)
    lt, n_t = ndimage.label(t, structure=_EIGHT)
    if n_p == 0 or n_t == 0:
        return 0, n_p, n_t
    # Overlap counts of every (pred, target) component pair in one bincount.
    both = (lp > 0) & (lt > 0)
    inter = np.bincount((lp[both] - 1) * n_t + (lt[both] - 1), minlength=n_p * n_t).reshape(
        n_p, n_t
    )
    area_p = np.bincount(lp.ravel(), minlength=n_p + 1)[1:]
    area_t = np.bincount(lt.ravel(), minlength=n_t + 1)[1:]
    ious = inter / (area_p[:, None] + area_t[None, :] - inter)
    ious[ious < iou_threshold] = 0.0
    rows, cols = linear_sum_assignment(-ious)
    tp = int(np.count_nonzero(ious[rows, cols] >= iou_threshold))
    return tp, n_p - tp, n_t - tp


def _patch_areas(min_area: float | Sequence[float] | np.ndarray, n: int) -> np.ndarray:
    """``min_area`` as one float per patch of an n-patch stack; each must be finite and >= 0."""
    a = np.asarray(min_area, np.float64)
    if a.ndim == 0:
        a = np.full(n, float(a))
    elif a.shape != (n,):
        raise ValueError(f"min_area: expected a number or one per patch ({n}), got shape {a.shape}")
    if not np.all(np.isfinite(a) & (a >= 0)):
        raise ValueError(f"min_area must be finite and >= 0, got {min_area!r}")
    return a


def clean_mask(
    mask: np.ndarray, min_area: float | Sequence[float] | np.ndarray = 0.0
) -> np.ndarray:
    """A binary mask cleaned for object counting: holes filled, small components removed.

    ``mask`` is one (H, W) patch or an (N, H, W) stack (non-zero = foreground). In each patch
    the holes are filled (`scipy.ndimage.binary_fill_holes`), then every 8-connected component
    (as in `match_objects`) with fewer than ``min_area`` pixels is removed. ``min_area`` is a
    number or, for a stack, one number per patch (patches of different pixel size); 0 keeps
    every component. Returns a bool array of the mask's shape.
    """
    m = np.asarray(mask) != 0
    if m.ndim not in (2, 3):
        raise ValueError(f"expected an (H, W) or (N, H, W) mask, got shape {m.shape}")
    stack = m if m.ndim == 3 else m[None]
    areas = _patch_areas(min_area, len(stack))
    filled = np.stack([ndimage.binary_fill_holes(p) for p in stack]) if len(stack) else stack
    # One labelling of the whole stack, connected within a patch only (8-connected in plane).
    in_plane = np.zeros((3, 3, 3), bool)
    in_plane[1] = _EIGHT
    labels, n = ndimage.label(filled, structure=in_plane)
    if n:
        size = np.bincount(labels.ravel(), minlength=n + 1)
        patch = [0] + [box[0].start for box in ndimage.find_objects(labels)]  # per label
        keep = size >= areas[patch]
        keep[0] = False
        filled = keep[labels]
    return filled if m.ndim == 3 else filled[0]


def object_scores(
    pred: np.ndarray,
    target: np.ndarray,
    iou_threshold: float = 0.5,
    *,
    min_area: float | Sequence[float] | np.ndarray = 0.0,
) -> ObjectScores:
    """Object-level counts summed over (N, H, W) stacks (or one (H, W) patch).

    With ``min_area`` > 0 (pixels; a number or one per patch) both masks are first cleaned with
    `clean_mask`: holes filled and components below ``min_area`` removed, in the prediction
    (fragments are not counted as false positives) and in the ground truth (slivers of objects
    cut by the patch border are not counted as misses). Patches whose ``min_area`` is 0 (the
    default) are scored as given.
    """
    p, t = _binary_pair(pred, target)
    if p.ndim == 2:
        p, t = p[None], t[None]
    areas = _patch_areas(min_area, len(p))
    on = areas > 0
    if on.any():  # p and t are fresh arrays from _binary_pair
        p[on] = clean_mask(p[on], areas[on])
        t[on] = clean_mask(t[on], areas[on])
    tp = fp = fn = 0
    for pi, ti in zip(p, t):
        a, b, c = match_objects(pi, ti, iou_threshold)
        tp, fp, fn = tp + a, fp + b, fn + c
    return ObjectScores(tp, fp, fn)


def segmentation_metrics(
    pred: np.ndarray,
    target: np.ndarray,
    *,
    min_area: float | Sequence[float] | np.ndarray = 0.0,
) -> dict[str, float]:
    """The eval-seg scores of a set: pooled Dice, mean per-patch Dice, IoU, object P/R/F1.

    Dice and IoU are computed on the masks as given (the raw thresholded prediction); only the
    object scores use ``min_area`` (pixels, a number or one per patch), see `object_scores`.
    """
    obj = object_scores(pred, target, min_area=min_area)
    return {
        "dice": dice(pred, target),
        "mean_dice": mean_dice(pred, target),
        "iou": iou(pred, target),
        "obj_precision": obj.precision,
        "obj_recall": obj.recall,
        "obj_f1": obj.f1,
    }


# --- image sets ---------------------------------------------------------------------------------

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003


def _gaussian_window(size: int, sigma: float) -> np.ndarray:
    t = np.arange(size) - (size - 1) / 2
    g = np.exp(-0.5 * (t / sigma) ** 2)
    return np.asarray(g / g.sum())


def _filter_valid(x: np.ndarray, win: np.ndarray) -> np.ndarray:
    """Separable filtering of (N, H, W, C) over H and W, keeping only the 'valid' region."""
    r = len(win) // 2
    y = ndimage.correlate1d(x, win, axis=1, mode="constant")
    y = ndimage.correlate1d(y, win, axis=2, mode="constant")
    return np.asarray(
        y[:, r : x.shape[1] - (len(win) - 1 - r), r : x.shape[2] - (len(win) - 1 - r)]
    )


def _ssim_cs(
    a: np.ndarray, b: np.ndarray, win: np.ndarray, data_range: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per-image, per-channel (N, C) mean SSIM and contrast-structure term of (N, H, W, C)."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = _filter_valid(a, win), _filter_valid(b, win)
    saa = _filter_valid(a * a, win) - mu_a**2
    sbb = _filter_valid(b * b, win) - mu_b**2
    sab = _filter_valid(a * b, win) - mu_a * mu_b
    cs = (2 * sab + c2) / (saa + sbb + c2)
    lum = (2 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1)
    return (lum * cs).mean(axis=(1, 2)), cs.mean(axis=(1, 2))


def _library_fits(side: int, win_size: int) -> bool:
    """Whether `pytorch_msssim.ms_ssim` accepts this size: 5 scales, shorter side > 16 (win - 1)."""
    return win_size % 2 == 1 and side > (win_size - 1) * 2 ** (len(MS_SSIM_WEIGHTS) - 1)


def ms_ssim_scales(side: int, win_size: int = 11) -> int:
    """How many scales (at most 5) `ms_ssim` uses for images whose shorter side is ``side``.

    5 where pytorch_msssim accepts the size (side > 16 x (window - 1): 161 px and up with the
    11 px window), else as many as keep the coarsest side at least the window (``side //
    2**(scales - 1) >= win_size``): 4 for 128 px, 3 for 64 px patches.
    """
    win_size = min(win_size, side)
    if _library_fits(side, win_size):
        return len(MS_SSIM_WEIGHTS)
    scales = 1
    while scales < len(MS_SSIM_WEIGHTS) and side // 2**scales >= win_size:
        scales += 1
    return scales


def _ms_ssim_library(
    x: np.ndarray, y: np.ndarray, data_range: float, win_size: int, sigma: float
) -> np.ndarray:
    """`pytorch_msssim.ms_ssim` (5 scales) of (N, H, W, C) float32 stacks, one value per pair."""
    import torch
    from pytorch_msssim import ms_ssim as _lib_ms_ssim

    tx = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    ty = torch.from_numpy(np.ascontiguousarray(y.transpose(0, 3, 1, 2)))
    with torch.no_grad():
        out = _lib_ms_ssim(
            tx, ty, data_range=data_range, size_average=False, win_size=win_size, win_sigma=sigma
        )
    return out.double().numpy()


def ms_ssim(
    a: np.ndarray,
    b: np.ndarray,
    *,
    data_range: float = 255.0,
    win_size: int = 11,
    sigma: float = 1.5,
    scales: int | None = None,
) -> np.ndarray:
    """Multi-scale SSIM of each image pair in (N, H, W[, C]) stacks (Wang et al. 2003).

    Convention (that of `pytorch_msssim.ms_ssim`): an 11 px Gaussian window (sigma 1.5) applied
    'valid' (no padding), K1 = 0.01, K2 = 0.03 on ``data_range``, 2x2 average pooling between
    scales, the weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), negative contrast-structure
    and SSIM terms clipped to 0, MS-SSIM computed per channel and then averaged over channels.
    Images whose shorter side exceeds 16 x (window - 1) (161 px and up: the 256 px patches) use
    `pytorch_msssim` itself. It refuses smaller images, which cannot hold 5 scales, so those
    (e.g. 128 px demo patches) are computed here with the same convention but fewer scales
    (`ms_ssim_scales`: 4 for 128 px) and the first weights renormalised to sum to 1. Odd sides
    before a pooling: pytorch_msssim pads them (zeros counted), here the last row/column is
    dropped; 256 and 128 px patches stay even. ``scales`` forces a number of scales (computed
    here). Where both apply (256 px, 5 scales) the two agree to ~1e-5 (float32 rounding).
    Before this convention, channels were averaged inside each scale: results differed by up
    to ~1e-5 at 256 px and ~1e-3 at 32 px.
    """
    x = np.asarray(a, np.float32)
    y = np.asarray(b, np.float32)
    if x.shape != y.shape:
        raise ValueError(f"image stacks differ in shape: {x.shape} vs {y.shape}")
    if x.ndim == 3:
        x, y = x[..., None], y[..., None]
    side = min(x.shape[1], x.shape[2])
    win_size = min(win_size, side)
    if scales is None:
        if len(x) and _library_fits(side, win_size):
            return _ms_ssim_library(x, y, data_range, win_size, sigma)
        scales = ms_ssim_scales(side, win_size)
    weights = np.asarray(MS_SSIM_WEIGHTS[:scales])
    weights = weights / weights.sum()
    win = _gaussian_window(win_size, sigma).astype(np.float32)
    terms = []
    for s in range(scales):
        ssim, cs = _ssim_cs(x, y, win, data_range)
        if s == scales - 1:
            terms.append(np.maximum(ssim, 0.0))
        else:
            terms.append(np.maximum(cs, 0.0))
            h, w = (x.shape[1] // 2) * 2, (x.shape[2] // 2) * 2
            x = x[:, :h, :w].reshape(len(x), h // 2, 2, w // 2, 2, -1).mean(axis=(2, 4))
            y = y[:, :h, :w].reshape(len(y), h // 2, 2, w // 2, 2, -1).mean(axis=(2, 4))
    per_channel = np.prod(np.stack(terms).astype(np.float64) ** weights[:, None, None], axis=0)
    return np.asarray(per_channel.mean(axis=1))


def random_pairs(
    n: int,
    n_pairs: int,
    rng: np.random.Generator,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Up to ``n_pairs`` distinct index pairs (i < j) of different items (different ``groups``).

    Enumerates all pairs when there are few, else samples; an (M, 2) int array, M may be 0.
    """
    if n < 2:
        return np.zeros((0, 2), int)
    g = None if groups is None else np.asarray(groups)
    if n * (n - 1) // 2 <= 4 * n_pairs:
        i, j = np.triu_indices(n, k=1)
        pairs = np.stack([i, j], axis=1)
        if g is not None:
            pairs = pairs[g[pairs[:, 0]] != g[pairs[:, 1]]]
        if len(pairs) > n_pairs:
            pairs = pairs[rng.choice(len(pairs), n_pairs, replace=False)]
        return pairs
    seen: set[tuple[int, int]] = set()
    for _ in range(50):
        cand = rng.integers(0, n, (2 * n_pairs, 2))
        cand = np.sort(cand, axis=1)
        keep = cand[:, 0] != cand[:, 1]
        if g is not None:
            keep &= g[cand[:, 0]] != g[cand[:, 1]]
        for i, j in cand[keep]:
            seen.add((int(i), int(j)))
            if len(seen) >= n_pairs:
                break
        if len(seen) >= n_pairs:
            break
    return np.array(sorted(seen), int).reshape(-1, 2)


def diversity(
    images: np.ndarray,
    *,
    n_pairs: int = 200,
    rng: np.random.Generator,
    groups: np.ndarray | None = None,
    chunk: int = 32,
) -> dict[str, float]:
    """Mean pairwise L1 (in [0, 1] intensity units) and 1 - MS-SSIM over random pairs.

    Pairs join different images (of different ``groups``, e.g. source patches, where given).
    A collapsed generator, whose outputs all look alike, scores near 0 on both.
    """
    pairs = random_pairs(len(images), n_pairs, rng, groups)
    if len(pairs) == 0:
        return {"l1": float("nan"), "ms_ssim_div": float("nan"), "pairs": 0}
    l1, ms = [], []
    for k in range(0, len(pairs), chunk):
        p = pairs[k : k + chunk]
        a = np.asarray(images[p[:, 0]], np.float32)
        b = np.asarray(images[p[:, 1]], np.float32)
        l1.append(np.abs(a - b).reshape(len(p), -1).mean(axis=1, dtype=np.float64) / 255.0)
        ms.append(1.0 - ms_ssim(a, b, data_range=255.0))
    return {
        "l1": float(np.concatenate(l1).mean()),
        "ms_ssim_div": float(np.concatenate(ms).mean()),
        "pairs": len(pairs),
    }


def wasserstein_1d_hist(
    a: np.ndarray, b: np.ndarray, lo: float, hi: float, bins: int = 256
) -> float:
    """Earth mover's distance between the value distributions of ``a`` and ``b`` (histograms).

    Both are binned on the same ``bins`` bins over [lo, hi] (values outside are clipped in);
    the distance is `scipy.stats.wasserstein_distance` between the two histograms placed at the
    bin centres, i.e. the area between the two cumulative histograms, in the units of the values.
    NaN when either is empty.
    """
    from scipy.stats import wasserstein_distance

    edges = np.linspace(lo, hi, bins + 1)
    ha = np.histogram(np.clip(a, lo, hi), edges)[0].astype(np.float64)
    hb = np.histogram(np.clip(b, lo, hi), edges)[0].astype(np.float64)
    if ha.sum() == 0 or hb.sum() == 0:
        return float("nan")
    centres = (edges[:-1] + edges[1:]) / 2
    return float(wasserstein_distance(centres, centres, ha, hb))


def _pixel_sample(images: np.ndarray, max_pixels: int, rng: np.random.Generator) -> np.ndarray:
    px = np.asarray(images).reshape(-1, 3)
    if len(px) > max_pixels:
        px = px[rng.choice(len(px), max_pixels, replace=False)]
    return px


def colour_distance(
    real: np.ndarray,
    other: np.ndarray,
    *,
    rng: np.random.Generator,
    max_pixels: int = 500_000,
) -> dict[str, float]:
    """Colour-distribution distances between two uint8 (N, H, W, 3) image sets.

    ``rgb_emd``: mean over R, G, B of the per-channel Wasserstein distance (0-255 units);
    ``he_emd``: mean over the haematoxylin and eosin channels of `skimage.color.rgb2hed`
    (optical-density units, x100 for readability), so stain shifts show apart from plain RGB.
    """
    from skimage.color import rgb2hed

    pa = _pixel_sample(real, max_pixels, rng)
    pb = _pixel_sample(other, max_pixels, rng)
    out = {f"emd_{c}": wasserstein_1d_hist(pa[:, i], pb[:, i], 0, 255) for i, c in enumerate("rgb")}
    ha = rgb2hed(pa[None].astype(np.uint8))[0]
    hb = rgb2hed(pb[None].astype(np.uint8))[0]
    for i, c in ((0, "h"), (1, "e")):
        both = np.concatenate([ha[:, i], hb[:, i]])
        lo, hi = float(np.percentile(both, 0.1)), float(np.percentile(both, 99.9))
        hi = hi if hi > lo else lo + 1e-6
        out[f"emd_{c}"] = 100.0 * wasserstein_1d_hist(ha[:, i], hb[:, i], lo, hi)
    out["rgb_emd"] = float(np.mean([out["emd_r"], out["emd_g"], out["emd_b"]]))
    out["he_emd"] = float(np.mean([out["emd_h"], out["emd_e"]]))
    return out


#: Relative size of the imaginary part of the covariance product's square root above which
#: `frechet_distance` warns (as pytorch-fid's 1e-3 check): the distance is then unreliable.
FRECHET_IMAGINARY_TOLERANCE = 1e-3


class FrechetWarning(RuntimeWarning):
    """The matrix square root of a Fréchet distance had a large imaginary part."""


@dataclass(frozen=True)
class Frechet:
    """A Fréchet distance and the relative size of the imaginary part that was dropped.

    ``imaginary`` is ||Im sqrtm(S_a S_b)||_F / ||sqrtm(S_a S_b)||_F: ~1e-8 from rounding alone;
    above `FRECHET_IMAGINARY_TOLERANCE` the covariances were not positive semi-definite (or too
    ill-conditioned) and the distance should not be trusted.
    """

    distance: float
    imaginary: float


def frechet_moments(
    mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray, eps: float = 1e-6
) -> Frechet:
    """Fréchet distance between N(mu_a, cov_a) and N(mu_b, cov_b), with its imaginary residue.

    ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)), clipped at 0; ``eps`` is added to the
    diagonals when the square root is not finite (few samples, singular covariance). The real
    part of the square root is used; a relative imaginary part above
    `FRECHET_IMAGINARY_TOLERANCE` is reported with a `FrechetWarning` (and in the result).
    """
    mu = np.asarray(mu_a, np.float64) - np.asarray(mu_b, np.float64)
    sa = np.atleast_2d(np.asarray(cov_a, np.float64))
    sb = np.atleast_2d(np.asarray(cov_b, np.float64))
    with warnings.catch_warnings():  # singular covariances are expected with few samples
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = np.asarray(linalg.sqrtm(sa @ sb))
        if not np.isfinite(covmean).all():
            off = np.eye(len(sa)) * eps
            covmean = np.asarray(linalg.sqrtm((sa + off) @ (sb + off)))
    norm = float(np.linalg.norm(covmean))
    imaginary = float(np.linalg.norm(np.imag(covmean))) / norm if norm > 0 else 0.0
    if imaginary > FRECHET_IMAGINARY_TOLERANCE:
        warnings.warn(
            f"Fréchet distance: the matrix square root has a relative imaginary part of "
            f"{imaginary:.2g} (> {FRECHET_IMAGINARY_TOLERANCE:g}); covariances not positive "
            "semi-definite or too ill-conditioned, the distance is unreliable",
            FrechetWarning,
            stacklevel=3,
        )
    real = np.real(covmean)
    d = float(mu @ mu + np.trace(sa) + np.trace(sb) - 2 * np.trace(real))
    return Frechet(max(0.0, d), imaginary)


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to two (N, D) feature sets (as in FID).

    See `frechet_moments` (which this calls on the means and sample covariances): warns with a
    `FrechetWarning` where the square root's imaginary part is large; NaN with fewer than 2
    samples in either set.
    """
    a = np.asarray(feats_a, np.float64)
    b = np.asarray(feats_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets must be (N, D) with the same D: {a.shape}, {b.shape}")
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    return frechet_moments(a.mean(0), cov_a, b.mean(0), cov_b, eps).distance
