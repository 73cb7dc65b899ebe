"""Writing polygons as annotation files that slide viewers import: QuPath GeoJSON and ASAP XML.

`wsi-aug segment` writes its objects with these. Coordinates are level-0 pixels, as the readers
of this package return them, so a file written here reads back to the same geometries.

QuPath (0.4+): a FeatureCollection, one Feature per object, ``objectType`` ``annotation`` and
``classification`` ``{"name", "color": [r, g, b]}``; a Polygon keeps its holes, an object made of
parts (touching only at corners) is a MultiPolygon. ASAP has no holes: each polygon's exterior is
written, one ``Annotation`` per part, in the group named by the class.
"""

from __future__ import annotations

import json
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

GLOMERULUS_COLOR = (0, 150, 50)


def _parts(geom: BaseGeometry) -> list[Polygon]:
    """The polygons of a Polygon or MultiPolygon (anything else is a TypeError)."""
    if isinstance(geom, Polygon):
        return [geom]
    if isinstance(geom, MultiPolygon):
        return list(geom.geoms)
    raise TypeError(f"expected a Polygon or MultiPolygon, got {geom.geom_type}")


def _num(v: float) -> float | int:
    """A coordinate as JSON prefers it: an int when whole, else a float rounded to 1/1000 px."""
    return int(v) if float(v).is_integer() else round(float(v), 3)


def _ring(coords: Iterable[Sequence[float]]) -> list[list[float | int]]:
    return [[_num(x), _num(y)] for x, y, *_ in coords]


def _polygon_coords(poly: Polygon) -> list[list[list[float | int]]]:
    return [_ring(poly.exterior.coords), *(_ring(r.coords) for r in poly.interiors)]


def geojson_feature(
    geom: BaseGeometry, label: str, color: Sequence[int], feature_id: str
) -> dict[str, object]:
    """One QuPath annotation Feature for a Polygon or MultiPolygon."""
    parts = _parts(geom)
    if len(parts) == 1:
        geometry: dict[str, object] = {"type": "Polygon", "coordinates": _polygon_coords(parts[0])}
    else:
        geometry = {"type": "MultiPolygon", "coordinates": [_polygon_coords(p) for p in parts]}
    return {
        "type": "Feature",
        "id": feature_id,
        "geometry": geometry,
        "properties": {
            "objectType": "annotation",
            "classification": {"name": label, "color": [int(c) for c in color]},
        },
    }


def write_qupath_geojson(
    path: str | Path,
    geoms: Iterable[BaseGeometry],
    *,
    label: str = "Glomerulus",
    color: Sequence[int] = GLOMERULUS_COLOR,
    seed: int = 0,
) -> Path:
    """Write `geoms` as a QuPath GeoJSON FeatureCollection of annotations of class `label`.

    Feature ids are version-4 UUIDs drawn from `seed`, so the same objects give the same bytes.
    """
    rng = np.random.default_rng(seed)
    features = [
        geojson_feature(g, label, color, str(uuid.UUID(bytes=rng.bytes(16), version=4)))
        for g in geoms
    ]
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"type": "FeatureCollection", "features": features}) + "\n")
    return out


def _hex(color: Sequence[int]) -> str:
    return "#" + "".join(f"{int(c):02X}" for c in color[:3])


def write_asap_xml(
    path: str | Path,
    geoms: Iterable[BaseGeometry],
    *,
    label: str = "Glomerulus",
    color: Sequence[int] = GLOMERULUS_COLOR,
) -> Path:
    """Write `geoms` as ASAP XML polygons in the group `label` (exteriors only: ASAP has no
    holes; a MultiPolygon gives one annotation per part)."""
    root = ET.Element("ASAP_Annotations")
    anns = ET.SubElement(root, "Annotations")
    k = 0
    for geom in geoms:
        for poly in _parts(geom):
            ann = ET.SubElement(
                anns,
                "Annotation",
                Name=f"Annotation {k}",
                Type="Polygon",
                PartOfGroup=label,
                Color=_hex(color),
            )
            coords = ET.SubElement(ann, "Coordinates")
            for i, (x, y) in enumerate(list(poly.exterior.coords)[:-1]):
                ET.SubElement(coords, "Coordinate", Order=str(i), X=str(_num(x)), Y=str(_num(y)))
            k += 1
    groups = ET.SubElement(root, "AnnotationGroups")
    group = ET.SubElement(groups, "Group", Name=label, PartOfGroup="None", Color=_hex(color))
    ET.SubElement(group, "Attributes")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(out, encoding="utf-8", xml_declaration=True)
    return out
