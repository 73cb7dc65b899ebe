"""Realism measures: the classifier two-sample test, the power spectrum, several eval-gan sets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.test_eval_seg import copy_work, make_fake_synthetic
from wsi_aug.errors import WsiAugError
from wsi_aug.eval_gan import FLOOR
from wsi_aug.realism import (
    c2st,
    radial_spectrum,
    real_halves,
    save_spectrum_plot,
    spectrum_metrics,
    wilson_interval,
)
from wsi_aug.stages.eval_gan import eval_gan, read_metrics, read_sets
from wsi_aug.stages.structure import structure
from wsi_aug.store import WorkDir

TINY = {
    "unet_epochs": 1, "unet_width": 1 / 16, "n_pairs": 20, "c2st_epochs": 2, "device": "cpu",
    "progress": False,
}


def textures(n: int, seed: int, size: int = 64) -> np.ndarray:
    """Smooth coloured random textures: one distribution, any two draws alike."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    x = gaussian_filter(rng.normal(size=(n, size, size, 3)), sigma=(0, 2, 2, 0))
    x = x / x.std() * 40 + rng.uniform(100, 180, (n, 1, 1, 3))
    return np.clip(x, 0, 255).astype(np.uint8)


def grid_overlay(images: np.ndarray, amplitude: float = 8.0) -> np.ndarray:
    """A stride-2 grid pattern ((-1)^y + (-1)^x) added, as a transposed convolution leaves it."""
    y, x = np.indices(images.shape[1:3])
    pattern = (-1.0) ** y + (-1.0) ** x
    out = images.astype(np.float64) + amplitude * pattern[None, :, :, None]
    return np.clip(out, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def tex() -> np.ndarray:
    return textures(160, seed=0)


@pytest.mark.usefixtures("one_thread")
def test_c2st_real_vs_real_is_near_chance_and_vs_noise_near_one(tex: np.ndarray) -> None:
    same = c2st(tex[:80], tex[80:], epochs=5, seed=0)
    assert same.n_train == 40 and same.n_test == 40
    assert same.accuracy < 0.65 and same.low <= 0.5 <= same.high
    noise = np.random.default_rng(1).integers(0, 256, tex[80:].shape).astype(np.uint8)
    other = c2st(tex[:80], noise, epochs=5, seed=0)
    assert other.accuracy > 0.9 and other.low > 0.5
    resized = c2st(tex[:80], noise, epochs=5, seed=0, view="resize", size=32)
    assert resized.accuracy > 0.8


@pytest.mark.usefixtures("one_thread")
def test_c2st_is_deterministic_for_a_seed(tex: np.ndarray) -> None:
    a = c2st(tex[:40], grid_overlay(tex[40:80]), epochs=2, seed=3)
    b = c2st(tex[:40], grid_overlay(tex[40:80]), epochs=2, seed=3)
    assert a == b
    assert np.isnan(c2st(tex[:1], tex[1:2], epochs=1).accuracy)  # nothing to hold out


def test_wilson_interval() -> None:
    low, high = wilson_interval(50, 100)
    assert low < 0.5 < high and abs((0.5 - low) - (high - 0.5)) < 1e-9
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0) and wilson_interval(10, 10)[0] > 0.6
    assert all(np.isnan(v) for v in wilson_interval(0, 0))


def test_spectrum_sees_a_grid_overlay_at_half_a_cycle_per_pixel(tex: np.ndarray) -> None:
    real = radial_spectrum(tex[:80])
    clean = spectrum_metrics(real, radial_spectrum(tex[80:]))
    grid = spectrum_metrics(real, radial_spectrum(grid_overlay(tex[80:])))
    assert clean["spectrum_distance"] < 0.2 < grid["spectrum_distance"]
    assert abs(grid["spectrum_peak_freq"] - 0.5) <= 1 / 64
    assert grid["spectrum_hf_ratio"] > 10 and 0.5 < clean["spectrum_hf_ratio"] < 2
    assert real.freqs[0] == 0 and real.freqs.max() == pytest.approx(0.6, abs=0.02)
    assert radial_spectrum(tex[:80]).power.tolist() == real.power.tolist()
    y, x = np.indices(tex.shape[1:3])  # a pure checkerboard: all its power at the corner
    board = np.clip(tex[80:] + 8.0 * ((-1.0) ** (y + x))[None, :, :, None], 0, 255)
    pure = spectrum_metrics(real, radial_spectrum(board.astype(np.uint8)))
    assert pure["spectrum_hf_ratio"] > 10


def test_spectrum_plot(tex: np.ndarray, tmp_path: Path) -> None:
    real = radial_spectrum(tex[:80])
    sets = {"clean": radial_spectrum(tex[80:]), "grid": radial_spectrum(grid_overlay(tex[80:]))}
    halves = (radial_spectrum(tex[:40]), radial_spectrum(tex[40:80]))
    path = save_spectrum_plot(tmp_path / "spectrum.png", real, sets, halves)
    assert path.is_file() and path.stat().st_size > 1000


def test_real_halves_are_disjoint() -> None:
    a, b = real_halves(11, np.random.default_rng(0))
    assert len(a) == len(b) == 5 and not set(a) & set(b)


# --- eval-gan with several synthetic sets --------------------------------------------------------


@pytest.fixture(scope="module")
def works(tiny_work: WorkDir, tmp_path_factory: pytest.TempPathFactory) -> tuple[WorkDir, WorkDir]:
    """Two work folders with the same patches and structure maps and different fake GAN outputs."""
    root = tmp_path_factory.mktemp("realism")
    a = copy_work(tiny_work, root / "variant-a")
    structure(a.root, method="otsu", channel="grey", progress=False, force=True)
    b = WorkDir(root / "variant-b")
    b.root.mkdir()
    shutil.copytree(a.patches, b.patches)
    shutil.copytree(a.structure, b.structure)
    make_fake_synthetic(a, seed=0)
    make_fake_synthetic(b, seed=1, constant=True)
    return a, b


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_eval_gan_compares_several_sets(works: tuple[WorkDir, WorkDir]) -> None:
    a, b = works
    res = eval_gan(a.root, synthetic=(str(b.root), f"store={b.synthetic}"), **TINY)
    assert not res.cached
    assert list(res.sets) == ["variant-a", "variant-b", "store", FLOOR]
    for label, m in res.sets.items():
        assert 0 <= m["c2st_accuracy"] <= 1 and m["c2st_low"] <= m["c2st_high"], label
        assert np.isfinite(m["spectrum_distance"]), label
    assert res.sets["variant-b"]["l1_ratio"] < 0.2  # the constant set collapsed
    assert res.sets["variant-b"] == res.sets["store"]  # the same store, two ways
    assert res.metrics == res.sets["variant-a"] == read_metrics(res.path)[0]
    assert read_sets(res.path)[0] == res.sets
    out = a.eval_gan
    for name in ("spectrum.png", "grid.png", "grid-variant-b.png", "grid-store.png"):
        assert (out / name).is_file(), name
    md = (out / "results.md").read_text()
    assert md.count("| variant-b |") == 1 and f"| {FLOOR} |" in md and "c2st_accuracy" in md
    assert set(json.loads((out / "results.json").read_text())) == set(res.sets)
    assert eval_gan(a.root, synthetic=(str(b.root), f"store={b.synthetic}"), **TINY).cached
    one = eval_gan(a.root, **TINY)  # a set less: rebuilt, one row plus the floor
    assert not one.cached and list(one.sets) == ["variant-a", FLOOR]


def test_eval_gan_rejects_repeated_labels_and_missing_paths(
    works: tuple[WorkDir, WorkDir], tmp_path: Path
) -> None:
    a, b = works
    with pytest.raises(WsiAugError, match="LABEL=PATH"):
        eval_gan(a.root, synthetic=(f"variant-a={b.root}",), **TINY)
    with pytest.raises(WsiAugError, match="not a folder"):
        eval_gan(a.root, synthetic=(str(tmp_path / "nowhere"),), **TINY)


@pytest.mark.slow
def test_cli_takes_repeated_synthetic_options(works: tuple[WorkDir, WorkDir]) -> None:
    from click.testing import CliRunner

    from wsi_aug.cli import cli

    a, b = works
    out = CliRunner().invoke(cli, [
        "eval-gan", "--work", str(a.root), "--synthetic", f"b={b.root}", "--unet-epochs", "1",
        "--unet-width", "0.0625", "--n-pairs", "10", "--c2st-epochs", "1", "--c2st-view",
        "resize", "--device", "cpu",
    ])
    assert out.exit_code == 0, out.output
    assert "| b |" in out.output and f"| {FLOOR} |" in out.output
