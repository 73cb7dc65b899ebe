"""Stain augmentation and stain normalisation of H&E patches, the classical colour baselines.

HED jitter (Tellez et al. 2019, "Quantifying the effects of data augmentation and stain color
normalization ..."): each image is deconvolved into haematoxylin, eosin and DAB optical densities
(Ruifrok and Johnston's matrix, in `skimage.color.rgb2hed`'s units), each channel ``s`` becomes
``s * alpha + beta`` with ``alpha ~ U(1 - sigma, 1 + sigma)`` and ``beta ~ U(-sigma, sigma)``,
and the result goes back to RGB. sigma 0.05 is their "HED-light", 0.2 "HED-strong". The whole
change is one affine map of optical density per image, so a batch takes one einsum on its device.

Normalisation maps every patch onto the stain appearance of one reference patch with
torchstain's numpy Macenko or Reinhard normaliser. A patch it cannot normalise (too little
tissue, a singular optical-density covariance, a numerical failure) keeps its colours and is
counted as a fallback.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

NormalizeMethod = Literal["none", "macenko", "reinhard"]

_LOG_ADJUST = float(np.log(1e-6))  # skimage's rgb2hed scale: OD / -log(1e-6)
# Ruifrok & Johnston's H, E, DAB stain vectors as in skimage.color (rows: H, E, D in RGB OD).
_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED)

# Optical density below which a pixel counts as background (torchstain's Macenko default), and
# the fewest tissue pixels (fraction of the patch) a normalisation needs.
_OD_BETA = 0.15
_IO = 240.0
MIN_TISSUE_FRACTION = 0.01


# --- HED jitter ---------------------------------------------------------------------------------


def rgb_to_hed(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> HED stain densities (skimage.color.rgb2hed units).

    Unlike skimage it keeps negative values, so that `hed_to_rgb` inverts it exactly.
    """
    od = torch.log(x.clamp(min=1e-6)) / _LOG_ADJUST
    m = torch.as_tensor(_HED_FROM_RGB, dtype=x.dtype, device=x.device)
    return torch.einsum("nchw,cd->ndhw", od, m)


def hed_to_rgb(s: torch.Tensor) -> torch.Tensor:
    """Inverse of `rgb_to_hed`, clipped to [0, 1]."""
    m = torch.as_tensor(_RGB_FROM_HED, dtype=s.dtype, device=s.device)
    return torch.exp(torch.einsum("ndhw,dc->nchw", s, m) * _LOG_ADJUST).clamp(0.0, 1.0)


def hed_jitter(x: torch.Tensor, rng: np.random.Generator, sigma: float) -> torch.Tensor:
    """HED stain jitter of (N, 3, H, W) images in [0, 1]; sigma 0 returns ``x`` itself.

    Draws ``alpha`` (N, 3) then ``beta`` (N, 3) from ``rng``; returns a new tensor in [0, 1].
    """
    if sigma <= 0:
        return x
    n = x.shape[0]
    alpha = rng.uniform(1.0 - sigma, 1.0 + sigma, (n, 3))
    beta = rng.uniform(-sigma, sigma, (n, 3))
    # od' = ((od @ H) * alpha + beta) @ R = od @ (H diag(alpha) R) + beta @ R: one map per image.
    mats = np.einsum("cd,nd,de->nce", _HED_FROM_RGB, alpha, _RGB_FROM_HED)
    offs = beta @ _RGB_FROM_HED
    od = torch.log(x.clamp(min=1e-6)) / _LOG_ADJUST
    m = torch.as_tensor(mats, dtype=x.dtype, device=x.device)
    b = torch.as_tensor(offs, dtype=x.dtype, device=x.device)
    od = torch.einsum("nchw,nce->nehw", od, m) + b[:, :, None, None]
    return torch.exp(od * _LOG_ADJUST).clamp(0.0, 1.0)


def hed_jitter_uint8(images: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """`hed_jitter` of uint8 (N, H, W, 3) images; uint8 out, rounded."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    y = hed_jitter(x, rng, sigma)
    return (y * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


# --- normalisation ------------------------------------------------------------------------------


def tissue_fraction(image: np.ndarray) -> float:
    """Fraction of the pixels whose optical density is at least 0.15 in every channel."""
    od = -np.log((image.reshape(-1, 3).astype(np.float64) + 1.0) / _IO)
    return float(np.all(od >= _OD_BETA, axis=1).mean())


def reference_order(images: np.ndarray) -> np.ndarray:
    """Patch indices by the distance of their mean colour to the median of all mean colours.

    The first is the reference patch: a typical one, fixed by the data alone.
    """
    means = images.reshape(len(images), -1, 3).mean(axis=1, dtype=np.float64)
    dist = np.linalg.norm(means - np.median(means, axis=0), axis=1)
    return np.argsort(dist, kind="stable")


class StainNormalizer:
    """A torchstain normaliser fitted to one reference patch, with a per-patch fallback."""

    def __init__(self, method: NormalizeMethod, images: np.ndarray) -> None:
        """Fit to the first patch of `reference_order(images)` that the method can fit."""
        from wsi_aug.errors import WsiAugError

        if method == "none":
            raise ValueError("StainNormalizer needs a method, not 'none'")
        self.method = method
        self._impl = _make(method)
        self.reference: int | None = None
        for i in reference_order(images).tolist():
            if tissue_fraction(images[i]) < MIN_TISSUE_FRACTION:
                continue
            try:
                with np.errstate(divide="raise", invalid="raise"):
                    self._impl.fit(np.ascontiguousarray(images[i]))
            except _FAILURES:
                continue
            self.reference = int(i)
            break
        if self.reference is None:
            raise WsiAugError(
                f"{method} stain normalisation: no training patch has enough tissue to serve "
                "as the reference; use --stain-normalize none"
            )

    def normalize(self, image: np.ndarray) -> np.ndarray | None:
        """One uint8 (H, W, 3) patch normalised, or None where the method fails on it."""
        if tissue_fraction(image) < MIN_TISSUE_FRACTION:
            return None
        try:
            with np.errstate(divide="raise", invalid="raise"):
                if self.method == "macenko":
                    out = self._impl.normalize(I=np.ascontiguousarray(image), stains=False)[0]
                else:
                    out = self._impl.normalize(np.ascontiguousarray(image))
        except _FAILURES:
            return None
        return np.asarray(out, dtype=np.uint8)

    def normalize_stack(self, images: np.ndarray) -> tuple[np.ndarray, int]:
        """uint8 (N, H, W, 3) patches normalised (failed ones unchanged) and the failure count."""
        out = np.array(images, dtype=np.uint8, copy=True)
        failed = 0
        for i in range(len(out)):
            norm = self.normalize(out[i])
            if norm is None:
                failed += 1
            else:
                out[i] = norm
        return out, failed


_FAILURES = (np.linalg.LinAlgError, ValueError, IndexError, FloatingPointError, ZeroDivisionError)


def _make(method: NormalizeMethod) -> Any:
    """torchstain's numpy normaliser of that name."""
    import torchstain

    if method == "macenko":
        return torchstain.normalizers.MacenkoNormalizer(backend="numpy")
    return torchstain.normalizers.ReinhardNormalizer(backend="numpy")
