"""Small image helpers shared by several stages: Otsu thresholds, the 8 dihedral symmetries of a
square patch, smooth displacement fields for ``torch.nn.functional.grid_sample``, and the border
band of white padding of patches that cross a slide's edge.

Each was written several times before; one copy here keeps the call sites consistent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where used: extraction workers need only numpy
    import torch


def is_flat(values: np.ndarray, min_range: float = 0.0) -> bool:
    """True when ``values`` is empty, constant, or spans less than ``min_range``.

    Otsu's threshold of a (nearly) flat array is meaningless; call sites test this first and
    return an empty mask.
    """
    v = np.asarray(values)
    if v.size == 0:
        return True
    span = float(v.max() - v.min())
    return span == 0.0 or span < min_range


def otsu_threshold(values: np.ndarray) -> float:
    """Otsu's threshold (``skimage.filters.threshold_otsu``) of ``values`` of any shape.

    The values are flattened first, so that an (H, 3) or (H, W, 3) shaped array is not mistaken
    for an RGB image. A constant array gives its one value (as skimage does), so strict
    comparisons against the threshold select nothing; test `is_flat` first to be explicit.
    """
    from skimage.filters import threshold_otsu

    v = np.asarray(values).reshape(-1)
    if v.size == 0:
        raise ValueError("otsu_threshold of an empty array")
    return float(threshold_otsu(v))


# --- the 8 symmetries of a square (dihedral group D4) -------------------------------------------

#: The 8 symmetries as (flip, k) pairs for `dihedral`: identity first, then the rotations, then
#: the flipped ones.
DIHEDRAL: tuple[tuple[bool, int], ...] = tuple((f, k) for f in (False, True) for k in range(4))


def dihedral(a: np.ndarray, flip: bool, k: int, axes: tuple[int, int] = (-2, -1)) -> np.ndarray:
    """``a`` flipped horizontally (along ``axes[1]``) if ``flip``, then rotated ``k`` times by 90°.

    The rotation is `np.rot90` (counter-clockwise as displayed, from ``axes[0]`` towards
    ``axes[1]``). Returns a C-contiguous array (a copy unless nothing moved), ready for
    ``torch.from_numpy``.
    """
    out = np.asarray(a)
    if flip:
        out = np.flip(out, axis=axes[1])
    return np.ascontiguousarray(np.rot90(out, int(k) % 4, axes=axes))


def dihedral_all(a: np.ndarray, axes: tuple[int, int] = (-2, -1)) -> list[np.ndarray]:
    """The 8 dihedral images of ``a``, in the order of `DIHEDRAL` (e.g. for memorisation checks)."""
    return [dihedral(a, f, k, axes) for f, k in DIHEDRAL]


def dihedral_matrix(flip: bool, k: int) -> np.ndarray:
    """The 2x2 sampling matrix of `dihedral` (flip, k) on (x, y) pixel offsets from the centre.

    Output pixel p is read from input position M @ p (the convention of ``grid_sample`` grids),
    so a grid built from M reproduces ``dihedral(a, flip, k)`` exactly on square images. Entries
    are exact integers (as float64), so matrix products of them are exact. Composition: the grid
    of M1 @ M2 applies M1's transform first, then M2's.
    """
    k = int(k) % 4
    c = (1.0, 0.0, -1.0, 0.0)[k]
    s = (0.0, 1.0, 0.0, -1.0)[k]
    rot = np.array([[c, -s], [s, c]])
    m = np.diag([-1.0, 1.0]) @ rot if flip else rot
    return m + 0.0  # no negative zeros


# --- smooth displacement fields for grid_sample --------------------------------------------------


def identity_grid(
    height: int, width: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """The (H, W, 2) identity grid (x, y) of ``grid_sample`` with ``align_corners=True``."""
    import torch

    ys = torch.linspace(-1.0, 1.0, height, device=device)
    xs = ys if width == height else torch.linspace(-1.0, 1.0, width, device=device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1)


def pixels_to_grid(size: int, align_corners: bool = True) -> float:
    """The factor turning a displacement in pixels into ``grid_sample``'s [-1, 1] units."""
    return 2.0 / (size - 1) if align_corners else 2.0 / size


def upsample_displacement(
    coarse: torch.Tensor,
    size: tuple[int, int],
    *,
    mode: str = "bilinear",
    scale: float = 1.0,
) -> torch.Tensor:
    """A coarse (N, 2, h, w) displacement field (x, y) upsampled to an (N, H, W, 2) grid offset.

    Interpolated with ``align_corners=True`` (`mode` bilinear or bicubic), then multiplied by
    ``scale`` (e.g. `pixels_to_grid` for a field in pixels), so it adds directly to a
    ``grid_sample`` grid.
    """
    import torch.nn.functional as F

    field = F.interpolate(coarse, size=size, mode=mode, align_corners=True)
    if scale != 1.0:
        field = field * scale
    return field.permute(0, 2, 3, 1)


def padding_insets(images: np.ndarray, fill: int = 255) -> np.ndarray:
    """(N, 4) int (top, bottom, left, right): each image's border band of padding.

    The rows (columns) at each side of an (N, S, S, 3) uint8 image that are entirely `fill` (the
    white extraction pads with where a window crosses the slide's edge). An image that is all
    `fill` has no band (zeros): it says nothing about where a tile edge cuts a glomerulus.
    """
    imgs = np.asarray(images)
    if imgs.ndim != 4 or not len(imgs):
        return np.zeros((len(imgs), 4), np.int64)
    full = np.all(imgs == fill, axis=-1)
    rows, cols = full.all(axis=2), full.all(axis=1)

    def lead(a: np.ndarray) -> np.ndarray:
        out: np.ndarray = np.where(a.all(axis=1), a.shape[1], np.argmin(a, axis=1))
        return out

    out = np.stack([lead(rows), lead(rows[:, ::-1]), lead(cols), lead(cols[:, ::-1])], axis=1)
    h, w = imgs.shape[1:3]
    whole = (out[:, 0] + out[:, 1] >= h) | (out[:, 2] + out[:, 3] >= w)
    out[whole] = 0
    return out.astype(np.int64)
