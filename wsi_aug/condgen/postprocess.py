"""Turning the model's real-valued samples into binary conditions like the real ones.

Thresholded at 0 (the data are {-1, 1}); with ``mask_sigma`` the mask channel is first blurred,
so the model's residual noise does not fray the outline. The mask keeps the connected component
that holds the patch centre (patches are centred on a glomerulus; without one there, the
component nearest the centre) and the components that touch the border (neighbouring glomeruli
cut by the patch edge, as real patches have them); holes are filled. The structure map is the
thresholded second channel, with structures smaller than ``min_size`` pixels removed as the
``structure`` stage removes them from real maps. With ``centre``, the real-valued mask channel is
shifted by a fractional offset (linear interpolation, the edge mirrored) before thresholding, so
that the centroid of its continuous shape sits at the patch centre, as centred extraction places
every real glomerulus's polygon; the pixels then keep the small rasterising error real masks
have. The structure map moves with it by the nearest whole pixels (interpolating it would blur
away its small parts). ``subpixel=False`` keeps the older whole-pixel shift of both binary
channels.
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


def centre_offset(mask: np.ndarray) -> tuple[float, float]:
    """Sub-pixel (dy, dx) moving the centre's component's centroid onto the patch centre."""
    labels, n = ndimage.label(mask)
    if n == 0:
        return 0.0, 0.0
    h, w = mask.shape
    cy, cx = ndimage.center_of_mass(labels == _centre_label(labels))
    return float((h - 1) / 2 - cy), float((w - 1) / 2 - cx)


def centre_shift(mask: np.ndarray) -> tuple[int, int]:
    """Whole-pixel (dy, dx) moving the centre's component's centroid onto the patch centre."""
    dy, dx = centre_offset(mask)
    return int(np.rint(dy)), int(np.rint(dx))


def shift_field(a: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """Real-valued `a` (H, W) moved by (dy, dx) px: linear interpolation between pixels, the
    edge mirrored as `shift_reflect` mirrors it (whole-pixel shifts give its result)."""
    if dy == 0 and dx == 0:
        return a
    out: np.ndarray = ndimage.shift(a, (dy, dx), order=1, mode="reflect")
    return out


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


def shape_offset(field: np.ndarray, mask: np.ndarray, up: int = 4) -> tuple[float, float]:
    """(dy, dx) moving the centroid of the main component's continuous shape onto the centre.

    The continuous shape is where the linearly interpolated `field` is above 0, sampled on an
    `up` x `up` grid per pixel around `mask`'s main component, holes filled. Extraction centres
    a real glomerulus's polygon, not its pixels; this centres the sample's shape the same way,
    so what remains in the pixels is the rasterising error that real masks show too.
    """
    labels, n = ndimage.label(mask)
    if n == 0:
        return 0.0, 0.0
    main = labels == _centre_label(labels)
    ys, xs = np.nonzero(ndimage.binary_dilation(main))
    h, w = mask.shape
    sub = (np.arange(up) + 0.5) / up - 0.5
    gy = (np.arange(ys.min(), ys.max() + 1)[:, None] + sub).ravel()
    gx = (np.arange(xs.min(), xs.max() + 1)[:, None] + sub).ravel()
    yy, xx = np.meshgrid(gy, gx, indexing="ij")
    inside = ndimage.map_coordinates(field, [yy, xx], order=1, mode="reflect") > 0
    iy = np.clip(np.rint(yy), 0, h - 1).astype(int)
    ix = np.clip(np.rint(xx), 0, w - 1).astype(int)
    parts, _ = ndimage.label(inside)
    overlap = np.bincount(parts[inside & main[iy, ix]], minlength=int(parts.max()) + 1)
    if overlap[1:].sum() == 0:
        return centre_offset(mask)
    shape = ndimage.binary_fill_holes(parts == int(np.argmax(overlap[1:])) + 1)
    return float((h - 1) / 2 - yy[shape].mean()), float((w - 1) / 2 - xx[shape].mean())


def _disc(radius: float) -> np.ndarray:
    """A boolean disc of the given radius (px): the pixels within it of the centre pixel."""
    r = int(np.floor(radius))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    out: np.ndarray = yy**2 + xx**2 <= radius**2
    return out


def to_conditions(
    x: np.ndarray,
    *,
    min_size: int = 0,
    centre: bool = False,
    subpixel: bool = True,
    mask_sigma: float = 0.0,
    mask_open: float = 0.0,
    structure_sigma: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Masks and structure maps (B, S, S) uint8 {0, 1} from samples (B, 2, S, S) in [-1, 1].

    `mask_sigma` > 0 blurs the mask channel (Gaussian, px) before it is thresholded: the
    model's residual noise then no longer frays the outline. `mask_open` > 0 opens the
    thresholded mask with a disc of that radius (px), removing stalks and spurs narrower than
    the disc, which real annotated outlines do not have; the pixels it removes are set below
    the threshold in the real-valued channel, so centring sees the opened shape.
    `structure_sigma` > 0 blurs the structure channel before it is thresholded (fewer
    single-pixel grains). With `centre`, `subpixel` moves
    the real-valued mask channel by the fractional shift that centres its continuous shape
    (`shape_offset`) before thresholding, as extraction centres a real glomerulus's polygon,
    and the structure map by the nearest whole pixels; without it, both binary channels move
    by the whole pixels that centre the mask's pixels.
    """
    x = np.asarray(x)
    if not len(x):
        empty = np.zeros(x.shape[:1] + x.shape[2:], np.uint8)
        return empty, empty.copy()
    masks, maps = [], []
    for m, s in zip(x[:, 0], x[:, 1]):
        m = np.asarray(m, np.float64)
        if mask_sigma > 0:
            m = ndimage.gaussian_filter(m, mask_sigma, mode="reflect")
        if mask_open > 0:
            kept = ndimage.binary_opening(m > 0, structure=_disc(mask_open))
            m = np.where(kept, m, np.minimum(m, -1e-3))
        if structure_sigma > 0:
            s = ndimage.gaussian_filter(np.asarray(s, np.float64), structure_sigma, mode="reflect")
        mask = clean_mask(m > 0)
        smap = remove_small_structures(s > 0, min_size).astype(np.uint8)
        if centre and subpixel:
            dy, dx = shape_offset(m, mask)
            mask = clean_mask(shift_field(m, dy, dx) > 0)
            # whole pixels for the structure map: interpolating it would blur away small parts
            smap = shift_reflect(smap, int(np.rint(dy)), int(np.rint(dx)))
        elif centre:
            iy, ix = centre_shift(mask)
            mask, smap = shift_reflect(mask, iy, ix), shift_reflect(smap, iy, ix)
        masks.append(mask)
        maps.append(smap)
    return np.stack(masks).astype(np.uint8), np.stack(maps).astype(np.uint8)
