"""Digital Slide Archive / HistomicsTK annotation JSON (large_image's annotation schema).

Accepted layouts: one document ``{"name": ..., "elements": [...]}``, one document as the
Girder API returns it ``{"annotation": {"name": ..., "elements": [...]}, ...}``, or a list of
either. Coordinates are ``[x, y, z]`` in level-0 pixels (z is ignored).

Elements read: closed ``polyline`` (``closed: true``; its ``holes`` cut out), ``rectangle`` and
``ellipse`` (``center``, ``width``, ``height``, ``rotation`` in radians about the centre) and
``circle`` (``center``, ``radius``). Open polylines are lines and points are points: both are
skipped and counted with the reason, as GeoJSON's are; arrows, heatmaps, grids and images are
skipped too. The class is ``label.value``, else ``group``, else the document's ``name``, else
``unclassified``.

An element with a wrong type (points that are not a list of [x, y] numbers, a width that is not a
number, a label that is not text) or a coordinate that is not a finite number within
±`MAX_COORDINATE` px is rejected (counted in the report with the reason, naming the element) and
the others are read.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from shapely import affinity
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

FMT = "DSA/HistomicsTK JSON"
_FIX = "export it again from the Digital Slide Archive (or HistomicsTK)"
_POINTS = {"point"}
_NUM = r"\s*(\d{1,3}(?:\.\d*)?)\s*"
_RGB = re.compile(rf"rgba?\({_NUM},{_NUM},{_NUM}[,)]")


def _elements(doc: Any) -> Any:
    """The ``elements`` of a document of either layout; None when it is not a document."""
    if not isinstance(doc, dict):
        return None
    if "elements" in doc:
        return doc["elements"]
    inner = doc.get("annotation")
    if isinstance(inner, dict) and "elements" in inner:
        return inner["elements"]
    return None


def _is_document(doc: Any) -> bool:
    return isinstance(_elements(doc), list)


def is_dsa(data: Any) -> bool:
    """True for DSA data: a document with an ``elements`` list, or a list holding one."""
    if isinstance(data, list):
        return any(_is_document(d) for d in data)
    return _is_document(data)


def _name(doc: dict[str, Any]) -> str | None:
    """The document's ``name``, as one line of text, if it has one."""
    inner = doc.get("annotation")
    value = inner.get("name") if isinstance(inner, dict) else doc.get("name")
    return (clean_text(value) or None) if isinstance(value, str) else None


def _text(value: Any, what: str) -> str | None:
    """A class name: text cleaned for one line; None when absent or blank; else `InvalidObject`."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 10**100:
        return str(value)
    if not isinstance(value, str):
        raise InvalidObject(f"{what} is {shown(value)}, not text")
    return clean_text(value) or None


def _label(element: dict[str, Any], default: str | None) -> str:
    """``label.value``, else ``group``, else the document's name, else ``unclassified``."""
    label = element.get("label")
    value = None
    if isinstance(label, dict):
        value = _text(label.get("value"), "label value")
    elif isinstance(label, str):
        value = _text(label, "label")
    elif label is not None:
        raise InvalidObject(f"label is {shown(label)}, not an object {{'value': ...}}")
    return value or _text(element.get("group"), "group") or default or "unclassified"


def _color(value: Any) -> tuple[int, int, int] | None:
    """``rgb(r, g, b)``, ``rgba(...)`` or ``#rrggbb``; None for anything else."""
    if isinstance(value, str):
        m = _RGB.match(value.strip())
        if m:
            r, g, b = (min(255, round(float(c))) for c in m.groups())
            return (r, g, b)
    return parse_color(value)


def _number(element: dict[str, Any], key: str, default: float | None = None) -> float:
    """A finite number of the element, or `InvalidObject` saying why not."""
    value = element.get(key)
    if value is None and default is not None:
        return default
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        what = "missing" if value is None else f"{shown(value)}, not a number"
        raise InvalidObject(f"{key} is {what}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise InvalidObject(f"{key} is {shown(value)}, not finite")
    return number


def _centred(element: dict[str, Any], kind: str) -> BaseGeometry:
    """A rectangle, ellipse or circle from its centre and size, rotated about the centre."""
    centre = points_array([element.get("center")], "center")
    cx, cy = centre[0].tolist()
    if kind == "circle":
        r = _number(element, "radius")
        w = h = 2 * r
    else:
        w, h = _number(element, "width"), _number(element, "height")
    if w < 0 or h < 0:
        raise InvalidObject(f"size is {w:g} x {h:g}, negative")
    x0, y0, x1, y1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    round_ = kind in ("ellipse", "circle")
    shape: Polygon = ellipse(x0, y0, x1, y1) if round_ else box(x0, y0, x1, y1)
    angle = _number(element, "rotation", 0.0) if kind != "circle" else 0.0
    if angle and not shape.is_empty:
        return affinity.rotate(shape, angle, origin=(cx, cy), use_radians=True)
    return shape


def _polyline(element: dict[str, Any]) -> BaseGeometry:
    """A closed polyline's area, its holes cut out."""
    shell = points_array(element.get("points"), "points")
    holes_value = element.get("holes") or []
    if not isinstance(holes_value, list):
        raise InvalidObject(f"holes is {shown(holes_value)}, not a list")
    holes = [points_array(h, f"hole {k}") for k, h in enumerate(holes_value)]
    return polygon_from(shell, holes)


def _geometry(element: dict[str, Any], kind: str, report: AnnotationReport) -> BaseGeometry | None:
    """The element's area; None (and counted as skipped) when it has none."""
    if kind == "polyline":
        if element.get("closed") is not True:
            report.skip("line", "open polylines are lines, not areas; close them (closed: true)")
            return None
        return _polyline(element)
    if kind in ("rectangle", "ellipse", "circle"):
        return _centred(element, kind)
    if kind in _POINTS:
        report.skip("point", "only areas are read; draw polygons, not points")
        return None
    report.skip(kind or "other", "only polylines, rectangles, ellipses and circles are read")
    return None


def _documents(data: Any, path: Path) -> list[Any]:
    """The documents of any accepted layout, or a one-line error when there is none."""
    if isinstance(data, list):
        return data
    if _is_document(data):
        return [data]
    elements = _elements(data)
    if elements is not None:
        raise AnnotationError(
            f"{path}: the DSA document's 'elements' is {shown(elements)}, not a list; {_FIX}"
        )
    raise AnnotationError(f"{path}: not DSA/HistomicsTK annotation JSON (no 'elements'); {_FIX}")


def parse_dsa(data: Any, path: Path, *, max_vertices: int | None = None) -> AnnotationSet:
    """Annotations from already-loaded DSA data (see `read_dsa`)."""
    path = Path(path)
    docs = _documents(data, path)
    report = AnnotationReport()
    annotations: list[Annotation] = []
    for d, doc in enumerate(docs):
        prefix = f"document {d} " if len(docs) > 1 else ""
        elements = _elements(doc)
        if not isinstance(elements, list):
            what = f"is {shown(doc)}" if elements is None else f"elements is {shown(elements)}"
            report.reject(f"document {d}", f"{what}, not a DSA annotation document")
            continue
        default = _name(doc)
        for i, element in enumerate(elements):
            where = f"{prefix}element {i}"
            if not isinstance(element, dict):
                report.reject(where, f"is {shown(element)}, not an element object")
                continue
            try:
                kind_value = element.get("type")
                if not isinstance(kind_value, str):
                    raise InvalidObject(f"type is {shown(kind_value)}, not text")
                kind = clean_text(kind_value, 40).lower()
                label = _label(element, default)
                geom = _geometry(element, kind, report)
            except InvalidObject as exc:
                report.reject(where, str(exc))
                continue
            if geom is None:
                continue
            geom = clean_geometry(geom, report, where, max_vertices=max_vertices)
            if geom is None:
                continue
            ident = element.get("id")
            ident = clean_text(ident, 60) if isinstance(ident, str) and ident.strip() else where
            color = _color(element.get("lineColor"))
            annotations.append(Annotation(geom, label, ident, "annotation", color))
    return AnnotationSet(path, annotations, report, FMT)


def read_dsa(path: str | Path, *, max_vertices: int | None = None) -> AnnotationSet:
    """Read a DSA/HistomicsTK annotation JSON file."""
    from wsi_aug.annotations.read import load_json

    path = Path(path)
    return parse_dsa(load_json(path), path, max_vertices=max_vertices)
