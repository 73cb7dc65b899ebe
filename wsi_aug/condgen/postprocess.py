"""Turning the model's real-valued samples into binary conditions like the real ones.

Thresholded at 0 (the data are {-1, 1}). The mask keeps the connected component that holds the
patch centre (patches are centred on a glomerulus; without one there, the component nearest the
centre) and the components that touch the border (neighbouring glomeruli cut by the patch edge,
as real patches have them); holes are filled. The structure map is the thresholded second
channel, with structures smaller than ``min_size`` pixels removed as the ``structure`` stage
removes them from real maps. With ``centre``, both channels are then shifted by whole pixels so
that the main component's centroid sits at the patch centre, as centred extraction places every
real glomerulus (the rows and columns shifted in mirror the edge's).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def clean_mask(mask: np.ndarray) -> np.ndarray:
    """One binary (S, S) mask: the centre's component plus border components, holes filled."""
    m = np.asarray(mask, bool)
    labels, n = ndimage.label(m)
    if n == 0:
        return np.zeros(m.shape, np.uint8)
    h, w = m.shape
    centre = labels[h // 2, w // 2]
    if centre == 0:  # the centre is background: the component nearest to it
        ys, xs = np.nonzero(labels)
        d = (ys - h / 2) ** 2 + (xs - w / 2) ** 2
        centre = labels[ys[np.argmin(d)], xs[np.argmin(d)]]
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    keep = np.zeros(n + 1, bool)
    keep[border] = True
    keep[centre] = True
    keep[0] = False
    return ndimage.binary_fill_holes(keep[labels]).astype(np.uint8)


def centre_shift(mask: np.ndarray) -> tuple[int, int]:
    """Whole-pixel (dy, dx) moving the centre's component's centroid onto the patch centre."""
    labels, n = ndimage.label(mask)
    if n == 0:
        return 0, 0
    h, w = mask.shape
    main = labels[h // 2, w // 2]
    if main == 0:
        ys, xs = np.nonzero(labels)
        i = int(np.argmin((ys - h / 2) ** 2 + (xs - w / 2) ** 2))
        main = labels[ys[i], xs[i]]
    cy, cx = ndimage.center_of_mass(labels == main)
    return int(np.rint((h - 1) / 2 - cy)), int(np.rint((w - 1) / 2 - cx))


def _reflect(i: np.ndarray, n: int) -> np.ndarray:
    """Indices folded into [0, n) by mirroring at the edges (..., 1, 0 | 0, 1, ... | n-1, n-2)."""
    period = 2 * n
    i = np.mod(i, period)
    return np.where(i < n, i, period - 1 - i)


def shift_reflect(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """`a` (H, W) moved by whole pixels, the rows and columns moved in mirrored from the edge.

    Mirroring (as the `augment` warp pads) continues the structures at the edge; repeating the
    edge row would draw stripes, and zeros would draw an edge of slide where there is none.
    """
    if dy == 0 and dx == 0:
        return a
    h, w = a.shape
    return a[np.ix_(_reflect(np.arange(h) - dy, h), _reflect(np.arange(w) - dx, w))]


def remove_small(binary: np.ndarray, min_size: int) -> np.ndarray:
    """`binary` without its 8-connected components of fewer than `min_size` pixels."""
    if min_size <= 1:
        return binary
    labels, n = ndimage.label(binary, structure=np.ones((3, 3), bool))
    if n == 0:
        return binary
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_size
    keep[0] = False
    return keep[labels].astype(binary.dtype)


def to_conditions(
    x: np.ndarray, *, min_size: int = 0, centre: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Masks and structure maps (B, S, S) uint8 {0, 1} from samples (B, 2, S, S) in [-1, 1]."""
    x = np.asarray(x)
    if not len(x):
        empty = np.zeros(x.shape[:1] + x.shape[2:], np.uint8)
        return empty, empty.copy()
    masks, maps = [], []
    for m, s in zip(x[:, 0], x[:, 1]):
        mask = clean_mask(m > 0)
        smap = remove_small((s > 0).astype(np.uint8), min_size)
        if centre:
            dy, dx = centre_shift(mask)
            mask, smap = shift_reflect(mask, dy, dx), shift_reflect(smap, dy, dx)
        masks.append(mask)
        maps.append(smap)
    return np.stack(masks).astype(np.uint8), np.stack(maps).astype(np.uint8)
