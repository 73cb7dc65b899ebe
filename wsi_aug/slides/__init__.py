"""Reading whole-slide images and plain images through one interface, `Slide`.

`open_slide` picks the backend (OpenSlide, tifffile or Pillow); every slide reads regions at a
level or at a pixel size, as RGB on white, with the same resampling whatever the backend.
"""

from wsi_aug.slides.base import Slide
from wsi_aug.slides.image_backend import ImageSlide
from wsi_aug.slides.info import format_slide_info, slide_info
from wsi_aug.slides.open import SLIDE_SUFFIXES, open_slide
from wsi_aug.slides.openslide_backend import OpenSlideSlide
from wsi_aug.slides.tifffile_backend import TiffFileSlide

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
