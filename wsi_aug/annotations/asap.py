"""ASAP XML (``ASAP_Annotations/Annotations/Annotation``), as written by ASAP and CAMELYON.

Polygon, Spline and Rectangle annotations become polygons; a spline is taken through its control
points (ASAP draws a smooth curve through the same points: the area differs by well under a
percent for glomerulus-sized shapes). Dot and PointSet annotations are skipped and counted.
The class is ``PartOfGroup`` (``None``, ASAP's "no group", reads as ``unclassified``).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from shapely.geometry import box

from wsi_aug.annotations.model import (
    Annotation,
    AnnotationReport,
    AnnotationSet,
    clean_geometry,
    parse_color,
    parse_number,
    to_polygon,
)

FMT = "ASAP XML"
_POLYGONAL = {"polygon", "spline", "rectangle"}
_POINTS = {"dot", "pointset"}


def _vertices(ann: ET.Element) -> list[tuple[float, float]]:
    """The annotation's coordinates sorted by their ``Order`` (document order where absent)."""
    rows = []
    for i, c in enumerate(ann.iter("Coordinate")):
        order_text = c.get("Order")
        try:
            order = parse_number(order_text) if order_text is not None else float(i)
        except ValueError:
            order = float(i)
        rows.append((order, i, parse_number(c.get("X")), parse_number(c.get("Y"))))
    rows.sort()
    return [(x, y) for _, _, x, y in rows]


def parse_asap(root: ET.Element, path: Path) -> AnnotationSet:
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
        kind = (ann.get("Type") or "Polygon").strip()
        ident = ann.get("Name") or str(i)
        where = f"annotation {ident!r}"
        if kind.lower() in _POINTS:
            report.skip(kind.lower(), "only areas are read; draw polygons, not dots")
            continue
        if kind.lower() not in _POLYGONAL:
            report.skip(kind.lower() or "other", "only Polygon, Spline and Rectangle are read")
            continue
        try:
            pts = _vertices(ann)
        except ValueError:
            report.drop(where, "a coordinate is not a number")
            continue
        if kind.lower() == "rectangle" and len(pts) == 2:
            (xa, ya), (xb, yb) = pts
            geom = box(min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb))
        else:
            geom = to_polygon(pts)
        geom = clean_geometry(geom, report, where)
        if geom is None:
            continue
        group = (ann.get("PartOfGroup") or "").strip()
        label = group if group and group != "None" else "unclassified"
        color = parse_color(ann.get("Color") or "") or group_colors.get(group)
        annotations.append(Annotation(geom, label, ident, "annotation", color))
    return AnnotationSet(path, annotations, report, FMT)


def read_asap(path: str | Path) -> AnnotationSet:
    """Read an ASAP XML annotation file (coordinates may use a decimal comma)."""
    from wsi_aug.annotations.read import load_xml

    path = Path(path)
    return parse_asap(load_xml(path), path)
