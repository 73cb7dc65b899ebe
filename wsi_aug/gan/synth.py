"""Running a trained generator on batches of conditions: what the synthesize stage calls.

The generator runs in eval mode (running batch-norm statistics), with bf16 autocast and
channels_last on CUDA; on the CPU the same inputs give identical arrays. With a dropout seed, the
decoder's dropout stays on (Pix2Pix's test-time noise) with masks drawn from a generator seeded
from it, so one condition gives several images, still deterministic.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch

from wsi_aug.errors import WsiAugError
from wsi_aug.gan.checkpoints import load_generator
from wsi_aug.gan.data import condition_array, to_uint8_image
from wsi_aug.gan.models import GanConfig, GeneratorDropout, derived_seed, set_dropout_generator


class Generation:
    """A checkpoint's generator, ready to turn (mask, structure) batches into uint8 images."""

    def __init__(
        self,
        checkpoint: Path,
        cfg: GanConfig,
        device: torch.device,
        *,
        dropout_seed: int | None = None,
    ) -> None:
        generator, _ = load_generator(checkpoint, expected=cfg, device=device)
        if dropout_seed is not None:
            layers = [m for m in generator.modules() if isinstance(m, GeneratorDropout)]
            if not layers:
                raise WsiAugError(
                    f"{checkpoint}: this generator has no dropout layers (its config sets "
                    "dropout = 0); synthesize without --dropout"
                )
            for m in layers:
                m.train()  # batch norm stays in eval mode: running statistics
            noise = torch.Generator(device=device)
            noise.manual_seed(derived_seed(dropout_seed, 3))
            set_dropout_generator(generator, noise)
            self._noise = noise
        self.cuda = device.type == "cuda"
        if self.cuda:
            # the stubs of Module.to lack its memory_format keyword
            generator = generator.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.generator = generator
        self.device = device
        self.no_structure = cfg.no_structure

    def __call__(self, masks: np.ndarray, structure: np.ndarray) -> np.ndarray:
        """uint8 (N, S, S, 3) images for {0, 1} masks and structure maps (N, S, S)."""
        x = torch.from_numpy(condition_array(masks, structure, self.no_structure)).to(self.device)
        if self.cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16) if self.cuda else contextlib.nullcontext()
        )
        with torch.no_grad(), autocast:
            y = self.generator(x)
        return to_uint8_image(y)
