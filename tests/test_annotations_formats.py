"""HALO XML and DSA/HistomicsTK JSON, hand-written in tmp_path; format detection; unknown files."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely
import zarr
from shapely.geometry import Polygon

from wsi_aug import store
from wsi_aug.annotations import detect_format, find_annotation, find_slides, read_annotations
from wsi_aug.annotations.read import summarise
from wsi_aug.cli import main
from wsi_aug.errors import AnnotationError
from wsi_aug.stages.extract import ExtractParams, extract

HALO = """<?xml version="1.0" encoding="utf-8"?>
<Annotations>
  <Annotation LineColor="65280" Name="Glomerulus" Visible="True">
    <Regions>
      <Region Type="Polygon" HasEndcaps="0" NegativeROA="0">
        <Vertices>
          <V X="0" Y="0"/><V X="100" Y="0"/><V X="100" Y="100"/><V X="0" Y="100"/>
        </Vertices>
        <Comments/>
      </Region>
      <Region Type="Polygon" HasEndcaps="0" NegativeROA="1">
        <Vertices>
          <V X="40" Y="40"/><V X="60" Y="40"/><V X="60" Y="60"/><V X="40" Y="60"/>
        </Vertices>
      </Region>
      <Region Type="Rectangle" HasEndcaps="0" NegativeROA="0">
        <Vertices><V X="300" Y="50"/><V X="200" Y="0"/></Vertices>
      </Region>
      <Region Type="Ellipse" HasEndcaps="0" NegativeROA="0">
        <Vertices><V X="400" Y="0"/><V X="500" Y="100"/></Vertices>
      </Region>
      <Region Type="Polygon" HasEndcaps="1" NegativeROA="0">
        <Vertices><V X="0" Y="0"/><V X="50" Y="80"/><V X="90" Y="10"/></Vertices>
      </Region>
      <Region Type="Ruler" HasEndcaps="1" NegativeROA="0">
        <Vertices><V X="0" Y="0"/><V X="5" Y="5"/></Vertices>
      </Region>
    </Regions>
  </Annotation>
  <Annotation LineColor="255" Name="Tubule" Visible="True">
    <Regions>
      <Region Type="Polygon" HasEndcaps="0" NegativeROA="0">
        <Vertices><V X="0" Y="500"/><V X="50" Y="500"/><V X="50" Y="550"/></Vertices>
      </Region>
    </Regions>
  </Annotation>
</Annotations>
"""

IMAGESCOPE = """<?xml version="1.0" encoding="utf-8"?>
<Annotations MicronsPerPixel="0.252000">
  <Annotation Id="1" Name="Glomerulus" LineColor="255">
    <Regions>
      <Region Id="1" Type="0" NegativeROA="0">
        <Vertices><Vertex X="0" Y="0"/><Vertex X="100" Y="0"/><Vertex X="100" Y="100"/></Vertices>
      </Region>
    </Regions>
  </Annotation>
</Annotations>
"""


def _write(path: Path, content: str | dict[str, Any] | list[Any]) -> Path:
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def _by_area(aset: Any) -> list[tuple[str, float]]:
    return sorted((a.label, round(a.geometry.area)) for a in aset.annotations)


# --------------------------------------------------------------------------- HALO


def test_halo_polygon_rectangle_ellipse_hole_and_layers(tmp_path: Path) -> None:
    aset = read_annotations(_write(tmp_path / "s.annotations", HALO))
    assert aset.fmt == "HALO XML" and detect_format(aset.source) == "halo"
    assert aset.classes() == {"Glomerulus": 3, "Tubule": 1}
    areas = {a.id: round(a.geometry.area) for a in aset.annotations}
    assert areas["1.1"] == 100 * 100 - 20 * 20  # the negative region is a hole
    assert areas["1.3"] == 100 * 50  # the rectangle from its two corners, in any order
    assert abs(areas["1.4"] - math.pi * 50 * 50) < 0.01 * math.pi * 50 * 50
    assert areas["2.1"] == 1250
    square = next(a for a in aset.annotations if a.id == "1.1").geometry
    assert isinstance(square, Polygon) and len(square.interiors) == 1
    assert aset.report.skipped == {"line": 1, "ruler": 1}
    assert next(a.color for a in aset.annotations if a.label == "Glomerulus") == (0, 255, 0)
    assert summarise(aset).startswith("s.annotations (HALO XML): 4 objects")


def test_halo_bad_vertex_rejects_only_its_region(tmp_path: Path) -> None:
    text = HALO.replace('<V X="300" Y="50"/>', '<V X="abc" Y="50"/>')
    aset = read_annotations(_write(tmp_path / "s.annotations", text))
    assert aset.report.rejected == 1 and len(aset) == 3
    assert aset.report.rejected_reasons == [
        "layer 'Glomerulus' region 1.3: vertex 0: X is 'abc', not a number"
    ]


def test_halo_named_xml_is_not_misread_as_imagescope(tmp_path: Path) -> None:
    """Before: ``0 objects, skipped 4`` (read as ImageScope, its region types unknown)."""
    aset = read_annotations(_write(tmp_path / "s.xml", HALO))
    assert aset.fmt == "HALO XML" and len(aset) == 4
    scope = read_annotations(_write(tmp_path / "i.xml", IMAGESCOPE))
    assert scope.fmt == "Aperio ImageScope XML" and len(scope) == 1
    # an ImageScope file named .annotations is still ImageScope: the content decides
    scope = read_annotations(_write(tmp_path / "i.annotations", IMAGESCOPE))
    assert scope.fmt == "Aperio ImageScope XML"
    assert read_annotations(_write(tmp_path / "h.xml", HALO), fmt="indica").fmt == "HALO XML"


# --------------------------------------------------------------------------- DSA


def _element(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "lineColor": "rgb(0, 255, 0)", **fields}


SQUARE3 = [[0, 0, 0], [100, 0, 0], [100, 100, 0], [0, 100, 0]]
HOLE3 = [[40, 40, 0], [60, 40, 0], [60, 60, 0], [40, 60, 0]]
ELEMENTS = [
    _element("polyline", closed=True, points=SQUARE3, holes=[HOLE3], label={"value": "Glom"}),
    _element("rectangle", center=[250, 25, 0], width=100, height=50, rotation=0, group="Glom"),
    _element("rectangle", center=[250, 225, 0], width=100, height=50, rotation=math.pi / 2),
    _element("ellipse", center=[450, 50, 0], width=100, height=60, rotation=0.3),
    _element("circle", center=[650, 50, 0], radius=30, label={"value": "Glom"}),
    _element("point", center=[5, 5, 0], label={"value": "Glom"}),
    _element("polyline", closed=False, points=SQUARE3, label={"value": "Glom"}),
    _element("arrow", points=[[0, 0, 0], [10, 10, 0]]),
    _element("polyline", closed=True, points=[[0, 0, 0], ["x", 0, 0], [5, 5, 0]]),
    _element("rectangle", center=[0, 0, 0], width="wide", height=5),
    42,
]


def test_dsa_every_element_type(tmp_path: Path) -> None:
    doc = {"name": "Glomeruli", "elements": ELEMENTS}
    aset = read_annotations(_write(tmp_path / "d.json", doc))
    assert aset.fmt == "DSA/HistomicsTK JSON" and detect_format(aset.source) == "dsa"
    # class: label.value, else group, else the document's name
    assert aset.classes() == {"Glom": 3, "Glomeruli": 2}
    geoms = {a.id: a.geometry for a in aset.annotations}
    assert round(geoms["element 0"].area) == 100 * 100 - 20 * 20
    assert geoms["element 1"].bounds == (200, 0, 300, 50)
    rotated = [round(v, 6) for v in geoms["element 2"].bounds]
    assert rotated == [225, 175, 275, 275]  # a quarter turn swaps width and height
    assert abs(geoms["element 3"].area - math.pi * 50 * 30) < 0.01 * math.pi * 50 * 30
    assert abs(geoms["element 4"].area - math.pi * 30 * 30) < 0.01 * math.pi * 30 * 30
    assert aset.report.skipped == {"point": 1, "line": 1, "arrow": 1}
    assert "close them (closed: true)" in aset.report.skipped_reasons["line"]
    why = dict(r.split(": ", 1) for r in aset.report.rejected_reasons)
    assert why == {
        "element 8": "points: point 1 has x = 'x', not a number",
        "element 9": "width is 'wide', not a number",
        "element 10": "is 42, not an element object",
    }
    assert all(a.color == (0, 255, 0) for a in aset.annotations)


def test_dsa_document_layouts_read_alike(tmp_path: Path) -> None:
    elements = ELEMENTS[:5]
    plain = {"name": "Glomeruli", "elements": elements}
    girder = {"_id": "abc", "annotation": {"name": "Glomeruli", "elements": elements}}
    results = [
        read_annotations(_write(tmp_path / f"{name}.json", data))
        for name, data in (("plain", plain), ("girder", girder))
    ]
    assert _by_area(results[0]) == _by_area(results[1]) and len(results[0]) == 5
    # a list of documents (before: "QuPath GeoJSON: 0 objects, dropped 2 (no geometry)")
    both = read_annotations(_write(tmp_path / "list.json", [plain, girder, "junk"]))
    assert both.fmt == "DSA/HistomicsTK JSON" and len(both) == 10
    assert _by_area(both) == sorted(_by_area(results[0]) * 2)
    assert both.report.rejected_reasons == ["document 2: is 'junk', not a DSA annotation document"]
    assert {a.id for a in both.annotations} >= {"document 0 element 0", "document 1 element 4"}
    # .geojson suffix or a forced format do not change what DSA data is read as
    assert read_annotations(_write(tmp_path / "x.geojson", plain)).fmt == "DSA/HistomicsTK JSON"
    assert len(read_annotations(tmp_path / "plain.json", fmt="histomicstk")) == 5


# --------------------------------------------------------------------------- unknown formats

UNKNOWN = {
    "svg.xml": "<svg></svg>",
    "other.xml": "<Annotations><Layer/></Annotations>",
    "other.annotations": "<Regions><Region/></Regions>",
    "hello.json": '{"hello": 1, "world": [1, 2]}',
    "list.json": '[{"a": 1}, {"b": 2}]',
    "number.json": "42",
    "elements.json": '{"elements": 5}',
}


@pytest.mark.parametrize("name", sorted(UNKNOWN))
def test_unrecognised_files_say_so_in_one_line(tmp_path: Path, name: str) -> None:
    path = _write(tmp_path / name, UNKNOWN[name])
    with pytest.raises(AnnotationError) as exc:
        read_annotations(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}: not ") and "\n" not in msg, msg
    for fmt in ("GeoJSON", "LabelMe", "DSA/HistomicsTK", "ASAP", "ImageScope", "HALO"):
        assert fmt in msg, msg
    with pytest.raises(AnnotationError):
        detect_format(path)


def test_info_names_the_format_and_refuses_unknown_files(tmp_path: Path, capsys: Any) -> None:
    halo = _write(tmp_path / "s.annotations", HALO)
    dsa = _write(tmp_path / "d.json", [{"name": "G", "elements": ELEMENTS[:2]}])
    main(["info", str(halo), str(dsa)])
    out = capsys.readouterr().out
    assert "s.annotations (HALO XML): 4 objects" in out
    assert "d.json (DSA/HistomicsTK JSON): 2 objects" in out
    bad = _write(tmp_path / "bad.xml", UNKNOWN["other.xml"])
    with pytest.raises(SystemExit) as exc:
        main(["info", str(bad)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {bad}: not a known annotation XML")


def test_info_on_unknown_json_exits_nonzero_without_traceback(tmp_path: Path) -> None:
    bad = _write(tmp_path / "bad.json", UNKNOWN["list.json"])
    run = subprocess.run(
        [sys.executable, "-m", "wsi_aug", "info", str(bad)], capture_output=True, text=True
    )
    assert run.returncode == 2
    err = run.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {bad}: not GeoJSON, LabelMe"), run.stderr
    assert "Traceback" not in run.stderr + run.stdout


# --------------------------------------------------------------------------- pairing, extraction


def test_annotations_files_pair_with_slides_and_are_never_slides(tmp_path: Path) -> None:
    for name in ("a.svs", "a.annotations", "b.ndpi", "b.ndpi.annotations", "c.svs"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in find_slides([tmp_path])] == ["a.svs", "b.ndpi", "c.svs"]
    # even when asked for every suffix present
    found = find_slides([tmp_path], {".svs", ".ndpi", ".annotations"})
    assert [p.name for p in found] == ["a.svs", "b.ndpi", "c.svs"]
    assert find_annotation(tmp_path / "a.svs") == tmp_path / "a.annotations"
    assert find_annotation(tmp_path / "b.ndpi") == tmp_path / "b.ndpi.annotations"
    assert find_annotation(tmp_path / "c.svs") is None


def _halo_from(features: list[dict[str, Any]]) -> str:
    """The GeoJSON features as a HALO file: a layer per class, holes as negative regions."""
    layers: dict[str, list[str]] = {}
    for f in features:
        geom = shapely.geometry.shape(f["geometry"])
        label = f["properties"]["classification"]["name"]
        for poly in getattr(geom, "geoms", [geom]):
            for k, ring in enumerate([poly.exterior, *poly.interiors]):
                vs = "".join(f'<V X="{x!r}" Y="{y!r}"/>' for x, y in ring.coords[:-1])
                layers.setdefault(label, []).append(
                    f'<Region Type="Polygon" HasEndcaps="0" NegativeROA="{int(k > 0)}">'
                    f"<Vertices>{vs}</Vertices></Region>"
                )
    body = "".join(
        f'<Annotation Name="{name}" LineColor="65280"><Regions>{"".join(rs)}</Regions></Annotation>'
        for name, rs in layers.items()
    )
    return f"<Annotations>{body}</Annotations>"


def _dsa_from(features: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The GeoJSON features as a list of one DSA document of closed polylines with holes."""
    elements = []
    for f in features:
        geom = shapely.geometry.shape(f["geometry"])
        for poly in getattr(geom, "geoms", [geom]):
            rings = [
                [[x, y, 0] for x, y in r.coords[:-1]] for r in [poly.exterior, *poly.interiors]
            ]
            elements.append(
                {
                    "type": "polyline",
                    "closed": True,
                    "points": rings[0],
                    "holes": rings[1:],
                    "label": {"value": f["properties"]["classification"]["name"]},
                }
            )
    return [{"annotation": {"name": "phantom", "elements": elements}}]


def test_extraction_from_halo_and_dsa_matches_geojson(phantom_slides: Path, tmp_path: Path) -> None:
    geo = phantom_slides / "phantom-000.geojson"
    features = json.loads(geo.read_text())["features"]
    writers = {
        "geojson": lambda d: shutil.copy(geo, d / "phantom-000.geojson"),
        "halo": lambda d: (d / "phantom-000.annotations").write_text(_halo_from(features)),
        "dsa": lambda d: (d / "phantom-000.json").write_text(json.dumps(_dsa_from(features))),
    }
    params = ExtractParams(size=32, mpp=4.0, seed=0)
    masks = {}
    for name, write in writers.items():
        src = tmp_path / name / "in"
        src.mkdir(parents=True)
        shutil.copy(phantom_slides / "phantom-000.tif", src / "phantom-000.tif")
        write(src)
        work = tmp_path / name / "work"
        extract(work, ExtractParams.build(params, inputs=(src,)), progress=False)
        group = zarr.open_group(store.WorkDir(work).patches, mode="r")
        masks[name] = group["masks"][:]
    assert len(masks["geojson"]) >= len(features) > 0 and masks["geojson"].any()
    assert np.array_equal(masks["halo"], masks["geojson"])
    assert np.array_equal(masks["dsa"], masks["geojson"])
