"""LabelMe JSON: one file per image, a list of ``shapes`` each with a ``label`` and ``points``.

Polygons, rectangles (two opposite corners) and circles (centre, then a point on the circle) are
read; points, lines, line strips and masks are skipped and counted. The embedded image
(``imageData``) is ignored.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from wsi_aug.annotations.model import (
    Annotation,
    AnnotationReport,
    AnnotationSet,
    clean_geometry,
    ellipse,
    parse_color,
    to_polygon,
)
from wsi_aug.errors import AnnotationError

FMT = "LabelMe JSON"


def is_labelme(data: Any) -> bool:
    """True for LabelMe data: a dict with a ``shapes`` list."""
    return isinstance(data, dict) and isinstance(data.get("shapes"), list)


def _shape_geometry(kind: str, pts: list[tuple[float, float]]) -> BaseGeometry | None:
    """The area of a polygon, rectangle or circle shape; None for other kinds."""
    if kind == "polygon":
        return to_polygon(pts)
    if kind == "rectangle":
        if len(pts) == 2:
            (xa, ya), (xb, yb) = pts
            return box(min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb))
        return to_polygon(pts)
    if kind == "circle":
        if len(pts) < 2:
            return to_polygon([])
        (cx, cy), (px, py) = pts[0], pts[1]
        r = math.hypot(px - cx, py - cy)
        return ellipse(cx - r, cy - r, cx + r, cy + r)
    return None


def parse_labelme(data: Any, path: Path) -> AnnotationSet:
    """Annotations from already-loaded LabelMe data (see `read_labelme`)."""
    path = Path(path)
    if not is_labelme(data):
        raise AnnotationError(
            f"{path}: not a LabelMe file (no 'shapes' list); save it again from LabelMe"
        )
    report = AnnotationReport()
    annotations: list[Annotation] = []
    for i, shape in enumerate(data["shapes"]):
        if not isinstance(shape, dict):
            report.drop(f"shape {i}", "not a shape object")
            continue
        kind = str(shape.get("shape_type") or "polygon").strip().lower()
        where = f"shape {i}"
        try:
            pts = [(float(p[0]), float(p[1])) for p in shape.get("points") or []]
        except (TypeError, ValueError, IndexError):
            report.drop(where, "a point is not a pair of numbers")
            continue
        geom = _shape_geometry(kind, pts)
        if geom is None:
            report.skip(kind, "only polygon, rectangle and circle shapes are read")
            continue
        geom = clean_geometry(geom, report, where)
        if geom is None:
            continue
        label = str(shape.get("label") or "").strip() or "unclassified"
        color = parse_color(shape.get("line_color"))
        annotations.append(Annotation(geom, label, str(i), "annotation", color))
    return AnnotationSet(path, annotations, report, FMT)


def read_labelme(path: str | Path) -> AnnotationSet:
    """Read a LabelMe JSON file."""
    from wsi_aug.annotations.read import load_json

    path = Path(path)
    return parse_labelme(load_json(path), path)
