"""How good generated conditions are, measured against held-out real conditions.

Per condition, shape features of the mask (area, perimeter, eccentricity, solidity, number of
components, centroid distance from the centre; of the main component, the one `postprocess`
keeps at the centre) and of the structure map (density inside and outside the mask, median and
number of its components). Per feature, the Kolmogorov-Smirnov distance between generated and
held-out real conditions, beside the same distance between real train and held-out real
conditions (the floor that sampling noise alone gives). On the standardised features, density
and coverage (Naeem et al. 2020, k-NN balls around the real points). Memorisation: each
condition's nearest real train condition by IoU (both channels pooled) over the 8 dihedral
symmetries, for generated and for held-out real conditions, and the share above 0.95.

Targets: KS <= 1.5x real-vs-real per feature, coverage >= 0.9, memorisation share <= held-out's.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.stats import ks_2samp

from wsi_aug.imaging import dihedral_all

FEATURES = (
    "mask_area",
    "mask_perimeter",
    "eccentricity",
    "solidity",
    "mask_components",
    "centroid_distance",
    "structure_inside",
    "structure_outside",
    "structure_component_median",
    "structure_components",
)
KS_FACTOR = 1.5
COVERAGE_TARGET = 0.9
COPY_IOU = 0.95
K = 5  # neighbours of density and coverage


def _main_label(labels: np.ndarray) -> int:
    """The component at the centre, else the largest one (0 where there is none)."""
    h, w = labels.shape
    c = int(labels[h // 2, w // 2])
    if c:
        return c
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return int(sizes.argmax()) if sizes.size > 1 and sizes.max() > 0 else 0


def features(masks: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """(N, len(FEATURES)) float64; lengths and areas as fractions of the patch size (NaN: none)."""
    from skimage.measure import regionprops

    n = len(masks)
    out = np.full((n, len(FEATURES)), np.nan)
    for i in range(n):
        m, s = np.asarray(masks[i], bool), np.asarray(maps[i], bool)
        size = m.shape[-1]
        labels, count = ndimage.label(m)
        out[i, 0] = m.mean()
        out[i, 4] = count
        main = _main_label(labels)
        if main:
            props = regionprops((labels == main).astype(np.uint8))[0]
            out[i, 1] = props.perimeter / size
            out[i, 2] = props.eccentricity
            out[i, 3] = props.solidity
            cy, cx = props.centroid
            out[i, 5] = np.hypot(cy - (size - 1) / 2, cx - (size - 1) / 2) / size
        if m.any():
            out[i, 6] = s[m].mean()
        if (~m).any():
            out[i, 7] = s[~m].mean()
        slab, scount = ndimage.label(s)
        out[i, 9] = scount
        if scount:
            out[i, 8] = np.median(np.bincount(slab.ravel())[1:])
    return out


def ks_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per feature column, the two-sample KS statistic (NaNs dropped; 1 if one side is empty)."""
    out = np.empty(a.shape[1])
    for j in range(a.shape[1]):
        x, y = a[:, j][~np.isnan(a[:, j])], b[:, j][~np.isnan(b[:, j])]
        out[j] = (
            1.0
            if (len(x) == 0) != (len(y) == 0)
            else (0.0 if len(x) == 0 else float(ks_2samp(x, y).statistic))
        )
    return out


def standardise(reference: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Features scaled by the reference's mean and spread; NaN as the mean (0)."""
    mean = np.nanmean(reference, axis=0)
    std = np.nanstd(reference, axis=0)
    std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    return [np.nan_to_num((x - mean) / std) for x in (reference, *others)]


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d2 = (a**2).sum(1)[:, None] + (b**2).sum(1)[None] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(d2, 0.0))


def density_coverage(real: np.ndarray, fake: np.ndarray, k: int = K) -> tuple[float, float]:
    """Naeem et al. (2020): density (can exceed 1) and coverage (0..1) of `fake` around `real`."""
    k = min(k, len(real) - 1)
    if k < 1 or len(fake) == 0:
        return float("nan"), float("nan")
    radii = np.sort(_distances(real, real), axis=1)[:, k]  # column 0 is the point itself
    inside = _distances(real, fake) < radii[:, None]  # (real, fake)
    density = float(inside.sum() / (k * len(fake)))
    coverage = float(inside.any(axis=1).mean())
    return density, coverage


def nearest_iou(
    queries: tuple[np.ndarray, np.ndarray], train: tuple[np.ndarray, np.ndarray], chunk: int = 64
) -> np.ndarray:
    """Per query condition, the highest IoU with any train condition under the 8 symmetries.

    IoU pools both channels: |A and B| / |A or B| over mask and structure pixels together.
    """
    qm, qs = queries
    tm, ts = train
    best = np.zeros(len(qm))
    if len(qm) == 0 or len(tm) == 0:
        return best
    t = np.concatenate([tm.reshape(len(tm), -1), ts.reshape(len(ts), -1)], 1).astype(np.float32)
    t_sum = t.sum(1)
    for start in range(0, len(qm), chunk):
        end = min(start + chunk, len(qm))
        for a, b in zip(dihedral_all(qm[start:end]), dihedral_all(qs[start:end])):
            v = np.concatenate([a.reshape(end - start, -1), b.reshape(end - start, -1)], 1)
            v = v.astype(np.float32)
            inter = v @ t.T
            union = v.sum(1)[:, None] + t_sum[None] - inter
            iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
            best[start:end] = np.maximum(best[start:end], iou.max(1))
    return best


@dataclass
class Row:
    """One measure: the generated value, the real-vs-real reference, the target and its verdict."""

    measure: str
    generated: float
    real: float
    target: str
    passed: bool


def compare(
    generated: tuple[np.ndarray, np.ndarray],
    train: tuple[np.ndarray, np.ndarray],
    heldout: tuple[np.ndarray, np.ndarray],
) -> list[Row]:
    """Every measure of the generated conditions against held-out ones, real train beside."""
    fg, ft, fh = features(*generated), features(*train), features(*heldout)
    ks_gen, ks_real = ks_distances(fg, fh), ks_distances(ft, fh)
    rows = [
        Row(f"KS {name}", float(g), float(r), f"<= {KS_FACTOR} x real", bool(g <= KS_FACTOR * r))
        for name, g, r in zip(FEATURES, ks_gen, ks_real)
    ]
    zh, zg, zt = standardise(fh, fg, ft)
    dens_g, cov_g = density_coverage(zh, zg)
    dens_r, cov_r = density_coverage(zh, zt)
    rows.append(Row("density", dens_g, dens_r, "(about 1)", True))
    rows.append(
        Row("coverage", cov_g, cov_r, f">= {COVERAGE_TARGET}", bool(cov_g >= COVERAGE_TARGET))
    )
    near_g, near_h = nearest_iou(generated, train), nearest_iou(heldout, train)
    share_g, share_h = float((near_g > COPY_IOU).mean()), float((near_h > COPY_IOU).mean())
    rows.append(
        Row(
            "nearest-train IoU (median)",
            float(np.median(near_g)),
            float(np.median(near_h)),
            "(report)",
            True,
        )
    )
    rows.append(
        Row(
            f"share above IoU {COPY_IOU}", share_g, share_h, "<= held-out", bool(share_g <= share_h)
        )
    )
    return rows


def markdown(rows: list[Row], title: str = "Condition quality") -> str:
    """The rows as a Markdown table: measure, generated, real train vs held-out, target, verdict."""
    lines = [
        f"## {title}",
        "",
        "| measure | generated vs held-out | real train vs held-out | target | result |",
        "|---|---:|---:|---|---|",
    ]
    for r in rows:
        verdict = "pass" if r.passed else "FAIL"
        if r.target.startswith("("):
            verdict = "-"
        lines.append(f"| {r.measure} | {r.generated:.4g} | {r.real:.4g} | {r.target} | {verdict} |")
    return "\n".join(lines) + "\n"


def write_csv(tables: dict[str, list[Row]], path: Path) -> Path:
    """Tables of rows as one CSV: set, measure, generated, real, target, passed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["set", "measure", "generated", "real", "target", "passed"])
        for name, rows in tables.items():
            for r in rows:
                w.writerow(
                    [name, r.measure, f"{r.generated:.6g}", f"{r.real:.6g}", r.target, r.passed]
                )
    return path
