"""Drawing conditions from a trained model: deterministic for each sample's seed.

Sample i's starting noise comes from its own ``torch.Generator`` seeded with its seed (on the
CPU, so the same seed gives the same noise on any device); DDIM is deterministic from there, so
a sample does not depend on the batch it is drawn in. An area-conditioned model is asked, for
sample i, the mask area of one training condition chosen by its seed. `ConditionModel` wraps a
checkpoint's EMA weights for the ``synthesize`` and ``eval-conditions`` stages.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from wsi_aug.condgen.diffusion import Denoiser, ddim_sample
from wsi_aug.condgen.model import CHANNELS
from wsi_aug.condgen.postprocess import draw_padding, to_conditions


def start_noise(seeds: Sequence[int], size: int) -> torch.Tensor:
    """(B, 2, S, S) Gaussian noise, row i from a generator seeded with ``seeds[i]``."""
    out = torch.empty(len(seeds), CHANNELS, size, size)
    for i, s in enumerate(seeds):
        out[i] = torch.randn(CHANNELS, size, size, generator=torch.Generator().manual_seed(int(s)))
    return out


_AREA_STREAM = 0x61726561  # keeps the area draw apart from the seed's other uses


def draw_areas(pool: np.ndarray, seeds: Sequence[int]) -> np.ndarray:
    """(B,) float32: for sample i, one of the training areas `pool` (N,), chosen by its seed.

    Samples then ask for areas as often as the real training conditions have them; the choice
    depends on the sample's own seed only, not on the batch.
    """
    rows = np.asarray(pool, np.float32).reshape(-1)
    if not len(rows):
        raise ValueError("no training area to draw from")
    pick = [int(np.random.default_rng([int(s), _AREA_STREAM]).integers(len(rows))) for s in seeds]
    return rows[pick] if pick else np.zeros(0, np.float32)


def draw_raw(
    model: torch.nn.Module,
    seeds: Sequence[int],
    size: int,
    *,
    steps: int = 50,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
    areas: np.ndarray | None = None,
) -> np.ndarray:
    """The model's real-valued samples (B, 2, S, S) float32 for the given per-sample seeds.

    `areas` (B,): the mask area each sample asks an area-conditioned model for.
    """
    conditioned = bool(getattr(model, "area_condition", False))
    if conditioned and (areas is None or len(areas) != len(seeds)):
        raise ValueError("an area-conditioned model needs one area per seed")
    dev = torch.device(device)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if dev.type == "cuda"
        else contextlib.nullcontext()
    )
    parts = []
    for start in range(0, len(seeds), batch_size):
        noise = start_noise(seeds[start : start + batch_size], size).to(dev)
        denoiser: Denoiser = model
        if conditioned:
            assert areas is not None
            part = torch.as_tensor(np.asarray(areas[start : start + batch_size], np.float32))
            denoiser = functools.partial(model, area=part.to(dev))
        with autocast:
            x0 = ddim_sample(denoiser, noise, steps)
        parts.append(x0.float().cpu().numpy())
    if not parts:
        return np.zeros((0, CHANNELS, size, size), np.float32)
    return np.concatenate(parts)


def draw(
    model: torch.nn.Module,
    seeds: Sequence[int],
    size: int,
    *,
    steps: int = 50,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
    min_size: int = 0,
    centre: bool = False,
    mask_sigma: float = 0.0,
    padding: np.ndarray | None = None,
    area_pool: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Masks and structure maps (B, S, S) uint8 {0, 1} for the given per-sample seeds.

    `min_size`, `centre`, `mask_sigma` and `padding` (per-sample tile-edge bands): the
    post-processing of `wsi_aug.condgen.postprocess.to_conditions`. `area_pool`: the training
    areas an area-conditioned model's samples draw theirs from (`draw_areas`).
    """
    areas = None
    if getattr(model, "area_condition", False):
        if area_pool is None:
            raise ValueError("an area-conditioned model needs the training areas (area_pool)")
        areas = draw_areas(area_pool, seeds)
    x = draw_raw(
        model, seeds, size, steps=steps, device=device, batch_size=batch_size, areas=areas
    )
    return to_conditions(
        x, min_size=min_size, centre=centre, mask_sigma=mask_sigma, padding=padding
    )


class ConditionModel:
    """A checkpoint's EMA denoiser, ready to draw conditions for lists of seeds.

    `padding_pool` (N, 4): the tile-edge bands of the real training patches
    (`PatchStore.padding_insets`); where the checkpoint's config has ``tile_edges``, sample i
    gets the band of one of them, chosen by its seed (`draw_padding`). Without a pool, none.
    """

    def __init__(
        self,
        checkpoint: Path,
        device: torch.device | str = "cpu",
        steps: int = 50,
        centre: bool | None = None,
        padding_pool: np.ndarray | None = None,
    ):
        from wsi_aug.condgen.checkpoints import load_ema

        self.model, ck = load_ema(checkpoint, device)
        self.config = ck.config
        self.area_pool = None if ck.areas is None else ck.areas.numpy()
        self.checkpoint = Path(checkpoint)
        self.device = torch.device(device)
        self.steps = steps
        self.centre = self.config.centre if centre is None else centre
        self.padding_pool = padding_pool if self.config.tile_edges else None

    @property
    def size(self) -> int:
        return self.config.size

    def __call__(self, seeds: Sequence[int], batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        pool = self.padding_pool
        padding = draw_padding(pool, seeds) if pool is not None and len(pool) else None
        return draw(
            self.model,
            seeds,
            self.size,
            steps=self.steps,
            device=self.device,
            batch_size=batch_size,
            padding=padding,
            area_pool=self.area_pool,
            **{**self.config.postprocessing(), "centre": self.centre},
        )
