"""Pairing slides with annotation files: by name beside the slide, in a folder, or by manifest."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsi_aug.annotations import find_slides, pair_annotations, read_manifest
from wsi_aug.errors import AnnotationError, SlideError


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_find_slides_folder_and_files(tmp_path: Path) -> None:
    for name in (
        "b.svs",
        "a.ndpi",
        "a.geojson",
        "a.xml",
        "c.json",
        ".hidden.svs",
        "t.png",
        "t_mask.png",
        "notes.txt",
    ):
        _touch(tmp_path / name)
    _touch(tmp_path / "sub" / "d.svs")
    found = find_slides([tmp_path], {".svs", ".ndpi", ".png", ".json", ".xml"})
    assert [p.name for p in found] == ["a.ndpi", "b.svs", "t.png"]
    assert {"a.ndpi", "b.svs"} <= {p.name for p in find_slides([tmp_path])}  # default suffixes
    rec = find_slides([tmp_path], {".svs"}, recursive=True)
    assert [p.name for p in rec] == ["b.svs", "d.svs"]
    # a file is taken as given; duplicates collapse
    assert find_slides([tmp_path / "b.svs", tmp_path / "b.svs"]) == [tmp_path / "b.svs"]
    with pytest.raises(SlideError, match="no such slide"):
        find_slides([tmp_path / "nope.svs"])


def test_pair_beside_the_slide(tmp_path: Path) -> None:
    a = _touch(tmp_path / "a.svs")
    _touch(tmp_path / "a.geojson")
    _touch(tmp_path / "a.xml")  # lower preference than .geojson
    b = _touch(tmp_path / "b.svs")
    _touch(tmp_path / "b.XML")  # case-insensitive match
    c = _touch(tmp_path / "c.tif")
    _touch(tmp_path / "c_mask.png")
    d = _touch(tmp_path / "d.svs")  # no annotation
    e = _touch(tmp_path / "e.svs")
    _touch(tmp_path / "e.svs.json")
    entries = pair_annotations([a, b, c, d, e])
    got = {x.slide.name: (x.annotation.name if x.annotation else None) for x in entries}
    assert got == {
        "a.svs": "a.geojson",
        "b.svs": "b.XML",
        "c.tif": "c_mask.png",
        "d.svs": None,
        "e.svs": "e.svs.json",
    }


def test_pair_annotations_dir_wins_and_same_stem_masks(tmp_path: Path) -> None:
    slide = _touch(tmp_path / "slides" / "a.svs")
    _touch(tmp_path / "slides" / "a.geojson")
    ann = tmp_path / "ann"
    _touch(ann / "a.xml")
    (entry,) = pair_annotations([slide], ann)
    assert entry.annotation == ann / "a.xml"

    # tiles: images/10003.png pairs with masks/10003.png, never with itself
    img = _touch(tmp_path / "images" / "10003.png")
    lonely = _touch(tmp_path / "images" / "10004.png")
    _touch(tmp_path / "masks" / "10003.png")
    entries = pair_annotations([img, lonely], tmp_path / "masks")
    assert entries[0].annotation == tmp_path / "masks" / "10003.png"
    assert entries[1].annotation is None
    assert pair_annotations([img])[0].annotation is None

    # a mask with the mask mark beside the slide: foo.mask.png
    f = _touch(tmp_path / "x" / "foo.svs")
    _touch(tmp_path / "x" / "foo.mask.png")
    assert pair_annotations([f])[0].annotation == tmp_path / "x" / "foo.mask.png"
    with pytest.raises(AnnotationError, match="no such annotations folder"):
        pair_annotations([f], tmp_path / "missing")


def test_manifest(tmp_path: Path) -> None:
    _touch(tmp_path / "data" / "a.svs")
    _touch(tmp_path / "data" / "a.geojson")
    _touch(tmp_path / "data" / "b.svs")
    csv = tmp_path / "manifest.csv"
    csv.write_text(
        "Slide,Annotation,Patient,Split\n"
        "# a comment\n"
        "data/a.svs,data/a.geojson,P1,train\n"
        "\n"
        "data/b.svs,,P2,Validation\n"
    )
    entries = read_manifest(csv)
    assert [(e.slide, e.annotation, e.patient, e.split) for e in entries] == [
        (tmp_path / "data" / "a.svs", tmp_path / "data" / "a.geojson", "P1", "train"),
        (tmp_path / "data" / "b.svs", None, "P2", "val"),
    ]
    semi = tmp_path / "semi.csv"
    semi.write_text("slide;annotation\ndata/a.svs;data/a.geojson\n")
    (only,) = read_manifest(semi)
    assert only.patient is None and only.split is None


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("slide,patient\ndata/a.svs,P1\n", "manifest.csv: no 'annotation' column"),
        ("slide,annotation\ndata/zz.svs,\n", r"row 2: slide 'data/zz.svs' not found"),
        ("slide,annotation\ndata/a.svs,data/zz.xml\n", "annotation 'data/zz.xml' not found"),
        ("slide,annotation,split\ndata/a.svs,,tarin\n", "split 'tarin' is not train, val or test"),
        ("slide,annotation\ndata/a.svs,\ndata/a.svs,\n", "row 3: slide 'data/a.svs' is listed"),
        ("", "empty manifest"),
        ("slide,annotation,patient,split,mpp\n", "manifest.csv: the manifest lists no slide"),
    ],
)
def test_manifest_errors(tmp_path: Path, text: str, match: str) -> None:
    _touch(tmp_path / "data" / "a.svs")
    csv = tmp_path / "manifest.csv"
    csv.write_text(text)
    with pytest.raises(AnnotationError, match=match) as exc:
        read_manifest(csv)
    assert "\n" not in str(exc.value)


def test_manifest_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match="no such manifest file"):
        read_manifest(tmp_path / "nope.csv")


@pytest.mark.shared_data
def test_real_tile_folders(shared_data: Path) -> None:
    aid = shared_data / "aidpath-pas-tiles"
    entries = pair_annotations(find_slides([aid / "images"], {".png"}), aid / "masks")
    assert len(entries) == 16
    assert all(e.annotation == aid / "masks" / e.slide.name for e in entries)
    hub = shared_data / "hubmap-pas-tiles"
    entries = pair_annotations(find_slides([hub], {".jpg"}))
    assert len(entries) == 110
    assert all(e.annotation == e.slide.with_suffix(".json") for e in entries)
