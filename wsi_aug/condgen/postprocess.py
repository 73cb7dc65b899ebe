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

from wsi_aug.structure import remove_small_structures


def _centre_label(labels: np.ndarray) -> int:
    """The label at the patch centre or, where the centre is background, the nearest one."""
    h, w = labels.shape
    centre = int(labels[h // 2, w // 2])
    if centre == 0:
        ys, xs = np.nonzero(labels)
        i = int(np.argmin((ys - h / 2) ** 2 + (xs - w / 2) ** 2))
        centre = int(labels[ys[i], xs[i]])
    return centre


def clean_mask(mask: np.ndarray) -> np.ndarray:
    """One binary (S, S) mask: the centre's component plus border components, holes filled."""
    m = np.asarray(mask, bool)
    labels, n = ndimage.label(m)
    if n == 0:
        return np.zeros(m.shape, np.uint8)
    centre = _centre_label(labels)
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
    cy, cx = ndimage.center_of_mass(labels == _centre_label(labels))
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
        smap = remove_small_structures(s > 0, min_size).astype(np.uint8)
        if centre:
            dy, dx = centre_shift(mask)
            mask, smap = shift_reflect(mask, dy, dx), shift_reflect(smap, dy, dx)
        masks.append(mask)
        maps.append(smap)
    return np.stack(masks).astype(np.uint8), np.stack(maps).astype(np.uint8)
