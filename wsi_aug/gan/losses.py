"""The GAN's losses: BCE-with-logits adversarial terms, L1 to the real patch, and mode seeking.

G* = argmin_G max_D L_cGAN + λ·L1 + μ·L_ms, with
L_ms = mean|x1 − x2| / (mean|G(x1) − G(x2)| + ε) over pairs of different conditions: it grows when
two different conditions give similar images (mode collapse), so minimising it spreads the outputs.

Two variants (`mode_seeking_loss`): a ceiling τ on the distance ratio, as DSGAN (Yang et al. 2019)
clamps it, so that once two outputs differ enough there is no push left; and a low-pass (average
pooling) of the outputs before their distance, so that spreading cannot come from pixel noise.

Every function is free of host synchronisation and data-dependent branches, so the training step
that uses them can be captured as one CUDA graph. Losses are computed in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def adversarial_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """BCE-with-logits of `logits` against all-real (1) or all-fake (0) targets."""
    logits = logits.float()
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """D's loss, halved as in Pix2Pix so D learns at half the rate of G."""
    return 0.5 * (adversarial_loss(real_logits, True) + adversarial_loss(fake_logits, False))


def l1_loss(fake: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between the generated and the real patch."""
    return (fake.float() - target.float()).abs().mean()


def mode_seeking_loss(
    x: torch.Tensor,
    fake: torch.Tensor,
    eps: float = 1e-5,
    *,
    ceiling: float | None = None,
    downsample: int = 1,
) -> torch.Tensor:
    """L_ms over the pairs of a batch laid out as [first of each pair..., second of each pair...].

    With d_x = mean|x1 − x2| and d_G = mean|P(G(x1)) − P(G(x2))|, P an average pooling by
    `downsample` (1: none), per pair:

    - ``ceiling=None`` (the paper): d_x / (d_G + eps);
    - ``ceiling=τ`` (DSGAN): 1 / (min(d_G / max(d_x, eps), τ) + eps): the same value up to where
      eps sits while the ratio d_G / d_x is below τ, constant (zero gradient) above it.

    Averaged over the pairs.
    """
    x1, x2 = x.float().chunk(2)
    f1, f2 = fake.float().chunk(2)
    if downsample > 1:
        f1, f2 = F.avg_pool2d(f1, downsample), F.avg_pool2d(f2, downsample)
    d_x = (x1 - x2).abs().flatten(1).mean(1)
    d_g = (f1 - f2).abs().flatten(1).mean(1)
    if ceiling is None:
        return (d_x / (d_g + eps)).mean()
    ratio = torch.clamp(d_g / d_x.clamp_min(eps), max=ceiling)
    return (1.0 / (ratio + eps)).mean()


def generator_losses(
    fake_logits: torch.Tensor,
    fake: torch.Tensor,
    target: torch.Tensor,
    x: torch.Tensor,
    *,
    l1_weight: float = 10.0,
    ms_weight: float = 10.0,
    ms_eps: float = 1e-5,
    ms_ceiling: float | None = None,
    ms_downsample: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, adversarial, L1, mode-seeking) for the generator; L_ms is 0 when its weight is 0."""
    adv = adversarial_loss(fake_logits, True)
    l1 = l1_loss(fake, target)
    if ms_weight:
        ms = mode_seeking_loss(x, fake, ms_eps, ceiling=ms_ceiling, downsample=ms_downsample)
        total = adv + l1_weight * l1 + ms_weight * ms
    else:
        ms = torch.zeros((), device=fake.device)
        total = adv + l1_weight * l1
    return total, adv, l1, ms
