"""Reading whole-slide images and plain images through one interface, `Slide`.

`open_slide` picks the backend (OpenSlide, tifffile or Pillow); every slide reads regions at a
level or at a pixel size, as RGB on white, with the same resampling whatever the backend.

The names below are imported on first use: a backend's library (OpenSlide, tifffile with zarr)
is loaded only when a file needs it, so that reading plain images starts fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wsi_aug.lazy import lazy_exports

if TYPE_CHECKING:
    from wsi_aug.slides.base import Slide
    from wsi_aug.slides.image_backend import ImageSlide
    from wsi_aug.slides.info import format_slide_info, slide_info
    from wsi_aug.slides.open import SLIDE_SUFFIXES, open_slide
    from wsi_aug.slides.openslide_backend import OpenSlideSlide
    from wsi_aug.slides.tifffile_backend import TiffFileSlide

_WHERE = {
    "SLIDE_SUFFIXES": "open",
    "ImageSlide": "image_backend",
    "OpenSlideSlide": "openslide_backend",
    "Slide": "base",
    "TiffFileSlide": "tifffile_backend",
    "format_slide_info": "info",
    "open_slide": "open",
    "slide_info": "info",
}

__all__ = [
    "SLIDE_SUFFIXES",
    "ImageSlide",
    "OpenSlideSlide",
    "Slide",
    "TiffFileSlide",
    "format_slide_info",
    "open_slide",
    "slide_info",
]


__getattr__, __dir__ = lazy_exports(__name__, _WHERE, globals())
