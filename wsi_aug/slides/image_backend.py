"""Plain images (PNG, JPEG, BMP ...) as single-level slides, decoded whole with Pillow.

Such files carry no trustworthy pixel size (a PNG's dpi is a print setting), so the pixel size
comes only from ``--slide-mpp``. Grey, palette, 16-bit and transparent images become RGB on white.

Upright RGB JPEGs are decoded by libjpeg-turbo through imagecodecs straight into a numpy array
(the pixels Pillow's libjpeg-turbo gives, at about a tenth less CPU time and three quarters of
the memory: no 32-bit copy); each read is a slice of it. Other opaque 8-bit images stay a decoded
Pillow image and each read crops it (and converts only the crop to RGB where the mode is not
RGB): a window costs a small copy instead of the whole image being copied to numpy up front. The
EXIF orientation is applied only where the file has one. Either way the file is decoded in one
call, without the GIL, so that slides opened ahead in threads (`wsi_aug.extract`) decode in
parallel with the rest of the work.

A closed slide's JPEG pixel buffer goes back to a small pool (`_POOL`) and the next JPEG of the
same size is decoded into it: a fresh 6 MB array per file costs page faults and zeroing in the
kernel, which measured here (110 HuBMAP tiles decoded in two threads) doubled the decode's CPU
time at worst (2.2-2.5 s against 1.1 s with reuse). No read hands out a view of the buffer
(`Slide` copies every read), so reusing it after `close` is safe.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import ClassVar, Final

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from wsi_aug.errors import SlideError
from wsi_aug.slides.base import Slide, one_line

_WIDE_MODES: Final = ("I;16", "I;16B", "I;16L", "I", "F")
_ALPHA_MODES: Final = ("RGBA", "LA", "PA", "La", "RGBa")
_ORIENTATION: Final = 0x0112  # the EXIF tag; 1 (or none) means upright


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:  # Pillow reports it when it reads
        return 0


class _BufferPool:
    """Decoded-image buffers of closed slides, kept for the next image of the same shape.

    At most `max_bytes` are kept (older buffers are dropped first); thread-safe, since slides
    open in threads and close in the caller's.
    """

    def __init__(self, max_bytes: int = 64 << 20) -> None:
        self.max_bytes = max_bytes
        self._free: list[np.ndarray] = []
        self._lock = threading.Lock()

    def take(self, shape: tuple[int, ...]) -> np.ndarray:
        """A uint8 buffer of `shape`: a kept one where one fits, else a new (uninitialised) one."""
        with self._lock:
            for i, buf in enumerate(self._free):
                if buf.shape == shape:
                    return self._free.pop(i)
        return np.empty(shape, np.uint8)

    def give(self, buf: np.ndarray) -> None:
        """Keep `buf` for reuse; its owner must hold no view of it any more."""
        if buf.nbytes > self.max_bytes or not buf.flags.c_contiguous or buf.base is not None:
            return
        with self._lock:
            self._free.append(buf)
            while sum(b.nbytes for b in self._free) > self.max_bytes:
                self._free.pop(0)


_POOL: Final = _BufferPool()


def _decode_jpeg(img: Image.Image, path: Path) -> np.ndarray | None:
    """An upright RGB JPEG decoded straight into numpy by libjpeg-turbo (imagecodecs), else None.

    The same decoder as Pillow's, without its copy into 32-bit pixels. Complete files only: a
    truncated JPEG decodes there without an error, so it goes to Pillow, which reports it; so
    does anything else imagecodecs refuses.
    """
    if img.format != "JPEG" or img.mode != "RGB":
        return None
    if img.getexif().get(_ORIENTATION, 1) not in (0, 1):
        return None
    try:
        import imagecodecs
    except ImportError:  # pragma: no cover - a dependency
        return None
    data = path.read_bytes()
    if not data.endswith(b"\xff\xd9"):
        return None
    shape = (img.size[1], img.size[0], 3)
    buf = _POOL.take(shape)
    try:
        pixels = imagecodecs.jpeg8_decode(data, out=buf)
    except Exception:  # Pillow decides (and words the error)
        _POOL.give(buf)
        return None
    if pixels is not buf and not np.shares_memory(pixels, buf):  # pragma: no cover - defensive
        _POOL.give(buf)
        return None
    return buf


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in _ALPHA_MODES or "transparency" in img.info


def _upright(img: Image.Image) -> Image.Image:
    """The image as displayed: EXIF-rotated where an orientation tag says so (a copy only then)."""
    if img.getexif().get(_ORIENTATION, 1) in (0, 1):
        return img
    return ImageOps.exif_transpose(img)


def _rgb_on_white(img: Image.Image) -> np.ndarray:
    """Any Pillow image as (h, w, 3) uint8 RGB, transparency composited onto white."""
    if img.mode in _WIDE_MODES:
        arr = np.asarray(img, dtype=np.float32)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        grey = (np.clip(arr, 0, top) * (255.0 / top) + 0.5).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if not _has_alpha(img):
        rgb: np.ndarray = np.asarray(img if img.mode == "RGB" else img.convert("RGB"), np.uint8)
        return rgb
    rgba = np.asarray(img.convert("RGBA"), dtype=np.float32)
    alpha = rgba[..., 3:4] / 255.0
    on_white: np.ndarray = (rgba[..., :3] * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)
    return on_white


def _load(img: ImageFile.ImageFile, path: Path) -> tuple[Image.Image | None, np.ndarray | None]:
    """Decode with Pillow: the upright image where it is opaque 8-bit, else RGB on white."""
    # the whole file in one read and one decoder call (Pillow reads 64 KiB a call): the decoder
    # releases the GIL, and each call returned has to take it back
    img.decodermaxblock = max(img.decodermaxblock, _file_size(path))
    img.load()
    shown = _upright(img)
    if shown.mode in _WIDE_MODES or _has_alpha(shown):
        return None, _rgb_on_white(shown)
    return shown, None  # `img.load()` decoded it; the file handle closes with the caller's `with`


class ImageSlide(Slide):
    """A PNG/JPEG/BMP/... image: one level, pixel size only from ``slide_mpp``."""

    backend: ClassVar[str] = "image"
    _image: Image.Image | None  # opaque 8-bit: the decoded image, cropped by every read
    _pixels: np.ndarray | None  # otherwise: the whole image as RGB on white
    _pooled: bool = False  # _pixels is a JPEG buffer from `_POOL`, given back on close

    def __init__(self, path: str | Path, slide_mpp: float | None = None) -> None:
        super().__init__(path, slide_mpp)
        try:
            with Image.open(self.path) as img:
                self._props = {"image.format": str(img.format), "image.mode": img.mode}
                pixels = _decode_jpeg(img, self.path)
                self._pooled = pixels is not None
                if pixels is not None:
                    self._image, self._pixels = None, pixels
                else:
                    self._image, self._pixels = _load(img, self.path)
        except Image.DecompressionBombError as exc:
            raise SlideError(
                f"{self.path}: too large to decode as a plain image; "
                "convert it to a tiled pyramidal TIFF (e.g. with vips tiffsave --tile --pyramid)"
            ) from exc
        except UnidentifiedImageError as exc:
            raise SlideError(
                f"{self.path}: not an image format Pillow reads; "
                "convert it to PNG or TIFF, or choose another --backend"
            ) from exc
        except (OSError, ValueError, SyntaxError) as exc:
            raise SlideError(
                f"{self.path}: cannot decode the image ({one_line(exc)}); "
                "the file may be corrupt or truncated: copy or export it again"
            ) from exc
        if self._image is not None:
            w, h = self._image.size
        else:
            assert self._pixels is not None
            h, w = self._pixels.shape[:2]
        self._dims = ((int(w), int(h)),)

    def _metadata_mpp(self) -> tuple[float, float] | None:
        return None

    def _read_raw(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        if self._image is None:
            assert self._pixels is not None
            return self._pixels[y : y + h, x : x + w]
        part = self._image.crop((x, y, x + w, y + h))
        return np.asarray(part if part.mode == "RGB" else part.convert("RGB"))

    def held_bytes(self) -> int:
        if self._pixels is not None:
            return int(self._pixels.nbytes)
        if self._image is not None:
            w, h = self._image.size
            return w * h * (1 if self._image.mode in ("1", "L", "P") else 4)  # Pillow: 32-bit
        return 0

    def _close(self) -> None:
        if self._image is None and self._pixels is not None and self._pooled:
            _POOL.give(self._pixels)
        self._image, self._pixels = None, None
