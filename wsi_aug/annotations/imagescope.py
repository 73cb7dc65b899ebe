"""Aperio ImageScope XML (``Annotations/Annotation/Regions/Region/Vertices/Vertex``).

Each ``Annotation`` is a layer; its class is the layer's ``Name``, else the name of its first
attribute (other than ImageScope's default ``Description``), else ``Layer N``. Each positive region
becomes one object. A region with ``NegativeROA="1"`` is an exclusion: it is cut out of the
positive regions of the same layer that contain it (a hole), and never becomes an object itself.
Region types 0, 1 and 2 (free-form polygon, rectangle, ellipse) are read; rulers, arrows and
other types are skipped and counted.

A region with a vertex coordinate that is not a number, not finite, or beyond ±`MAX_COORDINATE`
px is rejected (counted in the report with the reason, naming the layer and region); the others
are read.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import shapely
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

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

FMT = "Aperio ImageScope XML"
_TYPES = {"0": "polygon", "1": "rectangle", "2": "ellipse"}
_OTHER = {"3": "arrow", "4": "ruler"}


def _layer_label(ann: ET.Element, index: int) -> str:
    """The class of a layer: its Name, else an attribute name, else ``Layer N``."""
    name = clean_text(ann.get("Name") or "")
    if name:
        return name
    for attr in ann.findall("Attributes/Attribute"):
        aname = clean_text(attr.get("Name") or "")
        if aname and aname.lower() != "description":
            return aname
    return f"Layer {clean_text(ann.get('Id') or '', 40) or index + 1}"


def _line_color(value: str | None) -> tuple[int, int, int] | None:
    """ImageScope's ``LineColor``: a Windows COLORREF integer, 0x00BBGGRR."""
    text = (value or "").strip()
    if not text.isdigit() or len(text) > 10:
        return None
    v = int(text)
    return (v & 255, (v >> 8) & 255, (v >> 16) & 255)


def _number(v: ET.Element, name: str, i: int) -> float:
    """Attribute `name` of the i-th Vertex as a number, or `InvalidObject` saying why not."""
    text = v.get(name)
    try:
        return parse_number(text)
    except ValueError:
        what = "missing" if text is None else f"{shown(text)}, not a number"
        raise InvalidObject(f"vertex {i}: {name} is {what}") from None


def _region_geometry(region: ET.Element, kind: str) -> BaseGeometry:
    """The region's shape from its vertices; rectangles and ellipses from their bounds."""
    vertices = region.findall("Vertices/Vertex")
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


def _contains(positive: BaseGeometry, negative: BaseGeometry) -> bool:
    """True when `negative` lies inside `positive` (or mostly: a hole drawn a little over)."""
    if positive.contains(negative):
        return True
    return bool(
        positive.intersects(negative)
        and positive.intersection(negative).area >= 0.5 * negative.area
    )


def _cut_holes(
    positives: list[tuple[str, BaseGeometry]],
    negatives: list[tuple[str, BaseGeometry]],
    report: AnnotationReport,
) -> list[tuple[str, BaseGeometry]]:
    """Each positive region with the negative regions it contains cut out.

    Candidates are found in a spatial index and each positive is cut once by the union of its
    negatives, so a layer of thousands of regions costs about as much as its vertices.
    """
    if not negatives:
        return positives
    tree = shapely.STRtree([pos for _, pos in positives])
    holes: dict[int, list[BaseGeometry]] = {}
    for _, neg in negatives:
        hit = False
        for k in tree.query(neg).tolist():
            if _contains(positives[k][1], neg):
                holes.setdefault(k, []).append(neg)
                hit = True
        if not hit:
            report.skip(
                "negative region", "a negative (exclusion) region lies in no positive region"
            )
    out = list(positives)
    for k, negs in holes.items():
        pid, pos = out[k]
        out[k] = (pid, pos.difference(negs[0] if len(negs) == 1 else shapely.union_all(negs)))
    return out


def parse_imagescope(
    root: ET.Element, path: Path, *, max_vertices: int | None = None
) -> AnnotationSet:
    """Annotations from an already-parsed ImageScope XML tree (see `read_imagescope`)."""
    path = Path(path)
    report = AnnotationReport()
    annotations: list[Annotation] = []
    for li, layer in enumerate(root.findall("Annotation")):
        label = _layer_label(layer, li)
        color = _line_color(layer.get("LineColor"))
        layer_id = clean_text(layer.get("Id") or "", 40) or str(li + 1)
        positives: list[tuple[str, BaseGeometry]] = []
        negatives: list[tuple[str, BaseGeometry]] = []
        for ri, region in enumerate(layer.findall("Regions/Region")):
            rtype = clean_text(region.get("Type") or "0", 40)
            kind = _TYPES.get(rtype)
            if kind is None:
                report.skip(_OTHER.get(rtype, f"region type {rtype}"), "only areas are read")
                continue
            rid = f"{layer_id}.{clean_text(region.get('Id') or '', 40) or ri + 1}"
            where = f"layer {label!r} region {rid}"
            try:
                raw = _region_geometry(region, kind)
            except InvalidObject as exc:
                report.reject(where, str(exc))
                continue
            geom = clean_geometry(raw, report, where, max_vertices=max_vertices)
            if geom is None:
                continue
            negative = (region.get("NegativeROA") or "0").strip() == "1"
            (negatives if negative else positives).append((rid, geom))
        for rid, geom in _cut_holes(positives, negatives, report):
            where = f"layer {label!r} region {rid}"
            cleaned = clean_geometry(geom, report, where, max_vertices=max_vertices)
            if cleaned is not None:
                annotations.append(Annotation(cleaned, label, rid, "annotation", color))
    return AnnotationSet(path, annotations, report, FMT)


def read_imagescope(path: str | Path, *, max_vertices: int | None = None) -> AnnotationSet:
    """Read an Aperio ImageScope XML annotation file."""
    from wsi_aug.annotations.read import load_xml

    path = Path(path)
    return parse_imagescope(load_xml(path), path, max_vertices=max_vertices)
