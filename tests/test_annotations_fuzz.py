"""Fuzzing the annotation readers: mutated valid files of every format never crash them.

Valid QuPath GeoJSON, ASAP XML, ImageScope XML and LabelMe JSON files (and a PNG mask, at the byte
level only) are mutated at the byte level
(bit flips, truncations, deletions, insertions of random bytes and of tokens such as ``NaN``,
``1e999``, 5000-digit integers, ``[]``, ``{}``, ``null``) and at the level of their structure
(a value of the parsed JSON, or an attribute of the XML, replaced by one of another type, deleted
or duplicated). For every mutant, `read_annotations`, `AnnotationSet.select` and `summarise`
either succeed or raise `WsiAugError` with a one-line message naming the file, never anything
else, and never take longer than `BOUND_S`.

The default run is short and reproducible (`derandomize`, no example database); the ``slow``
variant runs ten times as many examples per format.
"""

from __future__ import annotations

import copy
import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely.geometry import MultiPolygon, Polygon

from wsi_aug.annotations.read import read_annotations, summarise
from wsi_aug.errors import WsiAugError

BOUND_S = 2.0
"""The most one mutated file may take to read, select and summarise."""

FAST = settings(
    max_examples=60,
    deadline=None,  # the time bound is asserted on the reading alone, not on hypothesis' work
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=False,
)
SLOW = settings(FAST, max_examples=600)

# --------------------------------------------------------------------------- the valid files

SQUARE = [[0, 0], [100, 0], [100, 100], [0, 100], [0, 0]]


def _shift(ring: list[list[int]], dx: int, dy: int = 0) -> list[list[int]]:
    return [[x + dx, y + dy] for x, y in ring]


QUPATH: dict[str, Any] = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "id": "5c6a3c2e-1f7e-4a49-9a43-1b0b7f6f0a01",
            "geometry": {
                "type": "Polygon",
                "coordinates": [SQUARE, [[40, 40], [60, 40], [60, 60], [40, 60], [40, 40]]],
            },
            "properties": {
                "objectType": "annotation",
                "classification": {"name": "Glomerulus", "color": [255, 0, 128]},
                "isLocked": False,
            },
        },
        {
            "type": "Feature",
            "id": "PathAnnotationObject",
            "geometry": {
                "type": "MultiPolygon",
                "coordinates": [[_shift(SQUARE, 200)], [_shift(SQUARE, 400)]],
            },
            "properties": {"classification": {"name": "Glomerulus", "colorRGB": -3670016}},
        },
        {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [90, 90], [90, 0], [0, 90]]]},
            "properties": {"object_type": "annotation", "classification": "Tubule"},
        },
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [5, 5]},
            "properties": {"objectType": "annotation"},
        },
        {
            "type": "Feature",
            "geometry": {
                "type": "GeometryCollection",
                "geometries": [
                    {"type": "LineString", "coordinates": [[0, 0], [9, 9]]},
                    {"type": "Polygon", "coordinates": [_shift(SQUARE, 0, 300)]},
                ],
            },
            "properties": {"objectType": "detection", "name": "cell"},
        },
    ],
}

LABELME: dict[str, Any] = {
    "version": "5.2.1",
    "flags": {},
    "shapes": [
        {"label": "Glomerulus", "points": SQUARE[:4], "shape_type": "polygon", "group_id": None},
        {"label": "Glomerulus", "points": [[300, 100], [200, 0]], "shape_type": "rectangle"},
        {"label": "Glomerulus", "points": [[500, 50], [530, 90]], "shape_type": "circle"},
        {"label": "vessel", "points": [[0, 0], [100, 100], [100, 0], [0, 100]]},
        {"label": "Glomerulus", "points": [[5, 5]], "shape_type": "point"},
    ],
    "imagePath": "x.jpg",
    "imageData": None,
    "imageHeight": 1200,
    "imageWidth": 1600,
}

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
        <Coordinate Order="0" X="200" Y="0" /><Coordinate Order="1" X="300" Y="0" />
        <Coordinate Order="2" X="300" Y="100" /><Coordinate Order="3" X="200" Y="100" />
      </Coordinates>
    </Annotation>
    <Annotation Name="Annotation 2" Type="Rectangle" PartOfGroup="None" Color="#F4FA58">
      <Coordinates>
        <Coordinate Order="0" X="400" Y="0" /><Coordinate Order="1" X="450" Y="20" />
      </Coordinates>
    </Annotation>
    <Annotation Name="Annotation 3" Type="Dot" PartOfGroup="glomerulus" Color="#F4FA58">
      <Coordinates><Coordinate Order="0" X="5" Y="5" /></Coordinates>
    </Annotation>
  </Annotations>
  <AnnotationGroups>
    <Group Name="glomerulus" PartOfGroup="None" Color="#00ff00"><Attributes /></Group>
  </AnnotationGroups>
</ASAP_Annotations>
"""

IMAGESCOPE = """<?xml version="1.0" encoding="utf-8"?>
<Annotations MicronsPerPixel="0.252000">
  <Annotation Id="1" Name="Glomerulus" ReadOnly="0" Type="4" LineColor="255" Visible="1">
    <Attributes><Attribute Name="Description" Id="0" Value=""/></Attributes>
    <Regions>
      <Region Id="1" Type="0" NegativeROA="0">
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
        <Vertices><Vertex X="200" Y="0"/><Vertex X="300" Y="50"/></Vertices>
      </Region>
      <Region Id="4" Type="2" NegativeROA="0">
        <Vertices><Vertex X="400" Y="0"/><Vertex X="500" Y="100"/></Vertices>
      </Region>
      <Region Id="5" Type="4">
        <Vertices><Vertex X="0" Y="0"/><Vertex X="5" Y="5"/></Vertices>
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
</Annotations>
"""


def _mask_png() -> bytes:
    """A 48 x 48 binary mask of two squares, one with a hole, as PNG."""
    import io

    import numpy as np
    from PIL import Image

    m = np.zeros((48, 48), np.uint8)
    m[4:20, 4:20] = 255
    m[26:44, 26:44] = 255
    m[32:38, 32:38] = 0
    out = io.BytesIO()
    Image.fromarray(m).save(out, format="PNG")
    return out.getvalue()


HALO = """<?xml version="1.0" encoding="utf-8"?>
<Annotations>
  <Annotation LineColor="65280" Name="Glomerulus" Visible="True">
    <Regions>
      <Region Type="Polygon" HasEndcaps="0" NegativeROA="0">
        <Vertices>
          <V X="0" Y="0"/><V X="100" Y="0"/><V X="100" Y="100"/><V X="0" Y="100"/>
        </Vertices>
      </Region>
      <Region Type="Ellipse" HasEndcaps="0" NegativeROA="0">
        <Vertices><V X="200" Y="0"/><V X="300" Y="60"/></Vertices>
      </Region>
    </Regions>
  </Annotation>
</Annotations>
"""
DSA_ELEMENTS = [
    {"type": "polyline", "closed": True, "points": [[0, 0, 0], [100, 0, 0], [100, 100, 0]],
     "label": {"value": "Glomerulus"}},
    {"type": "rectangle", "center": [250, 25, 0], "width": 100, "height": 50, "rotation": 0,
     "group": "Glomerulus"},
    {"type": "ellipse", "center": [450, 50, 0], "width": 100, "height": 60, "rotation": 0.3,
     "group": "Glomerulus"},
]

SEEDS: dict[str, tuple[str, bytes]] = {
    "qupath": (".geojson", json.dumps(QUPATH, indent=1).encode()),
    "labelme": (".json", json.dumps(LABELME, indent=1).encode()),
    "asap": (".xml", ASAP.encode()),
    "imagescope": (".xml", IMAGESCOPE.encode()),
    "mask": (".png", _mask_png()),  # byte-level mutations only
    "halo": (".annotations", HALO.encode()),
    "dsa": (".json", json.dumps({"name": "Glom", "elements": DSA_ELEMENTS}, indent=1).encode()),
}
FORMATS = sorted(SEEDS)

# --------------------------------------------------------------------------- mutations

HUGE = "9" * 5000  # more digits than Python converts by default (4300)
TOKENS = [
    b"NaN", b"-NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b"1e-999", HUGE.encode(),
    b"-" + HUGE.encode(), b"[]", b"{}", b"[[]]", b"null", b"true", b"false", b'""', b'"x"', b"0",
    b"-0", b"1.5", b"1,5", b",", b":", b"[", b"]", b"{", b"}", b'"', b"\\", b"\\u0000",
    b"\\ud800", b"\n", b"\xff", b"\x00", b"\xef\xbb\xbf", b"<", b">", b"/>", b"</a>", b"&amp;",
    b"&#0;", b"&bogus;", b"<!--", b"-->", b"]]>", b'="NaN"', b'="1e999"', b'="abc"',
    b' X="1e999"', b"\xe2\x80\xa8", "Glomérulus".encode(),
]  # fmt: skip


@st.composite
def byte_mutations(draw: st.DrawFn, data: bytes) -> bytes:
    """`data` with one to four random byte-level mutations."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "token", "delete", "repeat"]))
        at = draw(st.integers(0, len(out)))
        if op == "flip" and out:
            i = min(at, len(out) - 1)
            out[i] ^= draw(st.integers(1, 255))
        elif op == "truncate":
            del out[at:]
        elif op == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "token":
            out[at:at] = draw(st.sampled_from(TOKENS))
        elif op == "delete":
            del out[at : at + draw(st.integers(1, 40))]
        elif op == "repeat":  # a run copied in place: duplicated elements or keys
            piece = out[at : at + draw(st.integers(1, 80))]
            out[at:at] = piece * draw(st.integers(1, 3))
    return bytes(out)


_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([0, -1, 2**63, 10**300, -(10**300), 1e308, -1e308, 1e-320])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.just("__HUGE__")  # written out as a 5000-digit integer
)
VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def _slots(doc: Any) -> list[tuple[Any, Any]]:
    """Every (container, key or index) of a parsed JSON document, depth first."""
    out: list[tuple[Any, Any]] = []
    stack = [doc]
    while stack:
        node = stack.pop()
        keys = list(node) if isinstance(node, dict) else range(len(node))
        for k in keys:
            out.append((node, k))
            if isinstance(node[k], (dict, list)):
                stack.append(node[k])
    return out


@st.composite
def json_mutations(draw: st.DrawFn, data: bytes) -> bytes:
    """A JSON document with one to three of its values replaced, deleted, duplicated or wrapped."""
    doc = copy.deepcopy(json.loads(data))
    for _ in range(draw(st.integers(1, 3))):
        slots = _slots(doc)
        if not slots:
            break
        node, key = slots[draw(st.integers(0, len(slots) - 1))]
        op = draw(st.sampled_from(["replace", "replace", "delete", "duplicate", "wrap", "number"]))
        if op == "replace":
            node[key] = draw(VALUES)
        elif op == "number":
            node[key] = draw(st.sampled_from([math_nan(), 1e999, -1e999, "__HUGE__", 1e12, -5]))
        elif op == "delete":
            del node[key]
        elif op == "duplicate" and isinstance(node, list):
            node.insert(key, copy.deepcopy(node[key]))
        elif op == "wrap":
            node[key] = [node[key]]
    text = json.dumps(doc, allow_nan=True)
    return text.replace('"__HUGE__"', HUGE).encode()


def math_nan() -> float:
    return float("nan")


XML_VALUES = st.sampled_from(
    ["NaN", "nan", "inf", "-inf", "1e999", HUGE, "", " ", "abc", "1,5", "1.5.5", "0x10", "-0",
     "1e9", "1e10", "4", "2", "1", "0", "None", "Polygon", "Dot", "Rectangle", "\u2028"]
) | st.text(max_size=6)  # fmt: skip


@st.composite
def xml_mutations(draw: st.DrawFn, data: bytes) -> bytes:
    """An XML document with one to three attributes changed or dropped, or elements duplicated,
    removed or emptied."""
    root = ET.fromstring(data)
    for _ in range(draw(st.integers(1, 3))):
        elements = list(root.iter())
        el = elements[draw(st.integers(0, len(elements) - 1))]
        op = draw(st.sampled_from(["attr", "attr", "drop", "duplicate", "remove", "clear"]))
        if op in ("attr", "drop") and el.attrib:
            name = draw(st.sampled_from(sorted(el.attrib)))
            if op == "attr":
                el.set(name, draw(XML_VALUES))
            else:
                del el.attrib[name]
        elif op in ("duplicate", "remove") and len(el):
            child = el[draw(st.integers(0, len(el) - 1))]
            if op == "duplicate":
                el.insert(0, copy.deepcopy(child))
            else:
                el.remove(child)
        elif op == "clear":
            el.clear()
    return ET.tostring(root)


def mutants(fmt: str) -> st.SearchStrategy[bytes]:
    """Byte-level mutants of the format's valid file, and structure-level ones."""
    data = SEEDS[fmt][1]
    if fmt == "mask":
        return byte_mutations(data)
    xml = fmt in ("asap", "imagescope", "halo")
    structural = xml_mutations(data) if xml else json_mutations(data)
    return st.one_of(byte_mutations(data), structural)


# --------------------------------------------------------------------------- the property


def read_everything(path: Path) -> None:
    """Read, select and summarise `path`; a user error must be one line naming the file."""
    try:
        aset = read_annotations(path)
        text = summarise(aset)
        assert isinstance(text, str) and text.startswith(path.name)
        for a in aset.annotations:
            assert isinstance(a.geometry, (Polygon, MultiPolygon)), a
            assert a.geometry.is_valid and not a.geometry.is_empty, a
            assert isinstance(a.label, str) and "\n" not in a.label
        aset.select(["glomerulus", "mask"])
    except WsiAugError as exc:
        msg = str(exc)
        assert msg.startswith(f"{path}: "), msg
        assert "\n" not in msg and "\r" not in msg, msg


def _check(fmt: str, folder: Path, data: bytes) -> None:
    path = folder / f"mutant-{fmt}{SEEDS[fmt][0]}"
    path.write_bytes(data)
    start = time.perf_counter()
    read_everything(path)
    elapsed = time.perf_counter() - start
    assert elapsed < BOUND_S, f"{elapsed:.2f} s to read a {len(data):,}-byte mutant"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _property(fmt: str, folder: Path, profile: settings) -> Callable[[], None]:
    @profile
    @given(mutants(fmt))
    def run(data: bytes) -> None:
        _check(fmt, folder, data)

    return run


@pytest.mark.parametrize("fmt", FORMATS)
def test_valid_seed_reads(fmt: str, folder: Path) -> None:
    """The unmutated files are valid and give objects (so that mutants start from something)."""
    path = folder / f"seed-{fmt}{SEEDS[fmt][0]}"
    path.write_bytes(SEEDS[fmt][1])
    aset = read_annotations(path)
    assert len(aset.select(["glomerulus", "mask"])) >= 2
    assert aset.report.rejected == 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_mutated_files_fail_only_with_user_errors(fmt: str, folder: Path) -> None:
    _property(fmt, folder, FAST)()


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_mutated_files_fail_only_with_user_errors_many(fmt: str, folder: Path) -> None:
    _property(fmt, folder, SLOW)()
