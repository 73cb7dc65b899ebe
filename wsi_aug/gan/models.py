"""The GAN's networks: the paper's U-Net generator and image-only discriminator, and PatchGAN.

The generator maps a condition x (glomerulus mask and, unless ``no_structure``, a binary structure
map; values in [-1, 1]) to an RGB patch in [-1, 1]. It is a Pix2Pix U-Net with 5x5 kernels whose
depth is log2(size) (8 strided convolutions at 256 px), so tests can run it at 64 px.

The paper's discriminator sees the image alone (``d_conditional=False``), against mode collapse:
four 5x5 convolutions (strides 2, 2, 2, 1; batch norm on the last three) and one linear layer to one
logit. The original Pix2Pix 70x70 PatchGAN (``disc="patch"``) is kept for the ablation.

Variants beyond the paper (each off by default): ``upsample="resize"``/``"bilinear"`` replaces
the decoder's transposed convolutions by a x2 resize then a stride-1 convolution (Odena et al.
2016, against checkerboard artefacts); ``spectral_norm`` puts spectral normalisation on every
conv and linear layer of D (Miyato et al. 2018).

Dropout draws its masks from a `torch.Generator` the trainer owns (`set_dropout_generator`), so its
state can be checkpointed and registered with a CUDA graph; models are built on the meta device and
initialised from a local generator (Pix2Pix: N(0, 0.02)), so no global random state is touched.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

# The fields that define the networks' shapes: a checkpoint loads only into the same values.
ARCH_FIELDS = (
    "size",
    "in_channels",
    "out_channels",
    "ngf",
    "ndf",
    "disc",
    "d_conditional",
    "kernel",
    "n_dropout",
    "upsample",
    "spectral_norm",
)
UPSAMPLE = ("transposed", "resize", "bilinear")


@dataclass(frozen=True)
class GanConfig:
    """Everything that defines a GAN run's model and losses; serialised into checkpoints and stores.

    ``size``: patch side in pixels (a power of two >= 8; U-Net depth = log2(size)).
    ``no_structure``: the condition is the mask alone (1 channel) instead of (mask, structure map).
    ``d_conditional``: D also sees the condition (Pix2Pix) instead of the image alone.
    ``disc``: ``"paper"`` (4 convs + linear) or ``"patch"`` (Pix2Pix 70x70 PatchGAN).
    ``ms_weight = 0`` disables the mode-seeking term; ``ms_ceiling`` (None: the paper's form)
    and ``ms_downsample`` change it (see `wsi_aug.gan.losses.mode_seeking_loss`).
    ``upsample``: the decoder's x2 steps: ``"transposed"`` (the paper's ConvTranspose2d), or a
    nearest (``"resize"``) or bilinear (``"bilinear"``) resize followed by a convolution.
    ``spectral_norm``: spectral normalisation on D's conv and linear layers.
    Fields added after the first checkpoints default to the old behaviour, so those still load.
    """

    size: int = 256
    ngf: int = 64
    ndf: int = 64
    disc: str = "paper"
    d_conditional: bool = False
    no_structure: bool = False
    out_channels: int = 3
    kernel: int = 5
    dropout: float = 0.5
    n_dropout: int = 3
    l1_weight: float = 10.0
    ms_weight: float = 10.0
    ms_eps: float = 1e-5
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    pairs_per_step: int = 1
    ms_ceiling: float | None = None
    ms_downsample: int = 1
    upsample: str = "transposed"
    spectral_norm: bool = False

    def __post_init__(self) -> None:
        if self.size < 8 or self.size & (self.size - 1):
            raise ValueError(f"GanConfig.size must be a power of two >= 8, not {self.size}")
        if self.disc not in ("paper", "patch"):
            raise ValueError(f"GanConfig.disc must be 'paper' or 'patch', not {self.disc!r}")
        if self.ngf < 1 or self.ndf < 1 or self.pairs_per_step < 1:
            raise ValueError("GanConfig: ngf, ndf and pairs_per_step must be >= 1")
        if self.upsample not in UPSAMPLE:
            raise ValueError(f"GanConfig.upsample must be one of {UPSAMPLE}, not {self.upsample!r}")
        if self.ms_ceiling is not None and not self.ms_ceiling > 0:
            raise ValueError(f"GanConfig.ms_ceiling must be > 0 or None, not {self.ms_ceiling}")
        if self.ms_downsample < 1 or self.size % self.ms_downsample:
            raise ValueError(
                f"GanConfig.ms_downsample must be >= 1 and divide the size {self.size}, "
                f"not {self.ms_downsample}"
            )

    @property
    def in_channels(self) -> int:
        """Condition channels: mask (+ structure map)."""
        return 1 if self.no_structure else 2

    @property
    def depth(self) -> int:
        """Number of strided convolutions in the U-Net encoder (log2 of the size)."""
        return int(math.log2(self.size))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GanConfig:
        """Rebuild from `to_dict` output; unknown keys are ignored (written by a newer version)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def arch(self) -> dict[str, Any]:
        """The architecture-defining values, to compare a checkpoint with what is expected."""
        return {k: getattr(self, k) for k in ARCH_FIELDS}


class GeneratorDropout(nn.Module):
    """Dropout whose masks come from `self.generator` (default generator when None).

    A trainer-owned generator keeps dropout reproducible and resumable without global seeding, and
    can be registered with a CUDA graph so each replay draws fresh masks.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = float(p)
        self.generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.empty_like(x).bernoulli_(1.0 - self.p, generator=self.generator)
        return x * keep * (1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class UNetGenerator(nn.Module):
    """Pix2Pix U-Net with `kernel`-sized kernels and log2(size) levels.

    Encoder: strided convs (LeakyReLU 0.2 before each but the first; batch norm on all but the
    outermost and innermost). Decoder: ReLU, x2 upsampling (`up_conv`), batch norm and dropout on
    the `n_dropout` innermost layers; tanh out. Skip connections concatenate encoder features.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        size: int,
        ngf: int = 64,
        kernel: int = 5,
        dropout: float = 0.5,
        n_dropout: int = 3,
        upsample: str = "transposed",
    ) -> None:
        super().__init__()
        depth = int(math.log2(size))
        widths = [ngf * min(2**i, 8) for i in range(depth)]
        pad = kernel // 2
        self.down = nn.ModuleList()
        for i in range(depth):
            cin = in_channels if i == 0 else widths[i - 1]
            layers: list[nn.Module] = [] if i == 0 else [nn.LeakyReLU(0.2)]
            layers.append(nn.Conv2d(cin, widths[i], kernel, 2, pad, bias=False))
            if 0 < i < depth - 1:
                layers.append(nn.BatchNorm2d(widths[i]))
            self.down.append(nn.Sequential(*layers))
        self.up = nn.ModuleList()
        for i in range(depth):
            cin = widths[i] if i == depth - 1 else 2 * widths[i]
            cout = out_channels if i == 0 else widths[i - 1]
            layers = [nn.ReLU(), *up_conv(cin, cout, kernel, upsample, bias=(i == 0))]
            if i == 0:
                layers.append(nn.Tanh())
            else:
                layers.append(nn.BatchNorm2d(cout))
                if i >= depth - n_dropout and dropout > 0:
                    layers.append(GeneratorDropout(dropout))
            self.up.append(nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        h = x
        for block in self.down:
            h = block(h)
            skips.append(h)
        h = self.up[-1](skips[-1])
        for i in range(len(self.up) - 2, -1, -1):
            h = self.up[i](torch.cat([skips[i], h], 1))
        return h


def up_conv(cin: int, cout: int, kernel: int, upsample: str, bias: bool) -> list[nn.Module]:
    """A x2 upsampling convolution: transposed (the paper), or resize then stride-1 conv."""
    pad = kernel // 2
    if upsample == "transposed":
        return [nn.ConvTranspose2d(cin, cout, kernel, 2, pad, output_padding=1, bias=bias)]
    mode = "nearest" if upsample == "resize" else "bilinear"
    corners = None if mode == "nearest" else False
    resize = nn.Upsample(scale_factor=2, mode=mode, align_corners=corners)
    return [resize, nn.Conv2d(cin, cout, kernel, 1, pad, bias=bias)]


class PaperDiscriminator(nn.Module):
    """The paper's D: four 5x5 convs (strides 2,2,2,1; BN on the last three) and a linear logit."""

    def __init__(self, in_channels: int, size: int, ndf: int = 64, kernel: int = 5) -> None:
        super().__init__()
        pad = kernel // 2
        widths = [ndf, ndf * 2, ndf * 4, ndf * 8]
        strides = [2, 2, 2, 1]
        layers: list[nn.Module] = []
        cin = in_channels
        for i, (w, s) in enumerate(zip(widths, strides)):
            layers.append(nn.Conv2d(cin, w, kernel, s, pad, bias=(i == 0)))
            if i > 0:
                layers.append(nn.BatchNorm2d(w))
            layers.append(nn.LeakyReLU(0.2))
            cin = w
        self.features = nn.Sequential(*layers)
        self.linear = nn.Linear(widths[-1] * (size // 8) ** 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.features(x).flatten(1))


class PatchDiscriminator(nn.Module):
    """The original Pix2Pix 70x70 PatchGAN (3 strided 4x4 layers; one logit per patch)."""

    def __init__(self, in_channels: int, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1, bias=False),
                nn.BatchNorm2d(ndf * mult),
                nn.LeakyReLU(0.2),
            ]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, 1, 1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def init_weights(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """Pix2Pix initialisation from a local generator: conv/linear N(0, 0.02), BN weight N(1, 0.02).

    Also resets batch-norm running statistics, so it fully initialises a model made on the meta
    device; a parameter of any other module type is an error (it would stay uninitialised).
    A spectrally normalised weight: its original is drawn so, then the power iteration's vectors.
    """
    with torch.no_grad():
        for m in module.modules():
            own = list(m.parameters(recurse=False))
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                if parametrize.is_parametrized(m, "weight"):
                    weights = m.get_submodule("parametrizations.weight")
                    original = weights.get_parameter("original")
                    original.normal_(0.0, 0.02, generator=generator)
                    for fn in weights.children():
                        _init_spectral_vectors(fn, original, generator)
                else:
                    m.weight.normal_(0.0, 0.02, generator=generator)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                m.weight.normal_(1.0, 0.02, generator=generator)
                m.bias.zero_()
            elif own and not isinstance(m, parametrize.ParametrizationList):
                raise TypeError(f"init_weights: no rule for {type(m).__name__}")
    return module


def _init_spectral_vectors(fn: nn.Module, weight: torch.Tensor, generator: torch.Generator) -> None:
    """Draw spectral norm's u, v from `generator` and run 15 power iterations (as torch does)."""
    u, v = getattr(fn, "_u", None), getattr(fn, "_v", None)
    if not isinstance(u, torch.Tensor) or not isinstance(v, torch.Tensor):
        return
    w = weight.flatten(1)  # dim 0: the output channels (conv and linear)
    u.copy_(nn.functional.normalize(torch.randn(u.shape, generator=generator), dim=0, eps=1e-12))
    v.copy_(nn.functional.normalize(torch.randn(v.shape, generator=generator), dim=0, eps=1e-12))
    for _ in range(15):
        u.copy_(nn.functional.normalize(w @ v, dim=0, eps=1e-12))
        v.copy_(nn.functional.normalize(w.T @ u, dim=0, eps=1e-12))


M = TypeVar("M", bound=nn.Module)


def _materialise(make: Callable[[], M], generator: torch.Generator | None) -> M:
    """Build on the meta device (no default init), allocate on the CPU, initialise locally."""
    with torch.device("meta"):
        model = make()
    model = model.to_empty(device="cpu")
    init_weights(model, generator if generator is not None else torch.Generator())
    return model


def build_generator(cfg: GanConfig, generator: torch.Generator | None = None) -> UNetGenerator:
    """The U-Net generator of a config, initialised from `generator` (a fresh one if None)."""
    return _materialise(
        lambda: UNetGenerator(
            cfg.in_channels,
            cfg.out_channels,
            cfg.size,
            cfg.ngf,
            cfg.kernel,
            cfg.dropout,
            cfg.n_dropout,
            cfg.upsample,
        ),
        generator,
    )


def build_discriminator(cfg: GanConfig, generator: torch.Generator | None = None) -> nn.Module:
    """The discriminator of a config (paper or PatchGAN), initialised from `generator`."""
    cin = cfg.out_channels + (cfg.in_channels if cfg.d_conditional else 0)

    def make() -> nn.Module:
        d: nn.Module
        if cfg.disc == "patch":
            d = PatchDiscriminator(cin, cfg.ndf)
        else:
            d = PaperDiscriminator(cin, cfg.size, cfg.ndf, cfg.kernel)
        return add_spectral_norm(d) if cfg.spectral_norm else d

    return _materialise(make, generator)


def add_spectral_norm(module: nn.Module) -> nn.Module:
    """Spectral normalisation (a parametrization) on every conv and linear weight of `module`.

    Called on the meta device (by `build_discriminator`), so registering draws no random numbers;
    `init_weights` then draws the power iteration's vectors from the local generator.
    """
    for m in list(module.modules()):
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            _spectral_norm(m)
    return module


def derived_seed(*key: int) -> int:
    """A 63-bit seed derived from integers, for seeding local (e.g. dropout) generators."""
    return int(np.random.SeedSequence(list(key)).generate_state(1, np.uint64)[0] >> np.uint64(1))


def set_dropout_generator(model: nn.Module, generator: torch.Generator | None) -> None:
    """Make every `GeneratorDropout` in `model` draw from `generator`."""
    for m in model.modules():
        if isinstance(m, GeneratorDropout):
            m.generator = generator


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters())
