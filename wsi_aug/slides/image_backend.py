"""Plain images (PNG, JPEG, BMP ...) as single-level slides, decoded whole with Pillow.

Such files carry no trustworthy pixel size (a PNG's dpi is a print setting), so the pixel size
comes only from ``--slide-mpp``. Grey, palette, 16-bit and transparent images become RGB on white.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from wsi_aug.errors import SlideError
from wsi_aug.slides.base import Slide, one_line


def _rgb_on_white(img: Image.Image) -> np.ndarray:
    """Any Pillow image as (h, w, 3) uint8 RGB, transparency composited onto white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float32)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        grey = (np.clip(arr, 0, top) * (255.0 / top) + 0.5).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    has_alpha = img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info
    if not has_alpha:
        return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    rgba = np.asarray(img.convert("RGBA"), dtype=np.float32)
    alpha = rgba[..., 3:4] / 255.0
    return (rgba[..., :3] * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)


class ImageSlide(Slide):
    """A PNG/JPEG/BMP/... image: one level, pixel size only from ``slide_mpp``."""

    backend: ClassVar[str] = "image"

    def __init__(self, path: str | Path, slide_mpp: float | None = None) -> None:
        super().__init__(path, slide_mpp)
        try:
            with Image.open(self.path) as img:
                img.load()
                self._props = {"image.format": str(img.format), "image.mode": img.mode}
                img = ImageOps.exif_transpose(img)
                self._pixels = _rgb_on_white(img)
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
        h, w = self._pixels.shape[:2]
        self._dims = ((int(w), int(h)),)

    def _metadata_mpp(self) -> tuple[float, float] | None:
        return None

    def _read_raw(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        return self._pixels[y : y + h, x : x + w]

    def _close(self) -> None:
        self._pixels = np.zeros((0, 0, 3), np.uint8)
