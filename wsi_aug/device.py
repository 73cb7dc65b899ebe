"""Choosing the torch device: CUDA when present, the CPU otherwise."""

from __future__ import annotations

import torch

from wsi_aug.errors import WsiAugError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` gives ``cuda`` when available, else ``cpu``; an unavailable CUDA is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise WsiAugError(
            f"--device {name}: not a torch device ({exc}); use auto, cpu or cuda"
        ) from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise WsiAugError(f"--device {name}: CUDA is not available here; use --device cpu")
    return device
