"""ASAP XML (``ASAP_Annotations/Annotations/Annotation``), as written by ASAP and CAMELYON.

Polygon, Spline and Rectangle annotations become polygons; a spline is taken through its control
points (ASAP draws a smooth curve through the same points: the area differs by well under a
percent for glomerulus-sized shapes). Dot and PointSet annotations are skipped and counted.
The class is ``PartOfGroup`` (``None``, ASAP's "no group", reads as ``unclassified``).

An annotation with a coordinate that is not a number, not finite, or beyond ±`MAX_COORDINATE` px
is rejected (counted in the report with the reason, naming the annotation); the others are read.
"""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from shapely.geometry import box

from wsi_aug.annotations.model import (
    Annotation,
    AnnotationReport,
    AnnotationSet,
    InvalidObject,
    check_coordinates,
    clean_geometry,
    clean_text,
    parse_color,
    parse_number,
    polygon_from,
    shown,
)

FMT = "ASAP XML"
_POLYGONAL = {"polygon", "spline", "rectangle"}
_POINTS = {"dot", "pointset"}


def _number(c: ET.Element, name: str, i: int) -> float:
    """Attribute `name` of the i-th Coordinate as a number, or `InvalidObject` saying why not."""
    text = c.get(name)
    try:
        return parse_number(text)
    except ValueError:
        what = "missing" if text is None else f"{shown(text)}, not a number"
        raise InvalidObject(f"coordinate {i}: {name} is {what}") from None


def _vertices(ann: ET.Element) -> np.ndarray:
    """The annotation's coordinates sorted by their ``Order`` (document order where absent)."""
    rows = []
    for i, c in enumerate(ann.iter("Coordinate")):
        order = float(i)
        order_text = c.get("Order")
        if order_text is not None:
            with contextlib.suppress(ValueError):
                order = parse_number(order_text)
            if not abs(order) < 1e15:  # NaN, infinite or absurd: document order
                order = float(i)
        rows.append((order, i, _number(c, "X", i), _number(c, "Y", i)))
    rows.sort()
    xy = np.array([(x, y) for _, _, x, y in rows], dtype=np.float64).reshape(-1, 2)
    return check_coordinates(xy, "coordinates")


def parse_asap(root: ET.Element, path: Path, *, max_vertices: int | None = None) -> AnnotationSet:
    """Annotations from an already-parsed ASAP XML tree (see `read_asap`)."""
    path = Path(path)
    report = AnnotationReport()
    group_colors = {
        g.get("Name"): parse_color(g.get("Color") or "")
        for g in root.iter("Group")
        if g.get("Name")
    }
    annotations: list[Annotation] = []
    for i, ann in enumerate(root.iter("Annotation")):
        kind = clean_text(ann.get("Type") or "Polygon", 40)
        ident = clean_text(ann.get("Name") or "") or str(i)
        where = f"annotation {ident!r}"
        if kind.lower() in _POINTS:
            report.skip(kind.lower(), "only areas are read; draw polygons, not dots")
            continue
        if kind.lower() not in _POLYGONAL:
            report.skip(kind.lower() or "other", "only Polygon, Spline and Rectangle are read")
            continue
        try:
            pts = _vertices(ann)
        except InvalidObject as exc:
            report.reject(where, str(exc))
            continue
        if kind.lower() == "rectangle" and len(pts) == 2:
            (xa, ya), (xb, yb) = pts.tolist()
            geom = box(min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb))
        else:
            geom = polygon_from(pts)
        geom = clean_geometry(geom, report, where, max_vertices=max_vertices)
        if geom is None:
            continue
        group = clean_text(ann.get("PartOfGroup") or "")
        label = group if group and group != "None" else "unclassified"
        color = parse_color(ann.get("Color") or "") or group_colors.get(group)
        annotations.append(Annotation(geom, label, ident, "annotation", color))
    return AnnotationSet(path, annotations, report, FMT)


def read_asap(path: str | Path, *, max_vertices: int | None = None) -> AnnotationSet:
    """Read an ASAP XML annotation file (coordinates may use a decimal comma)."""
    from wsi_aug.annotations.read import load_xml

    path = Path(path)
    return parse_asap(load_xml(path), path, max_vertices=max_vertices)
