"""The GAN's networks and losses: shapes, parameter counts, ablation options, mode seeking."""

from __future__ import annotations

import pytest
import torch

from wsi_aug.gan.losses import (
    adversarial_loss,
    discriminator_loss,
    generator_losses,
    mode_seeking_loss,
)
from wsi_aug.gan.models import (
    GanConfig,
    GeneratorDropout,
    PaperDiscriminator,
    PatchDiscriminator,
    build_discriminator,
    build_generator,
    count_parameters,
    set_dropout_generator,
)

G_PARAMS_256 = 85_014_659
D_PARAMS_256 = 4_831_745


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.slow
def test_paper_models_at_256_have_the_papers_size_and_shapes() -> None:
    cfg = GanConfig()  # 256 px, ngf = ndf = 64, paper D
    g = build_generator(cfg, torch.Generator().manual_seed(0))
    d = build_discriminator(cfg, torch.Generator().manual_seed(0))
    assert count_parameters(g) == G_PARAMS_256  # ~85.0 M
    assert count_parameters(d) == D_PARAMS_256  # ~4.83 M
    assert len(g.down) == 8 and len(g.up) == 8
    assert sum(isinstance(m, GeneratorDropout) for m in g.modules()) == 3
    assert isinstance(d, PaperDiscriminator)
    with torch.no_grad():  # the one forward pass at full size
        y = g.eval()(torch.zeros(1, 2, 256, 256))
        assert y.shape == (1, 3, 256, 256)
        assert float(y.abs().max()) <= 1.0
        assert d.eval()(y).shape == (1, 1)
        patch = build_discriminator(GanConfig(disc="patch"))
        assert isinstance(patch, PatchDiscriminator)
        assert patch.eval()(y).shape == (1, 1, 30, 30)  # 70x70 receptive field patches


@pytest.mark.parametrize("size", [16, 32, 64])
def test_unet_depth_follows_the_size(size: int) -> None:
    cfg = GanConfig(size=size, ngf=4, ndf=4)
    g = build_generator(cfg)
    assert len(g.down) == len(g.up) == cfg.depth == size.bit_length() - 1
    x = torch.zeros(2, 2, size, size)
    y = g(x)
    assert y.shape == (2, 3, size, size)
    assert build_discriminator(cfg)(y).shape == (2, 1)


def test_ablation_options_change_the_inputs() -> None:
    cfg = GanConfig(size=32, ngf=4, ndf=4, no_structure=True, d_conditional=True)
    assert cfg.in_channels == 1
    g = build_generator(cfg)
    assert g.down[0][0].in_channels == 1
    d = build_discriminator(cfg)
    assert d.features[0].in_channels == 3 + 1  # image + condition
    patch = build_discriminator(GanConfig(size=32, ndf=4, disc="patch", d_conditional=True))
    assert patch.model[0].in_channels == 3 + 2
    assert patch(torch.zeros(2, 5, 32, 32)).shape == (2, 1, 2, 2)


def test_config_round_trip_and_validation() -> None:
    cfg = GanConfig(size=64, ngf=8, ms_weight=0.0, disc="patch")
    assert GanConfig.from_dict({**cfg.to_dict(), "unknown_future_key": 1}) == cfg
    assert cfg.arch()["ngf"] == 8
    with pytest.raises(ValueError):
        GanConfig(size=100)
    with pytest.raises(ValueError):
        GanConfig(disc="other")


def test_initialisation_is_local_and_reproducible() -> None:
    cfg = GanConfig(size=32, ngf=4, ndf=4)
    before = torch.random.get_rng_state()
    a = build_generator(cfg, torch.Generator().manual_seed(3))
    assert torch.equal(torch.random.get_rng_state(), before)  # no global random state used
    b = build_generator(cfg, torch.Generator().manual_seed(3))
    c = build_generator(cfg, torch.Generator().manual_seed(4))
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.down[0][0].weight, c.down[0][0].weight)


def test_dropout_draws_from_its_own_generator() -> None:
    cfg = GanConfig(size=32, ngf=4, ndf=4)
    g = build_generator(cfg, torch.Generator().manual_seed(0))
    x = torch.rand(2, 2, 32, 32) * 2 - 1
    outs = []
    for _ in range(2):
        set_dropout_generator(g, torch.Generator().manual_seed(11))
        outs.append(g.train()(x))
    assert torch.equal(outs[0], outs[1])
    set_dropout_generator(g, torch.Generator().manual_seed(12))
    assert not torch.equal(outs[0], g(x))
    with torch.no_grad():
        assert torch.equal(g.eval()(x), g.eval()(x))  # eval: no dropout


def test_mode_seeking_loss_falls_as_outputs_differ_more() -> None:
    x = torch.cat([-torch.ones(1, 2, 8, 8), torch.ones(1, 2, 8, 8)])  # two different conditions
    base = torch.zeros(1, 3, 8, 8)
    values = []
    for gap in (0.01, 0.1, 0.5, 1.0):
        fake = torch.cat([base, base + gap])
        values.append(float(mode_seeking_loss(x, fake)))
    assert values == sorted(values, reverse=True)
    assert values[-1] == pytest.approx(2.0 / (1.0 + 1e-5))  # mean|x1-x2| / mean|G1-G2|


def test_mode_seeking_loss_averages_pairs() -> None:
    # batch [a1, b1, a2, b2]: pairs (a1, a2) and (b1, b2)
    x = torch.stack([torch.zeros(1, 2, 2), torch.zeros(1, 2, 2),
                     torch.ones(1, 2, 2), 2 * torch.ones(1, 2, 2)])
    fake = torch.stack([torch.zeros(3, 2, 2), torch.zeros(3, 2, 2),
                        torch.ones(3, 2, 2), torch.ones(3, 2, 2)])
    assert float(mode_seeking_loss(x, fake, eps=0.0)) == pytest.approx((1.0 + 2.0) / 2)


def test_generator_and_discriminator_losses() -> None:
    logits = torch.tensor([[10.0], [10.0]])
    assert float(adversarial_loss(logits, True)) < 1e-3
    assert float(adversarial_loss(logits, False)) > 5
    assert float(discriminator_loss(logits, -logits)) < 1e-3
    x = torch.cat([-torch.ones(1, 2, 4, 4), torch.ones(1, 2, 4, 4)])
    fake = torch.cat([torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4)])
    target = torch.zeros(2, 3, 4, 4)
    total, adv, l1, ms = generator_losses(logits, fake, target, x, l1_weight=10, ms_weight=10)
    assert float(l1) == pytest.approx(0.5)
    assert float(total) == pytest.approx(float(adv + 10 * l1 + 10 * ms))
    total0, _, _, ms0 = generator_losses(logits, fake, target, x, l1_weight=10, ms_weight=0)
    assert float(ms0) == 0.0 and float(total0) == pytest.approx(float(adv + 10 * l1))
