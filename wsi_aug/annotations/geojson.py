"""QuPath GeoJSON, every version (0.1 to 0.5+), and plain GeoJSON from other tools.

Accepted layouts: a FeatureCollection, a bare list of Features, a single Feature, or a bare
Geometry. QuPath writes the object type as ``properties.objectType`` (0.4+), as
``properties.object_type`` (0.3), or only through the feature id ``PathAnnotationObject`` (0.2);
the class colour as ``classification.color`` [r, g, b] (0.4+) or a packed ``colorRGB`` (before).

Every value is checked as it is read. A feature with a wrong type where a list or object belongs,
a coordinate that is not a finite number within ±`MAX_COORDINATE` px, or a class name that is not
text is rejected (counted in the report with the reason, naming the feature) and the others are
read; only a file whose top level is not GeoJSON raises `AnnotationError`. GeoJSON rings must be
closed: an open ring is closed and the feature counted as repaired.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from wsi_aug.annotations.model import (
    Annotation,
    AnnotationReport,
    AnnotationSet,
    InvalidObject,
    clean_geometry,
    clean_text,
    parse_color,
    points_array,
    polygon_from,
    shown,
)
from wsi_aug.errors import AnnotationError

FMT = "QuPath GeoJSON"

GEOMETRY_TYPES = {
    "Point",
    "MultiPoint",
    "LineString",
    "MultiLineString",
    "Polygon",
    "MultiPolygon",
    "GeometryCollection",
}
MAX_DEPTH = 8
"""How deep GeometryCollections may nest (QuPath never nests them)."""
_KIND = {"Point": "point", "MultiPoint": "point", "LineString": "line", "MultiLineString": "line"}
_QUPATH_ID = re.compile(r"^(?:Path)?(\w+?)Object$")
_TYPE_NAMES = {
    "annotation": "annotation",
    "annotations": "annotation",
    "detection": "detection",
    "detections": "detection",
    "cell": "cell",
    "cells": "cell",
    "tile": "tile",
    "tiles": "tile",
    "tma_core": "tma_core",
    "tmacore": "tma_core",
    "tma": "tma_core",
    "root": "root",
}


def normalise_object_type(name: str) -> str:
    """``Annotations``, ``PathAnnotationObject``, ``TMACoreObject`` -> ``annotation`` ..."""
    key = clean_text(name, 100)
    m = _QUPATH_ID.match(key)
    if m:
        key = m.group(1)
    key = key.lower().replace(" ", "_")
    return _TYPE_NAMES.get(key, key)


def _object_type(feature: dict[str, Any], props: dict[str, Any]) -> str:
    """The QuPath object type of a feature; plain GeoJSON counts as annotations."""
    for key in ("objectType", "object_type"):
        value = props.get(key)
        if isinstance(value, str) and value.strip():
            return normalise_object_type(value)
    # other tools' "type": "annotation"; "type": "Tumour" is a class there, not an object type
    for value in (props.get("type"), feature.get("id")):
        if isinstance(value, str) and _is_type_name(value):
            return normalise_object_type(value)
    return "annotation"


def _is_type_name(value: str) -> bool:
    """True for a QuPath object type name (``annotation``, ``PathDetectionObject`` ...)."""
    return normalise_object_type(value) in _TYPE_NAMES.values()


def _text(value: Any, what: str) -> str | None:
    """A class name: text (or an integer) cleaned for one line; None when absent or blank.

    Raises `InvalidObject` for a list, an object, a boolean or a non-integer number.
    """
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value) if abs(value) < 10**100 else None
    if not isinstance(value, str):
        raise InvalidObject(f"{what} is {shown(value)}, not text")
    return clean_text(value) or None


def _label_and_color(props: dict[str, Any]) -> tuple[str, tuple[int, int, int] | None]:
    """Class name (``classification.name``, else ``name``, else ``unclassified``) and colour."""
    cls = props.get("classification")
    label: str | None = None
    color = None
    if isinstance(cls, dict):
        label = _text(cls.get("name"), "classification name")
        names = cls.get("names")
        if label is None and names is not None:
            if not isinstance(names, list):
                raise InvalidObject(f"classification names is {shown(names)}, not a list")
            parts = [_text(n, "a classification name") for n in names]
            label = ": ".join(n for n in parts if n) or None
        color = parse_color(cls.get("color", cls.get("colorRGB")))
    elif cls is not None:
        label = _text(cls, "classification")
    if label is None:
        label = _text(props.get("name"), "name") or "unclassified"
    if color is None:
        color = parse_color(props.get("color"))
    return label, color


def _feature_id(feature: dict[str, Any], props: dict[str, Any], index: int) -> str:
    """The feature's own id (not QuPath 0.2/0.3's type name), else a property id, else its index."""
    fid = feature.get("id")
    if _is_id(fid) and not _is_type_name(str(fid)):
        return clean_text(str(fid))
    for key in ("id", "objectId", "object_id", "uuid"):
        value = props.get(key)
        if _is_id(value):
            return clean_text(str(value))
    return str(index)


def _is_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) < 10**100
    return isinstance(value, str) and bool(clean_text(value))


def _list(value: Any, what: str) -> list[Any]:
    """`value` if it is a list (null reads as an empty one), else `InvalidObject`."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidObject(f"{what} is {shown(value)}, not a list")
    return value


def _polygon(coords: Any, what: str, prefix: str, notes: list[str]) -> Polygon:
    """A Polygon's ``coordinates`` (a list of rings, the shell first) as a shapely polygon."""
    rings = _list(coords, what)
    if not rings:
        return Polygon()
    arrays = [points_array(r, f"{prefix}ring {k}") for k, r in enumerate(rings)]
    return polygon_from(arrays[0], arrays[1:], notes, f"{prefix}ring")


def _geometry(geom: Any, notes: list[str], depth: int = 0) -> BaseGeometry | str | None:
    """A GeoJSON geometry as shapely polygons; the kind of a geometry that is not an area (for
    the report); None for no geometry. Raises `InvalidObject` for a malformed one."""
    if geom is None:
        return None
    if not isinstance(geom, dict):
        raise InvalidObject(f"geometry is {shown(geom)}, not an object")
    gtype = geom.get("type")
    if not isinstance(gtype, str):
        raise InvalidObject(f"geometry type is {shown(gtype)}, not a GeoJSON type name")
    if gtype == "Polygon":
        return _polygon(geom.get("coordinates"), "coordinates", "", notes)
    if gtype == "MultiPolygon":
        polys = _list(geom.get("coordinates"), "coordinates")
        parts = [_polygon(p, f"polygon {k}", f"polygon {k} ", notes) for k, p in enumerate(polys)]
        parts = [p for p in parts if not p.is_empty]
        return MultiPolygon(parts) if parts else Polygon()
    if gtype == "GeometryCollection":
        if depth >= MAX_DEPTH:
            raise InvalidObject(f"GeometryCollections nested more than {MAX_DEPTH} deep")
        areas: list[Polygon] = []
        kinds: list[str] = []
        for k, sub in enumerate(_list(geom.get("geometries"), "geometries")):
            try:
                g = _geometry(sub, notes, depth + 1)
            except InvalidObject as exc:
                raise InvalidObject(f"geometry {k}: {exc}") from None
            if isinstance(g, str):
                kinds.append(g)
            elif g is not None and not g.is_empty:
                areas.extend(g.geoms if isinstance(g, MultiPolygon) else [g])
        if areas:  # its polygons are used; its points or lines do not matter
            return MultiPolygon(areas) if len(areas) > 1 else areas[0]
        return kinds[0] if kinds else None
    return _KIND.get(gtype, f"{clean_text(gtype, 40)} geometry")


def _is_geometry(item: Any) -> bool:
    return (
        isinstance(item, dict)
        and isinstance(item.get("type"), str)
        and (item["type"] in GEOMETRY_TYPES)
    )


def _features(data: Any, path: Path) -> list[Any]:
    """The features of any accepted layout, a bare geometry wrapped as a feature."""
    kind = data.get("type") if isinstance(data, dict) else None
    items: Any
    if isinstance(data, list):
        items = data
    elif isinstance(data, dict) and kind == "FeatureCollection":
        items = data.get("features")
        if items is None:
            items = []
        if not isinstance(items, list):
            raise AnnotationError(
                f"{path}: the FeatureCollection's 'features' is {shown(items)}, not a list; "
                "export it again from QuPath (File > Export objects as GeoJSON)"
            )
    elif isinstance(data, dict) and (kind == "Feature" or "geometry" in data or _is_geometry(data)):
        items = [data]
    else:
        raise AnnotationError(
            f"{path}: not GeoJSON (no FeatureCollection, Feature or geometry); "
            "export it again from QuPath (File > Export objects as GeoJSON)"
        )
    return [
        {"type": "Feature", "geometry": item, "properties": {}} if _is_geometry(item) else item
        for item in items
    ]


def parse_geojson(
    data: Any,
    path: Path,
    *,
    objects: Sequence[str] = ("annotation",),
    max_vertices: int | None = None,
) -> AnnotationSet:
    """Annotations from already-loaded GeoJSON data (see `read_geojson`)."""
    path = Path(path)
    wanted = {normalise_object_type(o) for o in objects} or {"annotation"}
    report = AnnotationReport()
    annotations: list[Annotation] = []
    for i, feature in enumerate(_features(data, path)):
        where = f"feature {i}"
        if not isinstance(feature, dict):
            report.reject(where, f"is {shown(feature)}, not a GeoJSON Feature object")
            continue
        props = feature.get("properties")
        if props is not None and not isinstance(props, dict):
            report.reject(where, f"properties is {shown(props)}, not an object")
            continue
        props = props or {}
        otype = _object_type(feature, props)
        if otype not in wanted:
            hint = f"read them with --objects {otype}" if otype in ("detection", "cell") else ""
            report.skip(otype, hint)
            continue
        notes: list[str] = []
        try:
            geom = _geometry(feature.get("geometry"), notes)
            label, color = _label_and_color(props)
        except InvalidObject as exc:
            report.reject(where, str(exc))
            continue
        if geom is None:
            report.drop(where, "no geometry")
            continue
        if isinstance(geom, str):
            report.skip(geom, "only polygons are read; draw areas, not points or lines")
            continue
        geom = clean_geometry(geom, report, where, notes=notes, max_vertices=max_vertices)
        if geom is None:
            continue
        annotations.append(Annotation(geom, label, _feature_id(feature, props, i), otype, color))
    return AnnotationSet(path, annotations, report, FMT)


def read_geojson(
    path: str | Path,
    *,
    objects: Sequence[str] = ("annotation",),
    max_vertices: int | None = None,
) -> AnnotationSet:
    """Read a QuPath (or plain) GeoJSON file.

    Only annotations are read unless `objects` names other QuPath object types (``detection``,
    ``cell``, ``tile`` ...): `objects` is the full set read, so ``("annotation", "detection")``
    reads both. Points and lines are skipped and counted; a GeometryCollection gives its polygons.
    Objects above `max_vertices` vertices (default `wsi_aug.annotations.model.MAX_VERTICES`) are
    simplified.
    """
    from wsi_aug.annotations.read import load_json

    path = Path(path)
    return parse_geojson(load_json(path), path, objects=objects, max_vertices=max_vertices)
