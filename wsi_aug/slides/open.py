"""Open any slide with the right backend, or fail with one line naming the file and the fix.

Auto order: a PNG/JPEG/BMP file (by name and content) goes straight to Pillow, as no OpenSlide
format is one; otherwise OpenSlide for what it recognises (except OME-TIFF, whose SubIFD pyramid
and metadata OpenSlide does not read), then tifffile for any TIFF, then Pillow for plain images.
A backend's library is imported when a file first needs it. TIFF-based
files are checked for truncation up front (every strip or tile of the main image must lie inside
the file), since OpenSlide and tifffile otherwise open a truncated file and fail only on reads.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from wsi_aug.errors import SlideError
from wsi_aug.slides.base import one_line

if TYPE_CHECKING:
    from wsi_aug.slides.base import Slide

# Each backend's module, imported when a file needs it: OpenSlide and tifffile (which brings zarr)
# cost more to import than a plain image costs to read.
_BACKEND_CLASSES: dict[str, tuple[str, str]] = {
    "openslide": ("wsi_aug.slides.openslide_backend", "OpenSlideSlide"),
    "tifffile": ("wsi_aug.slides.tifffile_backend", "TiffFileSlide"),
    "image": ("wsi_aug.slides.image_backend", "ImageSlide"),
}
BACKENDS: tuple[str, ...] = tuple(_BACKEND_CLASSES)
"""The backend names, in the order auto tries them."""


def backend_class(name: str) -> type[Slide]:
    """The `Slide` class of a backend name (its module is imported here, on first use)."""
    module, attr = _BACKEND_CLASSES[name]
    cls: type[Slide] = getattr(importlib.import_module(module), attr)
    return cls


# File suffixes taken as slides when scanning a folder (lower case, with the dot).
SLIDE_SUFFIXES: frozenset[str] = frozenset(
    {
        ".svs", ".ndpi", ".mrxs", ".scn", ".tif", ".tiff", ".vms", ".vmu", ".bif", ".svslide",
        ".dcm", ".png", ".jpg", ".jpeg", ".bmp",
    }
)  # fmt: skip

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"BM", b"GIF8", b"RIFF")
_PLAIN_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
_CHECK_PAGES = 64  # pages checked per pyramid level (multi-channel OME levels can have thousands)
_SUPPORTED = "OpenSlide formats (svs, ndpi, mrxs, scn, bif, dcm ...), TIFF/OME-TIFF, PNG/JPEG/BMP"


def _head(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(16)


def _is_ome(path: Path) -> bool:
    """True for OME-TIFF (by name, or by the OME-XML description of the first page)."""
    name = path.name.lower()
    if name.endswith((".ome.tif", ".ome.tiff", ".ome.tf2", ".ome.tf8", ".ome.btf")):
        return True
    import tifffile

    from wsi_aug.slides.tifffile_backend import tifffile_errors

    try:
        with tifffile_errors(), tifffile.TiffFile(path) as tif:
            return bool(tif.is_ome)
    except Exception:  # an unreadable TIFF is judged later, by the backend that opens it
        return False


def check_tiff_complete(path: Path) -> None:
    """Raise a SlideError when a TIFF is truncated or its structure corrupt: an IFD that tifffile
    cannot follow, or image data of the series that runs past the end of the file."""
    import numpy as np
    import tifffile

    from wsi_aug.slides.tifffile_backend import tifffile_errors

    size = path.stat().st_size
    try:
        with tifffile_errors() as errors, tifffile.TiffFile(path) as tif:
            if not tif.series:
                errors.append("no image in the file")
            end = 0
            for series in tif.series:
                for level in series.levels:
                    for page in level.pages[:_CHECK_PAGES]:
                        if page is not None and len(page.dataoffsets):
                            offsets = np.asarray(page.dataoffsets, np.int64)
                            counts = np.asarray(page.databytecounts, np.int64)
                            end = max(end, int((offsets + counts).max()))
    except (tifffile.TiffFileError, OSError, ValueError, IndexError, KeyError) as exc:
        errors = [one_line(exc)]
    if errors:
        raise SlideError(
            f"{path}: truncated or corrupt TIFF ({errors[0][:120]}); copy or export it again"
        )
    if end > size:
        raise SlideError(
            f"{path}: truncated ({size} bytes, but image data reaches byte {end}); "
            "copy or export it again"
        )


def open_slide(
    path: str | os.PathLike[str],
    backend: str | None = None,
    slide_mpp: float | None = None,
) -> Slide:
    """Open `path` with `backend` ("openslide", "tifffile", "image"; None or "auto": the first
    that reads it). `slide_mpp` (µm per level-0 pixel) overrides the file's pixel size."""
    p = Path(path)
    if not p.exists():
        raise SlideError(f"{p}: no such file; check the path")
    if p.is_dir():
        raise SlideError(f"{p}: is a folder, not a slide file; give the slide file itself")
    if backend not in (None, "auto", *BACKENDS):
        raise SlideError(
            f"{p}: unknown backend {backend!r}; use auto, openslide, tifffile or image"
        )
    try:
        head = _head(p)
    except OSError as exc:
        msg = f"{p}: cannot read the file ({one_line(exc)}); check its permissions"
        raise SlideError(msg) from exc
    is_tiff = head.startswith(_TIFF_MAGIC)
    if is_tiff:
        check_tiff_complete(p)
    if backend in BACKENDS:
        return _open_forced(p, backend, slide_mpp, is_tiff)
    return _open_auto(p, slide_mpp, head, is_tiff)


def _open_forced(p: Path, backend: str, slide_mpp: float | None, is_tiff: bool) -> Slide:
    if backend == "openslide" and _detect(p) is None:
        raise SlideError(
            f"{p}: OpenSlide does not read this format; use --backend auto"
            + (" or --backend tifffile" if is_tiff else "")
        )
    if backend == "tifffile" and not is_tiff:
        raise SlideError(f"{p}: not a TIFF file, so tifffile cannot read it; use --backend auto")
    return backend_class(backend)(p, slide_mpp=slide_mpp)


def _detect(p: Path) -> str | None:
    import openslide

    try:
        return openslide.OpenSlide.detect_format(str(p))
    except (openslide.OpenSlideError, OSError):
        return None


def _open_auto(p: Path, slide_mpp: float | None, head: bytes, is_tiff: bool) -> Slide:
    plain = p.suffix.lower() in _PLAIN_SUFFIXES
    if plain and head.startswith(_IMAGE_MAGIC):  # a plain image: no OpenSlide format is one
        return backend_class("image")(p, slide_mpp=slide_mpp)
    fmt = _detect(p)
    openslide_error: SlideError | None = None
    if fmt is not None and not (fmt == "generic-tiff" and _is_ome(p)):
        try:
            return backend_class("openslide")(p, slide_mpp=slide_mpp)
        except SlideError as exc:
            if not is_tiff:
                raise
            openslide_error = exc
    if is_tiff:
        try:
            return backend_class("tifffile")(p, slide_mpp=slide_mpp)
        except SlideError:
            if openslide_error is not None:
                raise openslide_error from None
            raise
    if head.startswith(_IMAGE_MAGIC) or plain:
        return backend_class("image")(p, slide_mpp=slide_mpp)
    raise SlideError(
        f"{p}: not a slide format wsi-aug reads ({_SUPPORTED}); "
        "convert it, e.g. to a pyramidal OME-TIFF"
    )
