"""Stage `train-seg`: train the segmentation U-Net that `wsi-aug segment` applies to slides.

The data drawing (real and synthetic at one ratio), augmentation and model selection on the
real validation split are eval-seg's (`wsi_aug.eval_seg.train_seed`), with the same training
options (`SegTrainingParams`). The store ``train-seg.zarr`` holds the training history and, in
its attributes, the model's `ModelSpec`; the weights are ``train-seg/model.safetensors`` (their
metadata carry the spec too, so the file alone can be applied). `SegModelStore` reads it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import field_validator

from wsi_aug.errors import CheckpointError, WsiAugError
from wsi_aug.stages.base import Stage, StageResult, StageStore, param
from wsi_aug.stages.eval_seg import SegTrainingParams

if TYPE_CHECKING:
    import torch

    from wsi_aug.seg.apply import ModelSpec
    from wsi_aug.seg.unet import UNet

NAME = "train-seg"
MADE_BY = "wsi-aug train-seg"
WEIGHTS = "model.safetensors"
_HISTORY = "history"
_SPEC = "model"


class TrainSegParams(SegTrainingParams):
    """One U-Net trained as eval-seg trains one (the same options), kept for `segment`."""

    stage = NAME

    synthetic_ratio: float = param(
        0.0,
        "Fraction of synthetic training samples (0 real only, 1 synthetic only).",
        ge=0,
        le=1,
    )
    threshold: float = param(
        0.5, "Glomerulus probability above which `segment` marks a pixel (kept with the model).",
        gt=0,
        lt=1,
    )

    @field_validator("synthetic_ratio")
    @classmethod
    def _ratio(cls, v: float) -> float:
        return float(v)


class SegModelStore(StageStore):
    """A complete ``train-seg.zarr`` with its weights, read-only."""

    NAME = NAME
    MADE_BY = MADE_BY

    @classmethod
    def at(cls, path: str | Path) -> SegModelStore:
        """The model store at `path` (a ``train-seg.zarr`` or a work folder holding one)."""
        from wsi_aug import store

        p = Path(path)
        if not (p / "zarr.json").is_file() and (p / f"{NAME}.zarr").is_dir():
            p = p / f"{NAME}.zarr"
        return cls(p, store.open_stage(p, stage=NAME, made_by=MADE_BY))

    @property
    def weights(self) -> Path:
        """The safetensors file beside the store (``train-seg/model.safetensors``)."""
        return self.path.parent / str(self.meta.get("files") or NAME) / WEIGHTS

    @property
    def spec(self) -> ModelSpec:
        """How to apply the model, as recorded in the store."""
        from wsi_aug.seg.apply import ModelSpec

        return ModelSpec.from_json(str(self.group.attrs.get(_SPEC, "")), self.path)

    @property
    def history(self) -> dict[str, Any]:
        """Per epoch: train_loss and val_dice."""
        from wsi_aug import store

        return store.read_table(self.group, _HISTORY)

    def load_model(self, device: torch.device | str = "cpu") -> tuple[UNet, ModelSpec]:
        """The U-Net and its spec; a damaged weights file or one of another build is refused."""
        from wsi_aug import store
        from wsi_aug.seg.apply import load_model

        recorded = self.group.attrs.get("weights_fingerprint")
        if self.weights.is_file() and recorded and store.fingerprint_file(self.weights) != recorded:
            raise CheckpointError(
                f"{self.weights}: changed since {self.path} was built (not its model); rebuild it "
                f"with `{MADE_BY} --force`"
            )
        model, spec = load_model(self.weights, device)
        if spec.to_json() != self.spec.to_json():  # as text: a NaN score equals itself
            raise CheckpointError(
                f"{self.weights}: its settings differ from {self.path}'s; rebuild it with "
                f"`{MADE_BY} --force`"
            )
        return model, spec


def model_spec(
    counts: dict[str, int],
    *,
    mpp: float,
    params: SegTrainingParams,
    threshold: float,
    val_dice: float,
    trained_on: dict[str, str],
    synthetic_ratio: float,
    seed: int,
) -> ModelSpec:
    """How to apply a U-Net trained with `params` (train-seg and eval-seg --keep-models)."""
    from wsi_aug.seg.apply import ModelSpec

    return ModelSpec(
        patch_size=counts["patch_size"],
        mpp=mpp,
        padding=params.padding,
        depth=5,
        width=float(params.width),
        batch_norm=bool(params.batch_norm),
        threshold=threshold,
        val_dice=val_dice,
        trained_on=trained_on,
        synthetic_ratio=synthetic_ratio,
        seed=seed,
    )


def train_seg(
    work: str | Path,
    params: TrainSegParams | None = None,
    *,
    force: bool = False,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
    **overrides: Any,
) -> StageResult:
    """Stage: train one U-Net on the extract store (and synthetic patches at the given ratio)
    into ``WORK/train-seg.zarr`` + ``WORK/train-seg/model.safetensors``."""
    import numpy as np

    from wsi_aug import store
    from wsi_aug.device import resolve_device
    from wsi_aug.eval_seg import SegData, train_seed
    from wsi_aug.metrics import dice
    from wsi_aug.seg.apply import save_model
    from wsi_aug.seg.augment import augment_config
    from wsi_aug.seg.train import crop_masks, predict
    from wsi_aug.stages.extract import PatchStore
    from wsi_aug.stages.synthesize import SyntheticStore

    p = TrainSegParams.build(params, **overrides)
    wd = store.WorkDir(Path(work))
    wd.check_layout(force)
    patches = PatchStore.open(work)
    splits = {s: patches.select(s) for s in ("train", "val", "test")}
    if len(splits["train"]) == 0 and p.synthetic_ratio < 1.0:
        raise WsiAugError(
            f"{patches.path}: no patches in the train split; re-run `wsi-aug extract` with "
            "--split so that some slides go to the training set"
        )
    synth = SyntheticStore.open(work) if p.synthetic_ratio > 0 else None
    inputs = {"patches": patches.fingerprint()}
    if synth is not None:
        inputs["synthetic"] = synth.fingerprint()
    key = {**p.key_dict(), "depth": 5}
    path = wd.store(NAME)
    hit = store.cached_result(path, stage=NAME, params=key, inputs=inputs, force=force)
    if hit is not None:
        return hit.with_(outputs=(wd.files(NAME) / WEIGHTS,))
    device = resolve_device(p.device)
    data = SegData.load(patches, splits, synth)
    aug = augment_config(p.augment, p.stain_sigma)
    train_kwargs = {
        "epochs": p.epochs,
        "batch_size": p.batch_size,
        "lr": p.lr,
        "width": p.width,
        "batch_norm": p.batch_norm,
        "padding": p.padding,
        "augment": aug if aug is not None else False,
        "precision": p.precision,
        "device": device,
    }
    model, hist, counts = train_seed(
        data,
        ratio=p.synthetic_ratio,
        seed=p.seed,
        real_fraction=p.real_fraction,
        samples_per_epoch=p.samples_per_epoch,
        train_kwargs=train_kwargs,
        progress=progress,
    )
    test_dice = float("nan")
    if len(data.test_x):
        pred = predict(model, data.test_x, batch_size=p.batch_size)
        test_dice = dice(pred, crop_masks(data.test_y, pred.shape[1:]))
    spec = model_spec(
        counts,
        mpp=float(np.median(patches.table.mpp)),
        params=p,
        threshold=float(p.threshold),
        val_dice=float(hist.best_val_dice),
        trained_on=dict(inputs),
        synthetic_ratio=p.synthetic_ratio,
        seed=p.seed,
    )
    with store.build_stage(
        path, stage=NAME, params=key, inputs=inputs, files=wd.files(NAME)
    ) as b:
        assert b.files is not None
        weights = save_model(model, spec, b.files / WEIGHTS)
        n = len(hist.train_loss)
        store.write_table(
            b.group,
            _HISTORY,
            {
                "epoch": np.arange(1, n + 1),
                "train_loss": np.asarray(hist.train_loss, np.float64),
                "val_dice": np.asarray(hist.val_dice or [float("nan")] * n, np.float64),
            },
        )
        b.group.attrs[_SPEC] = spec.to_json()
        b.group.attrs["weights_fingerprint"] = store.fingerprint_file(weights)
        b.group.attrs["scores"] = json.dumps(
            {"best_epoch": hist.best_epoch, "val_dice": hist.best_val_dice,
             "test_dice": test_dice, **counts}
        )
    if report is not None:
        report(
            f"train-seg: best epoch {hist.best_epoch}, val Dice {hist.best_val_dice:.3f}, "
            f"test Dice {test_dice:.3f} ({counts['n_real']} real, "
            f"{counts['n_synthetic']} synthetic patches)"
        )
    text = f"val Dice {hist.best_val_dice:.3f}, test Dice {test_dice:.3f}"
    return StageResult(path, False, store.read_meta(path) or {}, (wd.files(NAME) / WEIGHTS,), text)


STAGE = Stage(
    name=NAME,
    params=TrainSegParams,
    run=train_seg,
    help="Train the segmentation U-Net that `segment` applies to slides (writes train-seg/).",
    store="train-seg.zarr",
    inputs=("extract", "synthesize"),
)
