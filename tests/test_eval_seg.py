"""eval-seg: the real/synthetic draw, a tiny sweep, its cache, its errors and its command."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from wsi_aug import store
from wsi_aug.errors import StageMissingError, WsiAugError
from wsi_aug.eval_seg import draw_training_indices, min_area_pixels
from wsi_aug.stages.eval_seg import EvalSegParams, eval_seg
from wsi_aug.stages.extract import PatchStore, PatchTable, write_patch_store
from wsi_aug.stages.structure import StructureStore
from wsi_aug.stages.synthesize import SyntheticWriter
from wsi_aug.store import WorkDir

TINY = {"epochs": 1, "width": 1 / 16, "device": "cpu", "progress": False}


def make_fake_synthetic(work: WorkDir, n: int = 12, seed: int = 0, constant: bool = False) -> None:
    """A synthesize.zarr of noisy copies of train patches (or one image repeated), no GAN needed."""
    patches = PatchStore.open(work.root)
    train = patches.select("train")
    rng = np.random.default_rng(seed)
    src = train[rng.integers(0, len(train), n)]
    images, masks = patches.read(src)
    images = np.clip(images.astype(np.int16) + rng.integers(-10, 11, images.shape), 0, 255)
    images = images.astype(np.uint8)
    if constant:
        images[:] = images[0]
    maps = StructureStore.open(work.root).read(src)
    params = {"n": n, "seed": seed, "constant": constant, "fake": True}
    inputs = {"patches": store.stage_fingerprint(work.patches)}
    with store.build(work.synthetic, stage="synthesize", params=params, inputs=inputs) as out:
        writer = SyntheticWriter(out, n, images.shape[1])
        writer.write(0, images, masks, maps, {
            "source_index": src.tolist(),
            "source": ["train"] * n,
            "transform": ["noise"] * n,
            "seed": [seed] * n,
            "checkpoint": ["none"] * n,
        })
        writer.finish({"n": n})


def copy_work(src: WorkDir, dst: Path) -> WorkDir:
    """A private copy of a work folder's patches and structure stores (nothing else), so tests
    that add stores neither leak into the shared fixture nor see what others added to it."""
    work = WorkDir(dst)
    dst.mkdir(parents=True)
    shutil.copytree(src.patches, work.patches)
    shutil.copytree(src.structure, work.structure)
    return work


@pytest.fixture(scope="module")
def seg_work(tiny_work: WorkDir, tmp_path_factory: pytest.TempPathFactory) -> WorkDir:
    work = copy_work(tiny_work, tmp_path_factory.mktemp("eval-seg") / "work")
    make_fake_synthetic(work)
    return work


# --- the draw -----------------------------------------------------------------------------------


def test_ratio_zero_draws_no_synthetic_sample() -> None:
    draw = draw_training_indices(10, 50, 0.0, 40, np.random.default_rng(0))
    assert len(draw) == 40 and {s for s, _ in draw} == {"real"}
    counts = Counter(i for _, i in draw)
    assert set(counts) == set(range(10)) and set(counts.values()) == {4}  # whole passes


def test_ratio_one_draws_no_real_sample() -> None:
    draw = draw_training_indices(10, 7, 1.0, 20, np.random.default_rng(0))
    assert {s for s, _ in draw} == {"synthetic"}
    assert max(i for _, i in draw) < 7
    assert draw_training_indices(0, 7, 1.0, 5, np.random.default_rng(0))  # no real needed


def test_ratio_half_mixes_exactly_and_shuffles() -> None:
    draw = draw_training_indices(10, 10, 0.5, 20, np.random.default_rng(0))
    sources = [s for s, _ in draw]
    assert sources.count("synthetic") == 10
    assert sources != sorted(sources)


def test_draw_errors() -> None:
    with pytest.raises(ValueError, match="synthetic"):
        draw_training_indices(10, 0, 0.5, 10, np.random.default_rng(0))
    with pytest.raises(ValueError, match="real"):
        draw_training_indices(0, 10, 0.5, 10, np.random.default_rng(0))
    with pytest.raises(ValueError):
        draw_training_indices(10, 10, 1.5, 10, np.random.default_rng(0))


def test_ratios_are_validated_and_kept_unique_in_order() -> None:
    p = EvalSegParams.parse({"synthetic_ratios": [0, 0.5, 1, 0.5, 0.25]})
    assert p.synthetic_ratios == (0.0, 0.5, 1.0, 0.25)
    with pytest.raises(WsiAugError, match="--synthetic-ratio"):
        EvalSegParams.parse({"synthetic_ratios": [1.5]})
    with pytest.raises(WsiAugError, match="--synthetic-ratio"):
        EvalSegParams.parse({"synthetic_ratios": ["half"]})


# --- the stage ----------------------------------------------------------------------------------


def test_tiny_sweep_writes_results_and_is_cached(seg_work: WorkDir) -> None:
    res = eval_seg(seg_work.root, synthetic_ratios=[0.0, 1.0], seeds=2, **TINY)
    out = seg_work.eval_seg
    for name in ("results.csv", "results.md", "dice.png", "results_per_seed.csv"):
        assert (out / name).is_file(), name
    assert not res.cached and len(res.stores) == 2 and len(res.per_seed) == 4
    by_ratio = {r["synthetic_ratio"]: r for r in res.rows}
    assert by_ratio[0.0]["n_synthetic"] == 0 and by_ratio[0.0]["n_real"] > 0
    assert by_ratio[1.0]["n_real"] == 0 and by_ratio[1.0]["n_synthetic"] == 12
    for r in res.rows:
        assert 0.0 <= r["dice_mean"] <= 1.0 and r["dice_std"] >= 0.0
    lines = (out / "results.csv").read_text().splitlines()
    assert lines[0].startswith("synthetic_ratio,") and len(lines) == 3
    assert "Dice (pooled)" in (out / "results.md").read_text()
    for s in res.stores:  # per-configuration stores, their files beside them
        assert s.path.parent == out / "configs" and s.path.suffix == ".zarr"
        assert store.is_complete(s.path)
        files = s.path.with_suffix("")
        assert (files / "results.csv").is_file() and (files / "dice.png").is_file()
        assert store.read_meta(s.path)["stage"] == "eval-seg"
        assert store.read_meta(s.path)["params"]["min_object_area"] == 1000.0  # the default

    again = eval_seg(seg_work.root, synthetic_ratios=[0.0, 1.0], seeds=2, **TINY)
    assert again.cached and again.rows == res.rows
    # A sweep that adds a ratio trains only the new configuration.
    wider = eval_seg(seg_work.root, synthetic_ratios=[0, 0.5], seeds=2, **TINY)
    assert [s.cached for s in wider.stores] == [True, False]
    assert [r["synthetic_ratio"] for r in wider.rows] == [0.0, 0.5]


@pytest.mark.slow
def test_keep_models_keeps_the_best_seed_for_segment(seg_work: WorkDir, tmp_path: Path) -> None:
    from wsi_aug.seg.apply import load_model

    work = copy_work(seg_work, tmp_path / "work")
    res = eval_seg(work.root, synthetic_ratios=[0.0], seeds=2, keep_models=True, **TINY)
    files = res.stores[0].path.with_suffix("")
    assert sorted(p.name for p in files.glob("*.safetensors")) == ["model.safetensors"]
    _, spec = load_model(files / "model.safetensors")
    best = max(res.per_seed, key=lambda r: r["best_val_dice"])
    assert spec.seed == best["seed"] and spec.val_dice == pytest.approx(best["best_val_dice"])
    assert spec.mpp == pytest.approx(float(np.median(PatchStore.open(work.root).table.mpp)))
    assert spec.patch_size == PatchStore.open(work.root).size
    # Without --keep-models the same sweep is another configuration, and keeps nothing.
    plain = eval_seg(work.root, synthetic_ratios=[0.0], seeds=2, **TINY)
    assert not plain.cached and not list(plain.stores[0].path.with_suffix("").glob("*.safetensors"))


@pytest.mark.slow
def test_real_fraction_keeps_part_of_the_train_split(seg_work: WorkDir) -> None:
    res = eval_seg(seg_work.root, synthetic_ratios=[0.0], seeds=1, real_fraction=0.5, **TINY)
    full = len(PatchStore.open(seg_work.root).select("train"))
    assert res.rows[0]["n_real"] == round(full / 2)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")  # the two runs train the same U-Net, bit for bit
def test_min_object_area_is_in_the_cache_key_and_only_changes_object_scores(
    seg_work: WorkDir,
) -> None:
    kw = {"synthetic_ratios": [0.0], "seeds": 1, **TINY}
    raw = eval_seg(seg_work.root, min_object_area=0, **kw)
    huge = eval_seg(seg_work.root, min_object_area=1e9, **kw)  # drops every object
    assert not raw.cached and not huge.cached
    assert raw.stores[0].path != huge.stores[0].path
    assert store.read_meta(huge.stores[0].path)["params"]["min_object_area"] == 1e9
    (r,), (h,) = raw.per_seed, huge.per_seed
    for key in ("dice", "mean_dice", "iou"):  # same U-Net, pixel scores on the raw output
        assert h[key] == pytest.approx(r[key])
    assert h["obj_precision"] == h["obj_recall"] == h["obj_f1"] == 1.0  # nothing left to count
    assert eval_seg(seg_work.root, min_object_area=0.0, **kw).cached


def test_min_area_pixels_uses_each_patch_pixel_size() -> None:
    np.testing.assert_allclose(min_area_pixels(1000, np.array([1.0, 2.0, 0.5])), [1000, 250, 4000])


def test_negative_min_object_area_names_the_option(
    seg_work: WorkDir, capsys: pytest.CaptureFixture[str]
) -> None:
    for bad in (-1.0, float("nan")):
        with pytest.raises(WsiAugError, match="--min-object-area") as exc:
            eval_seg(seg_work.root, synthetic_ratios=[0.0], min_object_area=bad, **TINY)
        assert len(str(exc.value).splitlines()) == 1
    from wsi_aug.cli import main

    with pytest.raises(SystemExit) as code:
        main(["eval-seg", "--work", str(seg_work.root), "--min-object-area", "-5"])
    assert code.value.code == 2 and "--min-object-area" in capsys.readouterr().err


def test_missing_synthetic_store_names_synthesize(tiny_work: WorkDir, tmp_path: Path) -> None:
    work = copy_work(tiny_work, tmp_path / "work")
    with pytest.raises(StageMissingError, match="wsi-aug synthesize"):
        eval_seg(work.root, synthetic_ratios=[0.5], **TINY)


def test_no_test_patches_names_split(tiny_work: WorkDir, tmp_path: Path) -> None:
    work = WorkDir(tmp_path / "work")
    src = PatchStore.open(tiny_work.root)
    cols = src.table.as_columns()
    cols["split"] = np.where(cols["split"] == "test", "val", cols["split"])
    images, masks = src.read_all()
    write_patch_store(work.root, images, masks, PatchTable(**cols), params={"no_test": True})
    with pytest.raises(WsiAugError, match="--split"):
        eval_seg(work.root, synthetic_ratios=[0.0], **TINY)


def test_cli_prints_the_table(
    seg_work: WorkDir, capsys: pytest.CaptureFixture[str]
) -> None:
    from wsi_aug.cli import main

    main([
        "eval-seg", "--work", str(seg_work.root), "--synthetic-ratio", "0,1", "--seeds", "2",
        "--epochs", "1", "--width", "0.0625", "--device", "cpu",
    ])
    out = capsys.readouterr().out
    assert "| synthetic ratio |" in out and "eval-seg:" in out


def test_cli_error_is_one_line(
    tiny_work: WorkDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from wsi_aug.cli import main

    work = copy_work(tiny_work, tmp_path / "work")
    with pytest.raises(SystemExit) as exc:
        main(["eval-seg", "--work", str(work.root), "--synthetic-ratio", "0.5", "--device", "cpu"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "wsi-aug synthesize" in err and len(err.splitlines()) == 1


def test_valid_padding_on_small_patches_names_the_fix(seg_work: WorkDir) -> None:
    with pytest.raises(WsiAugError, match="--padding same"):
        eval_seg(seg_work.root, synthetic_ratios=[0.0], padding="valid", **TINY)
