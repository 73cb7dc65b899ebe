"""The mode-seeking Pix2Pix GAN: models, losses, data, checkpoints and training.

Training is split by job: `step` (G, D, optimisers, one update), `graph` (its CUDA-graph replay),
`ddp` (process group, DDP wrapping), `loop` (epochs, checkpoints, samples, loss log) and `train`
(the entry that ties them). Import the submodules for the functions; this package's top level
re-exports the main names lazily so that importing it stays cheap.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "GanConfig": "wsi_aug.gan.models",
    "build_generator": "wsi_aug.gan.models",
    "build_discriminator": "wsi_aug.gan.models",
    "count_parameters": "wsi_aug.gan.models",
    "GanStep": "wsi_aug.gan.step",
    "GanTrainer": "wsi_aug.gan.train",
    "run_ddp_check": "wsi_aug.gan.ddp",
    "load_checkpoint": "wsi_aug.gan.checkpoints",
    "load_generator": "wsi_aug.gan.checkpoints",
    "save_checkpoint": "wsi_aug.gan.checkpoints",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'wsi_aug.gan' has no attribute {name!r}")
