"""The segmentation U-Net, in the style of Lampert et al. 2019 (after Ronneberger et al. 2015).

Depth 5 (four poolings), ``64 * 2**i`` filters at level ``i`` (scaled by ``width`` so tests can run
a tiny one), two 3x3 convolutions with ReLU per level, 2x2 max pooling, 2x2 transposed-convolution
upsampling, skip concatenation, two output classes and no batch normalisation unless asked for.

``padding="same"`` keeps the output the size of the input (inputs whose size is not a multiple of
``2**(depth-1)`` are reflect-padded and the output cropped back). ``padding="valid"`` is the
original unpadded U-Net: skips are centre-cropped and the output is smaller than the input
(`UNet.output_size`); targets must be centre-cropped to match (`center_crop`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wsi_aug.errors import CheckpointError

PADDINGS = ("same", "valid")


def base_filters(width: float) -> int:
    """Filters at the first level: ``64 * width`` rounded, at least 1 (width 1/16 gives 4)."""
    return max(1, round(64 * width))


def center_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The centre ``size`` window of the last two axes (the valid U-Net's skip/target crop)."""
    h, w = x.shape[-2:]
    top, left = (h - size[0]) // 2, (w - size[1]) // 2
    return x[..., top : top + size[0], left : left + size[1]]


def to_unit(images: np.ndarray | torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (N, H, W, 3) images as float (N, 3, H, W) in [0, 1] on ``device`` (for augmenting)."""
    if isinstance(images, torch.Tensor):
        t = images
    else:
        t = torch.from_numpy(np.ascontiguousarray(images))
    return t.to(device).permute(0, 3, 1, 2).float() / 255.0


def normalize(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] images as the network's input, centred on zero; one place so all callers agree."""
    return x * 2.0 - 1.0


def to_input(images: np.ndarray | torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (N, H, W, 3) images as the network's float input (N, 3, H, W)."""
    return normalize(to_unit(images, device))


def output_size(size: int, depth: int = 5, padding: str = "same") -> int:
    """The U-Net's output side for an input side ``size`` (<= 0: too small for 'valid')."""
    if padding == "same":
        return size
    s = size
    for _ in range(depth - 1):
        s = (s - 4) // 2
    s -= 4
    for _ in range(depth - 1):
        s = s * 2 - 4
    return s


class _DoubleConv(nn.Sequential):
    """Two 3x3 convolutions with ReLU (and batch norm when asked)."""

    def __init__(self, cin: int, cout: int, *, pad: int, batch_norm: bool) -> None:
        layers: list[nn.Module] = []
        for c in (cin, cout):
            layers.append(nn.Conv2d(c, cout, 3, padding=pad, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class UNet(nn.Module):
    """A U-Net for two-class (background / glomerulus) segmentation; returns logits (N, 2, h, w)."""

    def __init__(
        self,
        in_channels: int = 3,
        n_classes: int = 2,
        *,
        depth: int = 5,
        width: float = 1.0,
        batch_norm: bool = False,
        padding: str = "same",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, not {padding!r}")
        if depth < 1:
            raise ValueError("depth must be at least 1")
        self.config = {
            "in_channels": in_channels,
            "n_classes": n_classes,
            "depth": depth,
            "width": float(width),
            "batch_norm": bool(batch_norm),
            "padding": padding,
        }
        self.depth = depth
        self.padding = padding
        pad = 1 if padding == "same" else 0
        filters = [base_filters(width) * 2**i for i in range(depth)]
        self.down = nn.ModuleList()
        cin = in_channels
        for f in filters:
            self.down.append(_DoubleConv(cin, f, pad=pad, batch_norm=batch_norm))
            cin = f
        self.up = nn.ModuleList()
        self.up_conv = nn.ModuleList()
        for f in reversed(filters[:-1]):
            self.up.append(nn.ConvTranspose2d(f * 2, f, 2, stride=2))
            self.up_conv.append(_DoubleConv(f * 2, f, pad=pad, batch_norm=batch_norm))
        self.head = nn.Conv2d(filters[0], n_classes, 1)
        self.reset_parameters(generator)

    @property
    def multiple(self) -> int:
        """The input size a 'same' U-Net needs to be a multiple of."""
        return 2 ** (self.depth - 1)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """He initialisation from a local generator: reproducible runs without global seeds."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu", generator=generator)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def output_size(self, size: int) -> int:
        """The output side length for an input side ``size`` (<= 0: input too small)."""
        return output_size(size, self.depth, self.padding)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The bottleneck features and the skips (top level first)."""
        skips: list[torch.Tensor] = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < self.depth - 1:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        return x, skips

    def bottleneck_features(self, x: torch.Tensor) -> torch.Tensor:
        """Globally average-pooled bottleneck features (N, C), for the Fréchet distance."""
        if self.padding == "same":
            x = self._pad_to_multiple(x)[0]
        return self.encode(x)[0].mean(dim=(2, 3))

    def _pad_to_multiple(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        h, w = x.shape[-2:]
        m = self.multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), mode=mode)
        return x, (h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        if self.padding == "same":
            x, _ = self._pad_to_multiple(x)
        elif min(self.output_size(size[0]), self.output_size(size[1])) <= 0:
            raise ValueError(
                f"input {tuple(size)} too small for a depth-{self.depth} valid U-Net; "
                "use padding='same' or larger patches"
            )
        x, skips = self.encode(x)
        for up, conv, skip in zip(self.up, self.up_conv, reversed(skips)):
            x = up(x)
            x = conv(torch.cat([center_crop(skip, (x.shape[-2], x.shape[-1])), x], dim=1))
        x = self.head(x)
        if self.padding == "same" and x.shape[-2:] != size:
            x = center_crop(x, (size[0], size[1]))
        return x


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def save_unet(model: UNet, path: str | Path, extra: dict[str, str] | None = None) -> Path:
    """Save weights as safetensors, with the architecture in the metadata so it reloads alone."""
    from safetensors.torch import save_file

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": "wsi-aug-unet", "config": json.dumps(model.config), **(extra or {})}
    save_file(state, str(out), metadata=meta)
    return out


def load_unet(path: str | Path, device: torch.device | str = "cpu") -> UNet:
    """Load a U-Net saved by `save_unet`; a foreign or damaged file is a `CheckpointError`."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    p = Path(path)
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(p))
        if meta.get("format") != "wsi-aug-unet":
            raise ValueError("not a wsi-aug U-Net checkpoint")
        model = UNet(**json.loads(meta["config"]))
        model.load_state_dict(state)
    except Exception as exc:
        raise CheckpointError(
            f"{p}: cannot load the U-Net ({exc}); delete it and rerun with --force"
        ) from exc
    return model.to(device)
