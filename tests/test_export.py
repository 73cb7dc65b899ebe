"""`wsi-aug export`: nnU-Net v2, PNG and COCO datasets from the stores; folds, caching, errors."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wsi_aug.errors import StageMissingError, WsiAugError
from wsi_aug.export import (
    REAL,
    SYNTHETIC,
    Case,
    mask_instances,
    patient_folds,
    real_case_id,
    safe_part,
    unique_ids,
)
from wsi_aug.stages.export import DONE, export
from wsi_aug.stages.extract import PatchStore
from wsi_aug.stages.synthesize import SyntheticStore, synthesize
from wsi_aug.stages.train_gan import train_gan
from wsi_aug.store import WorkDir

FAST = dict(progress=False)


@pytest.fixture(scope="module")
def syn_work(tiny_work: WorkDir, tmp_path_factory: pytest.TempPathFactory) -> WorkDir:
    """The tiny work folder (5 patients) with a one-epoch GAN and 6 synthetic patches."""
    wd = WorkDir(tmp_path_factory.mktemp("export-work") / "w")
    shutil.copytree(tiny_work.root, wd.root)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_gan(wd.root, epochs=1, ngf=4, ndf=4, device="cpu", progress=False)
        synthesize(wd.root, n=6, seed=0, device="cpu", batch_size=6, progress=False)
    finally:
        torch.set_num_threads(before)
    return wd


def _cases(out: Path) -> list[dict[str, str]]:
    with (out / "cases.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_nnunet_layout_labels_and_patient_folds(syn_work: WorkDir, tmp_path: Path) -> None:
    out = tmp_path / "Dataset501_Glomeruli"
    result = export(syn_work.root, out=out, format="nnunet", what="both", **FAST)
    assert result.path == out and not result.cached
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "R", "1": "G", "2": "B"}
    assert meta["labels"] == {"background": 0, "glomerulus": 1}
    assert meta["file_ending"] == ".png" and meta["name"] == "Dataset501_Glomeruli"
    rows = _cases(out)
    patches = PatchStore.open(syn_work.root)
    t = patches.table
    synth = SyntheticStore.open(syn_work.root)
    train = [r for r in rows if r["split"] != "test"]
    assert meta["numTraining"] == len(train) == len(list((out / "imagesTr").iterdir()))
    assert len(rows) == len(patches) + len(synth)
    ids = [r["case"] for r in rows]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[A-Za-z0-9-]+_[A-Za-z0-9-]+", i) for i in ids)
    for r in rows:
        part = "Ts" if r["split"] == "test" else "Tr"
        image = _png(out / f"images{part}" / f"{r['case']}_0000.png")
        label = _png(out / f"labels{part}" / f"{r['case']}.png")
        assert image.shape == (64, 64, 3) and label.shape == (64, 64)
        assert set(np.unique(label)) <= {0, 1}
        k = int(r["row"])
        if r["source"] == REAL:  # traceable: the id names slide and object, the row matches
            assert r["case"] == f"{t.slide[k]}_{t.object_id[k]}" and r["slide"] == t.slide[k]
            img, mask = patches.read([k])
        else:
            assert r["case"] == f"syn_{k:06d}" and r["split"] == "train"
            img, mask = synth.images[k : k + 1], synth.masks[k : k + 1]
        assert np.array_equal(image, img[0]) and np.array_equal(label, mask[0])
    assert {0, 1} == set(np.unique(np.stack([_png(p) for p in (out / "labelsTr").iterdir()])))

    splits = json.loads((out / "splits_final.json").read_text())
    patient = {r["case"]: r["patient"] for r in rows}
    real_train = {r["case"] for r in train if r["source"] == REAL}
    assert len(splits) == 4  # min(5 folds, 4 train+val patients)
    val_patients = [{patient[c] for c in s["val"]} for s in splits]
    for i, a in enumerate(val_patients):  # no patient in two folds' val
        assert all(not (a & b) for b in val_patients[i + 1 :])
    assert set().union(*[set(s["val"]) for s in splits]) == real_train  # each case in one val
    for s, vp in zip(splits, val_patients):
        assert not set(s["train"]) & set(s["val"])
        assert not {patient[c] for c in s["train"]} & vp  # patient-level: never both sides
        syn = [r["case"] for r in rows if r["source"] == SYNTHETIC]
        assert not set(syn) & set(s["val"])  # synthetic: training only
        assert {c for c in syn if patient[c] not in vp} <= set(s["train"])
    for r in rows:  # cases.csv says which fold validates each real training case
        if r["case"] in real_train:
            assert r["case"] in splits[int(r["fold"])]["val"]


def test_nnunet_from_phantom_slides_has_traceable_ids(phantom_work: WorkDir, tmp_path) -> None:
    out = tmp_path / "Dataset502_Phantom"
    export(phantom_work.root, out=out, **FAST)
    rows = _cases(out)
    t = PatchStore.open(phantom_work.root).table
    assert len(rows) == len(t)
    for r in rows:
        k = int(r["row"])
        stem = Path(str(t.slide[k])).stem
        if t.object_id[k]:
            assert r["case"] == f"{stem}_{t.object_id[k]}"
        else:
            assert r["case"].startswith(f"{stem}_neg-x")
        assert r["split"] == t.split[k] and r["patient"] == t.patient[k]
    test = {r["case"] for r in rows if r["split"] == "test"}
    assert test and {p.name.removesuffix(".png") for p in (out / "labelsTs").iterdir()} == test
    splits = json.loads((out / "splits_final.json").read_text())
    assert len(splits) == 2  # two train+val slides (patients), one fold each
    one = export(phantom_work.root, out=tmp_path / "Dataset503_One", folds=1, **FAST).path
    (fold,) = json.loads((one / "splits_final.json").read_text())
    val = {r["case"] for r in rows if r["split"] == "val"}
    assert set(fold["val"]) == val


def test_nnunet_integrity_check_passes(syn_work: WorkDir, tmp_path: Path) -> None:
    verify = pytest.importorskip(
        "nnunetv2.experiment_planning.verify_dataset_integrity",
        reason="nnunetv2 not installed (pip install nnunetv2)",
    )
    out = tmp_path / "Dataset504_Check"
    export(syn_work.root, out=out, what="both", **FAST)
    verify.verify_dataset_integrity(str(out), num_processes=1)  # raises on any problem


@pytest.mark.parametrize("mask_values", ["0/255", "0/1"])
def test_png_pairs_round_trip(syn_work: WorkDir, tmp_path: Path, mask_values: str) -> None:
    out = export(
        syn_work.root, out=tmp_path / "png", format="png", what="both", mask_values=mask_values,
        **FAST,
    ).path  # fmt: skip
    top = 255 if mask_values == "0/255" else 1
    patches = PatchStore.open(syn_work.root)
    synth = SyntheticStore.open(syn_work.root)
    rows = _cases(out)
    assert len(list((out / "images").iterdir())) == len(rows) == len(patches) + len(synth)
    for r in rows:
        k = int(r["row"])
        if r["source"] == REAL:
            img, mask = patches.read([k])
        else:
            img, mask = synth.images[k : k + 1], synth.masks[k : k + 1]
        png = _png(out / "masks" / f"{r['case']}.png")
        assert set(np.unique(png)) <= {0, top}
        assert np.array_equal(png, mask[0] * top)
        assert np.array_equal(_png(out / "images" / f"{r['case']}.png"), img[0])


def _rasterise(ann: list[dict], shape: tuple[int, int]) -> np.ndarray:
    from skimage.draw import polygon2mask

    out = np.zeros(shape, bool)
    for a in ann:
        for poly in a["segmentation"]:
            xy = np.asarray(poly, float).reshape(-1, 2)
            out |= polygon2mask(shape, np.stack([xy[:, 1] - 0.5, xy[:, 0] - 0.5], 1))
    return out


def test_coco_polygons_match_the_masks(syn_work: WorkDir, tmp_path: Path) -> None:
    out = export(syn_work.root, out=tmp_path / "coco", format="coco", what="both", **FAST).path
    patches = PatchStore.open(syn_work.root)
    synth = SyntheticStore.open(syn_work.root)
    by_case = {r["case"]: r for r in _cases(out)}
    files = sorted(out.glob("instances_*.json"))
    assert [f.name for f in files] == [f"instances_{s}.json" for s in ("test", "train", "val")]
    seen = 0
    for f in files:
        doc = json.loads(f.read_text())
        assert {"images", "annotations", "categories", "info", "licenses"} <= set(doc)
        assert doc["categories"] == [{"id": 1, "name": "glomerulus", "supercategory": "kidney"}]
        ids = [im["id"] for im in doc["images"]]
        assert len(set(ids)) == len(ids)
        assert len({a["id"] for a in doc["annotations"]}) == len(doc["annotations"])
        for im in doc["images"]:
            assert {"id", "file_name", "width", "height"} <= set(im)
            assert (out / im["file_name"]).is_file()  # beside the JSON
            r = by_case[Path(im["file_name"]).stem]
            assert f.name == f"instances_{r['split']}.json"
            k = int(r["row"])
            mask = (patches.read([k])[1] if r["source"] == REAL else synth.masks[k : k + 1])[0]
            ann = [a for a in doc["annotations"] if a["image_id"] == im["id"]]
            for a in ann:
                assert {"id", "image_id", "category_id", "segmentation", "area", "bbox",
                        "iscrowd"} <= set(a)  # fmt: skip
                assert a["iscrowd"] == 0 and a["category_id"] == 1 and a["area"] > 0
                assert all(len(p) >= 6 and len(p) % 2 == 0 for p in a["segmentation"])
            outside = mask > 0
            for a in ann:  # the boxes cover every glomerulus pixel
                x, y, w, h = a["bbox"]
                outside[y : y + h, x : x + w] = False
            assert not outside.any()
            drawn = _rasterise(ann, mask.shape)
            if mask.any():
                iou = (drawn & (mask > 0)).sum() / (drawn | (mask > 0)).sum()
                assert iou > 0.95, (r["case"], iou)
                assert sum(a["area"] for a in ann) == int(mask.sum())
            else:
                assert not ann
            seen += 1
    assert seen == len(by_case) == len(patches) + len(synth)


def test_mask_instances_components_holes_and_tiny_ones() -> None:
    mask = np.zeros((40, 40), np.uint8)
    yy, xx = np.mgrid[:40, :40]
    mask[(yy - 12) ** 2 + (xx - 12) ** 2 <= 81] = 1  # a disc ...
    mask[(yy - 12) ** 2 + (xx - 12) ** 2 <= 4] = 0  # ... with a hole
    mask[30, 30] = mask[31, 31] = 1  # two diagonal pixels: one 8-connected component
    mask[5, 35] = 1  # one pixel
    inst = sorted(mask_instances(mask), key=lambda a: a["bbox"])
    assert [a["bbox"] for a in inst] == [[3, 3, 19, 19], [30, 30, 2, 2], [35, 5, 1, 1]]
    assert [a["area"] for a in inst] == [int(mask[:25, :25].sum()), 2, 1]
    for a in inst[1:]:
        x, y, w, h = a["bbox"]
        drawn = _rasterise([a], mask.shape)
        assert np.array_equal(drawn, np.pad(mask[y : y + h, x : x + w] > 0, (
            (y, 40 - y - h), (x, 40 - x - w))))  # fmt: skip
    filled = _rasterise([inst[0]], mask.shape)
    assert filled[12, 12] and filled.sum() >= 0.95 * ((yy - 12) ** 2 + (xx - 12) ** 2 <= 81).sum()
    assert mask_instances(np.zeros((8, 8), np.uint8)) == []


def _case(name: str, patient: str, split: str = "train", source: str = REAL) -> Case:
    return Case(name, source, split, patient, f"{patient}.svs", name, 0)


def test_patient_folds_group_patients_and_never_exceed_them() -> None:
    cases = [_case(f"c{i}", f"p{i % 3}") for i in range(9)] + [_case("v", "p3", "val")]
    groups = patient_folds(cases, 5)
    assert len(groups) == 4 and sorted(p for g in groups for p in g) == ["p0", "p1", "p2", "p3"]
    assert len(patient_folds(cases, 2)) == 2
    assert patient_folds(cases, 1) == [["p3"]]  # extract's own val split
    assert patient_folds([_case("a", "p0"), _case("b", "p0")], 5) == []  # one patient: none
    assert patient_folds([_case("s", "p0", source=SYNTHETIC)], 5) == []


def test_case_ids_are_safe_and_unique() -> None:
    assert safe_part("Slide 01 (copy)/ä.ndpi") == "Slide-01-copy-ndpi"
    assert real_case_id("my slide_1.svs", "a/b", 0, 0) == "my-slide-1_a-b"
    assert real_case_id("s.tif", "", 10.4, 20.6) == "s_neg-x10-y21"
    assert real_case_id("...", "", 0, 0).startswith("x_")
    assert unique_ids(["a", "A", "a", "b"]) == ["a", "A-2", "a-3", "b"]


def test_rerun_is_cached_a_change_rewrites_and_a_crash_leaves_nothing(
    syn_work: WorkDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "Dataset505_Cache"
    first = export(syn_work.root, out=out, **FAST)
    stamp = (out / DONE).stat().st_mtime_ns
    again = export(syn_work.root, out=out, **FAST)
    assert again.cached and (out / DONE).stat().st_mtime_ns == stamp
    assert not export(syn_work.root, out=out, force=True, **FAST).cached
    changed = export(syn_work.root, out=out, negatives=False, **FAST)
    assert not changed.cached and first.outputs == changed.outputs
    assert all(r["object"] for r in _cases(out))  # the negatives are gone
    assert export(syn_work.root, out=out, negatives=False, mask_values="0/1", **FAST).cached

    import wsi_aug.export as domain

    def boom(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(domain, "write_cases", boom)
    with pytest.raises(KeyboardInterrupt):
        export(syn_work.root, out=out, folds=2, **FAST)
    assert json.loads((out / DONE).read_text())["params"]["negatives"] is False  # old intact
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary left
    with pytest.raises(KeyboardInterrupt):
        export(syn_work.root, out=tmp_path / "new", **FAST)
    assert not (tmp_path / "new").exists()


def test_refuses_a_foreign_folder_and_missing_stores(syn_work: WorkDir, tmp_path: Path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me")
    with pytest.raises(WsiAugError, match=r"mine: exists and is not a wsi-aug export"):
        export(syn_work.root, out=foreign, force=True, **FAST)
    assert (foreign / "thesis.tex").read_text() == "keep me"
    bare = tmp_path / "bare"
    shutil.copytree(syn_work.patches, bare / "extract.zarr")
    with pytest.raises(StageMissingError, match="wsi-aug synthesize"):
        export(bare, what="synthetic", **FAST)
    with pytest.raises(StageMissingError, match="wsi-aug extract"):
        export(tmp_path / "empty", **FAST)
    with pytest.raises(WsiAugError, match="format"):
        export(syn_work.root, format="tiff", **FAST)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wsi_aug", "export", *args], capture_output=True, text=True
    )


@pytest.mark.slow
def test_cli_export(syn_work: WorkDir, tmp_path: Path) -> None:
    work = str(syn_work.root)
    out = tmp_path / "coco"
    run = _cli(str(out), "--work", work, "--format", "coco", "--what", "synthetic")
    assert run.returncode == 0, run.stderr
    assert f"export: {out} [built]" in run.stdout
    assert (out / "instances_train.json").is_file() and len(_cases(out)) == 6
    assert "cached" in _cli(str(out), "--work", work, "--format", "coco", "--what",
                            "synthetic").stdout  # fmt: skip
    default = _cli("--work", work, "--format", "png")
    assert default.returncode == 0 and (syn_work.root / "export" / "png-real" / DONE).is_file()
    for bad, words in [
        (["--work", str(tmp_path / "none")], "wsi-aug extract"),
        ([str(syn_work.root / "extract.zarr"), "--work", work], "not a wsi-aug export"),
        (["--work", str(tmp_path / "bare"), "--what", "both"], "wsi-aug synthesize"),
    ]:
        if "bare" in bad[1]:
            shutil.copytree(syn_work.patches, tmp_path / "bare" / "extract.zarr")
        run = _cli(*bad)
        assert run.returncode == 2, (bad, run.stderr)
        assert "Traceback" not in run.stderr and words in run.stderr
        assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    for bad in (["--format", "tiff"], ["--folds", "0"]):  # click's usage errors
        run = _cli("--work", work, *bad)
        assert run.returncode == 2 and "Traceback" not in run.stderr and bad[0] in run.stderr
