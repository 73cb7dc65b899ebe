"""Annotations: QuPath GeoJSON, ASAP XML, ImageScope XML, HALO XML, LabelMe JSON,
DSA/HistomicsTK JSON and mask images.

Every format is read into an `AnnotationSet` of polygons in level-0 pixel coordinates, with a
report of what was repaired, dropped and skipped; `read_annotations` finds the format itself.
"""

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
