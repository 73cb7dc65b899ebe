"""Turning the model's real-valued samples into binary conditions like the real ones.

Thresholded at 0 (the data are {-1, 1}). The mask keeps the connected component that holds the
patch centre (patches are centred on a glomerulus; without one there, the component nearest the
centre) and the components that touch the border (neighbouring glomeruli cut by the patch edge,
as real patches have them); holes are filled. The structure map is the thresholded second
channel, as is.
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


def to_conditions(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks and structure maps (B, S, S) uint8 {0, 1} from samples (B, 2, S, S) in [-1, 1]."""
    x = np.asarray(x)
    masks = np.stack([clean_mask(m > 0) for m in x[:, 0]]) if len(x) else x[:, 0].astype(np.uint8)
    return masks.astype(np.uint8), (x[:, 1] > 0).astype(np.uint8)
