"""The epoch loop of GAN training and its writers: checkpoints, sample grids, the loss log.

Every rank runs `run_epochs`; only the one given an output folder (rank 0) writes files:
``checkpoints/`` (`wsi_aug.gan.checkpoints`), ``samples/epoch-NNNN.png``, ``losses.csv`` (and
TensorBoard when it is installed). Losses are read from the device every `FLUSH_EVERY` steps,
so the loop does not synchronise with the GPU on every step.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from wsi_aug.gan.data import (
    GanData,
    GanDataset,
    PairSampler,
    condition_array,
    make_batch,
    to_uint8_image,
)
from wsi_aug.gan.step import GanStep

LOSS_COLUMNS = ("step", "epoch", "d_loss", "g_adv", "g_l1", "g_ms", "it/s")
FLUSH_EVERY = 25  # steps between reads of the losses from the device


class LossLog:
    """``losses.csv`` (appended; cut back to a resumed step) and TensorBoard when importable."""

    def __init__(self, folder: Path, resume_step: int) -> None:
        self.path = folder / "losses.csv"
        rows: list[list[str]] = []
        if self.path.is_file() and resume_step > 0:
            with self.path.open(newline="") as f:
                rows = [r for r in csv.reader(f)][1:]
            rows = [r for r in rows if r and int(r[0]) <= resume_step]
        with self.path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(LOSS_COLUMNS)
            w.writerows(rows)
        self.tb: Any = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(folder / "tensorboard"), purge_step=resume_step or None)
        except Exception:  # tensorboard not installed: the CSV is the log
            self.tb = None

    def write(self, rows: list[tuple[Any, ...]]) -> None:
        """Append rows (step, epoch, d, adv, l1, ms, it/s)."""
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerows(rows)
        if self.tb is not None:
            for step, _, d, adv, l1, ms, its in rows:
                for name, v in (
                    ("d_loss", d),
                    ("g_adv", adv),
                    ("g_l1", l1),
                    ("g_ms", ms),
                    ("it_per_s", its),
                ):
                    self.tb.add_scalar(f"train/{name}", float(v), int(step))

    def close(self) -> None:
        """Close TensorBoard's writer."""
        if self.tb is not None:
            self.tb.close()


def sample_grid(step: GanStep, val: GanData, folder: Path, epoch: int) -> None:
    """``samples/epoch-NNNN.png``: fixed conditions (mask, structure), generated and real patch."""
    if not len(val):
        return
    x = torch.from_numpy(condition_array(val.masks, val.maps, step.cfg.no_structure))
    fake = to_uint8_image(step.generate(x))
    rows = [[val.masks[i], val.maps[i], fake[i], val.images[i]] for i in range(len(val))]
    from wsi_aug.figures import save_grid

    save_grid(
        rows,
        folder / "samples" / f"epoch-{epoch:04d}.png",
        column_titles=["mask", "structure", "generated", "real"],
        title=f"epoch {epoch}, step {step.step}",
    )


class _Pending:
    """Losses of the steps since the last flush: to the loss log and the progress bar with it/s."""

    def __init__(self, bar: Any, losses: LossLog | None) -> None:
        self.bar = bar
        self.losses = losses
        self.items: list[tuple[int, int, torch.Tensor]] = []
        self.clock = time.perf_counter()

    def add(self, step: int, epoch: int, result: torch.Tensor) -> None:
        """Keep a step's losses (a device tensor); flush every `FLUSH_EVERY` steps."""
        self.items.append((step, epoch, result))
        if len(self.items) >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        """Read the kept losses from the device at once and write them out."""
        if not self.items:
            return
        values = torch.stack([t for _, _, t in self.items]).cpu().tolist()  # one sync per flush
        now = time.perf_counter()
        rate = len(self.items) / max(now - self.clock, 1e-9)
        self.clock = now
        rows = [
            (s, e, *(f"{v:.6g}" for v in vals), f"{rate:.4g}")
            for (s, e, _), vals in zip(self.items, values)
        ]
        self.items.clear()
        d, adv, l1, ms = values[-1]
        self.bar.set_postfix(d=f"{d:.3f}", adv=f"{adv:.3f}", l1=f"{l1:.3f}", ms=f"{ms:.3f}")
        if self.losses is not None:
            self.losses.write(rows)

    def restart_clock(self) -> None:
        """Start timing afresh (it/s counts training steps only, not samples or checkpoints)."""
        self.clock = time.perf_counter()


def run_epochs(
    step: GanStep,
    dataset: GanDataset,
    sampler: PairSampler,
    val: GanData,
    out: Path | None,
    *,
    epochs: int,
    max_steps: int | None,
    checkpoint_every: int,
    progress: bool,
) -> None:
    """Train until `epochs` (or `max_steps`), logging, drawing samples and checkpointing.

    Continues from the step's counters (a resumed step starts mid-epoch). Every rank runs this;
    only the one given `out` (rank 0) writes files.
    """
    k, rank, world = step.cfg.pairs_per_step, step.rank, step.world_size
    per_epoch = len(sampler.epoch_steps(0, k, rank, world))
    total = epochs * per_epoch if max_steps is None else min(epochs * per_epoch, max_steps)
    losses = LossLog(out, step.step) if out is not None else None
    bar = tqdm(
        total=total,
        initial=min(step.step, total),
        unit="step",
        desc="train-gan",
        disable=not progress or out is None,
        dynamic_ncols=True,
    )
    pending = _Pending(bar, losses)
    saved_at = step.step if step.step else -1

    def checkpoint(name: str) -> int:
        states = step.numpy_states()  # a collective under DDP: every rank calls it
        if out is not None:
            step.save(out / "checkpoints" / f"{name}.safetensors", states)
        return step.step

    stopped = False
    try:
        while step.epoch < epochs and not stopped:
            for pairs in sampler.epoch_steps(step.epoch, k, rank, world)[step.epoch_step :]:
                if max_steps is not None and step.step >= max_steps:
                    stopped = True
                    break
                x, y = make_batch(dataset, pairs, step.np_rng)
                result = step.train_step(x, y)
                step.step += 1
                step.epoch_step += 1
                bar.update(1)
                pending.add(step.step, step.epoch, result)
            if stopped:
                break
            step.epoch += 1
            step.epoch_step = 0
            pending.flush()
            if out is not None:
                sample_grid(step, val, out, step.epoch)
            if step.epoch % checkpoint_every == 0 or step.epoch == epochs:
                saved_at = checkpoint(f"epoch-{step.epoch:04d}")
            pending.restart_clock()
        pending.flush()
        if saved_at != step.step:
            checkpoint(f"step-{step.step:08d}")
    finally:
        bar.close()
        if losses is not None:
            losses.close()
