"""Stain baselines of eval-seg: HED jitter, the augmentation presets and stain normalisation."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_eval_seg import TINY, copy_work, make_fake_synthetic
from wsi_aug import store
from wsi_aug.errors import WsiAugError
from wsi_aug.eval_seg import SegData
from wsi_aug.seg.augment import DEFAULT, augment_batch, augment_config
from wsi_aug.seg.stain import (
    StainNormalizer,
    hed_jitter,
    hed_jitter_uint8,
    reference_order,
    rgb_to_hed,
)
from wsi_aug.stages.eval_seg import EvalSegParams, config_params, config_path
from wsi_aug.stages.extract import PatchStore
from wsi_aug.store import WorkDir

# Typical H&E stain vectors (torchstain's Macenko reference) and a differently stained lab's.
_H, _E = (0.5626, 0.7201, 0.4062), (0.2159, 0.8012, 0.5581)
_H2, _E2 = (0.65, 0.70, 0.29), (0.30, 0.85, 0.43)


def _he_patch(
    seed: int = 0, size: int = 64, h: tuple[float, ...] = _H, e: tuple[float, ...] = _E,
    scale: float = 1.0,
) -> np.ndarray:
    """A patch made with the Beer-Lambert stain model: eosin everywhere (more in a central
    'glomerulus'), some haematoxylin inside it and dense 'nuclei'."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    disc = (xx - size / 2) ** 2 + (yy - size / 2) ** 2 < (0.35 * size) ** 2
    conc_e = np.where(disc, rng.uniform(0.4, 1.0, (size, size)), rng.uniform(0, 0.5, (size, size)))
    conc_h = rng.uniform(0, 0.3, (size, size)) * disc
    for _ in range(25):
        cx, cy = rng.uniform(0, size, 2)
        conc_h[(xx - cx) ** 2 + (yy - cy) ** 2 < rng.uniform(2, 9)] = rng.uniform(0.6, 1.2)
    hv, ev = np.array(h) / np.linalg.norm(h), np.array(e) / np.linalg.norm(e)
    od = scale * (conc_h[..., None] * hv + conc_e[..., None] * ev)
    return np.clip(240 * np.exp(-od), 0, 255).astype(np.uint8)


def _stain_shift(seed: int) -> np.ndarray:
    """Another patch as a lab with other stains and a stronger staining would make it."""
    return _he_patch(seed, h=_H2, e=_E2, scale=1.3)


# --- HED jitter ---------------------------------------------------------------------------------


def test_rgb_to_hed_matches_skimage() -> None:
    from skimage.color import rgb2hed

    img = _he_patch()
    x = torch.from_numpy(img).permute(2, 0, 1)[None].double() / 255
    ours = rgb_to_hed(x)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(np.maximum(ours, 0), rgb2hed(img), atol=1e-6)


def test_stain_jitter_leaves_masks_as_the_geometry_does() -> None:
    x = torch.from_numpy(np.stack([_he_patch(i) for i in range(4)])).permute(0, 3, 1, 2) / 255
    y = (torch.rand(4, 64, 64, generator=torch.Generator().manual_seed(0)) > 0.5).to(torch.uint8)
    geo = DEFAULT.geometry_only()
    a_geo, m_geo = augment_batch(x, y, np.random.default_rng(3), geo)
    a_st, m_st = augment_batch(x, y, np.random.default_rng(3), replace(geo, stain_sigma=0.1))
    assert torch.equal(m_geo, m_st)
    assert not torch.allclose(a_geo, a_st)


def test_hed_jitter_scales_and_shifts_each_stain_within_sigma() -> None:
    sigma = 0.05
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.uniform(0.1, 0.45, (3, 3, 24, 24)))
    out = hed_jitter(x, np.random.default_rng(1), sigma)
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    s_in, s_out = rgb_to_hed(x).numpy(), rgb_to_hed(out).numpy()
    unclipped = ((out > 1e-4) & (out < 1 - 1e-4)).all(dim=1).numpy()
    for i in range(len(x)):
        keep = unclipped[i]
        assert keep.mean() > 0.5
        for c in range(3):
            a, b = np.polyfit(s_in[i, c][keep], s_out[i, c][keep], 1)
            assert 1 - sigma - 1e-4 <= a <= 1 + sigma + 1e-4, (i, c, a)
            assert -sigma - 1e-4 <= b <= sigma + 1e-4, (i, c, b)
    assert not torch.allclose(out, x, atol=1e-3)


def test_zero_sigma_is_identity_and_draws_nothing() -> None:
    x = torch.rand(2, 3, 8, 8)
    rng = np.random.default_rng(0)
    assert hed_jitter(x, rng, 0.0) is x
    assert rng.random() == np.random.default_rng(0).random()
    img = np.stack([_he_patch()])
    assert np.array_equal(hed_jitter_uint8(img, np.random.default_rng(0), 0.0), img)


def test_hed_jitter_is_deterministic_for_a_seed() -> None:
    img = np.stack([_he_patch(0), _he_patch(1)])
    a = hed_jitter_uint8(img, np.random.default_rng(7), 0.05)
    b = hed_jitter_uint8(img, np.random.default_rng(7), 0.05)
    c = hed_jitter_uint8(img, np.random.default_rng(8), 0.05)
    assert a.dtype == np.uint8 and np.array_equal(a, b) and not np.array_equal(a, c)


def test_presets() -> None:
    assert augment_config("none") is None
    assert augment_config("colour") == DEFAULT and DEFAULT.stain_sigma == 0
    geo = augment_config("geometric")
    assert geo is not None and geo.hue == geo.brightness == geo.stain_sigma == 0
    stain = augment_config("stain", 0.2)
    assert stain == replace(DEFAULT, stain_sigma=0.2)


# --- the parameters and the cache key ----------------------------------------------------------


def test_old_bool_augment_validates_to_a_preset() -> None:
    from wsi_aug.pipeline import pipeline_params

    for old, new in ((True, "colour"), (False, "none")):
        p = pipeline_params({"eval-seg": {"augment": old}}, Path("w"))["eval-seg"]
        assert isinstance(p, EvalSegParams) and p.augment == new
    assert EvalSegParams.parse({}).augment == "stain"  # the default since it was measured
    with pytest.raises(WsiAugError, match="--augment") as exc:
        EvalSegParams.parse({"augment": "strong"})
    assert len(str(exc.value).splitlines()) == 1


def test_colour_and_none_keep_the_old_cache_keys() -> None:
    p = EvalSegParams.parse({"epochs": 3, "augment": "colour"})
    old = {  # config_params before the presets: `augment` was the bool
        "synthetic_ratio": 0.5, "real_fraction": 1.0, "seeds": [0, 1, 2], "epochs": 3,
        "samples_per_epoch": None, "batch_size": 8, "lr": 1e-4, "width": 1.0, "depth": 5,
        "batch_norm": False, "padding": "same", "augment": True, "min_object_area": 1000.0,
    }
    assert config_params(p, 0.5) == old
    assert config_params(EvalSegParams.parse({"epochs": 3, "augment": "none"}), 0.5) == {
        **old, "augment": False,
    }
    folder = Path("f")
    paths = {
        config_path(folder, config_params(EvalSegParams.parse({"epochs": 3, **kw}), 0.5))
        for kw in (
            {"augment": "colour"}, {"augment": "geometric"}, {"augment": "stain"},
            {"augment": "stain", "stain_sigma": 0.2}, {"stain_normalize": "macenko"},
            {"stain_normalize": "reinhard"},
        )
    }
    assert len(paths) == 6  # every setting is its own configuration


# --- normalisation ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_normalisation_moves_a_shifted_patch_towards_the_reference(method: str) -> None:
    ref = _he_patch(0)
    shifted = _stain_shift(1)
    norm = StainNormalizer(method, ref[None])  # type: ignore[arg-type]
    assert norm.reference == 0
    out = norm.normalize(shifted)
    assert out is not None and out.dtype == np.uint8 and out.shape == ref.shape

    def dist(a: np.ndarray) -> float:
        return float(np.linalg.norm(a.reshape(-1, 3).mean(0) - ref.reshape(-1, 3).mean(0)))

    assert dist(out) < 0.2 * dist(shifted)


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_blank_patch_falls_back_and_is_counted(method: str) -> None:
    norm = StainNormalizer(method, np.stack([_he_patch(0), _he_patch(1)]))  # type: ignore[arg-type]
    blank = np.full((64, 64, 3), 250, np.uint8)
    assert norm.normalize(blank) is None
    stack = np.stack([blank, _he_patch(2), blank])
    out, failed = norm.normalize_stack(stack)
    assert failed == 2
    assert np.array_equal(out[0], blank) and np.array_equal(out[2], blank)
    assert not np.array_equal(out[1], stack[1])
    with pytest.raises(WsiAugError, match="reference"):
        StainNormalizer(method, np.stack([blank, blank]))  # type: ignore[arg-type]


def test_reference_is_the_patch_closest_to_the_median_colour() -> None:
    imgs = np.stack([np.full((4, 4, 3), v, np.uint8) for v in (10, 100, 120, 250, 130)])
    assert reference_order(imgs)[0] == 2


# --- eval-seg end to end ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stain_work(tiny_work: WorkDir, tmp_path_factory: pytest.TempPathFactory) -> WorkDir:
    work = copy_work(tiny_work, tmp_path_factory.mktemp("eval-seg-stain") / "work")
    make_fake_synthetic(work, n=6)
    return work


def test_seg_data_normalises_every_set(stain_work: WorkDir) -> None:
    from wsi_aug.stages.synthesize import SyntheticStore

    patches = PatchStore.open(stain_work.root)
    splits = {s: patches.select(s) for s in ("train", "val", "test")}
    synth = SyntheticStore.open(stain_work.root)
    raw = SegData.load(patches, splits, synth)
    norm = SegData.load(patches, splits, synth, "macenko")
    assert raw.stain_fallbacks == {} and norm.stain_normalize == "macenko"
    assert set(norm.stain_fallbacks) == {"train", "val", "test", "synthetic"}
    assert norm.stain_reference is not None
    for a, b in ((raw.train_x, norm.train_x), (raw.test_x, norm.test_x)):
        assert a.shape == b.shape and not np.array_equal(a, b)
    assert norm.synth_x is not None and raw.synth_x is not None
    assert not np.array_equal(raw.synth_x, norm.synth_x)
    assert np.array_equal(raw.train_y, norm.train_y)


@pytest.mark.usefixtures("one_thread")
def test_eval_seg_with_stain_jitter_and_macenko(
    stain_work: WorkDir, capsys: pytest.CaptureFixture[str]
) -> None:
    from wsi_aug.cli import main

    main([
        "eval-seg", "--work", str(stain_work.root), "--synthetic-ratio", "0,0.5", "--seeds", "1",
        "--epochs", str(TINY["epochs"]), "--width", "0.0625", "--device", "cpu",
        "--augment", "stain", "--stain-normalize", "macenko",
    ])
    assert "| synthetic ratio |" in capsys.readouterr().out
    title = (stain_work.eval_seg / "results.md").read_text().splitlines()[0]
    assert "augment stain (σ 0.05)" in title and "stain normalisation macenko" in title
    configs = sorted((stain_work.eval_seg / "configs").glob("*.zarr"))
    assert len(configs) == 2
    for path in configs:
        meta = store.read_meta(path)
        assert meta is not None and meta["complete"]
        assert meta["params"]["augment"] == "stain"
        assert meta["params"]["stain_normalize"] == "macenko"
        group = store.open_stage(path, stage="eval-seg", made_by="wsi-aug eval-seg")
        info = json.loads(str(group.attrs["stain_normalize"]))
        assert info["method"] == "macenko" and set(info["fallbacks"]) >= {"train", "val", "test"}
    rows = (stain_work.eval_seg / "results_per_seed.csv").read_text().splitlines()
    assert "stain_fallbacks" in rows[0].split(",") and len(rows) == 3
    table = (stain_work.eval_seg / "all.md").read_text()
    assert "| augment | stain_normalize |" in table and "| stain | macenko |" in table
