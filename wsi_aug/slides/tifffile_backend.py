"""Slides read by tifffile: OME-TIFF (SubIFD pyramids), and plain or non-pyramidal TIFF that
OpenSlide refuses.

Levels are the main series' pyramid levels. Tiled levels are read through tifffile's Zarr store,
which decodes only the tiles a region touches; untiled levels up to `_DECODE_WHOLE` bytes are
decoded once and kept. Samples other than 8-bit RGB (grey, palette, alpha, 16-bit, float,
channel-first OME) are converted to RGB on white.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import tifffile
import zarr

from wsi_aug.errors import SlideError
from wsi_aug.slides.base import Slide, one_line

_DECODE_WHOLE = 256 << 20  # untiled levels up to this many decoded bytes are decoded whole, once
_ASSOCIATED = ("thumbnail", "label", "macro")
_MAX_INCH_MPP = 25.0  # inch resolutions coarser than this are screen/print defaults, not scans
_UNIT_UM = {"pm": 1e-6, "nm": 1e-3, "µm": 1.0, "um": 1.0, "mm": 1e3, "cm": 1e4, "m": 1e6}
_VENDORS = {
    "ome": "ome", "svs": "aperio", "ndpi": "hamamatsu", "scn": "leica", "philips": "philips",
    "bif": "ventana", "qpi": "perkinelmer",
}  # fmt: skip


class _Collect(logging.Handler):
    """Keeps this thread's tifffile error records (tifffile logs, rather than raises, on a
    truncated or corrupt IFD chain and then carries on without the pages it could not read)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self.thread:
            return
        text = " ".join(record.getMessage().split())
        structural = ("offset", "corrupt", "SubIFD", "truncat")
        if record.levelno >= logging.ERROR or any(w in text for w in structural):
            self.errors.append(text)


@contextlib.contextmanager
def tifffile_errors() -> Iterator[list[str]]:
    """Collect (and keep off stderr) the errors tifffile logs in this thread meanwhile."""
    handler = _Collect()
    log = logging.getLogger("tifffile")
    log.addHandler(handler)
    try:
        yield handler.errors
    finally:
        log.removeHandler(handler)


def _xy_shape(axes: str, shape: tuple[int, ...]) -> tuple[int, int]:
    """(width, height) of an array with tifffile axes like 'YXS', 'CYX', 'TCZYX'."""
    return int(shape[axes.index("X")]), int(shape[axes.index("Y")])


def _ome_pixels(xml: str) -> dict[str, str]:
    """Attributes of the first OME Image's Pixels element, and its objective's magnification."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return {}
    out: dict[str, str] = {}
    for el in root.iter():
        tag = el.tag.rsplit("}", 1)[-1]
        if tag == "Pixels" and not any(k.startswith("PhysicalSize") for k in out):
            out.update({k: v for k, v in el.attrib.items() if k.startswith("PhysicalSize")})
        elif tag == "Objective" and "NominalMagnification" in el.attrib:
            out.setdefault("NominalMagnification", el.attrib["NominalMagnification"])
    return out


def _ome_mpp(pixels: dict[str, str]) -> tuple[float, float] | None:
    """(x, y) micrometres per pixel from OME PhysicalSizeX/Y and their units (default µm)."""
    out = []
    for axis in "XY":
        try:
            size = float(pixels[f"PhysicalSize{axis}"])
        except (KeyError, ValueError):
            return None
        scale = _UNIT_UM.get(pixels.get(f"PhysicalSize{axis}Unit", "µm"))
        if scale is None or not (math.isfinite(size) and size > 0):
            return None
        out.append(size * scale)
    return (out[0], out[1])


def _tag_mpp(page: tifffile.TiffPage) -> tuple[float, float] | None:
    """(x, y) micrometres per pixel from XResolution/YResolution and ResolutionUnit."""
    if "XResolution" not in page.tags or "YResolution" not in page.tags:
        return None
    try:
        rx, ry = (float(v) for v in page.resolution)
        unit = int(page.resolutionunit)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if not (rx > 0 and ry > 0):
        return None
    per_unit = {2: 25400.0, 3: 10000.0}.get(unit)  # micrometres per inch / centimetre
    if per_unit is None:
        return None
    mpp = (per_unit / rx, per_unit / ry)
    if unit == 2 and max(mpp) > _MAX_INCH_MPP:
        return None
    return mpp


def _to_rgb(arr: np.ndarray, page: tifffile.TiffPage, colour_axis: str | None) -> np.ndarray:
    """(h, w, n) samples of any TIFF type to (h, w, 3) uint8 RGB, alpha composited on white."""
    if page.photometric == tifffile.PHOTOMETRIC.PALETTE and page.colormap is not None:
        cmap = np.asarray(page.colormap)
        lut = (cmap.T.astype(np.float64) * (255.0 / max(1, int(cmap.max())))).round()
        return lut.astype(np.uint8)[arr[..., 0].astype(np.intp)]
    if arr.dtype == np.uint8:
        data = arr
    elif arr.dtype == np.bool_:
        data = arr.astype(np.uint8) * 255
    elif arr.dtype.kind in "ui":
        bits = int(page.bitspersample) if page.bitspersample else arr.dtype.itemsize * 8
        top = float((1 << min(bits, arr.dtype.itemsize * 8)) - 1)
        data = (np.clip(arr.astype(np.float32), 0, top) * (255.0 / top) + 0.5).astype(np.uint8)
    else:
        data = (np.clip(np.nan_to_num(arr.astype(np.float32)), 0, 1) * 255 + 0.5).astype(np.uint8)
    if page.photometric == tifffile.PHOTOMETRIC.MINISWHITE:
        data = 255 - data
    n = data.shape[2]
    extra = tuple(int(e) for e in (page.extrasamples or ()))
    has_alpha = colour_axis == "S" and (n == 2 or n == 4) and (not extra or extra[0] in (1, 2))
    if has_alpha:
        colour, alpha = data[..., :-1], data[..., -1:].astype(np.float32)
        associated = bool(extra) and extra[0] == 1
        if colour.shape[2] == 1:
            colour = np.repeat(colour, 3, axis=2)
        c = colour.astype(np.float32)
        white = 255.0 - alpha
        c = c + white if associated else c * (alpha / 255.0) + white
        return (np.clip(c, 0, 255) + 0.5).astype(np.uint8)
    if n == 1:
        return np.repeat(data, 3, axis=2)
    if n == 2:
        return np.concatenate([data, np.zeros_like(data[..., :1])], axis=2)
    return np.ascontiguousarray(data[..., :3])


class _Level:
    """One pyramid level: its geometry and a region reader."""

    def __init__(self, series: tifffile.TiffPageSeries, index: int) -> None:
        level = series.levels[index]
        self._series, self._index = series, index
        self.axes: str = level.axes
        self.shape: tuple[int, ...] = tuple(level.shape)
        self.page = level.keyframe
        self.size = _xy_shape(self.axes, self.shape)
        self.colour = "S" if "S" in self.axes else ("C" if "C" in self.axes else None)
        self._level = level
        self._array: Any = None  # a zarr array, or the whole decoded numpy array
        self._lock = threading.Lock()

    def array(self) -> Any:
        with self._lock:
            if self._array is None:
                whole = not self.page.is_tiled and self._level.nbytes <= _DECODE_WHOLE
                if whole:
                    self._array = self._series.asarray(level=self._index)
                else:
                    store = self._series.aszarr(level=self._index)
                    self._array = zarr.open_array(store, mode="r")
            return self._array

    def read(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        index: list[Any] = []
        for ax in self.axes:
            if ax == "Y":
                index.append(slice(y, y + h))
            elif ax == "X":
                index.append(slice(x, x + w))
            elif ax == self.colour:  # samples whole; of a channel axis the first three
                index.append(slice(None) if ax == "S" else slice(0, 3))
            else:
                index.append(0)
        data = np.asarray(self.array()[tuple(index)])
        kept = [ax for ax in self.axes if ax in ("Y", "X") or ax == self.colour]
        if self.colour is None:
            data = np.transpose(data, (kept.index("Y"), kept.index("X")))[..., None]
        else:
            data = np.transpose(data, (kept.index("Y"), kept.index("X"), kept.index(self.colour)))
        return _to_rgb(data, self.page, self.colour)


class TiffFileSlide(Slide):
    """A TIFF read with tifffile: OME-TIFF, and tiled or plain TIFF, pyramidal or not."""

    backend: ClassVar[str] = "tifffile"
    _read_errors: ClassVar[tuple[type[BaseException], ...]] = (
        tifffile.TiffFileError, OSError, ValueError, RuntimeError, EOFError,
    )  # fmt: skip

    def __init__(self, path: str | Path, slide_mpp: float | None = None) -> None:
        super().__init__(path, slide_mpp)
        try:
            with tifffile_errors() as errors:
                self._tif = tifffile.TiffFile(self.path)
                series = self._tif.series
            if errors:
                raise tifffile.TiffFileError(errors[0])
            if not series:
                raise tifffile.TiffFileError("no image series")
            main = series[0]
            self._levels = [_Level(main, i) for i in range(len(main.levels))]
            for lvl in self._levels:
                if "X" not in lvl.axes or "Y" not in lvl.axes:
                    raise tifffile.TiffFileError(f"no image plane in axes {lvl.axes!r}")
            self._assoc = {
                s.name.lower(): s
                for s in series[1:]
                if s.name and s.name.lower() in _ASSOCIATED and "X" in s.axes and "Y" in s.axes
            }
            self._props, self._mpp, self._objective = self._read_metadata(main)
        except SlideError:
            raise
        except (tifffile.TiffFileError, OSError, ValueError, KeyError, IndexError) as exc:
            if getattr(self, "_tif", None) is not None:
                self._tif.close()
            raise SlideError(
                f"{self.path}: tifffile cannot read it ({one_line(exc)}); "
                "the file may be corrupt, truncated or not a TIFF: copy or export it again"
            ) from exc
        w0, h0 = self._levels[0].size
        self._dims = tuple(lvl.size for lvl in self._levels)
        self._downs = tuple((w0 / w + h0 / h) / 2 if w and h else 1.0 for w, h in self._dims)

    def _read_metadata(
        self, main: tifffile.TiffPageSeries
    ) -> tuple[dict[str, str], tuple[float, float] | None, float | None]:
        tif = self._tif
        page = self._levels[0].page
        props: dict[str, str] = {
            "tifffile.series-kind": str(main.kind),
            "tifffile.axes": main.axes,
            "tifffile.dtype": str(main.dtype),
        }
        for tag in ("ImageDescription", "Software", "Make", "Model", "DateTime", "Artist"):
            if tag in page.tags:
                props[f"tiff.{tag}"] = str(page.tags[tag].value)
        if "XResolution" in page.tags and "YResolution" in page.tags:
            rx, ry = page.resolution
            props["tiff.XResolution"], props["tiff.YResolution"] = f"{rx:g}", f"{ry:g}"
            props["tiff.ResolutionUnit"] = tifffile.RESUNIT(page.resolutionunit).name.lower()
        mpp: tuple[float, float] | None = None
        objective: float | None = None
        if tif.is_ome and tif.ome_metadata:
            pixels = _ome_pixels(tif.ome_metadata)
            props.update({f"ome.{k}": v for k, v in pixels.items()})
            mpp = _ome_mpp(pixels)
            objective = _positive(pixels.get("NominalMagnification"))
        description = props.get("tiff.ImageDescription", "")
        if tif.is_svs:
            found = re.search(r"\|\s*MPP\s*=\s*([0-9.eE+-]+)", description)
            mag = re.search(r"\|\s*AppMag\s*=\s*([0-9.eE+-]+)", description)
            mpp = mpp or ((v, v) if (v := _positive(found and found.group(1))) else None)
            objective = objective or _positive(mag and mag.group(1))
        if tif.is_ndpi:
            ndpi = page.ndpi_tags or {}  # None when the NDPI tags are missing
            objective = objective or _positive(ndpi.get("Magnification"))
        mpp = mpp or _tag_mpp(page)
        if mpp:
            props["tifffile.mpp-x"], props["tifffile.mpp-y"] = f"{mpp[0]:g}", f"{mpp[1]:g}"
        return props, mpp, objective

    @property
    def vendor(self) -> str | None:
        for flag, name in _VENDORS.items():
            if getattr(self._tif, f"is_{flag}", False):
                return name
        return None

    @property
    def objective_power(self) -> float | None:
        return self._objective

    @property
    def associated_image_names(self) -> tuple[str, ...]:
        return tuple(self._assoc)

    def _metadata_mpp(self) -> tuple[float, float] | None:
        return self._mpp

    def _associated(self, name: str) -> np.ndarray:
        series = self._assoc[name]
        level = _Level(series, 0)
        w, h = level.size
        return level.read(0, 0, w, h)

    def _associated_size(self, name: str) -> tuple[int, int]:
        series = self._assoc[name]
        return _xy_shape(series.axes, tuple(series.shape))

    def _read_raw(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        return self._levels[level].read(x, y, w, h)

    def _close(self) -> None:
        self._tif.close()


def _positive(text: str | float | None) -> float | None:
    """A positive finite float from text, or None."""
    if text is None:
        return None
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None
