"""DistributedDataParallel training: 2 CPU processes (gloo backend) end with equal weights."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch.distributed as dist

from wsi_aug import store
from wsi_aug.gan.checkpoints import latest_checkpoint, load_checkpoint
from wsi_aug.gan.ddp import run_ddp_check
from wsi_aug.store import WorkDir


@pytest.mark.slow  # two processes and their gloo start-up
def test_two_gloo_processes_end_with_identical_weights(tiny_work: WorkDir, tmp_path: Path) -> None:
    assert dist.is_gloo_available()
    wd = WorkDir(tmp_path / "w")
    shutil.copytree(tiny_work.root, wd.root)
    ranks = run_ddp_check(wd.root, world_size=2, max_steps=2)
    assert len(ranks) == 2
    assert ranks[0]["step"] == ranks[1]["step"] == 2
    assert ranks[0]["G"] == ranks[1]["G"]
    assert ranks[0]["D"] == ranks[1]["D"]
    # rank 0 alone wrote the store, with the world size in its parameters
    assert store.is_complete(wd.gan)
    assert store.read_meta(wd.gan)["params"]["world_size"] == 2
    ck = load_checkpoint(latest_checkpoint(wd.gan_files / "checkpoints"))
    assert ck.step == 2 and ck.numpy_rng is not None and len(ck.numpy_rng) == 2
    assert ck.numpy_rng[0] != ck.numpy_rng[1]  # each rank augments with its own generator
