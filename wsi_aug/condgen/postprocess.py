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

Tiles and slide edges: where a real window crosses the edge of its tile, extraction pads it with
white, so its structure map is empty there and its annotated glomerulus is cut straight at the
edge (in the HuBMAP tiles at 128 px and 2 µm/px, 41-46 % of the positive patches). ``padding``
gives a sample such a border band (`wsi_aug.imaging.padding_insets` measures real patches'
bands): both channels are emptied there and the centring then puts the centroid of the cut
shape at the centre, as extraction centres the cut polygon.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from wsi_aug.structure import remove_small_structures

_PADDING_STREAM = 0x70616464  # keeps the padding draw apart from the seed's other uses


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


def shift_field(a: np.ndarray, dy: float, dx: float, fill: float | None = None) -> np.ndarray:
    """Real-valued `a` (H, W) moved by (dy, dx) px: linear interpolation between pixels, the
    edge mirrored as `shift_reflect` mirrors it (whole-pixel shifts give its result), or with
    `fill`, the pixels moved in from beyond the edge set to it."""
    if dy == 0 and dx == 0:
        return a
    if fill is None:
        out: np.ndarray = ndimage.shift(a, (dy, dx), order=1, mode="reflect")
    else:
        out = ndimage.shift(a, (dy, dx), order=1, mode="constant", cval=fill)
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


def padding_band(
    insets: np.ndarray | tuple[int, int, int, int], shape: tuple[int, int]
) -> np.ndarray:
    """Boolean (H, W): True in the border band that (top, bottom, left, right) insets give."""
    top, bottom, left, right = (int(v) for v in insets)
    h, w = shape
    band = np.zeros((h, w), bool)
    band[:top] = True
    band[h - bottom :] = True
    band[:, :left] = True
    band[:, w - right :] = True
    return band


def draw_padding(pool: np.ndarray, seeds: Sequence[int]) -> np.ndarray:
    """(B, 4): for sample i, the insets of one row of `pool` (N, 4), chosen by its own seed.

    `pool` holds real training patches' insets (`wsi_aug.imaging.padding_insets`), zeros for
    the many that cross no edge, so samples get bands as often, as deep and on the same sides
    as real ones.
    The choice depends on the sample's seed only (its own generator), not on the batch.
    """
    rows = np.asarray(pool, np.int64).reshape(-1, 4)
    if not len(rows):
        return np.zeros((len(seeds), 4), np.int64)
    pick = [
        int(np.random.default_rng([int(s), _PADDING_STREAM]).integers(len(rows))) for s in seeds
    ]
    return rows[pick] if pick else np.zeros((0, 4), np.int64)


def _cut(field: np.ndarray, band: np.ndarray) -> np.ndarray:
    """`field` with the band pushed below the threshold (the padding holds no glomerulus)."""
    return np.where(band, np.minimum(field, -1.0), field)


def _centre_cut(
    m: np.ndarray, band: np.ndarray, dy: float, dx: float, rounds: int = 24
) -> tuple[float, float] | None:
    """The shift from (dy, dx) at which the band-cut shape's centroid sits at the centre.

    Cutting moves the centroid away from the band, so the shape has to move towards it; the
    cut centroid then follows a shift by less than the shift, so moving by the centroid's
    offset shrinks that offset by a factor (about 0.6 on the axis of a band that hides much of
    the shape). On each axis whose offset kept its sign and shrank, the step is scaled by
    1 / (1 - factor), the factor read off the last two offsets (at most 0.8; otherwise a plain
    step), until the centroid is within 0.01 px. What moves in from beyond the far edge holds
    no glomerulus (mirroring it would grow the shape as it moves). None where the cut leaves no
    mask or the shift does not settle within 0.05 px.
    """
    o = np.array([dy, dx], np.float64)
    last = np.zeros(2)
    r = np.zeros(2)
    for _ in range(rounds):
        f = _cut(shift_field(m, float(o[0]), float(o[1]), fill=-1.0), band)
        mask = clean_mask(f > 0)
        if not mask.any():
            return None
        r = np.array(shape_offset(f, mask))
        if np.all(np.abs(r) < 0.01):
            return float(o[0]), float(o[1])
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(last != 0, r / last, 0.0)
        factor = np.where((ratio > 0) & (ratio < 1), np.minimum(ratio, 0.8), 0.0)
        last = r
        o = o + r / (1.0 - factor)
    return (float(o[0]), float(o[1])) if np.all(np.abs(r) < 0.05) else None


def to_conditions(
    x: np.ndarray,
    *,
    min_size: int = 0,
    centre: bool = False,
    subpixel: bool = True,
    mask_sigma: float = 0.0,
    mask_open: float = 0.0,
    structure_sigma: float = 0.0,
    padding: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Masks and structure maps (B, S, S) uint8 {0, 1} from samples (B, 2, S, S) in [-1, 1].

    `mask_sigma` > 0 blurs the mask channel (Gaussian, px) before it is thresholded: the
    model's residual noise then no longer frays the outline. `mask_open` > 0 opens the
    thresholded mask with a disc of that radius (px), removing stalks and spurs narrower than
    the disc, which real annotated outlines do not have; the pixels it removes are set below
    the threshold in the real-valued channel, so centring sees the opened shape.
    `structure_sigma` > 0 blurs the structure channel before it is thresholded (fewer
    single-pixel grains). `padding` (B, 4) gives sample i the border band of insets
    ``padding[i]`` (`wsi_aug.imaging.padding_insets`; zeros: none): both channels are emptied
    there, and centring centres the cut shape (a sample the band would empty, or whose shift
    does not settle, keeps no band). With `centre`, `subpixel` moves
    the real-valued mask channel by the fractional shift that centres its continuous shape
    (`shape_offset`) before thresholding, as extraction centres a real glomerulus's polygon,
    and the structure map by the nearest whole pixels; without it, both binary channels move
    by the whole pixels that centre the mask's pixels.
    """
    x = np.asarray(x)
    if not len(x):
        empty = np.zeros(x.shape[:1] + x.shape[2:], np.uint8)
        return empty, empty.copy()
    if padding is not None and len(padding) != len(x):
        raise ValueError(f"padding has {len(padding)} rows for {len(x)} samples")
    masks, maps = [], []
    for i, (m, s) in enumerate(zip(x[:, 0], x[:, 1])):
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
        band = None
        if padding is not None and np.any(padding[i]):
            band = padding_band(padding[i], m.shape)
        if centre and subpixel:
            dy, dx = shape_offset(m, mask)
            if band is not None:
                cut = _centre_cut(m, band, dy, dx)
                if cut is None:
                    band = None
                else:
                    dy, dx = cut
            if band is None:
                mask = clean_mask(shift_field(m, dy, dx) > 0)
            else:
                mask = clean_mask(_cut(shift_field(m, dy, dx, fill=-1.0), band) > 0)
            # whole pixels for the structure map: interpolating it would blur away small parts
            smap = shift_reflect(smap, int(np.rint(dy)), int(np.rint(dx)))
        elif centre:
            iy, ix = centre_shift(mask)
            mask, smap = shift_reflect(mask, iy, ix), shift_reflect(smap, iy, ix)
        if band is not None:
            if not (centre and subpixel):
                cut_mask = clean_mask(mask.astype(bool) & ~band)
                if cut_mask.any():
                    mask = cut_mask
                else:
                    band = None
            if band is not None:
                smap = np.where(band, 0, smap).astype(np.uint8)
        masks.append(mask)
        maps.append(smap)
    return np.stack(masks).astype(np.uint8), np.stack(maps).astype(np.uint8)
