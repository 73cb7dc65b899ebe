"""Annotation parsers: every format and version, hand-written in tmp_path, and the real files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from shapely.geometry import MultiPolygon, Polygon

from wsi_aug.annotations import (
    AnnotationReport,
    AnnotationSet,
    clean_geometry,
    read_annotations,
    summarise,
)
from wsi_aug.annotations.geojson import read_geojson
from wsi_aug.annotations.masks import polygons_from_mask
from wsi_aug.annotations.model import Annotation, packed_rgb, parse_number
from wsi_aug.errors import AnnotationError

SQUARE = [[0, 0], [100, 0], [100, 100], [0, 100], [0, 0]]
HOLE = [[40, 40], [60, 40], [60, 60], [40, 60], [40, 40]]
BOWTIE = [[0, 0], [100, 100], [100, 0], [0, 100], [0, 0]]


def _shift(ring: list[list[float]], dx: float, dy: float = 0) -> list[list[float]]:
    return [[x + dx, y + dy] for x, y in ring]


def _write(path: Path, text: str | dict | list) -> Path:
    path.write_text(text if isinstance(text, str) else json.dumps(text))
    return path


def _feature(geometry: dict, **props) -> dict:
    return {"type": "Feature", "geometry": geometry, "properties": props}


def _poly(*rings) -> dict:
    return {"type": "Polygon", "coordinates": list(rings)}


# --------------------------------------------------------------------------- QuPath GeoJSON


def test_qupath_02_03_object_type_and_packed_colour(tmp_path: Path) -> None:
    # 0.2: type only in the feature id; 0.3: properties.object_type; both with colorRGB
    features = [
        {
            "type": "Feature",
            "id": "PathAnnotationObject",
            "geometry": _poly(SQUARE),
            "properties": {
                "classification": {"name": "Glomerulus", "colorRGB": -3670016},
                "isLocked": False,
            },
        },
        {
            "type": "Feature",
            "id": "PathAnnotationObject",
            "geometry": _poly(_shift(SQUARE, 200)),
            "properties": {
                "object_type": "annotation",
                "classification": {"name": "Tubule", "colorRGB": -16711936},
            },
        },
        {
            "type": "Feature",
            "id": "PathDetectionObject",
            "geometry": _poly(_shift(SQUARE, 400)),
            "properties": {"classification": {"name": "Glomerulus", "colorRGB": -3670016}},
        },
    ]
    aset = read_annotations(_write(tmp_path / "s.json", features))
    assert aset.fmt == "QuPath GeoJSON"
    assert aset.classes() == {"Glomerulus": 1, "Tubule": 1}
    glom = aset.select(["glomerulus"])[0]
    assert glom.color == (200, 0, 0)  # -3670016 == 0xFFC80000
    assert aset.select(["tubule"])[0].color == (0, 255, 0)
    assert glom.id == "0"  # "PathAnnotationObject" is a type name, not an id
    assert aset.report.skipped == {"detection": 1}
    assert "--objects detection" in summarise(aset)


def test_qupath_04_feature_collection_color_and_ids(tmp_path: Path) -> None:
    fc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "id": "5c6a3c2e-1f7e-4a49-9a43-1b0b7f6f0a01",
                "geometry": _poly(SQUARE, HOLE),
                "properties": {
                    "objectType": "annotation",
                    "classification": {"name": "Glomerulus", "color": [255, 0, 128]},
                },
            },
            _feature(_poly(_shift(SQUARE, 300)), objectType="detection"),
            _feature(_poly(_shift(SQUARE, 600)), objectType="cell"),
            _feature(_poly(_shift(SQUARE, 900)), objectType="tile"),
        ],
    }
    path = _write(tmp_path / "s.geojson", fc)
    aset = read_annotations(path)
    assert len(aset) == 1
    a = aset.annotations[0]
    assert (a.label, a.color, a.object_type) == ("Glomerulus", (255, 0, 128), "annotation")
    assert a.id == "5c6a3c2e-1f7e-4a49-9a43-1b0b7f6f0a01"
    assert a.geometry.area == pytest.approx(100 * 100 - 20 * 20)
    assert aset.report.skipped == {"detection": 1, "cell": 1, "tile": 1}

    both = read_annotations(path, objects=("annotation", "detection"))
    assert sorted(x.object_type for x in both.annotations) == ["annotation", "detection"]
    assert both.report.skipped == {"cell": 1, "tile": 1}
    only = read_geojson(path, objects=("detections", "cells"))
    assert sorted(x.object_type for x in only.annotations) == ["cell", "detection"]
    assert {x.label for x in only.annotations} == {"unclassified"}


def test_geojson_single_feature_and_bare_geometry(tmp_path: Path) -> None:
    one = _feature(_poly(SQUARE), classification={"name": "Glomerulus"}, id="g-7")
    aset = read_annotations(_write(tmp_path / "one.geojson", one))
    assert [(a.label, a.id) for a in aset.annotations] == [("Glomerulus", "g-7")]

    bare = read_annotations(_write(tmp_path / "bare.geojson", _poly(SQUARE)))
    assert [(a.label, a.id) for a in bare.annotations] == [("unclassified", "0")]

    named = _feature(_poly(SQUARE), name="my glom")  # no class: the name stands in
    assert read_annotations(_write(tmp_path / "n.geojson", named)).annotations[0].label == "my glom"


def test_geojson_multipolygon_with_hole(tmp_path: Path) -> None:
    mp = {"type": "MultiPolygon", "coordinates": [[SQUARE, HOLE], [_shift(SQUARE, 300)]]}
    aset = read_annotations(_write(tmp_path / "m.geojson", [_feature(mp)]))
    (a,) = aset.annotations
    assert isinstance(a.geometry, MultiPolygon)
    assert len(a.geometry.geoms) == 2
    assert a.geometry.area == pytest.approx(2 * 100 * 100 - 20 * 20)
    assert not a.geometry.contains(Polygon(HOLE).centroid)


def test_geojson_points_lines_skipped_and_collection_polygons(tmp_path: Path) -> None:
    feats = [
        _feature({"type": "Point", "coordinates": [5, 5]}),
        _feature({"type": "MultiPoint", "coordinates": [[5, 5], [6, 6]]}),
        _feature({"type": "LineString", "coordinates": [[0, 0], [9, 9]]}),
        _feature({"type": "MultiLineString", "coordinates": [[[0, 0], [9, 9]]]}),
        _feature(
            {
                "type": "GeometryCollection",
                "geometries": [{"type": "Point", "coordinates": [1, 1]}, _poly(SQUARE)],
            }
        ),
    ]
    aset = read_annotations(
        _write(tmp_path / "p.geojson", {"type": "FeatureCollection", "features": feats})
    )
    assert len(aset) == 1 and aset.annotations[0].geometry.area == pytest.approx(10000)
    assert aset.report.skipped == {"point": 2, "line": 2}
    text = summarise(aset)
    assert "skipped 4" in text and "point 2" in text


def test_bowtie_repaired_and_degenerate_dropped(tmp_path: Path) -> None:
    feats = [
        _feature(_poly(BOWTIE), classification={"name": "G"}),
        _feature(_poly([[0, 0], [10, 10], [20, 20], [0, 0]]), classification={"name": "G"}),
        _feature(_poly([[0, 0], [1, 0]]), classification={"name": "G"}),
        _feature(_poly(SQUARE), classification={"name": "G"}),
    ]
    aset = read_annotations(_write(tmp_path / "b.geojson", feats))
    assert len(aset) == 2
    assert aset.report.repaired == 1 and aset.report.dropped == 2
    bowtie = aset.annotations[0].geometry
    assert bowtie.is_valid and bowtie.area == pytest.approx(5000)  # two triangles
    assert "Self-intersection" in aset.report.repaired_reasons[0]
    text = summarise(aset)
    assert "repaired 1" in text and "dropped 2" in text


def test_clean_geometry_directly() -> None:
    rep = AnnotationReport()
    assert clean_geometry(Polygon(), rep, "x") is None
    tiny = Polygon([(0, 0), (0.5, 0), (0, 0.5)])
    assert clean_geometry(tiny, rep, "y") is None
    assert rep.dropped == 2 and rep.dropped_reasons[1].startswith("y: degenerate")
    ok = clean_geometry(Polygon(BOWTIE), rep, "z")
    assert isinstance(ok, MultiPolygon) and rep.repaired == 1


def test_select_error_lists_classes(tmp_path: Path) -> None:
    feats = [
        _feature(_poly(_shift(SQUARE, 200 * i)), classification={"name": "Tubule"})
        for i in range(3)
    ]
    feats.append(_feature(_poly(_shift(SQUARE, 0, 500)), classification={"name": "Glomeruli"}))
    aset = read_annotations(_write(tmp_path / "foo.geojson", feats))
    with pytest.raises(AnnotationError) as exc:
        aset.select(["glomerulus"])
    msg = str(exc.value)
    assert msg == (  # the file as the user gave it (here a full path), not its name alone
        f"{tmp_path / 'foo.geojson'}: no object of class 'glomerulus'; classes found: Tubule (3), "
        "Glomeruli (1); choose with --label"
    )
    assert "\n" not in msg
    assert len(aset.select(["GLOMERULI", "tubule"])) == 4
    assert len(aset.select([])) == 4

    empty = read_annotations(
        _write(tmp_path / "pts.geojson", [_feature({"type": "Point", "coordinates": [1, 2]})])
    )
    with pytest.raises(AnnotationError, match=r"pts\.geojson: .*skipped 1 point"):
        empty.select(["glomerulus"])


def test_outside_slide() -> None:
    def ann(x: float, y: float) -> Annotation:
        return Annotation(Polygon(_shift(SQUARE, x, y)), "g", f"{x},{y}")

    aset = AnnotationSet(Path("a.geojson"), [ann(0, 0), ann(950, 950), ann(1000, 0), ann(-500, 0)])
    assert [a.id for a in aset.outside(1000, 1000)] == ["1000,0", "-500,0"]
    assert aset.report.objects == {"g": 4}


def test_unparseable_and_unknown_files(tmp_path: Path) -> None:
    bad = _write(tmp_path / "foo.xml", "<ASAP_Annotations>\n<Annotations>\n</Annotation>\n")
    with pytest.raises(AnnotationError) as exc:
        read_annotations(bad)
    msg = str(exc.value)
    assert msg.startswith(f"{bad}: not valid XML (line 3): mismatched tag")
    assert "export it again" in msg and "\n" not in msg

    badjson = _write(tmp_path / "foo.geojson", '{"type": "FeatureCollection",\n "features": [}')
    with pytest.raises(AnnotationError, match=r"/foo\.geojson: not valid JSON \(line 2\)"):
        read_annotations(badjson)
    with pytest.raises(AnnotationError, match=r"foo\.json: not GeoJSON"):
        read_annotations(_write(tmp_path / "foo.json", {"hello": 1}))
    with pytest.raises(AnnotationError, match="no such annotation file"):
        read_annotations(tmp_path / "missing.geojson")
    with pytest.raises(AnnotationError, match=r"other\.txt: unknown annotation format"):
        read_annotations(_write(tmp_path / "other.txt", "hello"))
    with pytest.raises(AnnotationError, match="neither ASAP"):
        read_annotations(_write(tmp_path / "svg.xml", "<svg></svg>"))
    with pytest.raises(AnnotationError, match="unknown annotation format 'dicom'"):
        read_annotations(_write(tmp_path / "x.json", "[]"), fmt="dicom")
    # content sniffing for an odd suffix
    sniffed = read_annotations(_write(tmp_path / "ann.txt", [_feature(_poly(SQUARE))]))
    assert len(sniffed) == 1


# --------------------------------------------------------------------------- ASAP XML

ASAP = """<?xml version="1.0"?>
<ASAP_Annotations>
  <Annotations>
    <Annotation Name="Annotation 0" Type="Polygon" PartOfGroup="glomerulus" Color="#F4FA58">
      <Coordinates>
        <Coordinate Order="2" X="100,5" Y="100" />
        <Coordinate Order="0" X="0" Y="0" />
        <Coordinate Order="3" X="0" Y="100" />
        <Coordinate Order="1" X="100,5" Y="0" />
      </Coordinates>
    </Annotation>
    <Annotation Name="Annotation 1" Type="Spline" PartOfGroup="glomerulus" Color="#F4FA58">
      <Coordinates>
        <Coordinate Order="0" X="200" Y="0" />
        <Coordinate Order="1" X="300" Y="0" />
        <Coordinate Order="2" X="300" Y="100" />
        <Coordinate Order="3" X="200" Y="100" />
      </Coordinates>
    </Annotation>
    <Annotation Name="Annotation 2" Type="Rectangle" PartOfGroup="None" Color="#F4FA58">
      <Coordinates>
        <Coordinate Order="0" X="400" Y="0" />
        <Coordinate Order="1" X="450" Y="0" />
        <Coordinate Order="2" X="450" Y="20" />
        <Coordinate Order="3" X="400" Y="20" />
      </Coordinates>
    </Annotation>
    <Annotation Name="Annotation 3" Type="Dot" PartOfGroup="glomerulus" Color="#F4FA58">
      <Coordinates><Coordinate Order="0" X="5" Y="5" /></Coordinates>
    </Annotation>
    <Annotation Name="Annotation 4" Type="PointSet" PartOfGroup="glomerulus" Color="#F4FA58">
      <Coordinates>
        <Coordinate Order="0" X="5" Y="5" /><Coordinate Order="1" X="6" Y="6" />
      </Coordinates>
    </Annotation>
  </Annotations>
  <AnnotationGroups>
    <Group Name="glomerulus" PartOfGroup="None" Color="#00ff00"><Attributes /></Group>
  </AnnotationGroups>
</ASAP_Annotations>
"""


def test_asap(tmp_path: Path) -> None:
    aset = read_annotations(_write(tmp_path / "slide.xml", ASAP))
    assert aset.fmt == "ASAP XML"
    assert aset.classes() == {"glomerulus": 2, "unclassified": 1}
    first = aset.annotations[0]
    assert first.geometry.is_valid  # vertices sorted by Order: a square, not a bow-tie
    assert first.geometry.area == pytest.approx(100.5 * 100)  # decimal comma read
    assert first.color == (0xF4, 0xFA, 0x58) and first.id == "Annotation 0"
    assert aset.annotations[1].geometry.area == pytest.approx(10000)
    assert aset.annotations[2].geometry.area == pytest.approx(1000)
    assert aset.report.skipped == {"dot": 1, "pointset": 1}
    assert aset.report.repaired == 0


# --------------------------------------------------------------------------- ImageScope XML

IMAGESCOPE = """<?xml version="1.0" encoding="utf-8"?>
<Annotations MicronsPerPixel="0.252000">
  <Annotation Id="1" Name="Glomerulus" ReadOnly="0" Type="4" LineColor="255" Visible="1">
    <Attributes><Attribute Name="Description" Id="0" Value=""/></Attributes>
    <Regions>
      <RegionAttributeHeaders/>
      <Region Id="1" Type="0" NegativeROA="0">
        <Attributes/>
        <Vertices>
          <Vertex X="0" Y="0" Z="0"/><Vertex X="100" Y="0" Z="0"/>
          <Vertex X="100" Y="100" Z="0"/><Vertex X="0" Y="100" Z="0"/>
        </Vertices>
      </Region>
      <Region Id="2" Type="0" NegativeROA="1">
        <Vertices>
          <Vertex X="40" Y="40"/><Vertex X="60" Y="40"/>
          <Vertex X="60" Y="60"/><Vertex X="40" Y="60"/>
        </Vertices>
      </Region>
      <Region Id="3" Type="1" NegativeROA="0">
        <Vertices>
          <Vertex X="200" Y="0"/><Vertex X="300" Y="0"/>
          <Vertex X="300" Y="50"/><Vertex X="200" Y="50"/>
        </Vertices>
      </Region>
      <Region Id="4" Type="2" NegativeROA="0">
        <Vertices><Vertex X="400" Y="0"/><Vertex X="500" Y="100"/></Vertices>
      </Region>
      <Region Id="5" Type="4" NegativeROA="0">
        <Vertices><Vertex X="0" Y="0"/><Vertex X="50" Y="50"/></Vertices>
      </Region>
    </Regions>
  </Annotation>
  <Annotation Id="2" Name="" LineColor="65280">
    <Attributes><Attribute Name="Tubule" Id="0" Value=""/></Attributes>
    <Regions>
      <Region Id="1" Type="0"><Vertices>
        <Vertex X="0" Y="500"/><Vertex X="10" Y="500"/><Vertex X="10" Y="510"/>
      </Vertices></Region>
    </Regions>
  </Annotation>
  <Annotation Id="3" LineColor="16711680">
    <Regions>
      <Region Id="1" Type="0"><Vertices>
        <Vertex X="0" Y="700"/><Vertex X="10" Y="700"/><Vertex X="10" Y="710"/>
      </Vertices></Region>
      <Region Id="2" Type="3"><Vertices><Vertex X="0" Y="0"/><Vertex X="5" Y="5"/></Vertices>
      </Region>
    </Regions>
  </Annotation>
</Annotations>
"""


def test_imagescope_negative_region_is_a_hole(tmp_path: Path) -> None:
    aset = read_annotations(_write(tmp_path / "slide.xml", IMAGESCOPE))
    assert aset.fmt == "Aperio ImageScope XML"
    assert aset.classes() == {"Glomerulus": 3, "Layer 3": 1, "Tubule": 1}
    glom = aset.select(["glomerulus"])
    holed = glom[0].geometry
    assert isinstance(holed, Polygon) and len(holed.interiors) == 1
    assert holed.area == pytest.approx(10000 - 400)
    assert glom[0].color == (255, 0, 0)  # COLORREF 255 is red
    assert glom[1].geometry.area == pytest.approx(5000)
    assert glom[2].geometry.area == pytest.approx(np.pi * 50 * 50, rel=0.01)  # ellipse
    assert aset.select(["tubule"])[0].color == (0, 255, 0)
    assert aset.select(["layer 3"])[0].color == (0, 0, 255)
    assert aset.report.skipped == {"ruler": 1, "arrow": 1}


# --------------------------------------------------------------------------- LabelMe JSON


def test_labelme_shapes(tmp_path: Path) -> None:
    data = {
        "version": "5.2.1",
        "flags": {},
        "shapes": [
            {
                "label": "Glomeruli",
                "points": SQUARE[:4],
                "shape_type": "polygon",
                "group_id": None,
                "flags": {},
            },
            {"label": "Glomeruli", "points": [[300, 100], [200, 0]], "shape_type": "rectangle"},
            {"label": "Glomeruli", "points": [[500, 50], [530, 90]], "shape_type": "circle"},
            {"label": "Glomeruli", "points": [[5, 5]], "shape_type": "point"},
            {"label": "Glomeruli", "points": [[5, 5], [9, 9]], "shape_type": "line"},
            {"label": "Glomeruli", "points": [[5, 5], [9, 9], [3, 1]], "shape_type": "linestrip"},
            {"label": "vessel", "points": BOWTIE[:4], "shape_type": None},
        ],
        "imagePath": "x.jpg",
        "imageData": "bm90IGFuIGltYWdl",
        "imageHeight": 1200,
        "imageWidth": 1600,
    }
    aset = read_annotations(_write(tmp_path / "x.json", data))
    assert aset.fmt == "LabelMe JSON"
    assert aset.classes() == {"Glomeruli": 3, "vessel": 1}
    areas = [a.geometry.area for a in aset.annotations]
    assert areas[0] == pytest.approx(10000)
    assert areas[1] == pytest.approx(10000)
    assert areas[2] == pytest.approx(np.pi * 50**2, rel=0.01)  # radius 50
    assert aset.report.skipped == {"point": 1, "line": 1, "linestrip": 1}
    assert aset.report.repaired == 1


# --------------------------------------------------------------------------- masks


def _png(path: Path, arr: np.ndarray) -> Path:
    Image.fromarray(arr).save(path)
    return path


def test_binary_mask_and_ring_with_hole(tmp_path: Path) -> None:
    yy, xx = np.mgrid[:200, :200]
    r = np.hypot(xx - 100, yy - 100)
    ring = ((r <= 60) & (r > 25)).astype(np.uint8) * 255
    ring[10:20, 170:190] = 255  # a second component
    aset = read_annotations(_png(tmp_path / "ring.png", ring), label="glomerulus")
    assert aset.fmt == "mask image"
    assert aset.classes() == {"glomerulus": 2}
    big = max(aset.annotations, key=lambda a: a.geometry.area).geometry
    assert isinstance(big, Polygon) and len(big.interiors) == 1
    assert big.area == pytest.approx(((r <= 60) & (r > 25)).sum())
    assert not big.contains(Polygon([(99, 99), (101, 99), (101, 101)]))  # the hole is a hole
    total = sum(a.geometry.area for a in aset.annotations)
    assert total == pytest.approx((ring > 0).sum())

    scaled = read_annotations(tmp_path / "ring.png", scale=4, min_area=16 * 250)
    assert len(scaled) == 1  # the 200 px square (3200 level-0 px²) is below min_area
    assert scaled.annotations[0].geometry.area == pytest.approx(16 * big.area)


def test_label_mask_values(tmp_path: Path) -> None:
    lab = np.zeros((60, 60), np.uint8)
    lab[5:15, 5:15] = 1
    lab[30:50, 30:50] = 2
    path = _png(tmp_path / "lab.png", lab)
    assert len(read_annotations(path)) == 2
    two = read_annotations(path, mask_value=2)
    assert [a.geometry.area for a in two.annotations] == [400]
    assert two.annotations[0].geometry.bounds == (30, 30, 50, 50)


def test_rgb_mask_channel(tmp_path: Path) -> None:
    rgb = np.zeros((50, 50, 3), np.uint8)
    rgb[0:10, 0:10, 0] = 255
    rgb[20:40, 20:40, 1] = 255
    path = _png(tmp_path / "rgb.png", rgb)
    assert [a.geometry.area for a in read_annotations(path, mask_channel=0).annotations] == [100]
    assert [a.geometry.area for a in read_annotations(path, mask_channel=1).annotations] == [400]
    assert len(read_annotations(path)) == 2  # any channel
    with pytest.raises(AnnotationError, match=r"rgb\.png: --mask-channel 5"):
        read_annotations(path, mask_channel=5)


def test_mask_diagonal_and_empty() -> None:
    fg = np.zeros((10, 10), bool)
    fg[2, 2] = fg[3, 3] = True  # 8-connected: one object of two squares touching at a corner
    (geom,) = polygons_from_mask(fg)
    assert geom.area == 2 and geom.is_valid
    assert polygons_from_mask(np.zeros((5, 5), bool)) == []


def test_unreadable_mask(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match=r"broken\.png: not a readable mask image"):
        read_annotations(_write(tmp_path / "broken.png", "not a png"))


def test_helpers() -> None:
    assert parse_number("1234,5") == 1234.5
    assert parse_number(" 7 ") == 7.0
    with pytest.raises(ValueError):
        parse_number(None)
    assert packed_rgb(-16777216) == (0, 0, 0)
    assert packed_rgb(0xFF8040) == (255, 128, 64)


# --------------------------------------------------------------------------- real data


@pytest.mark.shared_data
def test_hubmap_labelme_files(shared_data: Path) -> None:
    files = sorted((shared_data / "hubmap-pas-tiles").glob("*.json"))
    assert len(files) == 110
    total = 0
    for f in files:
        aset = read_annotations(f)
        assert aset.fmt == "LabelMe JSON"
        assert set(aset.classes()) == {"Glomeruli"}, f.name
        total += len(aset.select(["glomeruli"]))
    assert total == 455


@pytest.mark.shared_data
def test_aidpath_masks(shared_data: Path) -> None:
    files = sorted((shared_data / "aidpath-pas-tiles" / "masks").glob("*.png"))
    assert len(files) == 16
    for f in files:
        aset = read_annotations(f, mask_channel=0, label="glomerulus")
        pixels = int((np.asarray(Image.open(f))[..., 0] > 0).sum())
        area = sum(a.geometry.area for a in aset.annotations)
        assert len(aset) >= 1, f.name
        assert abs(area - pixels) <= 0.02 * pixels, f.name
        assert all(a.geometry.is_valid for a in aset.annotations)


def test_tiff_and_jpeg_masks(tmp_path: Path) -> None:
    import tifffile

    lab = np.zeros((64, 64), np.uint16)
    lab[8:24, 8:24] = 300
    lab[40:60, 40:60] = 7
    tifffile.imwrite(tmp_path / "lab.tif", lab)
    aset = read_annotations(tmp_path / "lab.tif", mask_value=300, label="glomerulus")
    assert [(a.label, a.geometry.area) for a in aset.annotations] == [("glomerulus", 256)]

    binary = np.zeros((64, 64), np.uint8)
    binary[16:48, 16:48] = 255
    Image.fromarray(binary).save(tmp_path / "m.jpg", quality=70)
    (a,) = read_annotations(tmp_path / "m.jpg").annotations  # JPEG ringing is not foreground
    assert a.geometry.area == pytest.approx(32 * 32, rel=0.05)


def test_unknown_class_error_keeps_its_parts(tmp_path: Path) -> None:
    import pickle

    from wsi_aug.annotations.model import UnknownClassError

    feats = [_feature(_poly(SQUARE), classification={"name": "Tubule"})]
    feats.append(_feature(_poly(_shift(SQUARE, 0, 500)), classification={"name": "Tubule"}))
    aset = read_annotations(_write(tmp_path / "t.geojson", feats))
    with pytest.raises(UnknownClassError) as exc:
        aset.select(["glomerulus", "glomeruli"])
    err = exc.value
    assert isinstance(err, AnnotationError)
    assert (err.source.name, err.asked, err.classes) == ("t.geojson", ("glomerulus", "glomeruli"),
                                                          {"Tubule": 2})  # fmt: skip
    assert str(err) == (
        f"{tmp_path / 't.geojson'}: no object of class 'glomerulus' or 'glomeruli'; "
        "classes found: Tubule (2); "
        "choose with --label"
    )
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) and again.classes == err.classes


# --------------------------------------------------------------------------- the object index


def _blobs(n: int, extent: float, seed: int) -> list:
    """`n` random star-shaped polygons (some with a hole) of about 80 px over a square."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        cx, cy = rng.uniform(0, extent, 2)
        k = int(rng.integers(8, 30))
        t = np.sort(rng.uniform(0, 2 * np.pi, k))
        r = rng.uniform(25, 45, k)
        shell = np.c_[cx + r * np.cos(t), cy + r * np.sin(t)]
        holes = []
        if rng.random() < 0.5:
            holes = [np.c_[cx + 8 * np.cos(t[::-1]), cy + 8 * np.sin(t[::-1])]]
        p = Polygon(shell, holes)
        if p.is_valid:
            out.append(p)
    return out


def test_object_index_query_and_rasterize_match_testing_every_object() -> None:
    import shapely

    from wsi_aug.annotations.index import ObjectIndex

    geoms = _blobs(300, 2000.0, seed=0)
    geoms.append(MultiPolygon([Polygon(SQUARE), Polygon(_shift(SQUARE, 300))]))
    index = ObjectIndex(geoms)
    assert len(index) == len(geoms)
    rng = np.random.default_rng(1)
    for x0, y0 in [*rng.uniform(-100, 2000, (40, 2)).tolist(), [-50.0, -50.0]]:
        box = (x0, y0, 256.0, 256.0)
        window = shapely.box(x0, y0, x0 + 256, y0 + 256)
        want = [g for g in geoms if g.intersects(window)]
        assert index.query(box) == want
        assert index.touches(box) == bool(want)
        m = index.rasterize(box, 128)
        assert m.dtype == np.uint8 and m.shape == (128, 128)
        yy, xx = np.mgrid[:128, :128]
        px, py = x0 + (xx + 0.5) * 2, y0 + (yy + 0.5) * 2
        ref = np.zeros((128, 128), bool)
        for g in want:
            ref |= shapely.contains_xy(g, px, py)
        assert (m != ref).mean() < 0.002  # only pixel centres on an outline may differ
    assert not ObjectIndex([]).touches((0, 0, 10, 10))
    assert not ObjectIndex([]).rasterize((0, 0, 10, 10), 8).any()


def test_scanline_fill_agrees_with_skimage_polygon() -> None:
    """`fill_rings` gives skimage.draw.polygon's pixels (exterior drawn, holes cleared) to the
    pixel on random polygons with holes; it is kept because it is several times faster."""
    draw = pytest.importorskip("skimage.draw")
    from wsi_aug.annotations.index import fill_rings

    size = 128
    n_diff = 0
    for p in _blobs(200, 100.0, seed=2):
        rings = [np.asarray(r.coords) for r in (p.exterior, *p.interiors)]
        ours = fill_rings(rings, size)
        ref = np.zeros((size, size), bool)
        for i, r in enumerate(rings):  # skimage's pixel (row, col) has its centre at (row, col)
            rr, cc = draw.polygon(r[:, 1] - 0.5, r[:, 0] - 0.5, (size, size))
            ref[rr, cc] = i == 0
        n_diff += int((ours != ref).sum())
    assert n_diff == 0


def test_one_pass_window_fill_unites_overlapping_objects() -> None:
    """`rasterize` cuts all of a window's polygons in one pass; it gives exactly the union of
    each polygon filled alone, so an overlap (or another object lying in a hole) stays filled
    rather than being cancelled by the even-odd rule across objects."""
    import shapely

    from wsi_aug.annotations.index import ObjectIndex, fill_rings

    ring = shapely.Point(60, 60).buffer(40).exterior
    donut = shapely.Polygon(ring.coords, [shapely.Point(60, 60).buffer(15).exterior.coords])
    plug = shapely.Point(60, 60).buffer(20)  # fills the donut's hole and overlaps its ring
    blobs = list(_blobs(30, 60.0, seed=5))
    geoms = [donut, plug, shapely.box(50, 10, 110, 30), *blobs]
    index = ObjectIndex(geoms)
    box = (0.0, 0.0, 128.0, 128.0)
    got = index.rasterize(box, 64).astype(bool)
    want = np.zeros((64, 64), bool)
    for g in index.query(box):
        for poly in getattr(g, "geoms", [g]):
            rings = [np.asarray(r.coords) / 2 for r in (poly.exterior, *poly.interiors)]
            want |= fill_rings(rings, 64)
    np.testing.assert_array_equal(got, want)
    assert got[30, 30]  # the donut's hole, covered by the plug


@pytest.mark.slow
def test_rasterising_a_window_costs_about_the_same_with_8000_objects() -> None:
    """The index makes a window's cost independent of how many objects the slide holds."""
    import time

    from wsi_aug.annotations.index import ObjectIndex

    def per_window(n: int) -> float:
        extent = 100.0 * np.sqrt(n)  # the same density: windows meet the same number of objects
        index = ObjectIndex(_blobs(n, extent, seed=n))
        rng = np.random.default_rng(3)
        boxes = [(x, y, 256.0, 256.0) for x, y in rng.uniform(0, extent - 256, (60, 2))]
        for b in boxes[:5]:
            index.rasterize(b, 128)  # warm: ring coordinates are cached on first use
        best = np.inf
        for _ in range(3):
            t = time.perf_counter()
            for b in boxes:
                index.rasterize(b, 128)
            best = min(best, time.perf_counter() - t)
        return best / len(boxes)

    few, many = per_window(20), per_window(8000)
    # timings on a shared 2-core machine are noisy: a loose bound here, the exact one below
    assert many <= 5 * few, (
        f"{many * 1e3:.2f} ms a window with 8000 objects, {few * 1e3:.2f} with 20"
    )


def test_rasterising_a_window_visits_only_the_objects_near_it() -> None:
    """The cost's cause, counted instead of timed: a window visits the objects meeting it only."""
    import shapely

    from wsi_aug.annotations.index import ObjectIndex

    for n in (20, 8000):
        extent = 100.0 * np.sqrt(n)
        geoms = _blobs(n, extent, seed=n)
        index = ObjectIndex(geoms)
        visited: list[int] = []
        real = index._object_edges
        index._object_edges = lambda i, real=real, seen=visited: (seen.append(i), real(i))[1]
        rng = np.random.default_rng(3)
        for x, y in rng.uniform(0, extent - 256, (20, 2)):
            visited.clear()
            index.rasterize((x, y, 256.0, 256.0), 128)
            window = shapely.box(x, y, x + 256, y + 256)
            meeting = sum(1 for g in geoms if g.intersects(window))
            assert len(visited) == meeting, (n, len(visited), meeting)
            # the exact test runs on bounding-box candidates only, not on every object
            assert len(index._tree.query(window)) <= 2 * meeting + 10


# --------------------------------------------------------------------------- invalid values


def _rejected(aset: AnnotationSet) -> dict[str, str]:
    """The rejection reasons by object (``feature 3`` -> ``ring 0: point 1 is ...``)."""
    return dict(r.split(": ", 1) for r in aset.report.rejected_reasons)


def test_non_finite_huge_and_absurd_coordinates_reject_only_their_object(tmp_path: Path) -> None:
    good = '{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [%s]}, '
    good += '"properties": {"classification": {"name": "Glomerulus"}}}'
    ring = json.dumps(SQUARE)
    bad_rings = [
        "[[NaN, 0], [100, 0], [100, 100], [0, 100], [NaN, 0]]",  # GEOSException before
        "[[0, 0], [100, NaN], [100, 100], [0, 100], [0, 0]]",
        "[[0, 0], [1e999, 0], [100, 100], [0, 100], [0, 0]]",  # overflows a float
        "[[0, 0], [-Infinity, 0], [100, 100], [0, 100], [0, 0]]",
        f"[[0, 0], [{'9' * 5000}, 0], [100, 100], [0, 100], [0, 0]]",  # ValueError before
        f"[[0, 0], [{'9' * 400}, 0], [100, 100], [0, 100], [0, 0]]",  # OverflowError before
        "[[0, 0], [1e12, 0], [100, 100], [0, 100], [0, 0]]",  # beyond ±1e9 px
    ]
    feats = [good % ring] + [good % r for r in bad_rings]
    path = _write(tmp_path / "nan.geojson", "[" + ", ".join(feats) + "]")
    aset = read_annotations(path)
    assert len(aset) == 1 and aset.report.rejected == len(bad_rings)
    why = _rejected(aset)
    assert why["feature 1"].startswith("ring 0: point 0 is (nan, 0), not finite")
    assert "point 1 is (inf, 0)" in why["feature 3"] and "point 1 is (-inf, 0)" in why["feature 4"]
    assert "point 1 is (inf, 0)" in why["feature 5"]
    assert "beyond ±1e+09 px" in why["feature 7"]
    text = summarise(aset)
    assert "rejected 7 (invalid or too complex, not read; correct or delete them" in text
    assert "feature 1: ring 0: point 0" in text


def test_wrong_types_reject_only_their_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wsi_aug.annotations import model

    monkeypatch.setattr(model, "MAX_REASONS", 100)  # keep every reason, not the first 10
    sq = _poly(SQUARE)
    feats: list = [
        _feature(sq, classification={"name": "Glomerulus"}),
        _feature({"type": "Polygon", "coordinates": 5}),
        _feature({"type": "Polygon", "coordinates": {"a": 1}}),
        _feature({"type": "Polygon", "coordinates": "abc"}),
        _feature({"type": "Polygon", "coordinates": [[[0, 0], "10,0", [10, 10], [0, 10]]]}),
        _feature({"type": "Polygon", "coordinates": [[[0, 0], [True, 0], [10, 10], [0, 10]]]}),
        _feature({"type": "Polygon", "coordinates": [[[0, 0], [None, 0], [10, 10], [0, 10]]]}),
        _feature({"type": "Polygon", "coordinates": [[[0, 0], [5], [10, 10], [0, 10]]]}),
        _feature({"type": "MultiPolygon", "coordinates": [7]}),
        _feature(sq, classification={"name": ["Glomerulus"]}),
        _feature(sq, classification={"names": [{"a": 1}]}),
        _feature(sq, classification=3.5),
        {"type": "Feature", "geometry": sq, "properties": [1, 2]},
        {"type": "Feature", "geometry": [sq]},
        {"type": "Feature", "geometry": {"type": 5, "coordinates": []}},
        _feature({"type": "GeometryCollection", "geometries": {"a": sq}}),
        42,
    ]
    nested: dict = sq
    for _ in range(20):
        nested = {"type": "GeometryCollection", "geometries": [nested]}
    feats.append(_feature(nested))
    aset = read_annotations(_write(tmp_path / "types.geojson", {"type": "FeatureCollection",
                                                                 "features": feats}))  # fmt: skip
    assert len(aset) == 1 and aset.report.rejected == len(feats) - 1
    why = _rejected(aset)
    assert why["feature 1"] == "coordinates is 5, not a list"
    assert why["feature 2"] == "coordinates is an object {...}, not a list"
    assert why["feature 4"] == "ring 0: point 1 is '10,0', not [x, y]"
    assert why["feature 5"] == "ring 0: point 1 has x = true (a boolean), not a number"
    assert why["feature 8"] == "polygon 0 is 7, not a list"
    assert why["feature 9"] == "classification name is a list of 1, not text"
    assert why["feature 12"] == "properties is a list of 2, not an object"
    assert why["feature 16"] == "is 42, not a GeoJSON Feature object"
    assert "nested more than 8 deep" in why["feature 17"]


def test_file_level_errors_are_one_line(tmp_path: Path) -> None:
    cases = {
        "num.geojson": '{"type": "FeatureCollection", "features": 5}',
        "str.geojson": '{"type": "FeatureCollection", "features": "abc"}',
        "deep.json": "[" * 100_000 + "]" * 100_000,
        "enc.xml": '<?xml version="1.0" encoding="no-such"?><Annotations/>',
        "latin.json": b'{"shapes": [{"label": "\xe9"}]}',
        "root.xml": "<Annotations" + ">" + "<a>" * 5000 + "</a>" * 5000 + "</Annotations>",
    }
    for name, text in cases.items():
        path = tmp_path / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        try:
            read_annotations(path).select(["glomerulus"])
        except AnnotationError as exc:
            msg = str(exc)
            assert msg.startswith(f"{path}: ") and "\n" not in msg, msg
        else:
            raise AssertionError(f"{name}: no error")


def test_rings_closed_and_too_few_points(tmp_path: Path) -> None:
    feats = [
        _feature(_poly(SQUARE[:4]), classification={"name": "G"}),  # GeoJSON requires closed
        _feature(_poly([[0, 0], [10, 0], [0, 0]]), classification={"name": "G"}),
        _feature(_poly(SQUARE, [[40, 40], [60, 40], [40, 40]]), classification={"name": "G"}),
    ]
    aset = read_annotations(_write(tmp_path / "open.geojson", feats))
    assert [a.geometry.area for a in aset.annotations] == [10000, 10000]  # the 2-point hole: none
    assert aset.report.repaired == 1 and aset.report.repaired_reasons == [
        "feature 0: ring 0 not closed (closed it)"
    ]
    assert aset.report.dropped_reasons == ["feature 1: empty (fewer than 3 vertices)"]
    # LabelMe, ASAP and ImageScope never close their rings: nothing to report
    lm = {"shapes": [{"label": "G", "points": SQUARE[:4], "shape_type": "polygon"}]}
    assert read_annotations(_write(tmp_path / "lm.json", lm)).report.repaired == 0


def test_labelme_bad_values_reject_only_their_shape(tmp_path: Path) -> None:
    ok = {"label": "Glomeruli", "points": SQUARE[:4]}
    text = json.dumps({"shapes": [ok, "x", {"label": ["G"], "points": SQUARE[:4]},
                                  {"label": "G", "points": {"a": 1}},
                                  {"label": "G", "points": SQUARE[:4], "shape_type": 3},
                                  {"label": "G", "points": [[0, 0], ["HUGE", 1], [5, 5]]},
                                  {"label": "G", "points": [[0, 0], [1e400, 1], [5, 5]]},
                                  {"label": 7, "points": SQUARE[:4], "line_color": [1e999, 0, 0]},
                                  {"label": "G\nX\ud800", "points": SQUARE[:4]}]})  # fmt: skip
    text = text.replace('"HUGE"', "9" * 5000).replace("1e400", "1e999")
    aset = read_annotations(_write(tmp_path / "lm.json", text))
    assert aset.classes() == {"Glomeruli": 1, "7": 1, "G X?": 1}
    assert aset.annotations[1].color is None  # an unusable colour is no reason to reject
    why = _rejected(aset)
    assert why == {
        "shape 1": "is 'x', not a shape object",
        "shape 2": "label is a list of 1, not text",
        "shape 3": "points is an object {...}, not a list of [x, y] points",
        "shape 4": "shape_type is 3, not text",
        "shape 5": "points: point 1 is (inf, 1), not finite (NaN, infinity or a number too large)",
        "shape 6": "points: point 1 is (inf, 1), not finite (NaN, infinity or a number too large)",
    }
    with pytest.raises(AnnotationError) as exc:
        aset.select(["tubule"])
    assert "\n" not in str(exc.value)


def test_xml_bad_numbers_reject_only_their_object(tmp_path: Path) -> None:
    asap = ASAP.replace('X="0" Y="0" />', 'X="nan" Y="0" />', 1)
    asap = asap.replace('Order="1" X="300" Y="0"', 'Order="1" X="abc" Y="0"', 1)
    asap = asap.replace('Order="0" X="400" Y="0"', 'Order="0" X="400"', 1)
    aset = read_annotations(_write(tmp_path / "a.xml", asap))
    assert len(aset) == 0 and aset.report.rejected == 3
    assert _rejected(aset) == {
        "annotation 'Annotation 0'": "coordinates: point 0 is (nan, 0), not finite (NaN, "
        "infinity or a number too large)",
        "annotation 'Annotation 1'": "coordinate 1: X is 'abc', not a number",
        "annotation 'Annotation 2'": "coordinate 0: Y is missing",
    }
    with pytest.raises(AnnotationError, match=r"a\.xml: .*rejected 3 invalid, e\.g\. annotation"):
        aset.select(["glomerulus"])

    scope = IMAGESCOPE.replace('<Vertex X="100" Y="0" Z="0"/>', '<Vertex X="1e999" Y="0"/>')
    aset = read_annotations(_write(tmp_path / "s.xml", scope))
    assert _rejected(aset) == {
        "layer 'Glomerulus' region 1.1": "vertices: point 1 is (inf, 0), not finite (NaN, "
        "infinity or a number too large)"
    }
    assert aset.classes() == {"Glomerulus": 2, "Layer 3": 1, "Tubule": 1}
    assert aset.report.skipped["negative region"] == 1  # its positive region was rejected


def test_qupath_colour_overflow_and_odd_names(tmp_path: Path) -> None:
    feats = [
        _feature(_poly(SQUARE), classification={"name": "G", "color": [1e999, 0, 0]}),
        _feature(_poly(_shift(SQUARE, 200)), classification={"name": "G", "colorRGB": 2**80}),
        _feature(_poly(_shift(SQUARE, 400)), classification={"names": ["Glom", "Sclerotic"]}),
        _feature(_poly(_shift(SQUARE, 600)), classification={"name": "a\u2028b\x00"}),
    ]
    aset = read_annotations(_write(tmp_path / "c.geojson", feats))
    assert [(a.label, a.color) for a in aset.annotations] == [
        ("G", None),
        ("G", packed_rgb(2**80)),
        ("Glom: Sclerotic", None),
        ("a b", None),
    ]


def test_mask_scale_is_checked(tmp_path: Path) -> None:
    path = _png(tmp_path / "m.png", np.full((8, 8), 255, np.uint8))
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(AnnotationError, match=r"m\.png: mask scale"):
            read_annotations(path, scale=bad)


# --------------------------------------------------------------------------- bounded cost


def _random_walk(n: int, seed: int = 0) -> np.ndarray:
    """A closed random walk of `n` 1-px steps: a polygon crossing itself everywhere."""
    rng = np.random.default_rng(seed)
    xy = np.cumsum(rng.normal(0, 1, (n, 2)), axis=0) + 5000
    return np.vstack([xy, xy[:1]]).round(2)


def _star(n: int, radius: float = 1000.0) -> np.ndarray:
    """A star polygon {n / (n/2 - 1)}: every edge crosses about half the others."""
    t = 2 * np.pi * np.arange(n) * (n // 2 - 1) / n
    return np.c_[np.cos(t), np.sin(t)] * radius + 2 * radius


def _urchin(n: int) -> np.ndarray:
    """A valid polygon of `n` spikes meeting near its centre: all edges' boxes overlap."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = np.where(np.arange(n) % 2 == 0, 1000.0, 1.0 + 0.001 * np.arange(n) / n)
    return np.c_[r * np.cos(t), r * np.sin(t)] + 2000


def _timed_read(path: Path, **kw) -> tuple[AnnotationSet, float]:
    import time

    start = time.perf_counter()
    aset = read_annotations(path, **kw)
    summarise(aset)
    return aset, time.perf_counter() - start


def _walk_file(path: Path, n: int) -> Path:
    return _write(path, [_feature(_poly(_random_walk(n).tolist()), classification={"name": "G"})])


@pytest.mark.slow
def test_polygon_just_over_the_vertex_limit_is_simplified_and_repaired(tmp_path: Path) -> None:
    """250,000 vertices crossing themselves ~10^5 times: about 1 s (repair alone would run for
    minutes: `make_valid` by linework takes 100 s on 50,000 vertices of it)."""
    aset, seconds = _timed_read(_walk_file(tmp_path / "walk.geojson", 250_000))
    assert seconds < 10, f"{seconds:.1f} s"
    (a,) = aset.annotations
    assert a.geometry.is_valid and a.geometry.area > 0
    (note,) = aset.report.simplified_reasons
    assert note.startswith("feature 0: 250,001 vertices simplified to ")
    assert "(by at most 15.75 px), as it had 250,001 vertices (limit 200,000); then it " in note
    assert aset.report.repaired == 1
    assert "simplified 1 (too many vertices, kept)" in summarise(aset)


@pytest.mark.slow
def test_a_million_vertices_crossing_themselves_read_in_seconds(tmp_path: Path) -> None:
    aset, seconds = _timed_read(_walk_file(tmp_path / "walk.geojson", 1_000_000))
    assert seconds < 10, f"{seconds:.1f} s"
    assert len(aset) == 0 and aset.report.rejected == 1  # too tangled even simplified by 16 px
    (why,) = aset.report.rejected_reasons
    assert why.startswith("feature 0: it crossed itself about ")
    assert why.endswith(
        "even simplified by 15.75 px (1,000,001 vertices as drawn); "
        "simplify or redraw it in the annotation tool"
    )


def test_vertex_limit_is_an_argument_and_a_module_constant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wsi_aug.annotations import model

    t = np.linspace(0, 2 * np.pi, 1000, endpoint=False)
    circle = np.c_[300 + 200 * np.cos(t), 300 + 200 * np.sin(t)].tolist()
    path = _write(tmp_path / "c.geojson", [_feature(_poly(circle))])
    assert read_annotations(path).report.simplified == 0
    aset = read_annotations(path, max_vertices=100)
    (a,) = aset.annotations
    assert len(a.geometry.exterior.coords) <= 100
    assert a.geometry.area == pytest.approx(np.pi * 200**2, rel=0.01)
    assert aset.report.simplified_reasons[0].startswith("feature 0: 1,001 vertices simplified to")
    assert aset.report.simplified_reasons[0].endswith("as it had 1,001 vertices (limit 100)")
    monkeypatch.setattr(model, "MAX_VERTICES", 100)
    assert read_annotations(path).report.simplified == 1
    with pytest.raises(AnnotationError, match="max_vertices 2 is too small"):
        read_annotations(path, max_vertices=2)


@pytest.mark.slow
def test_tangled_and_intricate_polygons_are_refused_quickly(tmp_path: Path) -> None:
    """Validity checks and repair cost time in the pairs of edges that cross or lie side by side:
    a 501-vertex star took 4 s to repair (37 s by linework), a valid 50,000-vertex urchin 9 s to
    check, a 200,000-vertex star 21 s."""
    feats = [
        _feature(_poly(_star(501).tolist())),
        _feature(_poly(_star(200_001).tolist())),
        _feature(_poly(_urchin(50_000).tolist())),
        _feature(_poly(_shift(SQUARE, 9000))),
    ]
    aset, seconds = _timed_read(_write(tmp_path / "star.geojson", feats))
    assert seconds < 10, f"{seconds:.1f} s"
    assert len(aset) == 1 and aset.report.rejected == 3
    why = _rejected(aset)
    assert why["feature 0"].startswith("it crossed itself about 123,952 times (limit 20,000) even")
    assert why["feature 1"].startswith("it crossed itself about ")
    assert "pairs of its edges lay side by side even simplified" in why["feature 2"]


@pytest.mark.slow
def test_a_file_of_many_costly_objects_is_bounded(tmp_path: Path) -> None:
    """Each 2,000-vertex urchin is cheap alone; the file's budget stops thousands of them."""
    urchin = _urchin(2000).tolist()
    feats = [_feature(_poly(urchin)) for _ in range(100)] + [_feature(_poly(SQUARE))]
    aset, seconds = _timed_read(_write(tmp_path / "many.geojson", feats))
    assert seconds < 10, f"{seconds:.1f} s"
    assert 0 < aset.report.rejected < 100 and len(aset) == 101 - aset.report.rejected
    assert aset.annotations[-1].geometry.area == 10000  # simple objects are always read
    assert aset.report.rejected_reasons[0].endswith(
        "not checked: checking and repairing this file's objects would take more than the 5 s "
        "allowed a file; simplify or repair its objects in the annotation tool"
    )


@pytest.mark.slow
def test_crossing_estimate_and_overlap_bound() -> None:
    import shapely

    from wsi_aug.annotations.model import crossings, overlap_bound

    for xy in (_random_walk(3000)[:-1], _star(301), _random_walk(30_000, seed=1)[:-1]):
        poly = Polygon(xy)
        ring = np.vstack([xy, xy[:1]])
        segs = shapely.linestrings(np.stack([ring[:-1], ring[1:]], axis=1))
        tree = shapely.STRtree(segs)
        i, j = tree.query(segs, predicate="crosses")
        exact = int((i < j).sum())
        assert crossings(poly) == pytest.approx(exact, rel=0.25)
        i, j = tree.query(segs)
        boxes = int((i < j).sum())
        assert boxes <= overlap_bound(poly) <= 8 * boxes + len(xy)
