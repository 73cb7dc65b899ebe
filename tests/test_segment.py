"""train-seg and segment: a model store, tiling that is exact, polygons, scores, errors, cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import shapely
import torch
from PIL import Image
from shapely.geometry import shape

from wsi_aug.errors import WsiAugError
from wsi_aug.seg.apply import ModelSpec, save_model, segment_slide
from wsi_aug.seg.polygons import StripVectorizer, mask_polygons
from wsi_aug.seg.unet import UNet, to_input

pytestmark = pytest.mark.usefixtures("one_thread")


def threshold_model(grey: float = 200.0) -> UNet:
    """A depth-1 U-Net that marks pixels darker than `grey` (0-255): pixel-wise, so one pass over
    a whole image and the stitched tiles must agree exactly."""
    model = UNet(depth=1, width=1 / 64, padding="same")  # one filter per convolution
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        conv1, conv2 = model.down[0][0], model.down[0][2]
        conv1.weight[0, :, 1, 1] = -1.0 / 3.0  # -(mean of the normalised channels)
        conv1.bias[0] = grey / 127.5 - 1.0
        conv2.weight[0, 0, 1, 1] = 1.0
        model.head.weight[1, 0, 0, 0] = 100.0
        model.head.bias[1] = -0.5
    return model.eval()


def spec_for(mpp: float, patch: int = 64) -> ModelSpec:
    return ModelSpec(patch_size=patch, mpp=mpp, padding="same", depth=1, width=1 / 64,
                     batch_norm=False)


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The thresholding model as a model file (slides read at 1 µm/px)."""
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    return save_model(threshold_model(), spec_for(1.0), path)


@pytest.fixture(scope="module")
def shapes_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 600 px plain image at 1 µm/px: a ring (hole), a bar through every band, a U whose arms
    meet only at the bottom, and small dots (below the area limit)."""
    img = np.full((600, 600, 3), 245, np.uint8)
    yy, xx = np.mgrid[:600, :600]
    r = np.hypot(yy - 150, xx - 150)
    img[(r > 40) & (r < 90)] = 90  # ring, hole of radius 40 px
    img[20:580, 300:330] = 90  # vertical bar across all bands
    img[100:500, 400:420] = 90  # U: left arm
    img[100:500, 520:540] = 90  # right arm
    img[480:500, 400:540] = 90  # bottom joins them
    for k in range(5):
        img[550:554, 20 + 20 * k : 24 + 20 * k] = 90  # 16 µm² dots
    folder = tmp_path_factory.mktemp("shapes")
    path = folder / "shapes.png"
    Image.fromarray(img).save(path)
    return path


def test_strip_vectorizer_matches_one_pass():
    rng = np.random.default_rng(0)
    mask = rng.random((97, 61)) > 0.55
    whole = mask_polygons(mask)
    vec = StripVectorizer(61)
    got = []
    at = 0
    for h in (1, 5, 13, 2, 30, 46):
        got += vec.add(mask[at : at + h])
        at += h
    got += vec.finish()
    assert len(got) == len(whole)
    assert shapely.union_all(got).symmetric_difference(shapely.union_all(whole)).area == 0
    assert all(g.is_valid for g in got)


def _read_full(slide, spec: ModelSpec) -> np.ndarray:
    w0, h0 = slide.dimensions
    mx, my = slide.mpp
    size = (int(np.ceil(w0 * mx / spec.mpp)), int(np.ceil(h0 * my / spec.mpp)))
    return slide.read_at_mpp((0, 0, size[0] * spec.mpp / mx, size[1] * spec.mpp / my),
                             spec.mpp, size)


@pytest.mark.slow
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
def test_tiling_reproduces_one_full_pass(phantom_slides, overlap):
    """Stitched tiles (resampled 0.5 -> 1 µm/px) give the mask of one pass over the whole slide."""
    from wsi_aug.slides.open import open_slide

    model, spec = threshold_model(), spec_for(1.0)
    with open_slide(phantom_slides / "phantom-000.tif") as slide:
        seg = segment_slide(slide, model, spec, device=torch.device("cpu"), overlap=overlap,
                            tissue="all", batch_size=8)
        full = _read_full(slide, spec)
    with torch.inference_mode():
        mask = model(to_input(full[None])).argmax(1)[0].numpy().astype(bool)
    ref = mask_polygons(mask, scale=(2.0, 2.0))  # 1 µm/px model pixels -> 0.5 µm/px level 0
    assert len(seg.objects) == len(ref) > 0
    diff = shapely.union_all(seg.objects).symmetric_difference(shapely.union_all(ref))
    assert diff.area == 0
    assert seg.max_buffer_rows < mask.shape[0]  # never the whole mask at once


def test_segment_shapes_writes_valid_files(shapes_slide, stand_in, tmp_path):
    from wsi_aug.annotations.read import read_annotations
    from wsi_aug.stages.segment import segment

    work = tmp_path / "w"
    res = segment(work, inputs=(shapes_slide,), model=stand_in, slide_mpp=1.0,
                  min_object_area=100.0, formats=("geojson", "asap"), overlay=True,
                  progress=False, device="cpu")
    assert not res.cached and len(res.rows) == 1
    out = work / "segment"
    data = json.loads((out / "shapes.geojson").read_text())
    geoms = [shape(f["geometry"]) for f in data["features"]]
    assert all(g.is_valid for g in geoms)
    assert {f["properties"]["objectType"] for f in data["features"]} == {"annotation"}
    assert data["features"][0]["properties"]["classification"]["name"] == "Glomerulus"
    assert len(geoms) == 3  # ring, bar, U (one polygon each); the dots are dropped
    ring = [g for g in geoms if g.geom_type == "Polygon" and len(g.interiors) == 1]
    assert len(ring) == 1
    hole = shapely.Polygon(ring[0].interiors[0])
    assert hole.area == pytest.approx(np.pi * 40**2, rel=0.05)
    u = [g for g in geoms if g.bounds[0] >= 399 and g.bounds[2] <= 541]
    assert len(u) == 1 and u[0].area == pytest.approx(2 * 400 * 20 + 100 * 20, rel=0.01)
    back = read_annotations(out / "shapes.geojson")
    assert len(back) == 3
    assert len(read_annotations(out / "shapes.xml")) == 3
    assert (out / "shapes.overlay.png").is_file() and (out / "shapes.mask.png").is_file()
    # cached: nothing runs again
    again = segment(work, inputs=(shapes_slide,), model=stand_in, slide_mpp=1.0,
                    min_object_area=100.0, formats=("geojson", "asap"), overlay=True,
                    progress=False, device="cpu")
    assert again.cached and again.rows[0]["objects"] == 3


def test_bad_slide_is_skipped_and_reported(shapes_slide, stand_in, tmp_path):
    import shutil

    from wsi_aug.stages.segment import segment

    folder = tmp_path / "slides"
    folder.mkdir()
    shutil.copy(shapes_slide, folder / "a.png")
    (folder / "b.png").write_bytes(b"not an image at all")
    res = segment(tmp_path / "w", inputs=(folder,), model=stand_in, slide_mpp=1.0,
                  progress=False, device="cpu")
    assert [r["slide"] for r in res.rows] == ["a.png"]
    assert len(res.skipped) == 1 and "b.png" in res.skipped[0]
    assert "skipped" in res.text


def test_adding_a_slide_segments_only_the_new_one(shapes_slide, stand_in, tmp_path):
    import shutil

    from PIL import Image

    from wsi_aug.stages.segment import segment

    folder = tmp_path / "slides"
    folder.mkdir()
    shutil.copy(shapes_slide, folder / "a.png")
    opts = {"model": stand_in, "slide_mpp": 1.0, "min_object_area": 100.0, "overlay": True,
            "progress": False, "device": "cpu"}
    first = segment(tmp_path / "w", inputs=(folder,), **opts)
    geojson = (tmp_path / "w" / "segment" / "a.geojson").read_text()
    Image.open(shapes_slide).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(folder / "b.png")
    said: list[str] = []
    second = segment(tmp_path / "w", inputs=(folder,), report=said.append, **opts)
    assert not second.cached and [r["slide"] for r in second.rows] == ["a.png", "b.png"]
    assert any("a.png: unchanged" in m for m in said)
    assert not any("b.png: unchanged" in m for m in said)
    a, b = second.rows
    assert a["seconds"] == first.rows[0]["seconds"]  # the row of the first run, not a new one
    assert a["objects"] == b["objects"] == 3
    out = tmp_path / "w" / "segment"
    assert (out / "a.geojson").read_text() == geojson
    for name in ("a.overlay.png", "b.overlay.png", "b.geojson"):
        assert (out / name).is_file()
    # another setting: every slide again
    said.clear()
    segment(tmp_path / "w", inputs=(folder,), report=said.append, **{**opts, "overlap": 0.5})
    assert not any("unchanged" in m for m in said)


def test_corrupt_model_is_one_line_error(shapes_slide, stand_in, tmp_path):
    from wsi_aug.stages.segment import segment

    bad = tmp_path / "model.safetensors"
    bad.write_bytes(stand_in.read_bytes()[:200])
    with pytest.raises(WsiAugError) as exc:
        segment(tmp_path / "w", inputs=(shapes_slide,), model=bad, slide_mpp=1.0,
                progress=False, device="cpu")
    assert "\n" not in str(exc.value) and str(bad) in str(exc.value)
    with pytest.raises(WsiAugError, match="no train-seg store"):
        segment(tmp_path / "w2", inputs=(shapes_slide,), slide_mpp=1.0, progress=False)


@pytest.mark.slow
def test_train_seg_then_segment_phantoms(phantom_work, phantom_slides, tmp_path, capsys):
    """A tiny U-Net trained on phantom patches, applied to the phantom slides, scored against
    their own annotations (F1 is reported; a tiny budget does not promise a high one)."""
    import shutil

    from wsi_aug.annotations.read import read_annotations
    from wsi_aug.errors import CheckpointError
    from wsi_aug.phantom import make_phantom_slide, write_qupath_geojson
    from wsi_aug.stages.segment import segment
    from wsi_aug.stages.train_seg import SegModelStore, train_seg

    work = tmp_path / "w"
    shutil.copytree(phantom_work.patches, work / "extract.zarr")
    opts = {"epochs": 30, "lr": 1e-3, "width": 0.125, "samples_per_epoch": 96, "batch_size": 8,
            "augment": "geometric", "device": "cpu", "progress": False}
    res = train_seg(work, **opts)
    assert (work / "train-seg" / "model.safetensors").is_file()
    ms = SegModelStore.open(work)
    _, spec = ms.load_model()
    assert spec.mpp == 2.0 and spec.patch_size == 64 and spec.trained_on
    assert train_seg(work, **opts).cached
    assert res.path == ms.path
    held_out = tmp_path / "held-out"  # a slide none of the patches came from
    polygons = make_phantom_slide(held_out / "new.tif", seed=123, width=1536, height=1536)
    write_qupath_geojson(held_out / "new.geojson", polygons)
    seg = segment(work, inputs=(held_out, phantom_slides / "phantom-002.tif"),
                  min_object_area=500.0, progress=False, device="cpu")
    assert len(seg.rows) == 2 and all(r["annotated"] for r in seg.rows)
    assert seg.overall is not None and seg.overall["obj_f1"] >= 0.5
    for r in seg.rows:
        path = work / "segment" / f"{Path(r['slide']).stem}.geojson"
        geoms = [shape(f["geometry"]) for f in json.loads(path.read_text())["features"]]
        assert all(g.is_valid for g in geoms)
        assert len(read_annotations(path)) == len(geoms) == r["objects"]
    assert (work / "segment" / "scores.md").is_file()
    with capsys.disabled():
        print(f"\n[segment phantoms] {seg.text}")
    # a damaged weights file is refused in one line
    w = ms.weights
    w.write_bytes(w.read_bytes()[:-10])
    with pytest.raises(CheckpointError) as exc:
        SegModelStore.open(work).load_model()
    assert "\n" not in str(exc.value)
