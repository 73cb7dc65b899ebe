"""QuPath GeoJSON, every version (0.1 to 0.5+), and plain GeoJSON from other tools.

Accepted layouts: a FeatureCollection, a bare list of Features, a single Feature, or a bare
Geometry. QuPath writes the object type as ``properties.objectType`` (0.4+), as
``properties.object_type`` (0.3), or only through the feature id ``PathAnnotationObject`` (0.2);
the class colour as ``classification.color`` [r, g, b] (0.4+) or a packed ``colorRGB`` (before).
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
    clean_geometry,
    parse_color,
    to_polygon,
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
_DROPPED = "dropped"  # marks a geometry already counted as dropped
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
    key = name.strip()
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


def _label_and_color(props: dict[str, Any]) -> tuple[str, tuple[int, int, int] | None]:
    """Class name (``classification.name``, else ``name``, else ``unclassified``) and colour."""
    cls = props.get("classification")
    label: str | None = None
    color = None
    if isinstance(cls, dict):
        name = cls.get("name")
        names = cls.get("names")
        if isinstance(name, str) and name.strip():
            label = name.strip()
        elif isinstance(names, list) and names:
            label = ": ".join(str(n) for n in names)
        color = parse_color(cls.get("color", cls.get("colorRGB")))
    elif isinstance(cls, str) and cls.strip():
        label = cls.strip()
    if label is None:
        name = props.get("name")
        label = name.strip() if isinstance(name, str) and name.strip() else "unclassified"
    if color is None:
        color = parse_color(props.get("color"))
    return label, color


def _feature_id(feature: dict[str, Any], props: dict[str, Any], index: int) -> str:
    """The feature's own id (not QuPath 0.2/0.3's type name), else a property id, else its index."""
    fid = feature.get("id")
    if isinstance(fid, (str, int)) and str(fid).strip() and not _is_type_name(str(fid)):
        return str(fid)
    for key in ("id", "objectId", "object_id", "uuid"):
        value = props.get(key)
        if isinstance(value, (str, int)) and str(value).strip():
            return str(value)
    return str(index)


def _geometry(
    geom: Any, report: AnnotationReport, where: str, kinds: list[str]
) -> BaseGeometry | None:
    """Shapely polygons from a GeoJSON geometry; other kinds are noted in `kinds`, not converted."""
    if not isinstance(geom, dict):
        report.drop(where, "no geometry")
        kinds.append(_DROPPED)
        return None
    gtype = geom.get("type")
    coords = geom.get("coordinates")
    try:
        if gtype == "Polygon":
            if not coords:
                return Polygon()
            return to_polygon(coords[0], coords[1:])
        if gtype == "MultiPolygon":
            parts = [to_polygon(p[0], p[1:]) for p in coords or [] if p]
            parts = [p for p in parts if not p.is_empty]
            return MultiPolygon(parts) if parts else Polygon()
        if gtype == "GeometryCollection":
            parts = []
            for sub in geom.get("geometries") or []:
                g = _geometry(sub, report, where, kinds)
                if g is not None and not g.is_empty:
                    parts.extend(g.geoms if isinstance(g, MultiPolygon) else [g])
            if parts:
                kinds.clear()  # its polygons are used; its points or lines do not matter
                return MultiPolygon(parts) if len(parts) > 1 else parts[0]
            return None
    except (TypeError, ValueError, IndexError) as exc:
        report.drop(where, f"malformed {gtype} coordinates ({exc})")
        kinds.append(_DROPPED)
        return None
    kinds.append(_KIND.get(str(gtype), f"{gtype} geometry"))
    return None


def _features(data: Any, path: Path) -> list[dict[str, Any]]:
    """The features of any accepted layout, a bare geometry wrapped as a feature."""
    if isinstance(data, list):
        items = data
    elif isinstance(data, dict) and data.get("type") == "FeatureCollection":
        items = data.get("features") or []
    elif isinstance(data, dict) and (
        data.get("type") == "Feature" or "geometry" in data or data.get("type") in GEOMETRY_TYPES
    ):
        items = [data]
    else:
        raise AnnotationError(
            f"{path}: not GeoJSON (no FeatureCollection, Feature or geometry); "
            "export it again from QuPath (File > Export objects as GeoJSON)"
        )
    out: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, dict) and item.get("type") in GEOMETRY_TYPES:
            out.append({"type": "Feature", "geometry": item, "properties": {}})
        else:
            out.append(item if isinstance(item, dict) else {"geometry": None})
    return out


def parse_geojson(
    data: Any, path: Path, *, objects: Sequence[str] = ("annotation",)
) -> AnnotationSet:
    """Annotations from already-loaded GeoJSON data (see `read_geojson`)."""
    path = Path(path)
    wanted = {normalise_object_type(o) for o in objects} or {"annotation"}
    report = AnnotationReport()
    annotations: list[Annotation] = []
    for i, feature in enumerate(_features(data, path)):
        props = feature.get("properties")
        props = props if isinstance(props, dict) else {}
        otype = _object_type(feature, props)
        if otype not in wanted:
            hint = f"read them with --objects {otype}" if otype in ("detection", "cell") else ""
            report.skip(otype, hint)
            continue
        where = f"feature {i}"
        kinds: list[str] = []
        geom = _geometry(feature.get("geometry"), report, where, kinds)
        if geom is None:
            if kinds and kinds[0] != _DROPPED:
                report.skip(kinds[0], "only polygons are read; draw areas, not points or lines")
            continue
        geom = clean_geometry(geom, report, where)
        if geom is None:
            continue
        label, color = _label_and_color(props)
        annotations.append(Annotation(geom, label, _feature_id(feature, props, i), otype, color))
    return AnnotationSet(path, annotations, report, FMT)


def read_geojson(path: str | Path, *, objects: Sequence[str] = ("annotation",)) -> AnnotationSet:
    """Read a QuPath (or plain) GeoJSON file.

    Only annotations are read unless `objects` names other QuPath object types (``detection``,
    ``cell``, ``tile`` ...): `objects` is the full set read, so ``("annotation", "detection")``
    reads both. Points and lines are skipped and counted; a GeometryCollection gives its polygons.
    """
    from wsi_aug.annotations.read import load_json

    path = Path(path)
    return parse_geojson(load_json(path), path, objects=objects)
