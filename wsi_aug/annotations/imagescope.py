"""Aperio ImageScope XML (``Annotations/Annotation/Regions/Region/Vertices/Vertex``).

Each ``Annotation`` is a layer; its class is the layer's ``Name``, else the name of its first
attribute (other than ImageScope's default ``Description``), else ``Layer N``. Each positive region
becomes one object. A region with ``NegativeROA="1"`` is an exclusion: it is cut out of the
positive regions of the same layer that contain it (a hole), and never becomes an object itself.
Region types 0, 1 and 2 (free-form polygon, rectangle, ellipse) are read; rulers, arrows and
other types are skipped and counted.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from wsi_aug.annotations.model import (
    Annotation,
    AnnotationReport,
    AnnotationSet,
    clean_geometry,
    ellipse,
    parse_number,
    to_polygon,
)

FMT = "Aperio ImageScope XML"
_TYPES = {"0": "polygon", "1": "rectangle", "2": "ellipse"}
_OTHER = {"3": "arrow", "4": "ruler"}


def _layer_label(ann: ET.Element, index: int) -> str:
    """The class of a layer: its Name, else an attribute name, else ``Layer N``."""
    name = (ann.get("Name") or "").strip()
    if name:
        return name
    for attr in ann.findall("Attributes/Attribute"):
        aname = (attr.get("Name") or "").strip()
        if aname and aname.lower() != "description":
            return aname
    return f"Layer {ann.get('Id') or index + 1}"


def _line_color(value: str | None) -> tuple[int, int, int] | None:
    """ImageScope's ``LineColor``: a Windows COLORREF integer, 0x00BBGGRR."""
    try:
        v = int(value or "")
    except ValueError:
        return None
    return (v & 255, (v >> 8) & 255, (v >> 16) & 255)


def _region_geometry(region: ET.Element, kind: str) -> BaseGeometry:
    """The region's shape from its vertices; rectangles and ellipses from their bounds."""
    pts = [
        (parse_number(v.get("X")), parse_number(v.get("Y")))
        for v in region.findall("Vertices/Vertex")
    ]
    if kind in ("rectangle", "ellipse") and len(pts) >= 2:
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        if kind == "ellipse":
            return ellipse(min(xs), min(ys), max(xs), max(ys))
        if len(pts) == 2:
            return box(min(xs), min(ys), max(xs), max(ys))
    return to_polygon(pts)


def _contains(positive: BaseGeometry, negative: BaseGeometry) -> bool:
    """True when `negative` lies inside `positive` (or mostly: a hole drawn a little over)."""
    if positive.contains(negative):
        return True
    return bool(
        positive.intersects(negative)
        and positive.intersection(negative).area >= 0.5 * negative.area
    )


def parse_imagescope(root: ET.Element, path: Path) -> AnnotationSet:
    """Annotations from an already-parsed ImageScope XML tree (see `read_imagescope`)."""
    path = Path(path)
    report = AnnotationReport()
    annotations: list[Annotation] = []
    for li, layer in enumerate(root.findall("Annotation")):
        label = _layer_label(layer, li)
        color = _line_color(layer.get("LineColor"))
        layer_id = layer.get("Id") or str(li + 1)
        positives: list[tuple[str, BaseGeometry]] = []
        negatives: list[tuple[str, BaseGeometry]] = []
        for ri, region in enumerate(layer.findall("Regions/Region")):
            rtype = (region.get("Type") or "0").strip()
            kind = _TYPES.get(rtype)
            if kind is None:
                report.skip(_OTHER.get(rtype, f"region type {rtype}"), "only areas are read")
                continue
            rid = f"{layer_id}.{region.get('Id') or ri + 1}"
            where = f"layer {label!r} region {rid}"
            try:
                raw = _region_geometry(region, kind)
            except ValueError:
                report.drop(where, "a vertex coordinate is not a number")
                continue
            geom = clean_geometry(raw, report, where)
            if geom is None:
                continue
            negative = (region.get("NegativeROA") or "0").strip() == "1"
            (negatives if negative else positives).append((rid, geom))
        for _, neg in negatives:
            hit = False
            for k, (pid, pos) in enumerate(positives):
                if _contains(pos, neg):
                    positives[k] = (pid, pos.difference(neg))
                    hit = True
            if not hit:
                report.skip(
                    "negative region", "a negative (exclusion) region lies in no positive region"
                )
        for rid, geom in positives:
            where = f"layer {label!r} region {rid}"
            cleaned = clean_geometry(geom, report, where)
            if cleaned is not None:
                annotations.append(Annotation(cleaned, label, rid, "annotation", color))
    return AnnotationSet(path, annotations, report, FMT)


def read_imagescope(path: str | Path) -> AnnotationSet:
    """Read an Aperio ImageScope XML annotation file."""
    from wsi_aug.annotations.read import load_xml

    path = Path(path)
    return parse_imagescope(load_xml(path), path)
