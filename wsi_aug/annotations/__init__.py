"""Annotations: QuPath GeoJSON, ASAP XML, ImageScope XML, HALO XML, LabelMe JSON,
DSA/HistomicsTK JSON and mask images.

Every format is read into an `AnnotationSet` of polygons in level-0 pixel coordinates, with a
report of what was repaired, dropped and skipped; `read_annotations` finds the format itself.

The names below load on first use (PEP 562): pairing slides with their files needs neither
shapely nor the format parsers, so extraction can start decoding slides before they import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wsi_aug.lazy import lazy_exports

if TYPE_CHECKING:
    from wsi_aug.annotations.model import (
        Annotation,
        AnnotationReport,
        AnnotationSet,
        clean_geometry,
    )
    from wsi_aug.annotations.pairing import (
        SlideEntry,
        find_annotation,
        find_slides,
        pair_annotations,
        read_manifest,
    )
    from wsi_aug.annotations.read import detect_format, read_annotations, summarise

_WHERE = {
    "Annotation": "model",
    "AnnotationReport": "model",
    "AnnotationSet": "model",
    "clean_geometry": "model",
    "SlideEntry": "pairing",
    "find_annotation": "pairing",
    "find_slides": "pairing",
    "pair_annotations": "pairing",
    "read_manifest": "pairing",
    "detect_format": "read",
    "read_annotations": "read",
    "summarise": "read",
}

__all__ = [
    "Annotation",
    "AnnotationReport",
    "AnnotationSet",
    "SlideEntry",
    "clean_geometry",
    "detect_format",
    "find_annotation",
    "find_slides",
    "pair_annotations",
    "read_annotations",
    "read_manifest",
    "summarise",
]


__getattr__, __dir__ = lazy_exports(__name__, _WHERE, globals())
