"""Training the mode-seeking Pix2Pix GAN: the `gan` stage (``<work>/gan.zarr``).

One step takes K pairs of different conditions (batch 2K, laid out [firsts..., seconds...]):
G forward; D step on (real, G(x) detached) with BCE-with-logits; G step on
adversarial + λ·L1 + μ·L_ms through the updated D. D sees the image alone unless ``d_conditional``.

On CUDA the step runs under bf16 autocast with channels_last tensors, and by default (``fast``) the
whole step (G forward, D step, G step, both capturable-Adam updates) is captured once as a CUDA
graph and replayed: static input tensors are filled before each replay, augmentation stays outside
the graph, and dropout draws from a generator registered with the graph, so replays are the same
computation as the eager step. The CPU never takes that path.

Under ``torchrun`` (WORLD_SIZE > 1) a process group is set up (NCCL on CUDA, gloo on the CPU),
G and D are wrapped in DistributedDataParallel, a DistributedSampler shares the pairs out, and
only rank 0 writes the store, checkpoints, sample grids and the loss log.

The store is built resumably: checkpoints live in the partial folder until training finishes, so
``resume=True`` continues an interrupted run exactly; it also continues a finished run whose
other parameters match when more epochs are asked.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from wsi_aug import store
from wsi_aug.device import resolve_device
from wsi_aug.errors import WsiAugError
from wsi_aug.gan.checkpoints import (
    Checkpoint,
    check_architecture,
    latest_checkpoint,
    load_checkpoint,
    load_optimizer,
    load_state,
    save_checkpoint,
)
from wsi_aug.gan.data import (
    GanData,
    GanDataset,
    PairSampler,
    condition_array,
    input_fingerprints,
    load_gan_data,
    make_batch,
    open_inputs,
    to_uint8_image,
)
from wsi_aug.gan.losses import discriminator_loss, generator_losses
from wsi_aug.gan.models import (
    GanConfig,
    build_discriminator,
    build_generator,
    derived_seed,
    set_dropout_generator,
)

log = logging.getLogger("wsi_aug.gan")

STAGE = "gan"
MADE_BY = "wsi-aug train-gan"
LOSS_COLUMNS = ("step", "epoch", "d_loss", "g_adv", "g_l1", "g_ms", "it/s")
GRAPH_WARMUP = 3  # eager steps (real training steps) before the CUDA graph is captured
FLUSH_EVERY = 25  # steps between reads of the losses from the device


class GanTrainer:
    """The networks, optimisers, random generators and counters of one training process.

    ``amp``: bf16 autocast (default: on for CUDA; never on the CPU). ``fast``: the CUDA-graph step
    (honoured on CUDA in a single process only). ``world_size > 1`` wraps G and D in DDP (the
    process group must exist). All random state is local: the weights are initialised from a
    CPU generator seeded with `seed` (the same on every rank), dropout draws from a device
    generator and augmentation from a numpy generator, both derived from (seed, rank).
    """

    def __init__(
        self,
        cfg: GanConfig,
        *,
        device: torch.device | str = "cpu",
        seed: int = 0,
        amp: bool | None = None,
        fast: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        cuda = self.device.type == "cuda"
        self.amp = cuda if amp is None else bool(amp) and cuda
        self.fast = bool(fast) and cuda and world_size == 1
        init = torch.Generator().manual_seed(seed)
        self.G = build_generator(cfg, init).to(self.device)
        self.D = build_discriminator(cfg, init).to(self.device)
        if cuda:
            self.G = self.G.to(memory_format=torch.channels_last)
            self.D = self.D.to(memory_format=torch.channels_last)
        self.dropout_rng = torch.Generator(device=self.device)
        self.dropout_rng.manual_seed(derived_seed(seed, rank, 1))
        set_dropout_generator(self.G, self.dropout_rng)
        self.np_rng = np.random.default_rng([seed, rank, 2])
        betas = (cfg.beta1, cfg.beta2)
        self.opt_g = torch.optim.Adam(
            self.G.parameters(), lr=cfg.lr, betas=betas, capturable=self.fast
        )
        self.opt_d = torch.optim.Adam(
            self.D.parameters(), lr=cfg.lr, betas=betas, capturable=self.fast
        )
        self.g_net: nn.Module = self.G
        self.d_net: nn.Module = self.D
        if world_size > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if cuda else None
            self.g_net = DDP(self.G, device_ids=ids)
            self.d_net = DDP(self.D, device_ids=ids)
        self.step = 0
        self.epoch = 0
        self.epoch_step = 0
        self._graph: Any = None
        self._static: dict[str, torch.Tensor] = {}
        self._side_stream: Any = None
        self._warmup_left = GRAPH_WARMUP

    # -- one step ---------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        # cache_enabled=False: autocast's weight cache must not outlive a CUDA-graph capture.
        return torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.amp, cache_enabled=False
        )

    def _d_input(self, x: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.to(img.dtype), img], 1) if self.cfg.d_conditional else img

    def _step_impl(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One training step on device tensors; returns [d_loss, g_adv, g_l1, g_ms] (detached).

        Free of host synchronisation and value-dependent branches so it can be graph-captured.
        """
        cfg = self.cfg
        with self._autocast():
            fake = self.g_net(x)
        # D step: real patches vs. detached fakes, through the DDP wrapper (gradient all-reduce).
        for p in self.D.parameters():
            p.requires_grad_(True)
        self.opt_d.zero_grad(set_to_none=True)
        with self._autocast():
            d_real = self.d_net(self._d_input(x, y))
            d_fake = self.d_net(self._d_input(x, fake.detach()))
        d_loss = discriminator_loss(d_real, d_fake)
        d_loss.backward()
        self.opt_d.step()
        # G step through the updated D; D's weights are frozen and D is called unwrapped so that
        # DDP expects no gradient for it.
        for p in self.D.parameters():
            p.requires_grad_(False)
        self.opt_g.zero_grad(set_to_none=True)
        with self._autocast():
            d_fake_g = self.D(self._d_input(x, fake))
        total, adv, l1, ms = generator_losses(
            d_fake_g,
            fake,
            y,
            x,
            l1_weight=cfg.l1_weight,
            ms_weight=cfg.ms_weight,
            ms_eps=cfg.ms_eps,
        )
        total.backward()
        self.opt_g.step()
        for p in self.D.parameters():
            p.requires_grad_(True)
        return torch.stack([d_loss.detach(), adv.detach(), l1.detach(), ms.detach()])

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        t = t.to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            t = t.contiguous(memory_format=torch.channels_last)
        return t

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One step on a (condition, image) batch; returns the 4 losses as a device tensor."""
        self.G.train()
        self.D.train()
        x, y = self._to_device(x), self._to_device(y)
        if self.fast:
            return self._graph_step(x, y)
        return self._step_impl(x, y)

    def _graph_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The CUDA-graph step: warm up eagerly on a side stream, capture once, then replay."""
        if not self._static:
            self._static = {"x": torch.empty_like(x), "y": torch.empty_like(y)}
        sx, sy = self._static["x"], self._static["y"]
        sx.copy_(x)
        sy.copy_(y)
        if self._warmup_left > 0:  # real steps; they also create Adam's (capturable) state
            if self._side_stream is None:
                self._side_stream = torch.cuda.Stream(device=self.device)
            side = self._side_stream
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                out = self._step_impl(sx, sy)
            torch.cuda.current_stream(self.device).wait_stream(side)
            self._warmup_left -= 1
            return out
        if self._graph is None:
            torch.cuda.synchronize(self.device)
            graph = torch.cuda.CUDAGraph()
            if hasattr(graph, "register_generator_state"):
                graph.register_generator_state(self.dropout_rng)
            else:  # older torch: only the default CUDA generator is graph-safe
                log.info(
                    "this torch cannot register generators with a CUDA graph; dropout "
                    "draws from the default CUDA generator"
                )
                set_dropout_generator(self.G, None)
            # grads to None so the captured backward allocates them from the graph's pool
            self.opt_g.zero_grad(set_to_none=True)
            self.opt_d.zero_grad(set_to_none=True)
            try:
                with torch.cuda.graph(graph):
                    self._static["out"] = self._step_impl(sx, sy)
            except RuntimeError as exc:  # capture records only: nothing has run, so go eager
                log.warning("CUDA-graph capture failed (%s); training eagerly from here", exc)
                torch.cuda.synchronize(self.device)
                self.fast = False
                set_dropout_generator(self.G, self.dropout_rng)
                self.opt_g.zero_grad(set_to_none=True)
                self.opt_d.zero_grad(set_to_none=True)
                return self._step_impl(sx, sy)
            self._graph = graph
        self._graph.replay()  # capture records only: this replay runs the captured step
        return self._static["out"].clone()

    # -- state --------------------------------------------------------------------------------
    def numpy_states(self) -> list[dict[str, Any]]:
        """The augmentation generators' states, one per rank (a collective under DDP)."""
        state = self.np_rng.bit_generator.state
        if self.world_size > 1:
            states: list[Any] = [None] * self.world_size
            dist.all_gather_object(states, state)
            return states
        return [state]

    def save(
        self, path: Path, numpy_states: list[dict[str, Any]], extra: dict[str, Any] | None = None
    ) -> Path:
        """Write a checkpoint of everything needed to continue exactly."""
        return save_checkpoint(
            path,
            config=self.cfg,
            generator=self.G,
            discriminator=self.D,
            opt_g=self.opt_g,
            opt_d=self.opt_d,
            step=self.step,
            epoch=self.epoch,
            epoch_step=self.epoch_step,
            torch_rng=self.dropout_rng.get_state(),
            numpy_rng=numpy_states,
            extra=extra,
        )

    def load(self, ck: Checkpoint) -> None:
        """Restore weights, optimisers, counters and random states (before the first step)."""
        if self._graph is not None:
            raise RuntimeError("GanTrainer.load must come before the CUDA graph is captured")
        check_architecture(ck.path, ck.config, self.cfg, hint="training options")
        load_state(self.G, ck.generator, ck.path, "generator")
        load_state(self.D, ck.discriminator, ck.path, "discriminator")
        if ck.opt_g is None or ck.opt_d is None:
            raise WsiAugError(
                f"{ck.path}: holds no optimiser state, so training cannot resume "
                "from it; train without --resume"
            )
        load_optimizer(self.opt_g, ck.opt_g)
        load_optimizer(self.opt_d, ck.opt_d)
        self.step, self.epoch, self.epoch_step = ck.step, ck.epoch, ck.epoch_step
        current = self.dropout_rng.get_state()
        if ck.torch_rng is not None and ck.torch_rng.numel() == current.numel():
            self.dropout_rng.set_state(ck.torch_rng)
        else:
            log.info("%s: dropout generator saved on another device type; reseeded", ck.path)
            self.dropout_rng.manual_seed(derived_seed(self.seed, self.rank, 1, ck.step))
        states = ck.numpy_rng or []
        if len(states) == self.world_size:
            self.np_rng.bit_generator.state = states[self.rank]
        else:
            log.info(
                "%s: saved by %d process(es), resumed by %d; augmentation reseeded",
                ck.path,
                len(states),
                self.world_size,
            )
            self.np_rng = np.random.default_rng([self.seed, self.rank, 2, ck.step])

    def generate(self, x: torch.Tensor) -> torch.Tensor:
        """G(x) in eval mode (no dropout, running BN statistics), then back to training mode."""
        was = self.G.training
        self.G.eval()
        try:
            with torch.no_grad(), self._autocast():
                return self.G(self._to_device(x)).float()
        finally:
            self.G.train(was)


def weights_fingerprint(module: nn.Module) -> str:
    """SHA-256 of a module's parameters (names, shapes and bytes), to compare processes."""
    h = hashlib.sha256()
    for name, p in module.named_parameters():
        t = p.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


# -- distributed setup ---------------------------------------------------------------------------
@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False


def _setup(device: str) -> _Dist:
    """Resolve the device and, under torchrun (WORLD_SIZE > 1), join the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = resolve_device(device)
    if world <= 1:
        return _Dist(device=dev)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        dev = torch.device("cuda", local if dev.index is None else dev.index)
        torch.cuda.set_device(dev)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        owns = True
    return _Dist(dist.get_rank(), dist.get_world_size(), dev, owns)


def _barrier(ctx: _Dist) -> None:
    if ctx.world_size > 1:
        dist.barrier()


# -- the loss log and the sample grids --------------------------------------------------------
class _LossLog:
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
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(folder / "tensorboard"), purge_step=resume_step or None)
        except Exception:  # tensorboard not installed: the CSV is the log
            self.tb = None

    def write(self, rows: list[tuple[Any, ...]]) -> None:
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
        if self.tb is not None:
            self.tb.close()


def _sample_grid(trainer: GanTrainer, val: GanData, folder: Path, epoch: int) -> None:
    """``samples/epoch-NNNN.png``: fixed conditions (mask, structure), generated and real patch."""
    if not len(val):
        return
    x = torch.from_numpy(condition_array(val.masks, val.maps, trainer.cfg.no_structure))
    fake = to_uint8_image(trainer.generate(x))
    rows = [[val.masks[i], val.maps[i], fake[i], val.images[i]] for i in range(len(val))]
    from wsi_aug.figures import save_grid

    save_grid(
        rows,
        folder / "samples" / f"epoch-{epoch:04d}.png",
        column_titles=["mask", "structure", "generated", "real"],
        title=f"epoch {epoch}, step {trainer.step}",
    )


# -- the stage ------------------------------------------------------------------------------------
def _normalise(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _resume_source(
    wd: store.WorkDir,
    partial: Path,
    params: dict[str, Any],
    inputs: dict[str, Any],
    epochs: int,
    max_steps: int | None,
) -> Path | None:
    """The checkpoint to resume from: the partial folder's, else a compatible finished store's."""
    ck = latest_checkpoint(partial / "checkpoints")
    if ck is not None:
        return ck
    meta = store.read_meta(wd.gan)
    if not meta or not meta.get("complete") or meta.get("stage") != STAGE:
        return None
    same = {k: v for k, v in _normalise(params).items() if k not in ("epochs", "max_steps")}
    old = {k: v for k, v in (meta.get("params") or {}).items() if k not in ("epochs", "max_steps")}
    if old != same or meta.get("inputs") != _normalise(inputs):
        log.info("%s: trained with other options or inputs; not resuming from it", wd.gan)
        return None
    ck = latest_checkpoint(wd.gan / "checkpoints")
    if ck is None:
        return None
    done = load_checkpoint(ck)
    if done.epoch > epochs or (max_steps is not None and done.step > max_steps):
        log.info("%s is already past %d epoch(s); training from scratch", ck, epochs)
        return None
    return ck


def train_gan(
    work: Path,
    *,
    epochs: int,
    pairs_per_step: int = 1,
    lr: float = 2e-4,
    betas: tuple[float, float] = (0.5, 0.999),
    l1_weight: float = 10.0,
    ms_weight: float = 10.0,
    d_conditional: bool = False,
    no_structure: bool = False,
    disc: str = "paper",
    ngf: int = 64,
    ndf: int = 64,
    seed: int = 0,
    device: str = "auto",
    checkpoint_every: int = 1,
    fast: bool | None = None,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    max_steps: int | None = None,
) -> store.StageResult:
    """Train the GAN on the train split's positive patches; writes ``<work>/gan.zarr``.

    The store's attributes hold the config; inside its folder:
    ``checkpoints/epoch-NNNN.safetensors`` (+ ``latest``), ``samples/epoch-NNNN.png``,
    ``losses.csv``. Cached like every stage; ``resume`` continues an interrupted run (or a
    finished one when more epochs are asked). ``max_steps`` caps the total number of steps (a
    checkpoint is written where it stops).
    """
    result, _ = _train(
        work,
        epochs=epochs,
        pairs_per_step=pairs_per_step,
        lr=lr,
        betas=betas,
        l1_weight=l1_weight,
        ms_weight=ms_weight,
        d_conditional=d_conditional,
        no_structure=no_structure,
        disc=disc,
        ngf=ngf,
        ndf=ndf,
        seed=seed,
        device=device,
        checkpoint_every=checkpoint_every,
        fast=fast,
        resume=resume,
        force=force,
        progress=progress,
        max_steps=max_steps,
    )
    return result


def _train(
    work: Path,
    *,
    epochs: int,
    pairs_per_step: int,
    lr: float,
    betas: tuple[float, float],
    l1_weight: float,
    ms_weight: float,
    d_conditional: bool,
    no_structure: bool,
    disc: str,
    ngf: int,
    ndf: int,
    seed: int,
    device: str,
    checkpoint_every: int,
    fast: bool | None,
    resume: bool,
    force: bool,
    progress: bool,
    max_steps: int | None,
) -> tuple[store.StageResult, GanTrainer | None]:
    """`train_gan`, also returning the trainer (None when cached) for tests and benchmarks."""
    if epochs < 1 or checkpoint_every < 1 or (max_steps is not None and max_steps < 1):
        raise WsiAugError("--epochs, --checkpoint-every and --max-steps must be at least 1")
    if seed < 0:
        raise WsiAugError(f"--seed {seed}: must be 0 or more")
    work = Path(work)
    wd = store.WorkDir(work)
    ctx = _setup(device)
    try:
        patches, _ = open_inputs(work)
        size = int(patches["masks"].shape[-1])
        try:
            cfg = GanConfig(
                size=size,
                ngf=ngf,
                ndf=ndf,
                disc=disc,
                d_conditional=d_conditional,
                no_structure=no_structure,
                l1_weight=float(l1_weight),
                ms_weight=float(ms_weight),
                lr=float(lr),
                beta1=float(betas[0]),
                beta2=float(betas[1]),
                pairs_per_step=pairs_per_step,
            )
        except ValueError as exc:
            raise WsiAugError(f"{wd.patches}: {exc}") from exc
        inputs = input_fingerprints(work)
        params = {
            "config": cfg.to_dict(),
            "epochs": epochs,
            "max_steps": max_steps,
            "seed": seed,
            "world_size": ctx.world_size,
        }
        cached = store.cached_result(wd.gan, stage=STAGE, params=params, inputs=inputs, force=force)
        if cached is not None:
            return cached, None
        data = load_gan_data(work)
        sampler = PairSampler(len(data), seed)
        sampler.epoch_steps(0, pairs_per_step, ctx.rank, ctx.world_size)  # fails early if too few
        use_fast = ctx.device.type == "cuda" if fast is None else fast
        if use_fast and ctx.device.type != "cuda":
            log.info(
                "--fast is ignored on %s: the CUDA-graph step needs CUDA; training eagerly",
                ctx.device,
            )
        elif use_fast and ctx.world_size > 1:
            log.info("--fast is not used with %d processes (DDP); training eagerly", ctx.world_size)
        trainer = GanTrainer(
            cfg,
            device=ctx.device,
            seed=seed,
            fast=use_fast,
            rank=ctx.rank,
            world_size=ctx.world_size,
        )
        if ctx.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        key = store.stage_key(STAGE, params, inputs)
        partial = store.partial_path(wd.gan, key)
        source = _resume_source(wd, partial, params, inputs, epochs, max_steps) if resume else None
        if resume and source is None:
            log.info("nothing to resume for %s; training from the start", wd.gan)
        if not resume and ctx.rank == 0 and partial.exists():
            shutil.rmtree(partial)
        _barrier(ctx)
        if source is not None:
            trainer.load(load_checkpoint(source))
            log.info("resuming from %s (epoch %d, step %d)", source, trainer.epoch, trainer.step)
        val = load_gan_data(work, "val", limit=4)
        if not len(val):
            val = load_gan_data(work, "train", limit=4)
        run = dict(
            epochs=epochs, max_steps=max_steps, checkpoint_every=checkpoint_every, progress=progress
        )
        if ctx.rank == 0:
            with store.build(
                wd.gan, stage=STAGE, params=params, inputs=inputs, resumable=True
            ) as group:
                group.attrs.update(
                    {
                        "config": cfg.to_dict(),
                        "size": size,
                        "seed": seed,
                        "world_size": ctx.world_size,
                        "device": str(ctx.device),
                        "fast": trainer.fast,
                        "amp": trainer.amp,
                    }
                )
                if source is not None and not source.is_relative_to(partial):
                    for name in ("checkpoints", "samples"):
                        if (source.parent.parent / name).is_dir():
                            shutil.copytree(
                                source.parent.parent / name, partial / name, dirs_exist_ok=True
                            )
                    if (source.parent.parent / "losses.csv").is_file():
                        shutil.copy2(source.parent.parent / "losses.csv", partial / "losses.csv")
                _loop(trainer, GanDataset(data, no_structure), sampler, val, partial, **run)
                group.attrs.update(
                    {
                        "steps": trainer.step,
                        "epochs_done": trainer.epoch,
                        "train_patches": len(data),
                        "latest": (partial / "checkpoints" / "latest").read_text().strip(),
                    }
                )
        else:
            _loop(trainer, GanDataset(data, no_structure), sampler, val, None, **run)
        _barrier(ctx)
        return store.StageResult(wd.gan, False, store.read_meta(wd.gan) or {}), trainer
    finally:
        if ctx.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _loop(
    trainer: GanTrainer,
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

    Every rank runs this; only the one given `out` (rank 0) writes files.
    """
    k, rank, world = trainer.cfg.pairs_per_step, trainer.rank, trainer.world_size
    per_epoch = len(sampler.epoch_steps(0, k, rank, world))
    total = epochs * per_epoch if max_steps is None else min(epochs * per_epoch, max_steps)
    losses = _LossLog(out, trainer.step) if out is not None else None
    bar = tqdm(
        total=total,
        initial=min(trainer.step, total),
        unit="step",
        desc="train-gan",
        disable=not progress or out is None,
        dynamic_ncols=True,
    )
    pending: list[tuple[int, int, torch.Tensor]] = []
    clock = [time.perf_counter()]
    saved_at = [trainer.step if trainer.step else -1]

    def flush() -> None:
        if not pending:
            return
        values = torch.stack([t for _, _, t in pending]).cpu().tolist()  # one sync per flush
        now = time.perf_counter()
        rate = len(pending) / max(now - clock[0], 1e-9)
        clock[0] = now
        rows = [
            (s, e, *(f"{v:.6g}" for v in vals), f"{rate:.4g}")
            for (s, e, _), vals in zip(pending, values)
        ]
        pending.clear()
        d, adv, l1, ms = values[-1]
        bar.set_postfix(d=f"{d:.3f}", adv=f"{adv:.3f}", l1=f"{l1:.3f}", ms=f"{ms:.3f}")
        if losses is not None:
            losses.write(rows)

    def checkpoint(name: str) -> None:
        states = trainer.numpy_states()  # a collective under DDP: every rank calls it
        if out is not None:
            trainer.save(out / "checkpoints" / f"{name}.safetensors", states)
        saved_at[0] = trainer.step

    stopped = False
    try:
        while trainer.epoch < epochs and not stopped:
            steps = sampler.epoch_steps(trainer.epoch, k, rank, world)
            for pairs in steps[trainer.epoch_step :]:
                if max_steps is not None and trainer.step >= max_steps:
                    stopped = True
                    break
                x, y = make_batch(dataset, pairs, trainer.np_rng)
                result = trainer.train_step(x, y)
                trainer.step += 1
                trainer.epoch_step += 1
                pending.append((trainer.step, trainer.epoch, result))
                bar.update(1)
                if len(pending) >= FLUSH_EVERY:
                    flush()
            if stopped:
                break
            trainer.epoch += 1
            trainer.epoch_step = 0
            flush()
            if out is not None:
                _sample_grid(trainer, val, out, trainer.epoch)
            if trainer.epoch % checkpoint_every == 0 or trainer.epoch == epochs:
                checkpoint(f"epoch-{trainer.epoch:04d}")
            clock[0] = time.perf_counter()  # it/s counts training steps only
        flush()
        if saved_at[0] != trainer.step:
            checkpoint(f"step-{trainer.step:08d}")
    finally:
        bar.close()
        if losses is not None:
            losses.close()


# -- a 2-process DDP check on the CPU -----------------------------------------------------------
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ddp_worker(
    rank: int, world_size: int, port: int, work: str, out: str, options: dict[str, Any]
) -> None:
    """One process of `run_ddp_check`: train with gloo, write this rank's G fingerprint."""
    os.environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "WORLD_SIZE": str(world_size),
            "LOCAL_RANK": str(rank),
        }
    )
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        _, trainer = _train(Path(work), **options)
        assert trainer is not None
        Path(out, f"rank{rank}.json").write_text(
            json.dumps(
                {
                    "G": weights_fingerprint(trainer.G),
                    "D": weights_fingerprint(trainer.D),
                    "step": trainer.step,
                }
            )
        )
    finally:
        dist.destroy_process_group()


def run_ddp_check(
    work: Path,
    *,
    world_size: int = 2,
    max_steps: int = 2,
    ngf: int = 8,
    ndf: int = 8,
    seed: int = 0,
    spawn: Callable[..., Any] | None = None,
) -> list[dict[str, Any]]:
    """Train a tiny GAN in `world_size` CPU processes (gloo, DDP) on `work`; per-rank results.

    Each result holds the SHA-256 of that rank's G and D parameters and its step count: after
    DDP's gradient all-reduce, every rank must hold identical weights. Rank 0 writes gan.zarr.
    """
    import torch.multiprocessing as mp

    options = dict(
        epochs=1,
        pairs_per_step=1,
        lr=2e-4,
        betas=(0.5, 0.999),
        l1_weight=10.0,
        ms_weight=10.0,
        d_conditional=False,
        no_structure=False,
        disc="paper",
        ngf=ngf,
        ndf=ndf,
        seed=seed,
        device="cpu",
        checkpoint_every=1,
        fast=False,
        resume=False,
        force=True,
        progress=False,
        max_steps=max_steps,
    )
    with tempfile.TemporaryDirectory() as tmp:
        (spawn or mp.spawn)(
            _ddp_worker,
            args=(world_size, _free_port(), str(work), tmp, options),
            nprocs=world_size,
            join=True,
        )
        return [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(world_size)]
