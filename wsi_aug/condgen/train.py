"""Training the condition model on the real conditions held in memory: `train`.

Every step draws a batch of train conditions, each given one of the 8 dihedral symmetries, a time
and Gaussian noise; the loss is the MSE of the predicted v. All randomness of step n comes from
generators seeded from (seed, n) alone, so a run resumed from a checkpoint continues exactly as
it would have gone on. An area-conditioned model (`CondGenConfig.area_condition`) is told each
condition's mask area, and its checkpoints keep the training areas that samples draw from. Adam
with a linear warm-up; the EMA weights (what samples are drawn
with) are updated after every step. On CUDA the forward pass runs under bf16 autocast.

`out` receives ``checkpoints/step-NNNNNNNN.safetensors`` (+ ``latest``), ``samples/
step-NNNNNNNN.png`` (EMA samples beside real conditions) and ``losses.csv``. It knows nothing of
stores: the ``train-conditions`` stage wraps it.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch

from wsi_aug.condgen import checkpoints
from wsi_aug.condgen.diffusion import noisy
from wsi_aug.condgen.model import CondGenConfig, build_model, make_ema, mask_areas
from wsi_aug.conditions import sample_seed
from wsi_aug.errors import WsiAugError
from wsi_aug.imaging import DIHEDRAL, dihedral

log = logging.getLogger(__name__)

LOSS_COLUMNS = ("step", "loss", "lr", "it/s")
WARMUP = 200  # steps of linear learning-rate warm-up
LrSchedule = Literal["constant", "cosine"]  # after the warm-up
LR_SCHEDULES: tuple[str, ...] = get_args(LrSchedule)
GRID = 6  # samples (and real conditions) in a sample grid


@dataclass
class TrainResult:
    """What a run did: its last step, the losses of the steps it ran, its checkpoint."""

    step: int
    losses: list[float] = field(default_factory=list)
    checkpoint: Path | None = None
    seconds: float = 0.0  # the whole run, sample grids and checkpoints included
    step_seconds: float = 0.0  # in training steps alone

    @property
    def rate(self) -> float:
        """Training steps per second of this run (0 when nothing ran)."""
        return len(self.losses) / self.step_seconds if self.step_seconds > 0 else 0.0


def conditions_tensor(masks: np.ndarray, maps: np.ndarray, smooth: float = 0.0) -> np.ndarray:
    """(N, 2, S, S) float32 in [-1, 1] from {0, 1} masks and structure maps (N, S, S).

    With `smooth` > 0 each channel is blurred with a Gaussian of that sigma (px) first: the
    targets keep their shapes under the threshold at 0 but lose the pixel-level steps, which a
    small model otherwise spends its capacity on and reproduces as salt-and-pepper noise.
    """
    x = np.stack([masks, maps], axis=1).astype(np.float32)
    if smooth > 0:
        from scipy.ndimage import gaussian_filter

        x = gaussian_filter(x, sigma=(0, 0, smooth, smooth), mode="nearest")
    return x * 2.0 - 1.0


def step_batch(
    data: np.ndarray, batch_size: int, seed: int, step: int
) -> tuple[np.ndarray, np.ndarray]:
    """Step `step`'s batch: random conditions, each under a random dihedral symmetry, and the
    indices into `data` they were drawn from (for what is told about each, e.g. its area)."""
    rng = np.random.default_rng([seed, step])
    idx = rng.integers(len(data), size=batch_size)
    sym = rng.integers(len(DIHEDRAL), size=batch_size)
    return np.stack([dihedral(data[i], *DIHEDRAL[s]) for i, s in zip(idx, sym)]), idx


def _lr(base: float, step: int, steps: int, schedule: LrSchedule = "constant") -> float:
    """The learning rate of `step` (0-based) of `steps`: linear warm-up, then constant, or a
    cosine decay from `base` to 0 at the last step."""
    warm = base * min(1.0, (step + 1) / WARMUP)
    if schedule == "constant" or step < WARMUP:
        return warm
    span = max(1, steps - WARMUP)
    return base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - WARMUP) / span)))


def train(
    cfg: CondGenConfig,
    masks: np.ndarray,
    maps: np.ndarray,
    out: Path | None,
    *,
    steps: int,
    batch_size: int = 16,
    lr: float = 5e-4,
    lr_schedule: LrSchedule = "constant",
    seed: int = 0,
    device: torch.device | str = "cpu",
    sample_every: int = 500,
    checkpoint_every: int = 500,
    sample_steps: int = 50,
    progress: bool = False,
    resume_from: Path | None = None,
) -> TrainResult:
    """Train for `steps` steps in total (a resumed run continues to that count)."""
    if len(masks) == 0:
        raise WsiAugError("train-conditions: no train condition to learn from")
    dev = torch.device(device)
    data = conditions_tensor(masks, maps, cfg.smooth)
    areas = mask_areas(masks) if cfg.area_condition else None
    with torch.random.fork_rng(devices=[]):  # the initial weights from the seed, globals kept
        torch.manual_seed(seed)
        model = build_model(cfg).to(dev)
    ema = make_ema(model, cfg.ema_decay)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    start = 0
    if resume_from is not None:
        ck = checkpoints.load(resume_from)
        checkpoints.check_config(ck.path, ck.config, cfg)
        checkpoints.load_into(model, ck.model, ck.path, "weights")
        checkpoints.load_into(ema.module, ck.ema, ck.path, "EMA weights")
        ema.n_averaged.fill_(ck.ema_count)
        if ck.opt is not None:
            opt.load_state_dict(ck.opt)
        start = ck.step
        log.info("train-conditions: continuing from %s (step %d)", ck.path.name, start)
    result = TrainResult(step=start)
    if start >= steps:
        result.checkpoint = resume_from
        return result
    losses = _LossLog(out, start) if out is not None else None
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if dev.type == "cuda"
        else contextlib.nullcontext()
    )
    from tqdm.auto import tqdm

    bar = tqdm(
        total=steps,
        initial=start,
        unit="step",
        desc="train-conditions",
        disable=not progress,
        dynamic_ncols=True,
    )
    began = time.perf_counter()
    busy = 0.0  # seconds in training steps since the last flush (not samples or checkpoints)
    pending: list[tuple[int, float, float]] = []
    model.train()
    try:
        for step in range(start, steps):
            tick = time.perf_counter()
            batch, idx = step_batch(data, batch_size, seed, step)
            x0 = torch.from_numpy(batch).to(dev)
            area = None if areas is None else torch.from_numpy(areas[idx]).to(dev)
            g = torch.Generator().manual_seed(sample_seed(seed, step))
            noise = torch.randn(x0.shape, generator=g).to(dev)
            t = torch.rand(len(x0), generator=g).to(dev)
            xt, target = noisy(x0, t, noise)
            for group in opt.param_groups:
                group["lr"] = _lr(lr, step, steps, lr_schedule)
            with autocast:
                pred = model(xt, t, area)
            loss = torch.mean((pred.float() - target) ** 2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ema.update_parameters(model)
            value = float(loss.detach())
            took = time.perf_counter() - tick
            busy += took
            result.step_seconds += took
            result.losses.append(value)
            result.step = step + 1
            pending.append((step + 1, value, _lr(lr, step, steps, lr_schedule)))
            bar.update(1)
            done = step + 1
            saving = out is not None and (done % checkpoint_every == 0 or done == steps)
            if pending and (done % 25 == 0 or done == steps or saving):  # the log keeps up
                rate = len(pending) / max(busy, 1e-9)
                busy = 0.0
                bar.set_postfix(loss=f"{np.mean([v for _, v, _ in pending]):.4f}")
                if losses is not None:
                    losses.write(
                        [(s, f"{v:.6g}", f"{r:.3g}", f"{rate:.4g}") for s, v, r in pending]
                    )
                pending.clear()
            if out is not None and (done % sample_every == 0 or done == steps):
                _sample_grid(ema.module, cfg, data, areas, out, done, seed, sample_steps, dev)
            if saving:
                assert out is not None
                result.checkpoint = _save(out, cfg, model, ema, opt, done, seed, areas)
    finally:
        bar.close()
    result.seconds = time.perf_counter() - began
    return result


def _save(
    out: Path,
    cfg: CondGenConfig,
    model: torch.nn.Module,
    ema: torch.nn.Module,
    opt: torch.optim.Optimizer,
    step: int,
    seed: int,
    areas: np.ndarray | None = None,
) -> Path:
    path = out / "checkpoints" / f"step-{step:08d}.safetensors"
    return checkpoints.save(
        path,
        config=cfg,
        model=model,
        ema=ema,
        step=step,
        opt=opt,
        extra={"seed": seed},
        areas=None if areas is None else torch.from_numpy(areas),
    )


def _sample_grid(
    model: torch.nn.Module,
    cfg: CondGenConfig,
    data: np.ndarray,
    areas: np.ndarray | None,
    out: Path,
    step: int,
    seed: int,
    sample_steps: int,
    device: torch.device,
) -> None:
    """``samples/step-NNNNNNNN.png``: EMA samples (mask, structure) beside real conditions."""
    from wsi_aug.condgen.sample import draw
    from wsi_aug.figures import save_grid

    was = model.training
    model.eval()
    masks, maps = draw(
        model,
        [sample_seed(seed + 1, i) for i in range(GRID)],
        data.shape[-1],
        steps=sample_steps,
        device=device,
        area_pool=areas,
        **cfg.postprocessing(),
    )
    model.train(was)
    real = (data[: min(GRID, len(data))] > 0).astype(np.uint8)  # smoothing keeps the 0 level
    rows = []
    for i in range(GRID):
        row = [masks[i], maps[i]]
        if i < len(real):
            row += [real[i, 0], real[i, 1]]
        rows.append(row)
    save_grid(
        rows,
        out / "samples" / f"step-{step:08d}.png",
        column_titles=["sample mask", "sample structure", "real mask", "real structure"],
        title=f"step {step}",
    )


class _LossLog:
    """``losses.csv``: appended; cut back to the resumed step."""

    def __init__(self, folder: Path, resume_step: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "losses.csv"
        rows: list[list[str]] = []
        if self.path.is_file() and resume_step > 0:
            with self.path.open(newline="") as f:
                rows = [r for r in list(csv.reader(f))[1:] if r and int(r[0]) <= resume_step]
        with self.path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(LOSS_COLUMNS)
            w.writerows(rows)

    def write(self, rows: list[tuple[object, ...]]) -> None:
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerows(rows)
