"""The condition model's configuration, the network it builds, and its EMA copy."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, get_args

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel

from wsi_aug.condgen.unet import CondUNet, PaddingMode

CHANNELS = 2  # glomerulus mask, structure map


PADDINGS: tuple[str, ...] = get_args(PaddingMode)


@dataclass(frozen=True)
class CondGenConfig:
    """What decides the architecture (size, base, patch) and how it was trained."""

    size: int = 64
    base: int = 32
    patch: int = 2
    ema_decay: float = 0.999
    smooth: float = 0.0  # Gaussian sigma (px) of the training targets; 0: binary as extracted
    min_size: int = 0  # structures smaller than this are removed from samples (structure's own)
    centre: bool = True  # samples shifted so the mask's main component sits at the centre
    mask_sigma: float = 4.0  # Gaussian sigma (px) of the sampled mask channel before thresholding
    padding: PaddingMode = "zeros"  # of the U-Net's 3x3 convolutions: zeros or reflect
    tile_edges: bool = True  # samples get the train patches' white tile-edge bands (postprocess)
    area_condition: bool = False  # the denoiser takes the mask area; samples draw real areas

    def __post_init__(self) -> None:
        if self.smooth < 0 or self.min_size < 0 or self.mask_sigma < 0:
            raise ValueError(
                f"smooth {self.smooth}, min_size {self.min_size}, mask_sigma {self.mask_sigma}: "
                "must be >= 0"
            )
        if self.size < 8 or self.patch < 1 or self.base < 8:
            raise ValueError(f"size {self.size}, base {self.base}, patch {self.patch}: too small")
        if self.padding not in PADDINGS:
            raise ValueError(f"padding {self.padding!r}: must be one of {', '.join(PADDINGS)}")
        if self.size % (4 * self.patch):
            raise ValueError(
                f"patch size {self.size} px is not a multiple of 4 x --patch {self.patch}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CondGenConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def postprocessing(self) -> dict[str, Any]:
        """The keywords of `wsi_aug.condgen.postprocess.to_conditions` this model's samples get."""
        return {"min_size": self.min_size, "centre": self.centre, "mask_sigma": self.mask_sigma}

    def arch(self) -> dict[str, Any]:
        """The fields a checkpoint's weights depend on."""
        return {
            "size": self.size,
            "base": self.base,
            "patch": self.patch,
            "padding": self.padding,
            "area_condition": self.area_condition,
        }


def auto_patch(size: int) -> int:
    """The pixel-unshuffle factor that runs the U-Net at 32 px (1 for patches up to 32 px)."""
    return max(1, size // 32)


def build_model(cfg: CondGenConfig) -> CondUNet:
    """The denoiser, initialised from torch's global default generator state (callers fork it)."""
    return CondUNet(
        channels=CHANNELS,
        base=cfg.base,
        patch=cfg.patch,
        padding_mode=cfg.padding,
        area_condition=cfg.area_condition,
    )


def mask_areas(masks: np.ndarray) -> np.ndarray:
    """(N,) float32: each binary mask's area as a share of its patch (what the area-conditioned
    denoiser is told; unchanged by the dihedral symmetries training applies)."""
    m = np.asarray(masks)
    if not len(m):
        return np.zeros(0, np.float32)
    return (m.reshape(len(m), -1) > 0).mean(axis=1).astype(np.float32)


def make_ema(model: torch.nn.Module, decay: float) -> AveragedModel:
    """EMA of `model`'s weights, with a warm-up: decay min(decay, (1 + n) / (10 + n)) at update n.

    Short runs (tests, a few hundred steps) are not stuck near the random initialisation.
    """

    @torch.no_grad()
    def update(
        ema: tuple[torch.Tensor, ...] | list[torch.Tensor],
        cur: tuple[torch.Tensor, ...] | list[torch.Tensor],
        n: torch.Tensor | int,
    ) -> None:
        k = float(n)
        d = min(decay, (1.0 + k) / (10.0 + k))
        torch._foreach_lerp_(list(ema), list(cur), 1.0 - d)

    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)
