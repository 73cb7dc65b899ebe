"""kill -9 at a random moment of each stage, then the same command again: the same result.

Each stage runs as a `wsi-aug` subprocess on tiny data; one run goes uninterrupted (the
reference, which also gives the stage's duration), others are killed with SIGKILL after a delay
drawn (seeded) within that duration and then rerun to the end. Nothing half-written may read as
complete after a kill, and the finished store must hold what the reference holds.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from wsi_aug import store

pytestmark = pytest.mark.slow

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # bit-exact reruns
UPSTREAM = {  # the stores each stage reads, copied in before it runs
    "extract": (),
    "structure": ("extract",),
    "train-gan": ("extract", "structure"),
    "synthesize": ("extract", "structure", "train-gan"),
    "eval-seg": ("extract", "structure", "train-gan", "synthesize"),
    "eval-gan": ("extract", "structure", "train-gan", "synthesize"),
}


def _args(stage: str, slides: Path) -> list[str]:
    return {
        "extract": ["extract", str(slides), "--size", "32", "--mpp", "4", "--negatives", "1",
                    "--split", "0.34,0.33,0.33"],
        "structure": ["structure", "--min-size", "2"],
        "train-gan": ["train-gan", "--epochs", "4", "--ngf", "4", "--ndf", "4", "--device", "cpu"],
        "synthesize": ["synthesize", "--n", "48", "--batch-size", "4", "--device", "cpu"],
        "eval-seg": ["eval-seg", "--synthetic-ratio", "0,0.5", "--seeds", "2", "--epochs", "2",
                     "--width", "0.0625", "--device", "cpu"],
        "eval-gan": ["eval-gan", "--unet-epochs", "2", "--unet-width", "0.0625", "--n-pairs",
                     "10", "--device", "cpu"],
    }[stage]  # fmt: skip


def _command(stage: str, slides: Path, work: Path) -> list[str]:
    return [sys.executable, "-m", "wsi_aug", *_args(stage, slides), "--work", str(work)]


def _copy_upstream(stage: str, src: Path, dst: Path) -> None:
    dst.mkdir(parents=True)
    for name in UPSTREAM[stage]:
        shutil.copytree(src / f"{name}.zarr", dst / f"{name}.zarr")
        if (src / name).is_dir():
            shutil.copytree(src / name, dst / name)


def _content(stage: str, work: Path) -> dict[str, object]:
    """What a finished stage made, in comparable form."""
    from wsi_aug.stages.eval_gan import read_metrics
    from wsi_aug.stages.extract import PatchStore
    from wsi_aug.stages.structure import StructureStore
    from wsi_aug.stages.synthesize import SyntheticStore

    if stage == "extract":
        p = PatchStore.open(work)
        images, masks = p.read_all()
        return {"images": images, "masks": masks, **p.table.as_columns()}
    if stage == "structure":
        return {"maps": StructureStore.open(work).read(np.arange(len(PatchStore.open(work))))}
    if stage == "train-gan":
        from wsi_aug.gan.checkpoints import load_checkpoint
        from wsi_aug.stages.train_gan import GanStore

        ck = load_checkpoint(GanStore.open(work).latest())
        return {"step": ck.step, **{k: v.numpy() for k, v in ck.generator.items()}}
    if stage == "synthesize":
        images, masks, maps = SyntheticStore.open(work).read_all()
        return {"images": images, "masks": masks, "maps": maps}
    if stage == "eval-seg":
        lines = (work / "eval-seg" / "results_per_seed.csv").read_text().splitlines()
        cols = lines[0].split(",")
        keep = [i for i, c in enumerate(cols) if c != "seconds"]
        return {"rows": [[line.split(",")[i] for i in keep] for line in lines]}
    metrics, _ = read_metrics(work / "eval-gan.zarr")
    return metrics


def _same(a: dict[str, object], b: dict[str, object]) -> bool:
    if a.keys() != b.keys():
        return False
    def equal(x: object, y: object) -> bool:
        u, v = np.asarray(x), np.asarray(y)
        nan_ok = u.dtype.kind == "f" and v.dtype.kind == "f"  # an undefined metric stays NaN
        return bool(np.array_equal(u, v, equal_nan=nan_ok))

    return all(equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, float]]:
    """Every stage once, uninterrupted, in order: the stores to compare with, and durations."""
    from wsi_aug.phantom import make_phantom_dataset

    root = tmp_path_factory.mktemp("kill")
    slides = root / "slides"
    make_phantom_dataset(slides, slides=3, seed=0, width=1536, height=1536, mpp=0.5)
    work = root / "ref"
    took: dict[str, float] = {}
    for stage in UPSTREAM:
        t = time.monotonic()
        subprocess.run(_command(stage, slides, work), check=True, env=ENV, capture_output=True)
        took[stage] = time.monotonic() - t
    return slides, work, took


@pytest.mark.parametrize(
    ("stage", "points"),
    [
        ("extract", 1),
        ("structure", 1),
        ("train-gan", 2),  # the long stages: several points
        ("synthesize", 1),
        ("eval-seg", 2),
        ("eval-gan", 1),
    ],
)
def test_kill_9_then_rerun_gives_the_uninterrupted_result(
    reference: tuple[Path, Path, dict[str, float]], tmp_path: Path, stage: str, points: int
) -> None:
    slides, ref, took = reference
    want = _content(stage, ref)
    rng = np.random.default_rng(list(stage.encode()))  # seeded per stage
    for k, delay in enumerate(rng.uniform(0.3, max(0.6, took[stage]), points)):
        work = tmp_path / f"w{k}"
        _copy_upstream(stage, ref, work)
        proc = subprocess.Popen(
            _command(stage, slides, work),
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(float(delay))
        killed = proc.poll() is None
        if killed:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        # whatever stands at a store's final path is complete: half-written work stays hidden
        finals = [work / f"{stage}.zarr"] if stage != "eval-seg" else []
        finals += sorted((work / "eval-seg" / "configs").glob("*.zarr"))
        for path in finals:
            assert not path.exists() or store.is_complete(path), path
        subprocess.run(_command(stage, slides, work), check=True, env=ENV, capture_output=True)
        assert _same(_content(stage, work), want), f"{stage}: killed after {delay:.2f} s"
