"""Stage `train-gan`: the mode-seeking Pix2Pix, trained on the train split's positive patches.

Writes ``train-gan.zarr`` (the GAN configuration and run facts in its attributes) and, beside it,
``train-gan/``: ``checkpoints/epoch-NNNN.safetensors`` (+ ``latest``), ``samples/epoch-NNNN.png``
and ``losses.csv``. `GanStore` is the only code that knows that layout. The training itself lives
in `wsi_aug.gan`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from wsi_aug.stages.base import ModelStore, Stage, StageParams, StageResult, param

if TYPE_CHECKING:

    from wsi_aug.gan.models import GanConfig

log = logging.getLogger(__name__)

NAME = "train-gan"
MADE_BY = "wsi-aug train-gan"
_SAMPLES, _LOSSES = "samples", "losses.csv"


class TrainGanParams(StageParams):
    """The GAN's architecture, losses, optimiser and training length (the paper's defaults)."""

    stage = NAME

    epochs: int = param(100, "Passes over the positive train patches.", ge=1)
    pairs_per_step: int = param(
        1, "Pairs of different conditions per step (batch = 2 x this; the paper: 1).", ge=1
    )
    lr: float = param(2e-4, "Adam learning rate of G and D.", gt=0)
    betas: tuple[float, float] = param((0.5, 0.999), "Adam betas of G and D.")
    l1_weight: float = param(10.0, "Weight λ of the L1 term.", ge=0)
    ms_weight: float = param(10.0, "Weight μ of the mode-seeking term (0 disables it).", ge=0)
    d_conditional: bool = param(
        False, "Ablation: D also sees the condition (Pix2Pix) instead of the image alone."
    )
    no_structure: bool = param(
        False, "Ablation: condition on the mask alone, without the structure map."
    )
    disc: Literal["paper", "patch"] = param(
        "paper", "Discriminator: the paper's, or the Pix2Pix 70x70 PatchGAN."
    )
    ms_ceiling: float | None = param(
        None,
        "Variant: L_ms as DSGAN clamps it, 1 / (min(d_G / d_x, TAU) + eps), with no push once "
        "outputs differ TAU times as much as their conditions (default: the paper's d_x / d_G).",
        gt=0,
    )
    ms_downsample: int = param(
        1,
        "Variant: L_ms's output distance on outputs average-pooled by this factor (low-passed; "
        "1: the paper, full resolution).",
        ge=1,
    )
    upsample: Literal["transposed", "resize", "bilinear"] = param(
        "transposed",
        "Generator upsampling: transposed convolutions (the paper), or a nearest (resize) or "
        "bilinear x2 resize then a convolution.",
    )
    spectral_norm: bool = param(
        False, "Variant: spectral normalisation on the discriminator's conv and linear layers."
    )
    ngf: int = param(64, "Generator width (first layer's channels).", ge=1)
    ndf: int = param(64, "Discriminator width (first layer's channels).", ge=1)
    seed: int = param(0, "Random seed (weights, pairs, augmentation).", ge=0)
    max_steps: int | None = param(
        None, "Stop after this many steps in total (for trials and benchmarks).", ge=1
    )
    device: str = param(
        "auto", "torch device: auto (CUDA when present, else CPU), cpu, cuda, cuda:1 ...",
        key=False,
    )
    fast: bool | None = param(
        None,
        "Capture the training step as one CUDA graph (default: on with CUDA; ignored on the CPU).",
        key=False,
    )
    checkpoint_every: int = param(
        1, "Write a checkpoint every this many epochs (and at the end).", ge=1, key=False
    )
    resume: bool = param(
        False,
        "Extend a finished run with the same options to more --epochs (an interrupted run "
        "always continues; --force starts over).",
        key=False,
    )

    def key_dict(self) -> dict[str, Any]:
        """The variants left at their defaults stay out of the key: older stores stay valid."""
        d = super().key_dict()
        for name in _VARIANTS:
            if d.get(name) == type(self).model_fields[name].default:
                d.pop(name, None)
        return d


# options added after stores were first written: at their defaults they are not in the cache key
_VARIANTS = ("ms_ceiling", "ms_downsample", "upsample", "spectral_norm")


class GanStore(ModelStore):
    """A complete ``train-gan.zarr`` and its ``train-gan/`` folder, read-only."""

    NAME = NAME
    MADE_BY = MADE_BY

    @property
    def config(self) -> GanConfig:
        """The GAN configuration it was trained with."""
        from wsi_aug.errors import StageMissingError
        from wsi_aug.gan.models import GanConfig

        try:
            return GanConfig.from_dict(dict(self.group.attrs["config"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise StageMissingError(
                f"{self.path}: no usable GAN config in its attributes ({exc}); "
                f"rebuild it with `{MADE_BY} --force`"
            ) from exc

    @staticmethod
    def samples_dir(files: Path) -> Path:
        """Where a run keeps its per-epoch sample grids."""
        return files / _SAMPLES

    @staticmethod
    def losses_csv(files: Path) -> Path:
        """Where a run logs its losses."""
        return files / _LOSSES

    def sample_grids(self) -> list[Path]:
        """The sample grids, oldest first."""
        return sorted(self.samples_dir(self.files).glob("*.png"))


def _resume_source(
    wd: Any, files: Path, key: dict[str, Any], inputs: dict[str, Any], p: TrainGanParams
) -> Path | None:
    """The checkpoint to continue from: an interrupted run's (always), else, with ``resume``,
    a compatible finished store's (to extend it to more epochs)."""
    import json

    from wsi_aug import store
    from wsi_aug.gan.checkpoints import latest_checkpoint, load_checkpoint

    ck = latest_checkpoint(GanStore.checkpoint_dir(files))
    if ck is not None:  # the same options and inputs were interrupted: always continue
        return ck
    if not p.resume:
        return None
    meta = store.read_meta(wd.gan)
    if not meta or not meta.get("complete") or meta.get("stage") != NAME:
        return None

    def same(d: Any) -> dict[str, Any]:
        d = json.loads(json.dumps(d, default=str))
        return {k: v for k, v in d.items() if k not in ("epochs", "max_steps")}

    if same(meta.get("params") or {}) != same(key) or meta.get("inputs") != same(inputs):
        log.info("%s: trained with other options or inputs; not resuming from it", wd.gan)
        return None
    ck = latest_checkpoint(GanStore.checkpoint_dir(wd.gan_files))
    if ck is None:
        return None
    done = load_checkpoint(ck)
    if done.epoch > p.epochs or (p.max_steps is not None and done.step > p.max_steps):
        log.info("%s is already past %d epoch(s); training from scratch", ck, p.epochs)
        return None
    return ck


def gan_config(p: TrainGanParams, size: int, where: Path) -> GanConfig:
    """The model and loss configuration these parameters give for `size`-pixel patches."""
    from wsi_aug.errors import WsiAugError
    from wsi_aug.gan.models import GanConfig

    try:
        return GanConfig(
            size=size,
            ngf=p.ngf,
            ndf=p.ndf,
            disc=p.disc,
            d_conditional=p.d_conditional,
            no_structure=p.no_structure,
            l1_weight=p.l1_weight,
            ms_weight=p.ms_weight,
            lr=p.lr,
            beta1=p.betas[0],
            beta2=p.betas[1],
            pairs_per_step=p.pairs_per_step,
            ms_ceiling=p.ms_ceiling,
            ms_downsample=p.ms_downsample,
            upsample=p.upsample,
            spectral_norm=p.spectral_norm,
        )
    except ValueError as exc:
        raise WsiAugError(f"{where}: {exc}") from exc


def run_training(
    work: Path, p: TrainGanParams, *, force: bool = False, progress: bool = True
) -> tuple[StageResult, Any]:
    """`train_gan`, also returning the model step (None when cached) for tests and benchmarks.

    Under torchrun every rank trains; rank 0 alone writes the store and its files.
    """
    import shutil

    from wsi_aug import store
    from wsi_aug.gan import ddp
    from wsi_aug.gan.checkpoints import load_checkpoint
    from wsi_aug.gan.data import PairSampler
    from wsi_aug.gan.train import train
    from wsi_aug.stages.structure import PairedStores

    wd = store.WorkDir(Path(work))
    wd.check_layout(force)
    ctx = ddp.setup(p.device)
    try:
        pairs = PairedStores(work)
        cfg = gan_config(p, pairs.patches.size, wd.patches)
        inputs = pairs.fingerprints()
        key = {**p.key_dict(), "size": cfg.size, "world_size": ctx.world_size}
        hit = store.cached_result(wd.gan, stage=NAME, params=key, inputs=inputs, force=force)
        if hit is not None:
            return StageResult(hit.path, True, hit.meta, outputs=_outputs(wd.gan_files)), None
        data = pairs.load("train", positive=True)
        # fails early, before any folder is made, if there are too few pairs
        PairSampler(len(data), p.seed).epoch_steps(0, p.pairs_per_step, ctx.rank, ctx.world_size)
        partial = store.partial_path(wd.gan, store.stage_key(NAME, key, inputs))
        files = partial.with_name(partial.name + ".files")  # build_stage's files folder
        if force and ctx.rank == 0:  # a forced rebuild does not continue an interrupted run
            shutil.rmtree(partial, ignore_errors=True)
            shutil.rmtree(files, ignore_errors=True)
        source = _resume_source(wd, files, key, inputs, p)
        if source is not None and source.is_relative_to(files):
            msg = "train-gan: continuing the interrupted run from %s (--force starts over)"
            log.info(msg, source.name)
        elif p.resume and source is None:
            log.info("nothing to resume for %s; training from the start", wd.gan)
        if source is not None:
            load_checkpoint(source)  # a corrupt checkpoint fails here, before any folder is made
        ddp.barrier(ctx)
        val = pairs.load("val", positive=True, limit=4)
        if not len(val):
            val = pairs.load("train", positive=True, limit=4)

        def fit(out: Path | None, on_start: Callable[[Any], None] | None = None) -> Any:
            return train(
                cfg,
                data,
                val,
                out,
                epochs=p.epochs,
                max_steps=p.max_steps,
                seed=p.seed,
                device=ctx.device,
                rank=ctx.rank,
                world_size=ctx.world_size,
                fast=p.fast,
                checkpoint_every=p.checkpoint_every,
                progress=progress,
                resume_from=source,
                on_start=on_start,
            )

        if ctx.rank != 0:
            step = fit(None)
            ddp.barrier(ctx)
            return StageResult(wd.gan, False), step
        with store.build_stage(
            wd.gan, stage=NAME, params=key, inputs=inputs, resumable=True, files=wd.gan_files
        ) as b:
            assert b.files is not None
            if source is not None and not source.is_relative_to(b.files):
                # extending a finished run: continue its checkpoints, samples and loss log
                shutil.copytree(source.parent.parent, b.files, dirs_exist_ok=True)
            facts: dict[str, Any] = {
                "config": cfg.to_dict(),
                "size": cfg.size,
                "seed": p.seed,
                "world_size": ctx.world_size,
                "device": str(ctx.device),
            }
            step = fit(b.files, lambda s: b.group.attrs.update(facts, fast=s.fast, amp=s.amp))
            latest = (GanStore.checkpoint_dir(b.files) / "latest").read_text().strip()
            done = {"steps": step.step, "epochs_done": step.epoch, "train_patches": len(data)}
            b.group.attrs.update(done, latest=latest)
        ddp.barrier(ctx)
        meta = store.read_meta(wd.gan) or {}
        return StageResult(wd.gan, False, meta, outputs=_outputs(wd.gan_files)), step
    finally:
        ddp.teardown(ctx)


def _outputs(files: Path) -> tuple[Path, ...]:
    """What people look at: the last sample grid and the loss log."""
    grids = sorted(GanStore.samples_dir(files).glob("*.png"))
    return tuple([*grids[-1:], GanStore.losses_csv(files)])


def train_gan(
    work: str | Path,
    params: TrainGanParams | None = None,
    *,
    force: bool = False,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
    **overrides: Any,
) -> StageResult:
    """Stage: train the GAN; writes ``train-gan.zarr`` and ``train-gan/`` (cached).

    ``resume`` continues an interrupted run (or a finished one when more epochs are asked);
    ``max_steps`` caps the total number of steps (a checkpoint is written where it stops).
    """
    p = TrainGanParams.build(params, **overrides)
    result, _ = run_training(Path(work), p, force=force, progress=progress)
    return result


STAGE = Stage(
    name=NAME,
    params=TrainGanParams,
    run=train_gan,
    help="Train the mode-seeking Pix2Pix GAN on the positive train patches (writes "
    "train-gan.zarr and train-gan/). Under `torchrun --nproc-per-node N -m wsi_aug train-gan` "
    "it trains with DistributedDataParallel; rank 0 writes the store.",
    store="train-gan.zarr",
    inputs=("extract", "structure"),
)
