"""GAN variants beyond the paper: ceiling and low-passed L_ms, resize upsampling, spectral norm.

Every option defaults to the paper's behaviour; these tests check that each variant builds and
trains, does what it says, is recorded in checkpoints (synthesize rebuilds the same generator),
and that older checkpoints and the defaults keep the behaviour they had.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from torch.nn.utils import parametrize

from tests.test_gan_train import PINNED_CPU, PINNED_G, PINNED_TORCH
from wsi_aug.gan.checkpoints import (
    check_architecture,
    latest_checkpoint,
    load_generator,
    save_checkpoint,
)
from wsi_aug.gan.data import condition_array, to_uint8_image
from wsi_aug.gan.losses import generator_losses, mode_seeking_loss
from wsi_aug.gan.models import GanConfig, build_discriminator, build_generator, count_parameters
from wsi_aug.gan.step import GanStep, weights_fingerprint
from wsi_aug.stages.synthesize import synthesize
from wsi_aug.stages.train_gan import TrainGanParams, gan_config, run_training, train_gan
from wsi_aug.store import WorkDir

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(ngf=4, ndf=4, device="cpu", progress=False)
VARIANTS = {
    "ms-ceiling": dict(ms_ceiling=0.5),
    "ms-lowpass": dict(ms_downsample=2),
    "ms-both": dict(ms_ceiling=0.5, ms_downsample=4),
    "resize": dict(upsample="resize"),
    "bilinear": dict(upsample="bilinear"),
    "spectral-norm": dict(spectral_norm=True),
    "patchgan": dict(disc="patch"),
    "patchgan-sn-conditional": dict(disc="patch", spectral_norm=True, d_conditional=True),
    "no-ms": dict(ms_weight=0.0),
    "no-structure": dict(no_structure=True),
    "d-conditional": dict(d_conditional=True),
}


def _pairs() -> tuple[torch.Tensor, torch.Tensor]:
    """Two pairs of tiny conditions in [-1, 1] and images, laid out [firsts..., seconds...]."""
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(4, 2, 32, 32, generator=g) > 0.5).float() * 2 - 1
    y = torch.rand(4, 3, 32, 32, generator=g) * 2 - 1
    return x, y


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_each_variant_builds_and_trains(name: str) -> None:
    cfg = GanConfig(size=32, ngf=4, ndf=4, pairs_per_step=2, **VARIANTS[name])  # type: ignore[arg-type]
    step = GanStep(cfg, seed=0)
    x, y = _pairs()
    x = x[:, : cfg.in_channels]
    before = weights_fingerprint(step.G)
    for _ in range(2):
        losses = step.train_step(x, y)
        assert losses.shape == (4,) and torch.isfinite(losses).all()
    assert weights_fingerprint(step.G) != before
    assert step.generate(x).shape == (4, 3, 32, 32)


def test_resize_upsampling_has_no_transposed_convolution() -> None:
    x = torch.zeros(2, 2, 32, 32)
    paper = build_generator(GanConfig(size=32, ngf=4))
    assert any(isinstance(m, nn.ConvTranspose2d) for m in paper.modules())
    for mode, kind in (("resize", "nearest"), ("bilinear", "bilinear")):
        g = build_generator(GanConfig(size=32, ngf=4, upsample=mode))
        assert not any(isinstance(m, nn.ConvTranspose2d) for m in g.modules())
        ups = [m for m in g.modules() if isinstance(m, nn.Upsample)]
        assert len(ups) == len(g.up) == 5 and all(u.mode == kind for u in ups)
        assert count_parameters(g) == count_parameters(paper)  # same kernels, in and out
        assert g(x).shape == paper(x).shape == (2, 3, 32, 32)


def test_spectral_norm_parametrizes_every_layer_of_d_and_is_local() -> None:
    plain = build_discriminator(GanConfig(size=32, ndf=4))
    assert not any(parametrize.is_parametrized(m) for m in plain.modules())
    before = torch.random.get_rng_state()
    for disc in ("paper", "patch"):
        cfg = GanConfig(size=32, ndf=4, disc=disc, spectral_norm=True)
        d = build_discriminator(cfg, torch.Generator().manual_seed(1))
        layers = [m for m in d.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        assert layers and all(parametrize.is_parametrized(m, "weight") for m in layers)
        assert any(k.endswith("parametrizations.weight.original") for k in d.state_dict())
        again = build_discriminator(cfg, torch.Generator().manual_seed(1))
        assert all(
            torch.equal(a, b) for a, b in zip(d.state_dict().values(), again.state_dict().values())
        )
        for m in layers:  # 15 power iterations at init: spectral norm about 1
            sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), 2)
            assert float(sigma) == pytest.approx(1.0, abs=0.1)
    assert torch.equal(torch.random.get_rng_state(), before)  # no global random draw


def _ms_case(gap: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One pair whose conditions differ by d_x = 2 and outputs by d_G = gap (requires grad)."""
    x = torch.cat([-torch.ones(1, 2, 8, 8), torch.ones(1, 2, 8, 8)])
    fake = torch.cat([torch.zeros(1, 3, 8, 8), torch.full((1, 3, 8, 8), gap)]).requires_grad_()
    return x, fake


def test_ms_ceiling_matches_the_paper_below_it_and_stops_pushing_above() -> None:
    tau = 0.25  # d_G / d_x ceiling; d_x = 2, so the push stops at d_G = 0.5
    for gap in (0.05, 0.2, 0.4):  # ratios 0.025, 0.1, 0.2: below the ceiling
        x, fake = _ms_case(gap)
        capped = mode_seeking_loss(x, fake, eps=0.0, ceiling=tau)
        paper = mode_seeking_loss(x, fake, eps=0.0).detach()
        assert float(capped.detach()) == pytest.approx(float(paper))
        assert float(paper) == pytest.approx(2.0 / gap)
        (grad,) = torch.autograd.grad(capped, fake)
        assert float(grad.abs().sum()) > 0
    values, papers = [], []
    for gap in (0.6, 1.0, 1.8):  # ratios above the ceiling: constant, no gradient
        x, fake = _ms_case(gap)
        capped = mode_seeking_loss(x, fake, ceiling=tau)
        values.append(float(capped.detach()))
        papers.append(float(mode_seeking_loss(x, fake).detach()))
        (grad,) = torch.autograd.grad(capped, fake)
        assert float(grad.abs().sum()) == 0.0
    assert values == pytest.approx([1.0 / (tau + 1e-5)] * 3)
    assert papers == sorted(papers, reverse=True) and papers[0] > papers[-1]  # the paper's keeps on


def test_ms_downsample_measures_low_passed_outputs() -> None:
    x = torch.cat([-torch.ones(1, 2, 8, 8), torch.ones(1, 2, 8, 8)])
    checker = (torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2 * 2.0 - 1.0  # +-1 pixels
    fake = torch.stack([torch.zeros(3, 8, 8), checker.expand(3, 8, 8)])
    eps = 1e-5
    # full resolution: d_G = 1; pooled 2x2, the checkerboard averages out: d_G = 0
    assert float(mode_seeking_loss(x, fake, eps)) == pytest.approx(2.0 / (1.0 + eps))
    assert float(mode_seeking_loss(x, fake, eps, downsample=2)) == pytest.approx(2.0 / eps)
    smooth = torch.stack([torch.zeros(3, 8, 8), torch.full((3, 8, 8), 0.5)])
    pooled = torch.nn.functional.avg_pool2d(smooth, 2)
    assert pooled.shape == (2, 3, 4, 4)
    assert float(mode_seeking_loss(x, smooth, eps, downsample=2)) == pytest.approx(
        float(mode_seeking_loss(x, smooth, eps))  # a smooth difference survives the pooling
    )


def test_generator_losses_pass_the_variants_on() -> None:
    logits = torch.zeros(2, 1)
    x, fake = _ms_case(1.0)
    fake = fake.detach()
    target = torch.zeros_like(fake)
    _, _, _, ms = generator_losses(logits, fake, target, x, ms_ceiling=0.25, ms_downsample=2)
    assert float(ms) == pytest.approx(float(mode_seeking_loss(x, fake, ceiling=0.25, downsample=2)))
    _, _, _, paper = generator_losses(logits, fake, target, x)
    assert float(paper) == pytest.approx(float(mode_seeking_loss(x, fake)))


def test_variant_options_are_validated() -> None:
    with pytest.raises(ValueError):
        GanConfig(size=32, upsample="pixelshuffle")
    with pytest.raises(ValueError):
        GanConfig(size=32, ms_downsample=3)  # must divide the size
    with pytest.raises(ValueError):
        GanConfig(size=32, ms_ceiling=0.0)
    with pytest.raises(Exception, match="upsample"):
        TrainGanParams.parse({"upsample": "pixelshuffle"})


def test_defaults_are_the_paper_and_stay_out_of_the_cache_key() -> None:
    p = TrainGanParams.parse({})
    cfg = gan_config(p, 256, Path("."))
    assert cfg == GanConfig()  # the paper's configuration, variants off
    assert (cfg.ms_ceiling, cfg.ms_downsample, cfg.upsample, cfg.spectral_norm) == (
        None, 1, "transposed", False)
    key = p.key_dict()
    assert not {"ms_ceiling", "ms_downsample", "upsample", "spectral_norm"} & set(key)
    assert key == TrainGanParams.parse({"upsample": "transposed", "ms_downsample": 1}).key_dict()
    other = TrainGanParams.parse({"upsample": "resize", "spectral_norm": True}).key_dict()
    assert other["upsample"] == "resize" and other["spectral_norm"] is True
    variant = gan_config(TrainGanParams.parse({"ms_ceiling": 2, "ms_downsample": 4}), 64, Path("."))
    assert (variant.ms_ceiling, variant.ms_downsample) == (2.0, 4)


def test_explicit_defaults_reproduce_the_recorded_weights(
    tiny_work_uncut: WorkDir, tmp_path: Path
) -> None:
    wd = WorkDir(tmp_path / "w")
    shutil.copytree(tiny_work_uncut.root, wd.root)
    defaults = dict(ms_ceiling=None, ms_downsample=1, upsample="transposed", spectral_norm=False)
    train_gan(wd.root, epochs=2, max_steps=6, seed=1, **defaults, **TINY)
    g, _ = load_generator(latest_checkpoint(wd.gan_files / "checkpoints"))
    if not torch.__version__.startswith(PINNED_TORCH):
        pytest.skip(f"weights recorded with torch {PINNED_TORCH}x, not {torch.__version__}")
    if torch.backends.cpu.get_cpu_capability() != PINNED_CPU:  # other kernels, other rounding
        pytest.skip(f"weights recorded on a {PINNED_CPU} CPU, this one is "
                    f"{torch.backends.cpu.get_cpu_capability()}")
    assert weights_fingerprint(g) in PINNED_G


def test_a_variant_checkpoint_rebuilds_the_same_generator_in_synthesize(
    tiny_work: WorkDir, tmp_path: Path
) -> None:
    wd = WorkDir(tmp_path / "w")
    shutil.copytree(tiny_work.root, wd.root)
    variant = dict(upsample="bilinear", spectral_norm=True, ms_ceiling=0.5, ms_downsample=2)
    p = TrainGanParams.build(None, epochs=1, max_steps=2, ngf=4, ndf=4, device="cpu", **variant)
    _, step = run_training(wd.root, p, progress=False)
    attrs = dict(zarr.open_group(wd.gan, mode="r").attrs["config"])
    assert {k: attrs[k] for k in variant} == variant
    ck_path = latest_checkpoint(wd.gan_files / "checkpoints")
    g, ck = load_generator(ck_path)
    assert ck.config.upsample == "bilinear" and ck.config.spectral_norm
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in g.modules())
    result = synthesize(wd.root, n=5, seed=3, device="cpu", progress=False)
    group = zarr.open_group(result.path, mode="r")
    images, masks, maps = (np.asarray(group[k][:]) for k in ("images", "masks", "structure"))
    step.G.eval()
    with torch.no_grad():
        expected = to_uint8_image(step.G(torch.from_numpy(condition_array(masks, maps, False))))
    assert np.array_equal(images, expected)


def test_a_checkpoint_without_the_variant_fields_loads_as_the_paper(tmp_path: Path) -> None:
    cfg = GanConfig(size=32, ngf=4, ndf=4)
    g = build_generator(cfg, torch.Generator().manual_seed(0))
    path = save_checkpoint(tmp_path / "new.safetensors", config=cfg, generator=g)
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    old_config = json.loads(meta["config"])
    for k in ("ms_ceiling", "ms_downsample", "upsample", "spectral_norm"):
        del old_config[k]  # as written before these options existed
    meta["config"] = json.dumps(old_config)
    old = tmp_path / "old.safetensors"
    save_file(tensors, str(old), metadata=meta)
    loaded, ck = load_generator(old, expected=cfg)
    assert ck.config == cfg and ck.config.upsample == "transposed"
    assert any(isinstance(m, nn.ConvTranspose2d) for m in loaded.modules())
    x = torch.rand(2, 2, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded(x), g.eval()(x))
    with pytest.raises(Exception, match="upsample"):
        check_architecture(old, ck.config, GanConfig(size=32, ngf=4, ndf=4, upsample="resize"))


def test_the_variants_benchmark_runs_at_a_tiny_size(tiny_work: WorkDir, tmp_path: Path) -> None:
    import runpy

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gan_variants.py"
    bench = runpy.run_path(str(script))
    out = tmp_path / "out"
    argv = ["--work", str(tiny_work.root), "--out", str(out), "--only", "paper,ms-ceiling"]
    rows = bench["main"]([*argv, "--epochs", "1", "--max-steps", "2", "--ngf", "4", "--n", "4",
                          "--columns", "3", "--device", "cpu"])
    assert [r["variant"] for r in rows] == ["paper", "ms-ceiling"]
    assert all(r["steps"] == 2 and r["train_s"] >= 0 for r in rows)
    for name in ("variants.csv", "variants.md", "grid.png"):
        assert (out / name).is_file()
    linked = out / "work" / "paper" / "extract.zarr"
    assert linked.is_symlink() and linked.resolve() == (tiny_work.root / "extract.zarr").resolve()
    assert not (tiny_work.root / "train-gan.zarr").exists()  # the base folder is left alone
