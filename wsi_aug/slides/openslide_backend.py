"""Slides read by OpenSlide: Aperio, Hamamatsu, MIRAX, Leica, Philips, Ventana, DICOM, generic TIFF.

Regions are read straight into a reused numpy buffer in OpenSlide's own premultiplied ARGB, which
skips openslide-python's conversion to a PIL image; the base class resamples that layout and
composites onto white once, on the output.
"""

from __future__ import annotations

import ctypes
import math
from pathlib import Path
from typing import ClassVar

import numpy as np
import openslide
from openslide import lowlevel

from wsi_aug.errors import SlideError
from wsi_aug.slides.base import Slide, one_line

# openslide-python's ctypes binding of openslide_read_region (buffer, x, y, level, w, h); private,
# so a version without it falls back to the public read_region.
_READ_INTO = getattr(lowlevel, "_read_region", None)
_U32P = ctypes.POINTER(ctypes.c_uint32)


def _float_property(props: dict[str, str], key: str) -> float | None:
    """A positive finite float property, or None."""
    try:
        value = float(props[key])
    except (KeyError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


# Premultiplied BGRA to RGB on white: (b, g, r, a) @ this + 255 = (r + 255 - a, g + ..., b + ...).
_BGRA_TO_RGB = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0], [-1, -1, -1]], np.float32)


def _bgra_to_rgb(raw: np.ndarray) -> np.ndarray:
    """Premultiplied BGRA (uint8 or float) to a new uint8 RGB on white: c + (255 - alpha)."""
    h, w = raw.shape[:2]
    out = np.empty((h, w, 3), np.uint8)
    if raw.dtype == np.uint8 and bool((raw[..., 3] == 255).all()):
        np.copyto(out, raw[..., 2::-1])
        return out
    rgb = np.matmul(raw.reshape(h * w, 4), _BGRA_TO_RGB, dtype=np.float32)
    np.add(rgb, np.float32(255.5), out=out.reshape(h * w, 3), casting="unsafe")
    return out


class OpenSlideSlide(Slide):
    """A slide opened with openslide-python (every format OpenSlide reads)."""

    backend: ClassVar[str] = "openslide"
    _raw_fill: ClassVar[tuple[int, ...]] = (0, 0, 0, 0)  # transparent: white once composited
    _read_errors: ClassVar[tuple[type[BaseException], ...]] = (openslide.OpenSlideError, OSError)

    def __init__(self, path: str | Path, slide_mpp: float | None = None) -> None:
        super().__init__(path, slide_mpp)
        try:
            self._osr = openslide.OpenSlide(str(self.path))
        except openslide.OpenSlideUnsupportedFormatError as exc:
            raise SlideError(
                f"{self.path}: OpenSlide does not read this format; "
                "try --backend tifffile or --backend image"
            ) from exc
        except (openslide.OpenSlideError, OSError) as exc:
            raise SlideError(
                f"{self.path}: OpenSlide cannot open it ({one_line(exc)}); "
                "the file may be corrupt or truncated: copy or export it again"
            ) from exc
        self._props = dict(self._osr.properties)
        self._dims = tuple((int(w), int(h)) for w, h in self._osr.level_dimensions)
        self._downs = tuple(float(d) for d in self._osr.level_downsamples)
        self._assoc = tuple(self._osr.associated_images)  # names only; images load on access
        self._handle = getattr(self._osr, "_osr", None) if _READ_INTO is not None else None

    @property
    def vendor(self) -> str | None:
        return self._props.get(openslide.PROPERTY_NAME_VENDOR)

    @property
    def objective_power(self) -> float | None:
        return _float_property(self._props, openslide.PROPERTY_NAME_OBJECTIVE_POWER)

    @property
    def associated_image_names(self) -> tuple[str, ...]:
        return self._assoc

    def _metadata_mpp(self) -> tuple[float, float] | None:
        mx = _float_property(self._props, openslide.PROPERTY_NAME_MPP_X)
        my = _float_property(self._props, openslide.PROPERTY_NAME_MPP_Y)
        if mx is None and my is None:
            return None
        return (mx or my, my or mx)  # type: ignore[return-value]

    def _associated(self, name: str) -> np.ndarray:
        img = self._osr.associated_images[name]  # straight RGBA
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32)
        alpha = rgba[..., 3:4] / 255.0
        rgb: np.ndarray = (rgba[..., :3] * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)
        return rgb

    def _associated_size(self, name: str) -> tuple[int, int]:
        try:
            return (
                int(self._props[f"openslide.associated.{name}.width"]),
                int(self._props[f"openslide.associated.{name}.height"]),
            )
        except (KeyError, ValueError):
            return super()._associated_size(name)

    def _read_raw(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        ds = self._downs[level]
        lx, ly = round(x * ds), round(y * ds)
        if self._handle is None or _READ_INTO is None:  # pragma: no cover
            # the public API: straight RGBA, to premultiplied
            rgba = np.asarray(self._osr.read_region((lx, ly), level, (w, h)), dtype=np.float32)
            rgba[..., :3] *= rgba[..., 3:4] / 255.0
            return np.ascontiguousarray(rgba[..., [2, 1, 0, 3]] + 0.5).astype(np.uint8)
        buf = self._buffer("openslide", (h, w), np.uint32)
        _READ_INTO(self._handle, buf.ctypes.data_as(_U32P), lx, ly, level, w, h)
        raw = buf.view(np.uint8).reshape(h, w, 4)  # little-endian ARGB words: B, G, R, A bytes
        if np.little_endian:
            return raw
        return raw[..., ::-1]  # pragma: no cover

    def _finish(self, raw: np.ndarray) -> np.ndarray:
        return _bgra_to_rgb(raw)

    def _close(self) -> None:
        self._osr.close()
