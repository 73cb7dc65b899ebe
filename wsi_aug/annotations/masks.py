"""Mask images (PNG, TIFF, JPEG ...) turned into polygons, one per connected component.

Each component (8-connected) becomes the exact union of its pixel squares, holes included: pixel
(col, row) covers ``[col, col + 1] x [row, row + 1]``, so the polygon's area equals the pixel count
and a mask of the slide's size lines up with level 0 without a half-pixel shift. Masks at a lower
resolution than the slide are brought to level 0 with `scale`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon

from wsi_aug.annotations.model import (
    Annotation,
    AnnotationReport,
    AnnotationSet,
    clean_geometry,
    clean_text,
)
from wsi_aug.errors import AnnotationError

FMT = "mask image"
_LOSSY = {".jpg", ".jpeg", ".webp"}


def load_mask_image(path: Path) -> np.ndarray:
    """The pixels of a mask image: (H, W) or (H, W, C); palette images keep their indices."""
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            arr = tifffile.imread(path)
            if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4):
                arr = np.moveaxis(arr, 0, -1)  # planar (C, H, W) storage
            return np.asarray(arr)
        from PIL import Image

        with Image.open(path) as img:
            pixels: np.ndarray = np.asarray(img.convert("L") if img.mode == "1" else img)
            return pixels
    except Exception as exc:  # any decoder failure is a bad file, reported in one line
        raise AnnotationError(
            f"{path}: not a readable mask image ({exc.__class__.__name__}: "
            f"{clean_text(str(exc), 160)}); save the mask again as PNG or TIFF"
        ) from exc


def mask_foreground(
    pixels: np.ndarray,
    *,
    mask_value: int | None = None,
    mask_channel: int | None = None,
    lossy: bool = False,
    name: str = "mask",
) -> np.ndarray:
    """The boolean foreground of a mask.

    `mask_channel` picks one channel of a multi-channel mask; `mask_value` keeps only pixels of
    that value (label images); otherwise any non-zero pixel counts (in any colour channel, alpha
    excluded). A lossy (JPEG) mask without `mask_value` counts pixels above half range instead,
    since compression turns zeros into small values along every edge.
    """
    a = np.asarray(pixels)
    if a.dtype.kind not in "biuf":
        raise AnnotationError(
            f"{name}: a mask must hold numbers, got pixels of type {a.dtype}; "
            "save the mask again as an 8- or 16-bit PNG or TIFF"
        )
    if a.dtype.kind == "f":
        a = np.nan_to_num(a, nan=0.0)  # NaN is no foreground
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3):
        raise AnnotationError(f"{name}: a mask must be a 2-D image, got shape {a.shape}")
    if a.ndim == 3:
        if mask_channel is not None:
            if not 0 <= mask_channel < a.shape[-1]:
                raise AnnotationError(
                    f"{name}: --mask-channel {mask_channel} but the mask has {a.shape[-1]} "
                    f"channels; use 0 to {a.shape[-1] - 1}"
                )
            a = a[..., mask_channel]
        else:
            colour = {2: a[..., :1], 4: a[..., :3]}.get(a.shape[-1], a)  # alpha left out
            if mask_value is not None:  # a grey label image stored as RGB
                fg: np.ndarray = np.all(colour == mask_value, axis=-1)
            elif lossy:
                fg = np.any(colour > _half(colour), axis=-1)
            else:
                fg = np.any(colour != 0, axis=-1)
            return fg
    if mask_value is not None:
        return np.asarray(a == mask_value)
    if lossy:
        return np.asarray(a > _half(a))
    return np.asarray(a != 0)


def _half(a: np.ndarray) -> float:
    """Half the range of the array's dtype (0.5 for floats)."""
    if a.dtype.kind in "ui":
        return float(np.iinfo(a.dtype).max) / 2
    return 0.5


def _component_polygon(sub: np.ndarray, x0: int, y0: int) -> Polygon | MultiPolygon:
    """The exact outline of a boolean component as the union of its row runs."""
    padded = np.zeros((sub.shape[0], sub.shape[1] + 2), np.int8)
    padded[:, 1:-1] = sub
    d = np.diff(padded, axis=1)
    rs, cs = np.nonzero(d == 1)
    _, ce = np.nonzero(d == -1)  # row by row, left to right: the i-th end closes the i-th start
    boxes = shapely.box(x0 + cs, y0 + rs, x0 + ce, y0 + rs + 1)
    return shapely.union_all(boxes)


def _scale_pair(scale: float | tuple[float, float]) -> tuple[float, float]:
    """(sx, sy) from a number or a pair, or ValueError unless both are finite and positive."""
    if isinstance(scale, (int, float)):
        sx = sy = float(scale)
    else:
        sx, sy = (float(v) for v in scale)
    if not (0 < sx < math.inf and 0 < sy < math.inf):
        raise ValueError(f"scale must be positive and finite, got {scale!r}")
    return sx, sy


def polygons_from_mask(
    fg: np.ndarray,
    *,
    scale: float | tuple[float, float] = 1.0,
    min_area: float = 0.0,
) -> list[Polygon | MultiPolygon]:
    """One geometry per 8-connected component of a boolean mask, in level-0 pixels.

    `scale` multiplies the mask's pixel coordinates (x and y alike, or (sx, sy)); `min_area`
    (level-0 px²) drops smaller components before they are traced.
    """
    sx, sy = _scale_pair(scale)
    from scipy import ndimage  # here: it takes half a second to import, and only masks need it

    labels, n = ndimage.label(fg, structure=np.ones((3, 3), bool))
    if n == 0:
        return []
    counts = np.bincount(labels.ravel(), minlength=n + 1)
    out: list[Polygon | MultiPolygon] = []
    for i, slc in enumerate(ndimage.find_objects(labels), start=1):
        if slc is None or counts[i] * sx * sy < min_area:
            continue
        sub = labels[slc] == i
        geom = _component_polygon(sub, slc[1].start, slc[0].start)
        if (sx, sy) != (1.0, 1.0):
            geom = shapely.transform(geom, lambda xy: xy * np.array([sx, sy]))
        out.append(geom)
    return out


def read_mask(
    path: str | Path,
    *,
    label: str = "mask",
    mask_value: int | None = None,
    mask_channel: int | None = None,
    scale: float | tuple[float, float] = 1.0,
    min_area: float = 0.0,
    max_vertices: int | None = None,
) -> AnnotationSet:
    """Read a mask image as polygons of class `label`, one per connected component (holes kept).

    See `mask_foreground` for which pixels count, and `polygons_from_mask` for `scale` and
    `min_area` (level-0 px²). Components above `max_vertices` vertices are simplified.
    """
    path = Path(path)
    try:
        _scale_pair(scale)
    except (TypeError, ValueError) as exc:
        raise AnnotationError(
            f"{path}: mask scale {scale!r} is not a positive number or pair; "
            "give the slide's size over the mask's"
        ) from exc
    pixels = load_mask_image(path)
    fg = mask_foreground(
        pixels,
        mask_value=mask_value,
        mask_channel=mask_channel,
        lossy=path.suffix.lower() in _LOSSY,
        name=path.name,
    )
    report = AnnotationReport()
    annotations: list[Annotation] = []
    for i, geom in enumerate(polygons_from_mask(fg, scale=scale, min_area=min_area)):
        cleaned = clean_geometry(geom, report, f"component {i}", max_vertices=max_vertices)
        if cleaned is not None:
            annotations.append(Annotation(cleaned, label, str(i), "annotation", None))
    return AnnotationSet(path, annotations, report, FMT)
