"""Indica Labs HALO ``.annotations`` XML (``Annotations/Annotation/Regions/Region/Vertices/V``).

HALO shares ImageScope's layout and root tag but names its region types in words and its vertices
``V``. Each ``Annotation`` is a layer; its class is the layer's ``Name``, else ``Layer N``. Each
positive region becomes one object; a region with ``NegativeROA="1"`` is an exclusion, cut out of
the positive regions of the same layer that contain it (a hole), never an object itself.
``Polygon`` regions are read through their vertices; ``Rectangle`` and ``Ellipse`` regions from
the bounding box of theirs (two opposite corners). A polygon with ``HasEndcaps="1"`` is an open
line drawn with end caps, not an area: it is skipped and counted, as are rulers, pins and other
types.

A region with a vertex coordinate that is not a number, not finite, or beyond ±`MAX_COORDINATE`
px is rejected (counted in the report with the reason, naming the layer and region); the others
are read.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from wsi_aug.annotations.imagescope import _cut_holes, _line_color
from wsi_aug.annotations.model import (
    Annotation,
    AnnotationReport,
    AnnotationSet,
    InvalidObject,
    check_coordinates,
    clean_geometry,
    clean_text,
    ellipse,
    parse_number,
    polygon_from,
    shown,
)

FMT = "HALO XML"
AREA_TYPES = ("polygon", "rectangle", "ellipse")


def is_halo(root: ET.Element) -> bool | None:
    """True for a HALO tree, False for ImageScope, None when an ``Annotations`` tree says neither.

    HALO writes vertices as ``V`` and region types as words; ImageScope writes ``Vertex`` and
    digits. The first region that shows either decides, so the cost is linear at worst.
    """
    for region in root.iterfind("Annotation/Regions/Region"):
        vertices = region.find("Vertices")
        if vertices is not None:
            if vertices.find("V") is not None:
                return True
            if vertices.find("Vertex") is not None:
                return False
        rtype = (region.get("Type") or "").strip()
        if rtype:
            return not rtype.isdigit()
    return None


def _layer_label(layer: ET.Element, index: int) -> str:
    """The class of a layer: its Name, else ``Layer N``."""
    return clean_text(layer.get("Name") or "") or f"Layer {index + 1}"


def _number(v: ET.Element, name: str, i: int) -> float:
    """Attribute `name` of the i-th V as a number, or `InvalidObject` saying why not."""
    text = v.get(name)
    try:
        return parse_number(text)
    except ValueError:
        what = "missing" if text is None else f"{shown(text)}, not a number"
        raise InvalidObject(f"vertex {i}: {name} is {what}") from None


def _region_geometry(region: ET.Element, kind: str) -> BaseGeometry:
    """The region's shape: a polygon through its vertices, or a box or ellipse in their bounds."""
    vertices = region.iterfind("Vertices/V")
    pts = np.array(
        [(_number(v, "X", i), _number(v, "Y", i)) for i, v in enumerate(vertices)],
        dtype=np.float64,
    ).reshape(-1, 2)
    check_coordinates(pts, "vertices")
    if kind in ("rectangle", "ellipse") and len(pts) >= 2:
        (x0, y0), (x1, y1) = pts.min(axis=0).tolist(), pts.max(axis=0).tolist()
        if kind == "ellipse":
            return ellipse(x0, y0, x1, y1)
        if len(pts) == 2:
            return box(x0, y0, x1, y1)
    return polygon_from(pts)


def _flag(region: ET.Element, name: str) -> bool:
    """A HALO boolean attribute (``1``/``0``, ``True``/``False``)."""
    return (region.get(name) or "0").strip().lower() in ("1", "true")


def parse_halo(root: ET.Element, path: Path, *, max_vertices: int | None = None) -> AnnotationSet:
    """Annotations from an already-parsed HALO XML tree (see `read_halo`)."""
    path = Path(path)
    report = AnnotationReport()
    annotations: list[Annotation] = []
    for li, layer in enumerate(root.findall("Annotation")):
        label = _layer_label(layer, li)
        color = _line_color(layer.get("LineColor"))
        positives: list[tuple[str, BaseGeometry]] = []
        negatives: list[tuple[str, BaseGeometry]] = []
        for ri, region in enumerate(layer.findall("Regions/Region")):
            kind = clean_text(region.get("Type") or "Polygon", 40).lower()
            if kind not in AREA_TYPES:
                report.skip(kind or "other", "only Polygon, Rectangle and Ellipse regions are read")
                continue
            if kind == "polygon" and _flag(region, "HasEndcaps"):
                report.skip("line", "an open line (HasEndcaps) is not an area; draw a polygon")
                continue
            rid = f"{li + 1}.{ri + 1}"
            where = f"layer {label!r} region {rid}"
            try:
                raw = _region_geometry(region, kind)
            except InvalidObject as exc:
                report.reject(where, str(exc))
                continue
            geom = clean_geometry(raw, report, where, max_vertices=max_vertices)
            if geom is None:
                continue
            (negatives if _flag(region, "NegativeROA") else positives).append((rid, geom))
        for rid, geom in _cut_holes(positives, negatives, report):
            where = f"layer {label!r} region {rid}"
            cleaned = clean_geometry(geom, report, where, max_vertices=max_vertices)
            if cleaned is not None:
                annotations.append(Annotation(cleaned, label, rid, "annotation", color))
    return AnnotationSet(path, annotations, report, FMT)


def read_halo(path: str | Path, *, max_vertices: int | None = None) -> AnnotationSet:
    """Read a HALO ``.annotations`` XML file."""
    from wsi_aug.annotations.read import load_xml

    path = Path(path)
    return parse_halo(load_xml(path), path, max_vertices=max_vertices)
