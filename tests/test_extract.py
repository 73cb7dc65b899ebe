"""Extraction: phantom slides end to end, bad input, parallel runs, and the real tiles."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import shapely
import zarr

from wsi_aug import store
from wsi_aug.cli import main
from wsi_aug.errors import WsiAugError
from wsi_aug.extract import assign_splits, rasterize
from wsi_aug.stages import extract as stage_extract
from wsi_aug.stages.extract import ExtractParams, extract


def _extract(inputs, work, *, params, **kw):
    """The extract stage on these inputs; `kw` holds runtime options and other params fields."""
    runtime = {k: kw.pop(k) for k in ("progress", "report", "force") if k in kw}
    return extract(work, ExtractParams.build(params, inputs=tuple(inputs), **kw), **runtime)



def _store(work: Path) -> Path:
    """The patch store of a work folder, wherever the layout puts it."""
    return store.WorkDir(Path(work)).patches


def _load(work: Path):
    g = zarr.open_group(_store(work), mode="r")
    return g["images"][:], g["masks"][:], store.read_table(g, "table")


def _polygons(geojson: Path) -> list:
    data = json.loads(geojson.read_text())
    return [shapely.geometry.shape(f["geometry"]) for f in data["features"]]


def test_one_patch_per_glomerulus_centred(phantom_slides, phantom_work):
    images, masks, table = _load(phantom_work.root)
    n_polys = sum(len(_polygons(p)) for p in phantom_slides.glob("*.geojson"))
    pos = table["positive"].astype(bool)
    assert pos.sum() == n_polys  # phantom glomeruli are all far above the minimum area
    assert images.shape[1:] == (64, 64, 3) and masks.shape[1:] == (64, 64)
    assert set(np.unique(masks)) <= {0, 1}
    c = 32
    assert all(masks[i, c - 1 : c + 1, c - 1 : c + 1].all() for i in np.nonzero(pos)[0])
    assert not masks[~pos].any()  # negatives hold no glomerulus
    assert (~pos).sum() > 0
    # glomerulus pixels differ from the rest of the patch: the image matches the mask
    i = int(np.nonzero(pos)[0][0])
    inside = images[i][masks[i] == 1].mean(0)
    outside = images[i][masks[i] == 0].mean(0)
    assert np.abs(inside - outside).max() > 5


def test_table_columns_and_splits_by_slide(phantom_work):
    _, _, table = _load(phantom_work.root)
    assert list(table) == [
        "slide",
        "patient",
        "object_id",
        "label",
        "cx",
        "cy",
        "mpp",
        "split",
        "padded",
        "positive",
    ]
    per_slide = {}
    for s, sp in zip(table["slide"], table["split"]):
        per_slide.setdefault(s, set()).add(sp)
    assert all(len(v) == 1 for v in per_slide.values())  # never split within a slide
    assert {next(iter(v)) for v in per_slide.values()} == {"train", "val", "test"}
    assert np.all(table["mpp"] == 2.0)


def test_rerun_is_cached_and_changed_parameter_rebuilds(phantom_slides, tmp_path):
    params = ExtractParams(size=32, mpp=4.0, seed=1)
    first = _extract([phantom_slides], tmp_path, params=params, progress=False)
    assert not first.cached
    again = _extract([phantom_slides], tmp_path, params=params, progress=False)
    assert again.cached
    other = _extract(
        [phantom_slides], tmp_path, params=ExtractParams(size=48, mpp=4.0, seed=1), progress=False
    )
    assert not other.cached
    assert zarr.open_group(_store(tmp_path), mode="r")["images"].shape[1] == 48


def test_changed_annotation_file_rebuilds(phantom_slides, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for p in sorted(phantom_slides.glob("phantom-000.*")):
        shutil.copy(p, src / p.name)
    params = ExtractParams(size=32, mpp=4.0)
    _extract([src], tmp_path / "w", params=params, progress=False)
    ann = src / "phantom-000.geojson"
    data = json.loads(ann.read_text())
    data["features"] = data["features"][:1]
    ann.write_text(json.dumps(data))
    res = _extract([src], tmp_path / "w", params=params, progress=False)
    assert not res.cached
    assert _load(tmp_path / "w")[2]["positive"].sum() == 1


@pytest.mark.slow
def test_parallel_workers_match_serial(phantom_slides, tmp_path):
    params = ExtractParams(size=32, mpp=4.0, negatives=2)
    _extract([phantom_slides], tmp_path / "a", params=params, progress=False)
    _extract([phantom_slides], tmp_path / "b", params=params, workers=2, progress=False)
    a, b = _load(tmp_path / "a"), _load(tmp_path / "b")
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert a[2]["object_id"].tolist() == b[2]["object_id"].tolist()


def test_interrupted_extraction_resumes_after_the_last_finished_slide(
    phantom_slides, tmp_path, monkeypatch
):
    import wsi_aug.extract as ex

    params = ExtractParams(size=32, mpp=4.0, negatives=2)
    _extract([phantom_slides], tmp_path / "a", params=params, progress=False)
    real = ex.extract_slide
    calls: list[str] = []

    def crash_on_third(task):
        calls.append(task.slide.name)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the user pressed Ctrl-C during the third slide
        return real(task)

    monkeypatch.setattr(ex, "extract_slide", crash_on_third)
    monkeypatch.setattr(stage_extract, "CHECKPOINT_SECONDS", 0.0)  # record every finished slide
    with pytest.raises(KeyboardInterrupt):
        _extract([phantom_slides], tmp_path / "b", params=params, progress=False)
    assert store.read_meta(_store(tmp_path / "b")) is None  # nothing looks complete
    monkeypatch.setattr(ex, "extract_slide", lambda t: (calls.append(t.slide.name), real(t))[1])
    lines: list[str] = []
    res = _extract(
        [phantom_slides], tmp_path / "b", params=params, progress=False, report=lines.append
    )
    assert not res.cached
    assert "resuming after 2 of" in lines[0]
    n_slides = len(res.summary.slides_done)
    assert calls[3:] == sorted(calls[3:]) and len(calls) == 3 + n_slides - 2  # the rest only
    a, b = _load(tmp_path / "a"), _load(tmp_path / "b")
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert {k: v.tolist() for k, v in a[2].items()} == {k: v.tolist() for k, v in b[2].items()}
    name = _store(tmp_path / "b").name
    assert not (_store(tmp_path / "b") / "progress").exists()
    assert not list((tmp_path / "b").glob(f".{name}.*"))  # no partial folder left


def test_dask_scheduler_runs_the_same_tasks(phantom_slides, tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    params = ExtractParams(size=32, mpp=4.0)
    _extract([phantom_slides], tmp_path / "a", params=params, progress=False)
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        _extract(
            [phantom_slides],
            tmp_path / "b",
            params=params,
            scheduler=cluster.scheduler_address,
            progress=False,
        )
    assert np.array_equal(_load(tmp_path / "a")[0], _load(tmp_path / "b")[0])


def test_bad_slide_is_skipped_and_others_finish(phantom_slides, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for p in sorted(phantom_slides.glob("phantom-000.*")):
        shutil.copy(p, src / p.name)
    (src / "broken.tif").write_bytes(b"II*\x00" + b"\x00" * 64)  # a truncated TIFF
    shutil.copy(src / "phantom-000.geojson", src / "broken.geojson")
    shutil.copy(src / "phantom-000.tif", src / "lonely.tif")  # no annotation file
    main(["extract", str(src), "--work", str(tmp_path / "w"), "--size", "32", "--mpp", "4"])
    out = capsys.readouterr()
    assert "broken.tif" in out.out + out.err
    assert "lonely.tif: no annotation file" in out.out + out.err
    _, _, table = _load(tmp_path / "w")
    assert set(table["slide"]) == {"phantom-000.tif"}


def test_nothing_usable_exits_nonzero_with_one_line(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    (src / "broken.svs").write_bytes(b"not a slide")
    (src / "broken.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    with pytest.raises(SystemExit) as exc:
        main(["extract", str(src), "--work", str(tmp_path / "w")])
    assert exc.value.code != 0
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error:") and "broken.svs" in last and "Traceback" not in err
    work = tmp_path / "w"
    name = _store(work).name
    assert not work.exists() or not any(work.glob(f"*{name}*"))  # no store, no temp folder


def test_empty_folder_and_missing_path(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for arg in (tmp_path / "empty", tmp_path / "missing"):
        with pytest.raises(SystemExit) as exc:
            main(["extract", str(arg), "--work", str(tmp_path / "w")])
        assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "no slide found" in err and "no such file" in err


def test_unknown_class_lists_classes_found(phantom_slides, tmp_path):
    with pytest.raises(WsiAugError, match="Glomerulus"):
        _extract(
            [phantom_slides / "phantom-000.tif"],
            tmp_path,
            params=ExtractParams(labels=("tubule",), size=32, mpp=4.0),
            progress=False,
        )


def test_self_intersecting_and_outside_polygons_are_reported(phantom_slides, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(phantom_slides / "phantom-000.tif", src / "s.tif")
    data = json.loads((phantom_slides / "phantom-000.geojson").read_text())
    feats = data["features"][:1]
    bow = {
        "type": "Polygon",
        "coordinates": [[[100, 100], [300, 300], [300, 100], [100, 300], [100, 100]]],
    }
    far = {
        "type": "Polygon",
        "coordinates": [[[9e5, 9e5], [9e5 + 300, 9e5], [9e5, 9e5 + 300], [9e5, 9e5]]],
    }
    for i, geom in enumerate((bow, far)):
        f = json.loads(json.dumps(feats[0]))
        f["id"] = f"extra-{i}"
        f["geometry"] = geom
        feats.append(f)
    data["features"] = feats
    (src / "s.geojson").write_text(json.dumps(data))
    res = _extract(
        [src], tmp_path / "w", params=ExtractParams(size=32, mpp=4.0, min_area=0), progress=False
    )
    lines = "\n".join(res.summary.lines())
    assert "repaired" in lines and "outside" in lines
    assert _load(tmp_path / "w")[2]["positive"].sum() == 2  # the original and the repaired one


def test_rasterize_keeps_holes():
    ring = shapely.Polygon(
        [(0, 0), (100, 0), (100, 100), (0, 100)], [[(26, 26), (74, 26), (74, 74), (26, 74)]]
    )
    m = rasterize([ring], (0.0, 0.0, 100.0, 100.0), 50)
    assert m[25, 25] == 0 and m[2, 2] == 1
    assert int(m.sum()) == int(ring.area / 4)


def test_assign_splits_by_group():
    d = assign_splits([f"p{i}" for i in range(10)] * 3, (0.6, 0.2, 0.2), seed=3)
    assert sorted(d.values()).count("train") == 6 and len(d) == 10
    assert d == assign_splits([f"p{i}" for i in range(10)], (0.6, 0.2, 0.2), seed=3)
    with pytest.raises(WsiAugError):
        assign_splits(["a"], (0.5, 0.5), seed=0)


@pytest.mark.shared_data
def test_hubmap_tiles_with_labelme(shared_data, tmp_path):
    tiles = sorted((shared_data / "hubmap-pas-tiles").glob("*.jpg"))[:8]
    res = _extract(
        tiles, tmp_path, params=ExtractParams(slide_mpp=1.0, size=256, mpp=1.0), progress=False
    )
    images, masks, table = _load(tmp_path)
    expected = 0
    for t in tiles:
        polys = _polygons_labelme(t.with_suffix(".json"))
        expected += sum(p.area >= 500 for p in polys)
    assert len(table["slide"]) == expected and not res.cached
    centre_hits = masks[:, 127:129, 127:129].all(axis=(1, 2))
    assert centre_hits.mean() >= 0.95  # concave outlines may put a centroid outside the object
    assert images.mean() > 100  # real tissue, not padding only


def _polygons_labelme(path: Path) -> list:
    data = json.loads(path.read_text())
    return [
        shapely.make_valid(shapely.Polygon(s["points"]))
        for s in data["shapes"]
        if s["shape_type"] == "polygon"
    ]


@pytest.mark.shared_data
def test_aidpath_tiles_as_images_with_mask_annotations(shared_data, tmp_path):
    root = shared_data / "aidpath-pas-tiles"
    tiles = sorted((root / "images").glob("*.png"))[:6]
    _extract(
        tiles,
        tmp_path,
        annotations=root / "masks",
        params=ExtractParams(slide_mpp=0.5, mask_channel=0, size=128, mpp=2.0),
        progress=False,
    )
    _images, masks, table = _load(tmp_path)
    assert len(table["slide"]) >= len(tiles) - 1  # tile 10165's mask is almost empty
    assert masks.reshape(len(masks), -1).any(axis=1).all()
    assert table["padded"].any()  # AIDPATH glomeruli are often cut by the tile border


@pytest.mark.shared_data
def test_plain_image_without_pixel_size_names_the_option(shared_data, tmp_path, capsys):
    root = shared_data / "aidpath-pas-tiles"
    tile = sorted((root / "images").glob("*.png"))[0]
    with pytest.raises(SystemExit):
        main(["extract", str(tile), "--annotations", str(root / "masks"), "--work", str(tmp_path)])
    assert "--slide-mpp" in capsys.readouterr().err


def test_manifest_gives_patients_splits_and_per_slide_mpp(phantom_slides, tmp_path):
    rows = ["slide,annotation,patient,split,mpp"]
    for i, sp in enumerate(["test", "train"]):
        stem = phantom_slides / f"phantom-00{i}"
        mpp = "1.0" if i == 0 else ""
        rows.append(f"{stem}.tif,{stem}.geojson,P{i},{sp},{mpp}")
    manifest = tmp_path / "m.csv"
    manifest.write_text("\n".join(rows) + "\n")
    _extract(
        [],
        tmp_path / "w",
        manifest=manifest,
        params=ExtractParams(size=128, mpp=4.0),
        progress=False,
    )
    _, masks, table = _load(tmp_path / "w")
    split_of = dict(zip(table["slide"], table["split"]))
    assert split_of == {"phantom-000.tif": "test", "phantom-001.tif": "train"}
    assert set(table["patient"]) == {"P0", "P1"}
    # slide 0 read as 1 µm/px instead of 0.5: its glomeruli look twice as large
    area = {s: masks[table["slide"] == s].sum(axis=(1, 2)).mean() for s in split_of}
    ref = tmp_path / "ref"
    _extract(
        [phantom_slides / "phantom-000.tif"],
        ref,
        params=ExtractParams(size=128, mpp=4.0),
        progress=False,
    )
    ref_area = _load(ref)[1].sum(axis=(1, 2)).mean()
    assert area["phantom-000.tif"] > 2.5 * ref_area


def test_rasterize_matches_point_in_polygon_on_an_irregular_outline():
    rng = np.random.default_rng(5)
    angles = np.sort(rng.uniform(0, 2 * np.pi, 40))
    radii = rng.uniform(60, 120, 40)
    poly = shapely.Polygon(np.c_[513.3 + radii * np.cos(angles), 487.9 + radii * np.sin(angles)])
    box = (400.7, 380.2, 256.0, 256.0)
    m = rasterize([poly], box, 128)
    yy, xx = np.mgrid[:128, :128]
    ref = shapely.contains_xy(poly, box[0] + (xx + 0.5) * 2, box[1] + (yy + 0.5) * 2)
    assert (m != ref).mean() < 0.005  # only pixels whose centre lies on the outline may differ


# ---- masks at a lower resolution, grouped messages, windows at the slide's own pixel size -----


@pytest.mark.parametrize("suffix", [".webp", ".gif"])
def test_low_resolution_mask_is_rescaled(tmp_path, suffix):
    """Every mask suffix the annotation readers accept is rescaled to the slide (one list)."""
    from PIL import Image

    from wsi_aug.annotations.suffixes import MASK_SUFFIXES

    assert suffix in MASK_SUFFIXES
    rng = np.random.default_rng(0)
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(rng.integers(100, 200, (160, 200, 3), dtype=np.uint8)).save(src / "s.png")
    half = np.zeros((80, 100), np.uint8)
    half[20:50, 30:60] = 255  # slide pixels 60..120 x 40..100
    mask = Image.fromarray(half)
    if suffix == ".webp":
        mask.convert("RGB").save(src / f"s_mask{suffix}", lossless=True)
    else:
        mask.save(src / f"s_mask{suffix}")
    res = _extract(
        [src / "s.png"],
        tmp_path / "w",
        params=ExtractParams(slide_mpp=1.0, size=128, mpp=1.0, min_area=0),
        progress=False,
    )
    assert any("scaled to the slide's 200x160" in n for n in res.summary.notes)
    _, masks, table = _load(tmp_path / "w")
    assert len(masks) == 1 and (table["cx"][0], table["cy"][0]) == (90.0, 70.0)
    x0, y0 = 90 - 64, 70 - 64  # an integral window: the mask is the square's pixels exactly
    want = np.zeros((128, 128), np.uint8)
    want[40 - y0 : 100 - y0, 60 - x0 : 120 - x0] = 1
    np.testing.assert_array_equal(masks[0], want)


def test_group_messages_by_cause():
    from wsi_aug.annotations.model import UnknownClassError
    from wsi_aug.extract import SlideMessage, group_messages

    msgs = [
        SlideMessage.of_error(
            UnknownClassError(Path(f"{i}.json"), ("glomerulus",), {"Glomeruli": 4, "Tubule": i}),
            Path(f"/data/{i}.jpg"),
            Path(f"/data/{i}.json"),
        )
        for i in range(110)
    ]
    assert str(msgs[3]) == (
        "3.json: no object of class 'glomerulus'; classes found: Glomeruli (4), Tubule (3); "
        "choose with --label"
    )
    assert group_messages(msgs) == [
        "110 slides: no object of class 'glomerulus'; classes found: Tubule (5995 objects), "
        "Glomeruli (440 objects); use --label Tubule (e.g. 0.jpg, 1.jpg)"
    ]
    # plain text (as read back from a progress record) groups on what follows the file name
    plain = [f"/data/{n}.svs: cannot read level 0 (bad tile); copy it again" for n in "abc"]
    lonely = "/data/x.svs: no such file; check the path"
    lines = group_messages([msgs[0], *plain, lonely, msgs[1]])
    assert lines == [
        "2 slides: no object of class 'glomerulus'; classes found: Glomeruli (8 objects), "
        "Tubule (1 object); use --label Glomeruli (e.g. 0.jpg, 1.jpg)",
        "3 slides: cannot read level 0 (bad tile); copy it again (e.g. a.svs, b.svs)",
        lonely,  # a cause of one slide keeps its message as it was
    ]
    assert group_messages([str(msgs[0])]) == [str(msgs[0])]
    assert group_messages([]) == []
    import pickle

    back = pickle.loads(pickle.dumps(msgs[5]))
    assert (str(back), back.slide, back.classes) == (str(msgs[5]), "5.jpg", msgs[5].classes)


def test_unknown_class_on_every_slide_is_one_grouped_line(phantom_slides, tmp_path):
    with pytest.raises(WsiAugError) as exc:
        _extract(
            [phantom_slides],
            tmp_path,
            params=ExtractParams(labels=("tubule",), size=32, mpp=4.0),
            progress=False,
        )
    text = str(exc.value)
    n = sum(len(_polygons(p)) for p in phantom_slides.glob("*.geojson"))
    assert text.startswith("no slide gave a patch: 3 slides: no object of class 'tubule'; ")
    assert f"classes found: Glomerulus ({n} objects); use --label Glomerulus" in text
    assert " | " not in text and "\n" not in text


def test_no_annotation_files_grouped(phantom_slides, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for p in sorted(phantom_slides.glob("*.tif")):
        shutil.copy(p, src / p.name)
    with pytest.raises(WsiAugError) as exc:
        _extract([src], tmp_path / "w", params=ExtractParams(size=32, mpp=4.0), progress=False)
    assert str(exc.value).startswith("nothing to extract: 3 slides: no annotation file (looked")
    assert "(e.g. phantom-000.tif, phantom-001.tif)" in str(exc.value)


def test_negative_windows_touch_no_object(phantom_slides):
    from wsi_aug.annotations.index import ObjectIndex
    from wsi_aug.annotations.read import read_annotations
    from wsi_aug.extract import _negative_boxes, _slide_rng
    from wsi_aug.slides import open_slide

    path = phantom_slides / "phantom-000.tif"
    geoms = [a.geometry for a in read_annotations(path.with_suffix(".geojson")).annotations]
    index = ObjectIndex(geoms)
    union = shapely.union_all(geoms)
    with open_slide(path) as slide:
        boxes = _negative_boxes(slide, index, (64.0, 64.0), 8, _slide_rng(0, path.name), 0.5)
        assert len(boxes) == 8
        for x0, y0, w, h in boxes:
            assert (x0, y0) == (round(x0), round(y0)) and (w, h) == (64.0, 64.0)  # 0.5: level 0
            assert not shapely.box(x0, y0, x0 + w, y0 + h).intersects(union)


@pytest.mark.shared_data
def test_hubmap_windows_at_the_tiles_own_pixel_size_are_exact_crops(shared_data, tmp_path):
    """At the slide's own pixel size the window origin is the nearest pixel: the patch is the
    JPEG's pixels there, and the mask is rasterised over the same window."""
    from PIL import Image

    tiles = [shared_data / "hubmap-pas-tiles" / f"{n}.jpg" for n in (110, 95)]  # 95: at edges
    _extract(
        tiles,
        tmp_path,
        params=ExtractParams(slide_mpp=1.0, size=256, mpp=1.0, labels=("glomeruli",)),
        progress=False,
    )
    images, masks, table = _load(tmp_path)
    assert table["padded"].any() and not table["padded"].all()
    from wsi_aug.stages.extract import PatchStore

    insets = PatchStore.open(tmp_path).padding_insets(np.arange(len(images)))
    i = 0
    for tile in sorted(tiles):
        polys = _polygons_labelme(tile.with_suffix(".json"))
        with Image.open(tile) as img:
            pixels = np.asarray(img.convert("RGB"))
        h, w = pixels.shape[:2]
        padded = np.pad(pixels, ((256, 256), (256, 256), (0, 0)), constant_values=255)
        for p in polys:
            assert table["slide"][i] == tile.name
            c = p.centroid
            x0, y0 = round(c.x - 128), round(c.y - 128)
            assert (table["cx"][i], table["cy"][i]) == (x0 + 128, y0 + 128)
            crop = padded[y0 + 256 : y0 + 512, x0 + 256 : x0 + 512]  # white beyond the tile
            np.testing.assert_array_equal(images[i], crop)
            assert table["padded"][i] == (x0 < 0 or y0 < 0 or x0 + 256 > w or y0 + 256 > h)
            # the reader's white border band is exactly the part of the window beyond the tile
            band = [max(0, -y0), max(0, y0 + 256 - h), max(0, -x0), max(0, x0 + 256 - w)]
            assert insets[i].tolist() == band
            box = (float(x0), float(y0), 256.0, 256.0)
            np.testing.assert_array_equal(masks[i], rasterize(polys, box, 256))
            i += 1
    assert i == len(images)


# ---- overlap: slides opened ahead in threads, chunks written on a thread -----------------------


def _as_jpeg_tiles(phantom_slides: Path, out: Path) -> Path:
    """The phantom slides as plain JPEG images (level 0, 0.5 µm/px) with their GeoJSON."""
    from PIL import Image

    from wsi_aug.slides import open_slide

    out.mkdir()
    for tif in sorted(phantom_slides.glob("*.tif")):
        with open_slide(tif) as s:
            pixels = s.read_region((0, 0), 0, s.dimensions)
        Image.fromarray(pixels).save(out / f"{tif.stem}.jpg", quality=90)
        shutil.copy(tif.with_suffix(".geojson"), out / f"{tif.stem}.geojson")
    return out


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["jpeg", "tiff"])
def test_opening_ahead_and_background_writes_change_nothing(
    phantom_slides, tmp_path, monkeypatch, kind
):
    import wsi_aug.extract as ex

    src = _as_jpeg_tiles(phantom_slides, tmp_path / "in") if kind == "jpeg" else phantom_slides
    params = ExtractParams(size=48, mpp=1.0, negatives=2, slide_mpp=0.5)
    monkeypatch.setattr(ex, "usable_cpus", lambda: 1)  # no thread at all
    _extract([src], tmp_path / "a", params=params, progress=False)
    monkeypatch.setattr(ex, "usable_cpus", lambda: 4)
    monkeypatch.setattr(ex, "OPEN_AHEAD_SLIDES", 1)  # the smallest window
    _extract([src], tmp_path / "b", params=params, progress=False)
    a, b = _load(tmp_path / "a"), _load(tmp_path / "b")
    assert len(a[0]) > 3 and np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert {k: v.tolist() for k, v in a[2].items()} == {k: v.tolist() for k, v in b[2].items()}


class _FakeSlide:
    def __init__(self, name: str, held: int) -> None:
        self.name, self._held, self.closed = name, held, False

    def held_bytes(self) -> int:
        return self._held

    def close(self) -> None:
        self.closed = True


def _fake_tasks(n: int) -> list:
    from wsi_aug.extract import SlideTask

    p = ExtractParams(size=32)
    return [SlideTask(Path(f"s{i}.jpg"), Path(f"s{i}.json"), f"p{i}", "train", p) for i in range(n)]


def _settle(opened: list, n: int, timeout: float = 10.0) -> None:
    import time

    end = time.monotonic() + timeout
    while len(opened) < n and time.monotonic() < end:
        time.sleep(0.01)
    time.sleep(0.05)  # nothing more should come


def _eventually(cond, timeout: float = 10.0) -> bool:
    import time

    end = time.monotonic() + timeout
    while not cond() and time.monotonic() < end:
        time.sleep(0.01)
    return bool(cond())


def test_open_ahead_window_is_bounded_and_unused_slides_are_closed(monkeypatch):
    import wsi_aug.extract as ex

    opened: list[_FakeSlide] = []

    def fake_open(task):
        s = _FakeSlide(task.slide.name, 100)
        opened.append(s)
        return s

    monkeypatch.setattr(ex, "_open_task", fake_open)
    tasks = _fake_tasks(10)
    ahead = ex._OpenAhead(tasks, threads=1, max_ahead=8, max_bytes=250)
    try:
        _settle(opened, 3)
        assert [s.name for s in opened] == ["s0.jpg", "s1.jpg", "s2.jpg"]  # 300 bytes >= 250
        first = ahead.take(tasks[0])
        assert first is not None and first.result() is opened[0]
        _settle(opened, 4)
        assert len(opened) == 4  # one taken, one more opened
        assert ahead.take(tasks[2]) is not None  # s1 is skipped: closed, as the tasks run in order
        assert _eventually(lambda: opened[1].closed) and not opened[2].closed
        assert ahead.take(tasks[9]) is None  # not opened ahead: the caller opens it
    finally:
        ahead.close()
    for lane in ahead._lanes:  # the openings still running end, and close their slides
        lane.shutdown(wait=True)
    taken = {"s0.jpg", "s2.jpg"}
    assert all(s.closed for s in opened if s.name not in taken)
    assert not any(s.closed for s in opened if s.name in taken)


def test_slides_are_closed_on_the_thread_that_opened_them(monkeypatch):
    import threading

    import wsi_aug.extract as ex

    opened: list[_FakeSlide] = []

    class Traced(_FakeSlide):
        def close(self) -> None:
            self.closed_on = threading.current_thread().name
            super().close()

    def fake_open(task):
        s = Traced(task.slide.name, 0)
        s.opened_on = threading.current_thread().name
        opened.append(s)
        return s

    monkeypatch.setattr(ex, "_open_task", fake_open)
    tasks = _fake_tasks(6)
    with ex.opening_ahead(tasks, threads=2):
        for t in tasks:
            with ex._opened(t) as slide:
                assert slide.name == t.slide.name
    assert _eventually(lambda: all(s.closed for s in opened)) and len(opened) == 6
    assert {s.opened_on for s in opened} <= {"wsi-aug-open-0_0", "wsi-aug-open-1_0"}
    assert all(s.closed_on == s.opened_on for s in opened)


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="thread priorities are Linux-only")
def test_second_opening_lane_yields_the_cpu_and_the_first_does_not(monkeypatch):
    """Lanes after the first run at nice 19, so the extracting thread keeps its CPU."""
    import threading

    import wsi_aug.extract as ex

    nice: dict[str, int] = {}

    def fake_open(task):
        me = threading.current_thread()
        nice[me.name] = os.getpriority(os.PRIO_PROCESS, me.native_id)
        return _FakeSlide(task.slide.name, 0)

    monkeypatch.setattr(ex, "_open_task", fake_open)
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    tasks = _fake_tasks(8)
    with ex.opening_ahead(tasks, threads=2):
        for t in tasks:
            with ex._opened(t):
                pass
    assert nice.get("wsi-aug-open-0_0") == base
    assert nice.get("wsi-aug-open-1_0") == 19
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base


def test_pairing_does_not_import_the_parsers_or_shapely():
    """Planning an extraction (pairing files) leaves shapely for later: decoding starts first."""
    import subprocess
    import sys

    code = (
        "import sys, wsi_aug.extract, wsi_aug.annotations.pairing; "
        "print(sorted(m for m in ('shapely', 'wsi_aug.annotations.model', "
        "'wsi_aug.annotations.read') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    from wsi_aug.annotations import AnnotationSet, read_annotations  # the lazy names resolve

    assert AnnotationSet.__name__ == "AnnotationSet" and callable(read_annotations)


def test_open_ahead_errors_come_back_with_their_slide(monkeypatch):
    """A slide that fails to open fails in `extract_slide`, as if opened there."""
    import wsi_aug.extract as ex
    from wsi_aug.errors import SlideError

    def fake_open(task):
        raise SlideError(f"{task.slide}: cannot read the file")

    monkeypatch.setattr(ex, "_open_task", fake_open)
    tasks = _fake_tasks(3)
    with ex.opening_ahead(tasks, threads=2):
        outs = [ex.extract_slide(t) for t in tasks]
    assert [str(o.error) for o in outs] == [f"s{i}.jpg: cannot read the file" for i in range(3)]


def test_stack_writer_on_a_thread_writes_the_same(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    data = np.arange(2 * 37, dtype=np.int32).reshape(37, 2)
    g = zarr.open_group(tmp_path / "s.zarr", mode="w")
    with ThreadPoolExecutor(1) as pool:
        arr = store.create_stack(g, "x", (0, 2), dtype="int32", items_per_chunk=4)
        w = store.StackWriter(arr, executor=pool, max_queued=1)
        for lo, hi in [(0, 3), (3, 9), (9, 10), (10, 30)]:
            w.append(data[lo:hi])
        w.flush()
        assert arr.shape == (30, 2) and np.array_equal(arr[:], data[:30])
        w.append(data[30:])
        w.close()
    assert w.at == 37
    assert np.array_equal(zarr.open_group(tmp_path / "s.zarr", mode="r")["x"][:], data)


def test_stack_writer_on_a_thread_raises_a_failed_write(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    class Full:
        chunks, shape, dtype = (4, 2), (0, 2), np.dtype("int32")

        def resize(self, shape):
            self.shape = shape

        def __setitem__(self, key, value):
            raise OSError("No space left on device")

    with ThreadPoolExecutor(1) as pool:
        w = store.StackWriter(Full(), executor=pool)  # type: ignore[arg-type]
        w.append(np.zeros((8, 2), np.int32))
        with pytest.raises(OSError, match="No space"):
            w.close()


def test_patch_stacks_are_lz4_and_open_with_plain_zarr(phantom_work):
    for name in ("images", "masks"):
        arr = zarr.open_array(phantom_work.patches / name, mode="r")
        (codec,) = arr.compressors
        assert type(codec).__name__ == "BloscCodec" and codec.cname.value == "lz4"
        table = store.read_table(zarr.open_group(phantom_work.patches, mode="r"), "table")
        assert arr.shape[0] == len(table["slide"])


def test_progress_records_one_file_per_checkpoint(tmp_path):
    """A checkpoint's slides share one record file (one fsync); older one-slide files still read;
    an unreadable file ends what counts as done."""
    from wsi_aug.extract import PatchRow, SlideOutput

    tasks = _fake_tasks(5)
    row = PatchRow("s0.jpg", "p0", "1", "Glomeruli", 1.0, 2.0, 1.0, "train", False, True)
    empty = np.zeros((0,), np.uint8)
    outs = [
        SlideOutput(t.slide, empty, empty, [row] if i else [], [f"n{i}"])
        for i, t in enumerate(tasks)
    ]
    stage_extract._write_records(tmp_path, list(enumerate(outs[:2])))  # one checkpoint: 0 and 1
    one = {"slide": str(tasks[2].slide), "rows": [], "notes": [], "error": "bad slide"}
    (tmp_path / "000002.json").write_text(json.dumps(one))  # a record as older versions wrote it
    stage_extract._write_records(tmp_path, [(3, outs[3])])
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["000000.json", "000002.json", "000003.json"]
    done = stage_extract._done_slides(tmp_path, tasks)
    assert [d.slide.name for d in done] == ["s0.jpg", "s1.jpg", "s2.jpg", "s3.jpg"]
    assert done[1].rows == [row] and done[1].notes == ["n1"] and done[2].error == "bad slide"
    (tmp_path / "000002.json").write_text('{"slide": ')  # torn: what follows is not trusted
    assert len(stage_extract._done_slides(tmp_path, tasks)) == 2
    other = _fake_tasks(5)[::-1]  # another plan: nothing matches
    assert stage_extract._done_slides(tmp_path, other) == []


def test_chunks_hold_about_the_same_bytes_whatever_the_patch_size(tmp_path):
    """64 patches a chunk at 256 px; fewer at larger sizes, so a chunk stays about 12 MiB."""
    from wsi_aug.stages.extract import PatchTable, items_per_chunk, write_patch_store

    assert [items_per_chunk(s) for s in (64, 256, 512, 1024, 4096)] == [64, 64, 16, 4, 1]
    n, size = 20, 512
    rows = {
        c: np.array(["s"] * n) if c in ("slide", "patient", "object_id", "label", "split")
        else np.zeros(n, bool) if c in ("padded", "positive") else np.zeros(n)
        for c in PatchTable.columns()
    }
    path = write_patch_store(
        tmp_path,
        np.zeros((n, size, size, 3), np.uint8),
        np.zeros((n, size, size), np.uint8),
        PatchTable(**rows),
        params={"size": size},
    )
    g = zarr.open_group(path, mode="r")
    assert g["images"].chunks == (16, size, size, 3) and g["masks"].chunks == (16, size, size)
