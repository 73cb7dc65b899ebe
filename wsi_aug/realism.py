"""Realism measures of a synthetic image set: a classifier two-sample test and the power spectrum.

* C2ST (Lopez-Paz and Oquab 2017): a small CNN is trained to tell real from synthetic patches on
  one part of both sets (balanced) and scored on the held-out part; its accuracy, with a 95 %
  Wilson interval, is 0.5 where the sets cannot be told apart and 1.0 where they always can.
  By default it sees crops at full resolution (``view="crop"``: random crops in training, the
  mean logit over a grid of crops covering the patch in the test), so fine texture such as the
  grid of transposed convolutions stays visible; ``view="resize"`` shows the whole patch
  area-downsampled instead (layout and colour, no fine texture).
* Power spectrum (Durall et al. 2020): the radially averaged power spectrum of the grey images
  (per-image mean removed, 2-D Hann window, power per pixel), averaged over the images, with
  frequencies in cycles per pixel (bin k holds radii in [k - 0.5, k + 0.5) / side, out to about
  0.6, beyond which less than a quarter of a ring lies inside the spectrum's square). Its distance
  is the mean absolute difference of the log10 spectra over the bins above DC (decades; 0 = the
  same spectrum). Checkerboard and grid artefacts of a stride-2 upsampler are peaks at 0.5 (and
  0.25) cycles/px: the frequency where a set's log spectrum most exceeds the real one shows them,
  and the high-frequency share (power above 0.25 cycles/px, from the whole 2-D spectrum, so it
  also holds the (0.5, 0.5) corner of a pure checkerboard) measures them.

Both take uint8 (N, H, W, 3) stacks; their floors are the same measure between two halves of
the real set (`real_halves`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from wsi_aug.metrics import wilson_interval

View = Literal["crop", "resize"]
HF_CUTOFF = 0.25  # cycles/px: the "high-frequency" share is the power above this
MIN_RING = 0.25  # a radial bin is kept where this share of its ring lies inside the spectrum
_EPS = 1e-12


def real_halves(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint random halves of ``range(n)`` (sorted), for the real-against-real floors."""
    perm = rng.permutation(n)
    k = n // 2
    return np.sort(perm[:k]), np.sort(perm[k : 2 * k])


# --- classifier two-sample test -----------------------------------------------------------------


@dataclass(frozen=True)
class C2STResult:
    """Held-out accuracy of the real-vs-synthetic classifier, its 95 % interval and sizes."""

    accuracy: float
    low: float
    high: float
    n_train: int  # per set
    n_test: int  # per set

    def as_dict(self, prefix: str = "c2st") -> dict[str, float]:
        return {
            f"{prefix}_accuracy": self.accuracy,
            f"{prefix}_low": self.low,
            f"{prefix}_high": self.high,
            f"{prefix}_n_test": float(self.n_test),
        }


def _critic(width: int, generator: Any) -> Any:
    """Four 3x3 stride-2 convolutions with leaky ReLU, global average pooling, one logit."""
    from torch import nn

    w = [3, width, 2 * width, 4 * width, 4 * width]
    layers: list[nn.Module] = []
    for cin, cout in itertools.pairwise(w):
        layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
    net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(w[-1], 1))
    for m in net.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.kaiming_normal_(m.weight, a=0.2, nonlinearity="leaky_relu", generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return net


def _as_tensor(images: np.ndarray, view: View, size: int) -> Any:
    """uint8 NHWC -> uint8 NCHW tensor; area-downsampled to ``size`` for the resize view."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    if view == "resize" and max(t.shape[2:]) > size:
        out = [
            F.interpolate(t[i : i + 64].float(), size=(size, size), mode="area").round()
            for i in range(0, len(t), 64)
        ]
        t = torch.cat(out).clamp(0, 255).to(torch.uint8)
    return t.contiguous()


def _scale(x: Any) -> Any:
    return x.float() / 127.5 - 1.0


def _random_crops(x: Any, size: int, rng: np.random.Generator) -> Any:
    import torch

    h, w = x.shape[2:]
    if h <= size and w <= size:
        return x
    ch, cw = min(h, size), min(w, size)
    oy = rng.integers(0, h - ch + 1, len(x))
    ox = rng.integers(0, w - cw + 1, len(x))
    return torch.stack([x[i, :, y : y + ch, z : z + cw] for i, (y, z) in enumerate(zip(oy, ox))])


def _grid_offsets(side: int, size: int) -> list[int]:
    if side <= size:
        return [0]
    n = math.ceil(side / size)
    return sorted({round(float(v)) for v in np.linspace(0, side - size, n)})


def _scores(net: Any, x: Any, size: int, view: View, device: Any, batch_size: int) -> np.ndarray:
    """Mean logit per image (over a grid of crops covering it for the crop view)."""
    import torch

    h, w = x.shape[2:]
    if view == "crop":
        crops = [(y, z) for y in _grid_offsets(h, size) for z in _grid_offsets(w, size)]
    else:
        crops = [(0, 0)]
    ch, cw = (min(h, size), min(w, size)) if view == "crop" else (h, w)
    out = np.zeros(len(x))
    net.eval()
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            b = _scale(x[i : i + batch_size]).to(device)
            s = sum(net(b[:, :, y : y + ch, z : z + cw])[:, 0] for y, z in crops)
            out[i : i + batch_size] = (s / len(crops)).double().cpu().numpy()
    return out


def c2st(
    real: np.ndarray,
    other: np.ndarray,
    *,
    epochs: int = 10,
    size: int = 64,
    view: View = "crop",
    train_fraction: float = 0.5,
    width: int = 16,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    device: Any = "cpu",
) -> C2STResult:
    """Classifier two-sample test of ``other`` against ``real`` (uint8 NHWC stacks).

    Both sets are cut to the same size (balanced), split ``train_fraction`` / rest per set;
    a `_critic` is trained for ``epochs`` passes (Adam, ``lr``; random flips and 90-degree
    rotations, random crops of ``size`` px for the crop view), then scored on the held-out
    images. Deterministic for a ``seed`` on CPU. NaN where a part would be empty.
    """
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(seed)
    n = min(len(real), len(other))
    n_train = round(n * train_fraction)
    n_test = n - n_train
    if n_train < 1 or n_test < 1:
        return C2STResult(float("nan"), float("nan"), float("nan"), n_train, n_test)
    ia = rng.choice(len(real), n, replace=False)
    ib = rng.choice(len(other), n, replace=False)
    a = _as_tensor(np.asarray(real)[np.sort(ia)], view, size)
    b = _as_tensor(np.asarray(other)[np.sort(ib)], view, size)
    pa, pb = rng.permutation(n), rng.permutation(n)
    x_train = torch.cat([a[pa[:n_train]], b[pb[:n_train]]])
    y_train = torch.cat([torch.zeros(n_train), torch.ones(n_train)])
    x_test = torch.cat([a[pa[n_train:]], b[pb[n_train:]]])
    y_test = np.r_[np.zeros(n_test), np.ones(n_test)]

    gen = torch.Generator().manual_seed(seed)
    net = _critic(width, gen).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=(0.5, 0.999))
    for _ in range(epochs):
        net.train()
        order = rng.permutation(len(x_train))
        for i in range(0, len(order), batch_size):
            idx = torch.from_numpy(order[i : i + batch_size])
            xb = x_train[idx]
            if view == "crop":
                xb = _random_crops(xb, size, rng)
            k = int(rng.integers(4))
            xb = torch.rot90(xb, k, dims=(2, 3)) if k else xb
            if rng.random() < 0.5:
                xb = torch.flip(xb, dims=(3,))
            logits = net(_scale(xb).to(device))[:, 0]
            loss = F.binary_cross_entropy_with_logits(logits, y_train[idx].to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
    s = _scores(net, x_test, size, view, device, batch_size)
    correct = int(((s > 0) == (y_test > 0.5)).sum())
    low, high = wilson_interval(correct, len(y_test))
    return C2STResult(correct / len(y_test), low, high, n_train, n_test)


# --- power spectrum -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Spectrum:
    """A set's mean radially averaged power spectrum and its high-frequency share."""

    freqs: np.ndarray  # cycles/px, bin centres k / side
    power: np.ndarray  # mean power per pixel at each frequency (linear)
    hf_share: float  # share of the power (above DC) at radii above HF_CUTOFF

    @property
    def log_power(self) -> np.ndarray:
        return np.log10(self.power + _EPS)


def radial_spectrum(images: np.ndarray, *, chunk: int = 64) -> Spectrum:
    """The mean radially averaged power spectrum of the grey versions of uint8 NHWC ``images``."""
    h, w = images.shape[1:3]
    win = np.outer(np.hanning(h), np.hanning(w)).astype(np.float64)
    norm = float((win**2).sum())
    total = np.zeros((h, w))
    for i in range(0, len(images), chunk):
        g = np.asarray(images[i : i + chunk], np.float64).mean(axis=-1) / 255.0
        g -= g.mean(axis=(1, 2), keepdims=True)
        f = np.fft.fft2(g * win)
        total += (np.abs(f) ** 2).sum(axis=0) / norm
    mean = total / max(len(images), 1)
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
    r = np.sqrt(fy**2 + fx**2)
    side = min(h, w)
    k = np.floor(r * side + 0.5).astype(np.int64).ravel()
    counts = np.bincount(k)
    sums = np.bincount(k, weights=mean.ravel())
    ring = np.arange(len(counts))
    keep = (counts > 0) & (counts >= MIN_RING * 2 * np.pi * ring)  # rings mostly off the corners
    freqs = np.arange(len(counts))[keep] / side
    above = r > 0
    hf = float(mean[r > HF_CUTOFF].sum() / max(mean[above].sum(), _EPS))
    return Spectrum(freqs, sums[keep] / counts[keep], hf)


def _on(grid: np.ndarray, s: Spectrum) -> np.ndarray:
    """``s``'s log spectrum on the frequencies ``grid`` (for sets of another patch size)."""
    return np.asarray(np.interp(grid, s.freqs, s.log_power))


def spectrum_metrics(real: Spectrum, other: Spectrum) -> dict[str, float]:
    """Distance (mean |difference| of log10 spectra above DC), high-frequency ratio and peak."""
    grid = real.freqs[real.freqs > 0]
    diff = _on(grid, other) - _on(grid, real)
    j = int(np.argmax(diff))
    return {
        "spectrum_distance": float(np.abs(diff).mean()),
        "spectrum_hf_share": other.hf_share,
        "spectrum_hf_ratio": other.hf_share / real.hf_share if real.hf_share > 0 else float("nan"),
        "spectrum_peak_freq": float(grid[j]),
        "spectrum_peak_excess": float(diff[j]),
    }


def save_spectrum_plot(
    path: Path,
    real: Spectrum,
    sets: Mapping[str, Spectrum],
    halves: Sequence[Spectrum] = (),
    title: str = "eval-gan: radially averaged power spectrum (grey, Hann window)",
) -> Path:
    """Log spectra of the real set, each synthetic set and the real halves (top), and each set's
    log10 excess over real with the half-against-half difference as the floor (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = real.freqs[real.freqs > 0]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 7), sharex=True)
    top.plot(grid, _on(grid, real), color="black", lw=2, label="real")
    for label, s in sets.items():
        top.plot(grid, _on(grid, s), lw=1.2, label=label)
        bottom.plot(grid, _on(grid, s) - _on(grid, real), lw=1.2, label=label)
    if len(halves) == 2:
        for j, h in enumerate(halves):
            name = "real halves" if j == 0 else None
            top.plot(grid, _on(grid, h), color="grey", lw=0.8, ls="--", label=name)
        floor = _on(grid, halves[1]) - _on(grid, halves[0])
        bottom.plot(grid, floor, color="grey", lw=0.8, ls="--", label="real half - real half")
    bottom.axhline(0, color="black", lw=0.8)
    for ax in (top, bottom):
        for f in (0.25, 0.5):
            ax.axvline(f, color="grey", lw=0.5, ls=":")
        ax.grid(alpha=0.3)
    top.set_ylabel("log10 power")
    bottom.set_ylabel("log10 power - real")
    bottom.set_xlabel("frequency (cycles/px)")
    top.legend(fontsize=8)
    bottom.legend(fontsize=8)
    top.set_title(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
