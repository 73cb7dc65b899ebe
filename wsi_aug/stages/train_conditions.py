"""Stage `train-conditions`: a diffusion model of new (glomerulus mask, structure map) conditions.

Trained on the train split's positive conditions at the GAN's patch size (`wsi_aug.condgen`).
Writes ``train-conditions.zarr`` (the model configuration and run facts in its attributes) and,
beside it, ``train-conditions/``: ``checkpoints/step-NNNNNNNN.safetensors`` (+ ``latest``),
``samples/step-NNNNNNNN.png`` and ``losses.csv``. An interrupted run continues from its latest
checkpoint; `ConditionStore` is the only code that knows that layout.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from wsi_aug.stages.base import ModelStore, Stage, StageParams, StageResult, param

if TYPE_CHECKING:
    from wsi_aug.condgen.model import CondGenConfig

log = logging.getLogger(__name__)

NAME = "train-conditions"
MADE_BY = "wsi-aug train-conditions"
_SAMPLES, _LOSSES = "samples", "losses.csv"


class TrainConditionsParams(StageParams):
    """The condition model's size and training length.

    The defaults train in 16 to 25 minutes at 128 px on a 2-core Intel Xeon VM (batch 16, base
    32, patch 4: measured 5.3 steps/s on one development VM, 6.3-7.9 on others) and in about an
    hour on a slower 2-core AMD EPYC VM (2.2 steps/s); on a GPU the same command
    runs under bf16 autocast, where a larger model (--base 64 --patch 2) and more --steps fit the
    same time.
    """

    stage = NAME

    steps: int = param(
        7500,
        "Training steps in all (batches of --batch-size); 7500 take 16-25 min at 128 px on a "
        "2-core Intel VM, about an hour on a slower 2-core AMD one.",
        ge=1,
    )
    batch_size: int = param(16, "Conditions per step.", ge=1)
    lr: float = param(5e-4, "Adam learning rate (after a 200-step linear warm-up).", gt=0)
    lr_schedule: Literal["constant", "cosine"] = param(
        "constant",
        "Learning rate after the warm-up: constant, or a cosine decay to 0 at the last step.",
    )
    base: int = param(32, "U-Net width: channels of its first level (then 2x, 4x).", ge=8)
    patch: int | None = param(
        None,
        "Pixel-unshuffle factor: the U-Net runs at size / patch px (default: size / 32, e.g. 4 "
        "at 128 px; 2 or 1 for a larger model on a GPU).",
        ge=1,
    )
    smooth: float = param(
        1.0,
        "Gaussian sigma (px) the binary training conditions are blurred with (0: none); the "
        "model then learns shapes without pixel-level steps (1.0 measured better than 0).",
        ge=0,
    )
    centre: bool = param(
        True,
        "Shift each sample so its mask's main component sits at the patch centre, as "
        "extraction centres real glomeruli.",
    )
    mask_sigma: float = param(
        4.0,
        "Gaussian sigma (px) each sample's mask channel is blurred with before it is "
        "thresholded: the model's residual noise then no longer frays the outline (0: none; "
        "4 chosen on the val split at 128 px).",
        ge=0,
    )
    tile_edges: bool = param(
        True,
        "Give samples the white tile-edge bands of the train patches (as often, as deep and on "
        "the same sides; the mask cut along the band and centred as extraction centres a cut "
        "glomerulus).",
    )
    train_on: Literal["all", "uncut"] = param(
        "all",
        "Train conditions: all positive train patches, or only the uncut ones (no white "
        "tile-edge band): the model then learns whole glomeruli, and --tile-edges cuts its "
        "samples once, as extraction cuts real ones, instead of cutting shapes it learned cut.",
    )
    area_condition: bool = param(
        False,
        "Tell the model each training condition's mask area, and ask it at sampling for the "
        "area of a train condition drawn by the sample's seed, so sampled glomeruli are as "
        "varied in size as real ones.",
    )
    padding: Literal["zeros", "reflect"] = param(
        "zeros",
        "Padding of the U-Net's 3x3 convolutions: zeros, or reflect (the patch border then looks "
        "like its inside to the model).",
    )
    ema_decay: float = param(0.999, "Decay of the EMA weights samples are drawn with.", gt=0, lt=1)
    seed: int = param(0, "Random seed (weights, batches, symmetries, noise).", ge=0)
    sample_steps: int = param(50, "DDIM steps of the sample grids.", ge=1, key=False)
    sample_every: int = param(250, "Write a sample grid every this many steps.", ge=1, key=False)
    checkpoint_every: int = param(
        250, "Write a checkpoint every this many steps (and at the end).", ge=1, key=False
    )
    device: str = param(
        "auto",
        "torch device: auto (CUDA when present, else CPU), cpu, cuda ... (bf16 autocast on CUDA).",
        key=False,
    )


class ConditionStore(ModelStore):
    """A complete ``train-conditions.zarr`` and its ``train-conditions/`` folder, read-only."""

    NAME = NAME
    MADE_BY = MADE_BY

    @property
    def losses(self) -> Path:
        return self.files / _LOSSES

    @property
    def size(self) -> int:
        """The patch size the model makes."""
        return int(self.group.attrs["size"])

    def sample_grids(self) -> list[Path]:
        """The sample grids, oldest first."""
        return sorted((self.files / _SAMPLES).glob("*.png"))


def model_config(
    p: TrainConditionsParams, size: int, where: Path, min_size: int = 0
) -> CondGenConfig:
    """The model configuration these parameters give for `size`-pixel patches.

    `min_size`: the structure stage's, so samples lose the small structures real maps lost.
    """
    from wsi_aug.condgen.model import CondGenConfig, auto_patch
    from wsi_aug.errors import WsiAugError

    patch = p.patch if p.patch is not None else auto_patch(size)
    try:
        return CondGenConfig(
            size=size,
            base=p.base,
            patch=patch,
            ema_decay=p.ema_decay,
            smooth=p.smooth,
            min_size=min_size,
            centre=p.centre,
            mask_sigma=p.mask_sigma,
            padding=p.padding,
            tile_edges=p.tile_edges,
            area_condition=p.area_condition,
        )
    except ValueError as exc:
        raise WsiAugError(f"{where}: {exc}; choose another --patch") from exc


def train_conditions(
    work: str | Path,
    params: TrainConditionsParams | None = None,
    *,
    force: bool = False,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
    **overrides: Any,
) -> StageResult:
    """Stage: train the condition model; writes ``train-conditions.zarr`` and its folder (cached).

    An interrupted run with the same options and inputs continues from its latest checkpoint
    (``--force`` starts over).
    """
    import shutil

    import numpy as np

    from wsi_aug import store
    from wsi_aug.condgen.checkpoints import latest_checkpoint, load
    from wsi_aug.condgen.train import train
    from wsi_aug.device import resolve_device
    from wsi_aug.errors import WsiAugError
    from wsi_aug.stages.structure import PairedStores

    p = TrainConditionsParams.build(params, **overrides)
    wd = store.WorkDir(Path(work))
    wd.check_layout(force)
    path, files = wd.store(NAME), wd.files(NAME)
    pairs = PairedStores(work)
    min_size = int(pairs.structure.map_options.get("min_size") or 0)
    cfg = model_config(p, pairs.patches.size, pairs.patches.path, min_size)
    inputs = pairs.fingerprints()
    key = {**p.key_dict(), "size": cfg.size, "patch": cfg.patch, "min_size": min_size}
    hit = store.cached_result(path, stage=NAME, params=key, inputs=inputs, force=force)
    if hit is not None:
        return StageResult(hit.path, True, hit.meta, outputs=_outputs(files))
    data = pairs.load("train", positive=True)
    if len(data) == 0:
        raise WsiAugError(
            f"{pairs.patches.path}: no positive train patch to learn conditions from; "
            "extract glomeruli with `wsi-aug extract`"
        )
    if p.train_on == "uncut":
        cut = np.asarray(pairs.patches.padding_insets(data.rows).any(axis=1), bool)
        data = data.subset(~cut)
        if len(data) == 0:
            raise WsiAugError(
                f"{pairs.patches.path}: every positive train patch crosses its tile's edge; "
                "train on them all with --train-on all"
            )
    device = resolve_device(p.device)
    partial = store.partial_path(path, store.stage_key(NAME, key, inputs))
    partial_files = partial.with_name(partial.name + ".files")  # build_stage's files folder
    if force:
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(partial_files, ignore_errors=True)
    source = latest_checkpoint(ConditionStore.checkpoint_dir(partial_files))
    if source is not None:
        load(source)  # a corrupt checkpoint fails here, naming the file
        log.info("train-conditions: continuing the interrupted run from %s", source.name)
    with store.build_stage(
        path, stage=NAME, params=key, inputs=inputs, resumable=True, files=files
    ) as b:
        assert b.files is not None
        b.group.attrs.update(
            {"size": cfg.size, "config": cfg.to_dict(), "device": str(device), "seed": p.seed}
        )
        done = train(
            cfg,
            data.masks,
            data.maps,
            b.files,
            steps=p.steps,
            batch_size=p.batch_size,
            lr=p.lr,
            lr_schedule=p.lr_schedule,
            seed=p.seed,
            device=device,
            sample_every=p.sample_every,
            checkpoint_every=p.checkpoint_every,
            sample_steps=p.sample_steps,
            progress=progress,
            resume_from=source,
        )
        latest = (ConditionStore.checkpoint_dir(b.files) / "latest").read_text().strip()
        b.group.attrs.update(
            {
                "steps": done.step,
                "train_conditions": len(data),
                "latest": latest,
                "steps_per_s": round(done.rate, 3),
            }
        )
    meta = store.read_meta(path) or {}
    rate = f"{done.rate:.2f} steps/s" if done.rate else "no step run"
    return StageResult(path, False, meta, outputs=_outputs(files), text=f"trained at {rate}")


def _outputs(files: Path) -> tuple[Path, ...]:
    """What people look at: the last sample grid and the loss log."""
    grids = sorted((files / _SAMPLES).glob("*.png"))
    losses = files / _LOSSES
    return tuple([*grids[-1:], *([losses] if losses.is_file() else [])])


STAGE = Stage(
    name=NAME,
    params=TrainConditionsParams,
    run=train_conditions,
    help="Train a diffusion model of new (glomerulus mask, structure map) conditions on the "
    "positive train patches (writes train-conditions.zarr and train-conditions/); "
    "`synthesize --source learned` draws from it.",
    store="train-conditions.zarr",
    inputs=("extract", "structure"),
)
