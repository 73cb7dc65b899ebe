"""Training the mode-seeking Pix2Pix GAN on patches held in memory: `train`.

`train` builds the model step (`wsi_aug.gan.step`), resumes it from a checkpoint if asked, and
runs the epoch loop (`wsi_aug.gan.loop`), which writes checkpoints, sample grids and the loss log
to an output folder. It knows nothing of stores or caching: the `train-gan` stage around it does.
Under ``torchrun`` the caller joins the process group first (`wsi_aug.gan.ddp.setup`) and passes
rank and world size; only rank 0 gets an output folder.

The bottom of this file is the stage itself (``<work>/gan.zarr``, cached and resumable) until it
moves to `wsi_aug.stages.train_gan`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch

from wsi_aug.device import resolve_device
from wsi_aug.errors import WsiAugError
from wsi_aug.gan.checkpoints import load_checkpoint
from wsi_aug.gan.data import GanData, GanDataset, PairSampler
from wsi_aug.gan.loop import run_epochs
from wsi_aug.gan.models import GanConfig
from wsi_aug.gan.step import GanStep, weights_fingerprint

log = logging.getLogger("wsi_aug.gan")

GanTrainer = GanStep  # the name callers used before the split
__all__ = ["GanStep", "GanTrainer", "check_options", "train", "weights_fingerprint"]


def check_options(*, epochs: int, checkpoint_every: int, max_steps: int | None, seed: int) -> None:
    """Raise `WsiAugError` for counts below 1 or a negative seed."""
    if epochs < 1 or checkpoint_every < 1 or (max_steps is not None and max_steps < 1):
        raise WsiAugError("--epochs, --checkpoint-every and --max-steps must be at least 1")
    if seed < 0:
        raise WsiAugError(f"--seed {seed}: must be 0 or more")


def train(
    cfg: GanConfig,
    data: GanData,
    val: GanData,
    out: Path | None,
    *,
    epochs: int,
    max_steps: int | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    rank: int = 0,
    world_size: int = 1,
    fast: bool | None = None,
    checkpoint_every: int = 1,
    progress: bool = False,
    resume_from: Path | None = None,
    on_start: Callable[[GanStep], None] | None = None,
) -> GanStep:
    """Train on `data` until `epochs` (or `max_steps` in all); returns the trained step.

    `out` receives ``checkpoints/``, ``samples/`` (grids of `val`'s conditions) and
    ``losses.csv``; None (ranks other than 0) writes nothing. `fast` (None: on CUDA) is the
    CUDA-graph step; ignored elsewhere. `resume_from` continues exactly from a checkpoint.
    `on_start(step)` runs once the step is built and resumed, before the first update (the
    stage records the step's `fast`/`amp` there). Under DDP every rank calls this together.
    """
    check_options(epochs=epochs, checkpoint_every=checkpoint_every, max_steps=max_steps, seed=seed)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    sampler = PairSampler(len(data), seed)
    sampler.epoch_steps(0, cfg.pairs_per_step, rank, world_size)  # fails early if too few
    use_fast = dev.type == "cuda" if fast is None else fast
    if use_fast and dev.type != "cuda":
        log.info("--fast is ignored on %s: the CUDA-graph step needs CUDA; training eagerly", dev)
    elif use_fast and world_size > 1:
        log.info("--fast is not used with %d processes (DDP); training eagerly", world_size)
    step = GanStep(cfg, device=dev, seed=seed, fast=use_fast, rank=rank, world_size=world_size)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if resume_from is not None:
        step.load(load_checkpoint(resume_from))
        log.info("resuming from %s (epoch %d, step %d)", resume_from, step.epoch, step.step)
    if on_start is not None:
        on_start(step)
    run_epochs(
        step,
        GanDataset(data, cfg.no_structure),
        sampler,
        val,
        out,
        epochs=epochs,
        max_steps=max_steps,
        checkpoint_every=checkpoint_every,
        progress=progress,
    )
    return step
