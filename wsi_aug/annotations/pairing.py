"""Which annotation file belongs to which slide: by file name, or by a CSV manifest.

By name, ``foo.svs`` pairs with ``foo.geojson``, ``foo.json``, ``foo.xml``, ``foo.annotations``
(HALO; also ``foo.svs.geojson`` ...), or a mask image ``foo_mask.png``, ``foo.mask.png`` or
``foo-mask.png``; in an annotations folder a mask of the same stem (``masks/foo.png``) pairs too.
The annotations folder is searched before the slide's own folder. Names match case-insensitively.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from wsi_aug.annotations.suffixes import MASK_SUFFIXES
from wsi_aug.errors import AnnotationError, SlideError

_SLIDE_SUFFIXES: frozenset[str] | None
try:  # the slide readers own the list of slide formats; this fallback keeps pairing standalone
    from wsi_aug.slides.open import SLIDE_SUFFIXES as _SLIDE_SUFFIXES
except ImportError:  # pragma: no cover - depends on what else is installed
    _SLIDE_SUFFIXES = None

FALLBACK_SLIDE_SUFFIXES = frozenset(
    {
        ".svs",
        ".tif",
        ".tiff",
        ".ndpi",
        ".vms",
        ".vmu",
        ".scn",
        ".mrxs",
        ".bif",
        ".svslide",
        ".png",
        ".jpg",
        ".jpeg",
    }
)
SLIDE_SUFFIXES: frozenset[str] = frozenset(
    s.lower() for s in (_SLIDE_SUFFIXES or FALLBACK_SLIDE_SUFFIXES)
)
SHAPE_SUFFIXES = (".geojson", ".json", ".xml", ".annotations")
"""Annotation files by suffix, in order of preference; never slides, whatever the slide suffixes."""
MASK_MARKS = ("_mask", ".mask", "-mask")
SPLITS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}

log = logging.getLogger(__name__)


@dataclass
class SlideEntry:
    """A slide, its annotation file (None when it has none), and its patient and split if known."""

    slide: Path
    annotation: Path | None
    patient: str | None = None
    split: str | None = None
    mpp: float | None = None  # the slide's own pixel size, from a manifest's `mpp` column


def _is_mask_name(path: Path) -> bool:
    """True for ``foo_mask.png``-style names: masks, not slides, even with a slide suffix."""
    return path.stem.lower().endswith(MASK_MARKS)


def find_slides(
    inputs: Sequence[Path | str],
    suffixes: Iterable[str] | None = None,
    *,
    recursive: bool = False,
) -> list[Path]:
    """The slides among files and folders, sorted and without duplicates.

    A file is taken as given. A folder gives its files with a slide suffix (its sub-folders too
    when `recursive`), leaving out hidden files, annotation files (.json, .geojson, .xml,
    .annotations) and mask images named like ``foo_mask.png``.
    """
    allowed = {s.lower() for s in (suffixes or SLIDE_SUFFIXES)}
    found: set[Path] = set()
    for item in inputs:
        p = Path(item)
        if p.is_file():
            found.add(p)
        elif p.is_dir():
            for f in p.rglob("*") if recursive else p.iterdir():
                if f.is_symlink() and not f.exists():
                    log.warning("%s: a broken link (to %s); skipped", f, os.readlink(f))
                    continue
                if (
                    f.is_file()
                    and not f.name.startswith(".")
                    and f.suffix.lower() in allowed
                    and f.suffix.lower() not in SHAPE_SUFFIXES
                    and not _is_mask_name(f)
                ):
                    found.add(f)
        else:
            raise SlideError(f"{p}: no such slide file or folder; check the path")
    return sorted(found)


class _Folder:
    """A folder's file names, lower-cased, listed once however many slides look in it."""

    def __init__(self) -> None:
        self._cache: dict[Path, dict[str, Path]] = {}

    def names(self, folder: Path) -> dict[str, Path]:
        if folder not in self._cache:
            entries = folder.iterdir() if folder.is_dir() else []
            self._cache[folder] = {f.name.lower(): f for f in entries if f.is_file()}
        return self._cache[folder]


def _candidates(slide: Path, same_stem_masks: bool) -> list[str]:
    """Annotation file names for a slide, in order of preference (lower case)."""
    stems = [slide.stem, slide.name]
    if slide.stem.lower().endswith(".ome"):
        stems.insert(0, slide.stem[:-4])
    stems = list(dict.fromkeys(s.lower() for s in stems))
    names = [s + suf for s in stems for suf in SHAPE_SUFFIXES]
    masks = sorted(MASK_SUFFIXES)
    names += [s + mark + suf for s in stems for mark in MASK_MARKS for suf in masks]
    if same_stem_masks:
        names += [s + suf for s in stems for suf in masks]
    return names


def find_annotation(
    slide: Path, annotations_dir: Path | None = None, *, _folders: _Folder | None = None
) -> Path | None:
    """The annotation file of one slide (see the module docstring), or None."""
    folders = _folders or _Folder()
    places = [(annotations_dir, True)] if annotations_dir is not None else []
    places.append((slide.parent, False))
    for folder, same_stem in places:
        names = folders.names(Path(folder))
        for name in _candidates(slide, same_stem):
            hit = names.get(name)
            if hit is not None and hit.resolve() != slide.resolve():
                return hit
    return None


def pair_annotations(
    slides: Sequence[Path], annotations_dir: Path | None = None
) -> list[SlideEntry]:
    """Each slide with its annotation file by name; ``annotation=None`` where none is found."""
    if annotations_dir is not None and not Path(annotations_dir).is_dir():
        raise AnnotationError(f"{annotations_dir}: no such annotations folder; check --annotations")
    folders = _Folder()
    return [
        SlideEntry(Path(s), find_annotation(Path(s), annotations_dir, _folders=folders))
        for s in slides
    ]


def _resolve(base: Path, text: str) -> Path:
    """A manifest path: ``~`` expanded, relative paths taken from the manifest's folder."""
    p = Path(text).expanduser()
    return p if p.is_absolute() else base / p


def read_manifest(path: str | Path) -> list[SlideEntry]:
    """Slides from a CSV manifest with columns slide, annotation[, patient][, split][, mpp].

    Paths are relative to the CSV's folder; an empty annotation cell means the slide has none.
    Column names are case-insensitive, the delimiter may be ``,``, ``;`` or a tab, and blank
    lines and lines starting with ``#`` are ignored. Splits are ``train``, ``val`` or ``test``.
    """
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"{path}: no such manifest file; check the path")
    text = path.read_text(encoding="utf-8-sig")
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise AnnotationError(f"{path}: empty manifest; add a header line 'slide,annotation'")
    header = lines[0]
    delim = max(",;\t", key=header.count) if any(c in header for c in ",;\t") else ","
    rows = list(csv.reader(io.StringIO("\n".join(lines)), delimiter=delim))
    columns = [c.strip().lower() for c in rows[0]]
    for required in ("slide", "annotation"):
        if required not in columns:
            raise AnnotationError(
                f"{path}: no '{required}' column (header: {','.join(columns)}); the header "
                "must name slide,annotation and optionally patient,split"
            )
    col = {
        name: columns.index(name)
        for name in ("slide", "annotation", "patient", "split", "mpp")
        if name in columns
    }
    base = path.parent
    entries: list[SlideEntry] = []
    seen: dict[Path, int] = {}
    for n, row in enumerate(rows[1:], start=2):
        cells = {k: (row[i].strip() if i < len(row) else "") for k, i in col.items()}
        where = f"{path} row {n}"
        if not cells["slide"]:
            raise AnnotationError(f"{where}: the slide cell is empty; fill it or delete the row")
        slide = _resolve(base, cells["slide"])
        if not slide.exists():
            raise AnnotationError(
                f"{where}: slide {cells['slide']!r} not found ({slide}); paths are relative "
                "to the manifest's folder"
            )
        key = slide.resolve()
        if key in seen:
            raise AnnotationError(
                f"{where}: slide {cells['slide']!r} is listed again (row {seen[key]}); "
                "keep one row per slide"
            )
        seen[key] = n
        annotation = None
        if cells["annotation"]:
            annotation = _resolve(base, cells["annotation"])
            if not annotation.is_file():
                raise AnnotationError(
                    f"{where}: annotation {cells['annotation']!r} not found ({annotation}); "
                    "paths are relative to the manifest's folder"
                )
        split = cells.get("split") or None
        if split is not None:
            if split.lower() not in SPLITS:
                raise AnnotationError(
                    f"{where}: split {split!r} is not train, val or test; correct it or "
                    "leave it empty"
                )
            split = SPLITS[split.lower()]
        mpp = None
        if cells.get("mpp"):
            try:
                mpp = float(cells["mpp"])
            except ValueError:
                mpp = -1.0
            if not mpp > 0:
                raise AnnotationError(
                    f"{where}: mpp {cells['mpp']!r} is not a positive number (micrometres per "
                    "pixel); correct it or leave it empty"
                )
        entries.append(SlideEntry(slide, annotation, cells.get("patient") or None, split, mpp))
    if not entries:
        raise AnnotationError(f"{path}: the manifest lists no slide; add one row per slide")
    return entries
