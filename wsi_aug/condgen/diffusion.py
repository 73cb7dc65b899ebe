"""The diffusion process: a cosine noise schedule in continuous time, v-prediction, DDIM.

Time t runs over [0, 1]; ``alpha_bar(t) = cos(((t + s) / (1 + s)) pi / 2)^2`` (Nichol & Dhariwal
2021, the schedule diffusers calls ``squaredcos_cap_v2``), kept inside (1e-5, 1 - 1e-5). The
network predicts v = sqrt(ab) eps - sqrt(1 - ab) x0 (Salimans & Ho 2022), which stays well
scaled at both ends of the schedule. DDIM (eta = 0) walks ``steps`` equal time steps from 1 to 0
and clamps each x0 estimate to [-1, 1]: the data are binary in {-1, 1}. Continuous time needs no
1000-entry beta table and lets the number of sampling steps be anything.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

_S = 0.008
_EPS = 1e-5


def alpha_bar(t: torch.Tensor) -> torch.Tensor:
    """The share of signal variance left at time t (1 at t = 0, 0 at t = 1), clipped."""
    ab = torch.cos((t + _S) / (1 + _S) * math.pi / 2) ** 2
    return ab.clamp(_EPS, 1 - _EPS)


def noisy(
    x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """x_t and the v target for clean data x0 (B,C,H,W), times t (B,) and Gaussian noise."""
    ab = alpha_bar(t).view(-1, 1, 1, 1)
    a, s = ab.sqrt(), (1 - ab).sqrt()
    return a * x0 + s * noise, a * noise - s * x0


Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def ddim_sample(model: Denoiser, noise: torch.Tensor, steps: int = 50) -> torch.Tensor:
    """Deterministic DDIM (eta = 0) from x_1 = `noise` to x_0 in `steps` steps; returns x_0.

    Each sample's path depends on its own noise only, so a sample does not depend on its batch.
    """
    if steps < 1:
        raise ValueError("DDIM needs at least one step")
    x = noise
    times = torch.linspace(1.0, 0.0, steps + 1, device=noise.device)
    x0 = x
    for i in range(steps):
        t = times[i].expand(x.shape[0])
        ab = alpha_bar(times[i])
        ab_next = alpha_bar(times[i + 1]) if i + 1 < steps else torch.ones((), device=x.device)
        v = model(x, t).float()
        x0 = (ab.sqrt() * x - (1 - ab).sqrt() * v).clamp(-1.0, 1.0)
        eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
        x = ab_next.sqrt() * x0 + (1 - ab_next).sqrt() * eps
    return x0
