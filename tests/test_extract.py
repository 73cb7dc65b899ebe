"""Extraction: phantom slides end to end, bad input, parallel runs, and the real tiles."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import shapely
import zarr

from wsi_aug import store
from wsi_aug.cli import main
from wsi_aug.errors import WsiAugError
from wsi_aug.extract import ExtractParams, assign_splits, extract, rasterize


def _load(work: Path):
    g = zarr.open_group(work / "patches.zarr", mode="r")
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
    first = extract([phantom_slides], tmp_path, params=params, progress=False)
    assert not first.cached
    again = extract([phantom_slides], tmp_path, params=params, progress=False)
    assert again.cached
    other = extract(
        [phantom_slides], tmp_path, params=ExtractParams(size=48, mpp=4.0, seed=1), progress=False
    )
    assert not other.cached
    assert zarr.open_group(tmp_path / "patches.zarr", mode="r")["images"].shape[1] == 48


def test_changed_annotation_file_rebuilds(phantom_slides, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for p in sorted(phantom_slides.glob("phantom-000.*")):
        shutil.copy(p, src / p.name)
    params = ExtractParams(size=32, mpp=4.0)
    extract([src], tmp_path / "w", params=params, progress=False)
    ann = src / "phantom-000.geojson"
    data = json.loads(ann.read_text())
    data["features"] = data["features"][:1]
    ann.write_text(json.dumps(data))
    res = extract([src], tmp_path / "w", params=params, progress=False)
    assert not res.cached
    assert _load(tmp_path / "w")[2]["positive"].sum() == 1


def test_parallel_workers_match_serial(phantom_slides, tmp_path):
    params = ExtractParams(size=32, mpp=4.0, negatives=2)
    extract([phantom_slides], tmp_path / "a", params=params, progress=False)
    extract([phantom_slides], tmp_path / "b", params=params, workers=2, progress=False)
    a, b = _load(tmp_path / "a"), _load(tmp_path / "b")
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert a[2]["object_id"].tolist() == b[2]["object_id"].tolist()


def test_interrupted_extraction_resumes_after_the_last_finished_slide(
    phantom_slides, tmp_path, monkeypatch
):
    import wsi_aug.extract as ex

    params = ExtractParams(size=32, mpp=4.0, negatives=2)
    extract([phantom_slides], tmp_path / "a", params=params, progress=False)
    real = ex.extract_slide
    calls: list[str] = []

    def crash_on_third(task):
        calls.append(task.slide.name)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the user pressed Ctrl-C during the third slide
        return real(task)

    monkeypatch.setattr(ex, "extract_slide", crash_on_third)
    monkeypatch.setattr(ex, "CHECKPOINT_SECONDS", 0.0)  # record every finished slide
    with pytest.raises(KeyboardInterrupt):
        extract([phantom_slides], tmp_path / "b", params=params, progress=False)
    assert store.read_meta(tmp_path / "b" / "patches.zarr") is None  # nothing looks complete
    monkeypatch.setattr(ex, "extract_slide", lambda t: (calls.append(t.slide.name), real(t))[1])
    lines: list[str] = []
    res = extract(
        [phantom_slides], tmp_path / "b", params=params, progress=False, report=lines.append
    )
    assert not res.cached
    assert "resuming after 2 of" in lines[0]
    n_slides = len(res.summary.slides_done)
    assert calls[3:] == sorted(calls[3:]) and len(calls) == 3 + n_slides - 2  # the rest only
    a, b = _load(tmp_path / "a"), _load(tmp_path / "b")
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert {k: v.tolist() for k, v in a[2].items()} == {k: v.tolist() for k, v in b[2].items()}
    assert not (tmp_path / "b" / "patches.zarr" / "progress").exists()
    assert not list((tmp_path / "b").glob(".patches.zarr.*"))  # no partial folder left


def test_dask_scheduler_runs_the_same_tasks(phantom_slides, tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    params = ExtractParams(size=32, mpp=4.0)
    extract([phantom_slides], tmp_path / "a", params=params, progress=False)
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        extract(
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
    assert not work.exists() or not any(work.glob("*patches.zarr*"))  # no store, no temp folder


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
        extract(
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
    res = extract(
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
    res = extract(
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
    extract(
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
    extract(
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
    extract(
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
