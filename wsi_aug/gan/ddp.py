"""Several training processes: the process group, DDP wrapping of a step, a CPU gloo check.

Under ``torchrun`` (WORLD_SIZE > 1) `setup` joins a process group (NCCL on CUDA, gloo on the
CPU), `wrap` puts a step's G and D in DistributedDataParallel, and the caller gives only rank 0
the output folder. `run_ddp_check` trains a tiny GAN in 2 CPU processes to check that every rank
ends with the same weights.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from wsi_aug.device import resolve_device

if TYPE_CHECKING:
    from wsi_aug.gan.step import GanStep


@dataclass
class Dist:
    """This process's place in the run: rank, world size, device; whether it made the group."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False


def setup(device: str) -> Dist:
    """Resolve the device and, under torchrun (WORLD_SIZE > 1), join the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = resolve_device(device)
    if world <= 1:
        return Dist(device=dev)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        dev = torch.device("cuda", local if dev.index is None else dev.index)
        torch.cuda.set_device(dev)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        owns = True
    return Dist(dist.get_rank(), dist.get_world_size(), dev, owns)


def barrier(ctx: Dist) -> None:
    """Wait for every rank (nothing to wait for in one process)."""
    if ctx.world_size > 1:
        dist.barrier()


def teardown(ctx: Dist) -> None:
    """Leave the process group if `setup` made it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def wrap(step: GanStep) -> None:
    """Route the step's G and D calls through DDP (gradient all-reduce); the group must exist."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [step.device.index] if step.device.type == "cuda" else None
    step.g_net = DDP(step.G, device_ids=ids)
    step.d_net = DDP(step.D, device_ids=ids)


def all_gather(obj: Any, world_size: int) -> list[Any]:
    """Every rank's `obj`, in rank order (a collective)."""
    out: list[Any] = [None] * world_size
    dist.all_gather_object(out, obj)
    return out


# -- a 2-process DDP check on the CPU -----------------------------------------------------------
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ddp_worker(
    rank: int, world_size: int, port: int, work: str, out: str, options: dict[str, Any]
) -> None:
    """One process of `run_ddp_check`: train with gloo, write this rank's G fingerprint."""
    from wsi_aug.gan.step import weights_fingerprint
    from wsi_aug.stages.train_gan import TrainGanParams, run_training  # the stage, store included

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
        params = TrainGanParams.parse(options)
        _, trainer = run_training(Path(work), params, force=True, progress=False)
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
    DDP's gradient all-reduce, every rank must hold identical weights. Rank 0 writes train-gan.zarr.
    """
    import torch.multiprocessing as mp

    # the paper's settings (TrainGanParams' defaults) at a tiny width and length
    options = {
        "epochs": 1,
        "ngf": ngf,
        "ndf": ndf,
        "seed": seed,
        "device": "cpu",
        "fast": False,
        "max_steps": max_steps,
    }
    with tempfile.TemporaryDirectory() as tmp:
        (spawn or mp.spawn)(
            _ddp_worker,
            args=(world_size, _free_port(), str(work), tmp, options),
            nprocs=world_size,
            join=True,
        )
        return [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(world_size)]
