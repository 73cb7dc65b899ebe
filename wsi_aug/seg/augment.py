"""Training augmentation for the U-Net, applied identically to image and mask.

Works on whole batches of torch tensors (on the training device) so it keeps up with a GPU and is
quick on a CPU: flips and 90-degree rotations, an affine transform (rotation, shift, zoom) and an
elastic deformation are folded into one sampling grid per image (``grid_sample``: bilinear for the
image, nearest for the mask, so masks stay binary); then HED stain jitter (`wsi_aug.seg.stain`, off
by default), brightness, contrast and hue jitter, blur and noise act on the image alone. Every
random choice comes from the caller's numpy Generator.

`augment_config` names the presets eval-seg offers: none, geometric, colour (the default
configuration) and stain (colour plus HED jitter).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from wsi_aug.imaging import dihedral_matrix, upsample_displacement
from wsi_aug.seg.stain import hed_jitter

AugmentName = Literal["none", "geometric", "colour", "stain"]
AUGMENT_NAMES: tuple[AugmentName, ...] = ("none", "geometric", "colour", "stain")

# RGB <-> YIQ: hue jitter is a rotation of the chroma plane (I, Q), which keeps luma.
_YIQ = np.array(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=np.float64
)
_YIQ_INV = np.linalg.inv(_YIQ)


@dataclass(frozen=True)
class AugmentConfig:
    """Strengths and probabilities of each augmentation (0 turns one off)."""

    flip: bool = True
    rot90: bool = True
    p_affine: float = 0.5
    rotation: float = 20.0  # degrees, uniform in [-rotation, rotation]
    shift: float = 0.05  # fraction of the side length
    zoom: float = 0.1  # scale uniform in [1 - zoom, 1 + zoom]
    p_elastic: float = 0.3
    elastic_alpha: float = 0.015  # std of the displacement, fraction of the side length
    elastic_grid: int = 5  # control points per side of the smooth displacement field
    brightness: float = 0.08  # additive, in [0, 1] intensity units
    contrast: float = 0.15  # factor uniform in [1 - contrast, 1 + contrast]
    hue: float = 0.03  # fraction of a full hue turn
    p_blur: float = 0.2
    blur_sigma: float = 1.2  # pixels, uniform in [0.3, blur_sigma]
    p_noise: float = 0.2
    noise_std: float = 0.03  # in [0, 1] intensity units, uniform in [0, noise_std]
    stain_sigma: float = 0.0  # HED jitter (Tellez et al. 2019): 0.05 light, 0.2 strong; 0 off

    def geometry_only(self) -> AugmentConfig:
        """The same geometry with all intensity changes off (for alignment checks)."""
        return replace(
            self, brightness=0.0, contrast=0.0, hue=0.0, p_blur=0.0, p_noise=0.0, stain_sigma=0.0
        )


DEFAULT = AugmentConfig()


def augment_config(name: AugmentName, stain_sigma: float = 0.05) -> AugmentConfig | None:
    """A named preset: None (no augmentation), geometric (`DEFAULT.geometry_only`: flips,
    rotations, affine, elastic), colour (`DEFAULT`: geometric plus brightness, contrast, hue,
    blur and noise) or stain (colour plus HED jitter of strength `stain_sigma`)."""
    if name == "none":
        return None
    if name == "geometric":
        return DEFAULT.geometry_only()
    if name == "colour":
        return DEFAULT
    if name == "stain":
        return replace(DEFAULT, stain_sigma=float(stain_sigma))
    raise ValueError(f"unknown augmentation {name!r}; choose one of {', '.join(AUGMENT_NAMES)}")


def _geometry_matrices(
    n: int, h: int, w: int, rng: np.random.Generator, cfg: AugmentConfig
) -> np.ndarray:
    """Per-image 2x3 matrices mapping output to input pixel offsets from the centre."""
    mats = np.tile(np.eye(3), (n, 1, 1))
    square = h == w
    for b in range(n):
        # The symmetry part (`wsi_aug.imaging.dihedral_matrix`): x flip, then on rectangles a
        # y flip (x flip + 180°) instead of a 90° rotation, on squares a 90° rotation.
        sym = np.eye(2)
        if cfg.flip and rng.random() < 0.5:
            sym = dihedral_matrix(True, 0) @ sym
        if cfg.flip and not square and rng.random() < 0.5:
            sym = dihedral_matrix(True, 2) @ sym
        if cfg.rot90 and square:
            sym = dihedral_matrix(False, int(rng.integers(4))) @ sym
        m = np.eye(3)
        m[:2, :2] = sym
        if cfg.p_affine > 0 and rng.random() < cfg.p_affine:
            a = math.radians(rng.uniform(-cfg.rotation, cfg.rotation))
            z = rng.uniform(1 - cfg.zoom, 1 + cfg.zoom)
            tx, ty = rng.uniform(-cfg.shift, cfg.shift, 2) * (w, h)
            rot = np.array(
                [[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0, 0, 1.0]]
            )
            m = np.array([[1 / z, 0, tx], [0, 1 / z, ty], [0, 0, 1.0]]) @ rot @ m
        mats[b] = m
    return mats[:, :2, :]


def _sampling_grid(
    n: int, h: int, w: int, rng: np.random.Generator, cfg: AugmentConfig, device: torch.device
) -> torch.Tensor:
    """The (N, H, W, 2) grid for ``grid_sample``: the geometric transform plus elastic field."""
    mats = _geometry_matrices(n, h, w, rng, cfg)
    # Pixel-centre coordinates relative to the image centre, in pixels.
    ys = torch.arange(h, device=device, dtype=torch.float64) - (h - 1) / 2
    xs = torch.arange(w, device=device, dtype=torch.float64) - (w - 1) / 2
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    pts = torch.stack([xx, yy, torch.ones_like(xx)], dim=-1)  # (H, W, 3)
    m = torch.as_tensor(mats, device=device)
    src = torch.einsum("bij,hwj->bhwi", m, pts)  # (N, H, W, 2) input pixel offsets
    grid = src / torch.tensor([w / 2, h / 2], device=device, dtype=torch.float64)
    grid = grid.float()
    if cfg.p_elastic > 0 and cfg.elastic_alpha > 0:
        chosen = rng.random(n) < cfg.p_elastic
        if chosen.any():
            g = max(2, cfg.elastic_grid)
            coarse = rng.normal(0.0, 2 * cfg.elastic_alpha, (n, 2, g, g))
            coarse *= chosen[:, None, None, None]
            coarse_t = torch.as_tensor(coarse, dtype=torch.float32, device=device)
            grid = grid + upsample_displacement(coarse_t, (h, w), mode="bicubic")
    return grid


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of one (1, C, H, W) image with reflected borders."""
    radius = min(max(1, math.ceil(3 * sigma)), x.shape[-1] - 1, x.shape[-2] - 1)
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _colour(x: torch.Tensor, rng: np.random.Generator, cfg: AugmentConfig) -> torch.Tensor:
    """HED, hue, contrast and brightness jitter, blur and noise on (N, 3, H, W) images in [0, 1].

    The stain jitter draws from `rng` only when it is on, so the other draws (and so the
    results of configurations without it) are as they were before it existed.
    """
    n = x.shape[0]
    dev = x.device
    if cfg.stain_sigma > 0:
        x = hed_jitter(x, rng, cfg.stain_sigma)
    if cfg.hue > 0:
        angles = rng.uniform(-cfg.hue, cfg.hue, n) * 2 * math.pi
        mats = np.empty((n, 3, 3))
        for i, a in enumerate(angles):
            r = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
            mats[i] = _YIQ_INV @ r @ _YIQ
        x = torch.einsum("bij,bjhw->bihw", torch.as_tensor(mats, dtype=x.dtype, device=dev), x)
    if cfg.contrast > 0:
        c = torch.as_tensor(rng.uniform(1 - cfg.contrast, 1 + cfg.contrast, n), dtype=x.dtype)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * c.to(dev).view(n, 1, 1, 1) + mean
    if cfg.brightness > 0:
        shift = torch.as_tensor(rng.uniform(-cfg.brightness, cfg.brightness, n), dtype=x.dtype)
        x = x + shift.to(dev).view(n, 1, 1, 1)
    if cfg.p_blur > 0:
        chosen = np.flatnonzero(rng.random(n) < cfg.p_blur)
        if len(chosen):
            x = x.clone()
            for i in chosen.tolist():
                x[i : i + 1] = _gaussian_blur(x[i : i + 1], rng.uniform(0.3, cfg.blur_sigma))
    if cfg.p_noise > 0:
        std = rng.uniform(0, cfg.noise_std, n) * (rng.random(n) < cfg.p_noise)
        if std.any():
            gen = torch.Generator(device=dev)
            gen.manual_seed(int(rng.integers(2**62)))
            noise = torch.randn(x.shape, generator=gen, device=dev, dtype=x.dtype)
            x = x + noise * torch.as_tensor(std, dtype=x.dtype, device=dev).view(n, 1, 1, 1)
    return x.clamp_(0.0, 1.0)


def augment_batch(
    images: torch.Tensor,
    masks: torch.Tensor,
    rng: np.random.Generator,
    config: AugmentConfig = DEFAULT,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment float images (N, 3, H, W) in [0, 1] and masks (N, H, W) with the same geometry.

    Returns new tensors of the same shapes and dtypes; mask values are only ever copied (nearest
    sampling), never blended, so a binary mask stays binary.
    """
    n, _, h, w = images.shape
    grid = _sampling_grid(n, h, w, rng, config, images.device)
    out = F.grid_sample(
        images, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )
    m = F.grid_sample(
        masks[:, None].float(), grid, mode="nearest", padding_mode="reflection", align_corners=False
    )[:, 0].to(masks.dtype)
    return _colour(out, rng, config), m


def augment_pair(
    image: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    config: AugmentConfig = DEFAULT,
) -> tuple[np.ndarray, np.ndarray]:
    """Augment one uint8 (H, W, 3) image and its (H, W) mask; numpy in, numpy out."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255.0
    m = torch.from_numpy(np.ascontiguousarray(mask))[None]
    xa, ma = augment_batch(x, m, rng, config)
    img = (xa[0].permute(1, 2, 0) * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()
    return img, ma[0].numpy()
