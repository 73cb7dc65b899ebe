"""LabelMe JSON: one file per image, a list of ``shapes`` each with a ``label`` and ``points``.

Polygons, rectangles (two opposite corners) and circles (centre, then a point on the circle) are
read; points, lines, line strips and masks are skipped and counted. The embedded image
(``imageData``) is ignored. LabelMe never closes its polygons: the last point joins the first.

A shape with a wrong type (points that are not a list of [x, y] numbers, a label that is not
text) or a coordinate that is not a finite number within ±`MAX_COORDINATE` px is rejected (counted
in the report with the reason, naming the shape) and the other shapes are read.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from shapely.geometry import Polygon, box
from shapely.geometry.base import BaseGeometry

from wsi_aug.annotations.model import (
    Annotation,
    AnnotationReport,
    AnnotationSet,
    InvalidObject,
    clean_geometry,
    clean_text,
    ellipse,
    parse_color,
    points_array,
    polygon_from,
    shown,
)
from wsi_aug.errors import AnnotationError

FMT = "LabelMe JSON"


def is_labelme(data: Any) -> bool:
    """True for LabelMe data: a dict with a ``shapes`` list."""
    return isinstance(data, dict) and isinstance(data.get("shapes"), list)


def _shape_geometry(kind: str, pts: np.ndarray) -> BaseGeometry | None:
    """The area of a polygon, rectangle or circle shape; None for other kinds."""
    if kind == "polygon":
        return polygon_from(pts)
    if kind == "rectangle":
        if len(pts) == 2:
            (xa, ya), (xb, yb) = pts.tolist()
            return box(min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb))
        return polygon_from(pts)
    if kind == "circle":
        if len(pts) < 2:
            return Polygon()
        (cx, cy), (px, py) = pts[:2].tolist()
        r = math.hypot(px - cx, py - cy)
        return ellipse(cx - r, cy - r, cx + r, cy + r)
    return None


def _label(value: Any) -> str:
    """A shape's class: its label as one line of text; ``unclassified`` when absent or blank."""
    if value is None:
        return "unclassified"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 10**100:
        return str(value)
    if not isinstance(value, str):
        raise InvalidObject(f"label is {shown(value)}, not text")
    return clean_text(value) or "unclassified"


def parse_labelme(data: Any, path: Path, *, max_vertices: int | None = None) -> AnnotationSet:
    """Annotations from already-loaded LabelMe data (see `read_labelme`)."""
    path = Path(path)
    if not is_labelme(data):
        raise AnnotationError(
            f"{path}: not a LabelMe file (no 'shapes' list); save it again from LabelMe"
        )
    report = AnnotationReport()
    annotations: list[Annotation] = []
    for i, shape in enumerate(data["shapes"]):
        where = f"shape {i}"
        if not isinstance(shape, dict):
            report.reject(where, f"is {shown(shape)}, not a shape object")
            continue
        try:
            kind_value = shape.get("shape_type")
            if kind_value is not None and not isinstance(kind_value, str):
                raise InvalidObject(f"shape_type is {shown(kind_value)}, not text")
            kind = clean_text(kind_value or "", 40).lower() or "polygon"
            pts = points_array(shape.get("points"), "points")
            label = _label(shape.get("label"))
        except InvalidObject as exc:
            report.reject(where, str(exc))
            continue
        geom = _shape_geometry(kind, pts)
        if geom is None:
            report.skip(kind, "only polygon, rectangle and circle shapes are read")
            continue
        geom = clean_geometry(geom, report, where, max_vertices=max_vertices)
        if geom is None:
            continue
        color = parse_color(shape.get("line_color"))
        annotations.append(Annotation(geom, label, str(i), "annotation", color))
    return AnnotationSet(path, annotations, report, FMT)


def read_labelme(path: str | Path, *, max_vertices: int | None = None) -> AnnotationSet:
    """Read a LabelMe JSON file."""
    from wsi_aug.annotations.read import load_json

    path = Path(path)
    return parse_labelme(load_json(path), path, max_vertices=max_vertices)
