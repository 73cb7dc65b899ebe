"""eval-gan: diversity against real and collapsed sets, the structure thresholding, the stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.factories import make_tiny_work
from tests.test_eval_seg import copy_work, make_fake_synthetic
from wsi_aug.errors import StageMissingError
from wsi_aug.eval_gan import (
    FLOOR,
    image_set_metrics,
    otsu_structure_map,
    structure_function,
    structure_iou,
)
from wsi_aug.stages.eval_gan import eval_gan
from wsi_aug.stages.extract import PatchStore
from wsi_aug.stages.structure import structure
from wsi_aug.store import WorkDir

TINY = {"unet_epochs": 1, "unet_width": 1 / 16, "n_pairs": 40, "device": "cpu", "progress": False}


@pytest.fixture(scope="module")
def many_real(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """48 factory patches: two halves of 24 with the same mix of positives and negatives."""
    work = make_tiny_work(tmp_path_factory.mktemp("many-real"), n=48, seed=1)
    return PatchStore.open(work.root).read_all()[0]


def test_real_against_real_diversity_ratio_is_about_one(many_real: np.ndarray) -> None:
    m = image_set_metrics(many_real[:24], many_real[24:], n_pairs=100, seed=0)
    assert 0.7 < m["l1_ratio"] < 1.3
    assert 0.7 < m["ms_ssim_div_ratio"] < 1.3


def test_constant_generator_diversity_ratio_is_far_below_one(many_real: np.ndarray) -> None:
    constant = np.repeat(many_real[:1], 24, axis=0)
    m = image_set_metrics(many_real[:24], constant, n_pairs=100, seed=0)
    assert m["l1_ratio"] < 0.2 and m["ms_ssim_div_ratio"] < 0.2
    same = image_set_metrics(many_real[:24], many_real[24:], n_pairs=20, seed=0)
    grey = np.full_like(constant, 128)
    off = image_set_metrics(many_real[:24], grey, n_pairs=20, seed=0)
    assert off["rgb_emd"] > 5 * same["rgb_emd"] and off["he_emd"] > same["he_emd"]


def test_frechet_on_unet_features(many_real: np.ndarray) -> None:
    import torch

    from wsi_aug.seg.unet import UNet

    enc = UNet(width=1 / 16, generator=torch.Generator().manual_seed(0))
    real = image_set_metrics(many_real[:24], many_real[24:], n_pairs=5, seed=0, encoder=enc)
    grey = image_set_metrics(many_real[:24], np.full_like(many_real[24:], 128), n_pairs=5,
                             seed=0, encoder=enc)
    assert 0 <= real["frechet_unet"] < grey["frechet_unet"]
    assert np.isfinite(real["frechet_unet_real_halves"])


def test_structure_function_uses_the_structure_stage_or_falls_back() -> None:
    img = np.full((16, 16, 3), 220, np.uint8)
    img[4:8, 4:8] = 30
    fn, name = structure_function({"method": "otsu", "channel": "grey", "min_size": 0}, img)
    assert "otsu-fallback" not in name
    assert fn(img)[5, 5] == 1 and fn(img)[0, 0] == 0
    with pytest.warns(UserWarning, match="fallback"):
        fb, fb_name = structure_function({"method": "no-such-method"}, img)
    assert fb is otsu_structure_map and fb_name.startswith("otsu-fallback")
    assert structure_iou(img[None], fn(img)[None], fn) == 1.0


@pytest.fixture(scope="module")
def gan_work(tiny_work: WorkDir, tmp_path_factory: pytest.TempPathFactory) -> WorkDir:
    """The tiny work folder with structure maps from the structure stage and a fake GAN output."""
    work = copy_work(tiny_work, tmp_path_factory.mktemp("eval-gan") / "work")
    structure(work.root, method="otsu", channel="grey", progress=False, force=True)
    make_fake_synthetic(work)
    return work


def test_eval_gan_writes_results_and_is_cached(gan_work: WorkDir) -> None:
    res = eval_gan(gan_work.root, **TINY)
    assert not res.cached
    out = gan_work.eval_gan
    for name in ("results.csv", "results.md", "grid.png", "spectrum.png"):
        assert (out / name).is_file(), name
    assert (out / "unet.safetensors").is_file() and res.store.path == gan_work.store("eval-gan")
    m = res.metrics
    for key in ("l1_ratio", "ms_ssim_div_ratio", "structure_iou", "mask_dice", "rgb_emd",
                "he_emd", "frechet_unet", "c2st_accuracy", "c2st_low", "c2st_high",
                "spectrum_distance", "spectrum_hf_ratio", "spectrum_peak_freq"):
        assert np.isfinite(m[key]), key
    assert list(res.sets) == [gan_work.root.name, FLOOR]  # one set and the floor row
    assert m["c2st_low"] <= m["c2st_accuracy"] <= m["c2st_high"]
    assert 0.5 < m["l1_ratio"] < 2.0  # noisy copies of real patches are about as diverse
    assert m["structure_iou"] > 0.5  # the same thresholding on near-identical images
    assert "otsu-fallback" not in res.notes["structure_iou"]
    assert "| l1_ratio |" in (out / "results.md").read_text()
    again = eval_gan(gan_work.root, **TINY)
    assert again.cached and again.metrics == res.metrics


def test_missing_synthetic_store_names_synthesize(tiny_work: WorkDir, tmp_path: Path) -> None:
    work = copy_work(tiny_work, tmp_path / "work")
    with pytest.raises(StageMissingError, match="wsi-aug synthesize"):
        eval_gan(work.root, **TINY)


def test_cli_prints_the_table(gan_work: WorkDir, capsys: pytest.CaptureFixture[str]) -> None:
    from wsi_aug.cli import main

    main([
        "eval-gan", "--work", str(gan_work.root), "--unet-epochs", "1", "--unet-width", "0.0625",
        "--n-pairs", "40", "--device", "cpu",
    ])
    out = capsys.readouterr().out
    assert "| metric | value | meaning |" in out and "structure_iou" in out
