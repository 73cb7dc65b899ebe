"""The registry of stages: one name each, in pipeline order.

The CLI makes one command per stage from it, `wsi-aug run` validates pipeline tables against each
stage's `Params`, and `wsi-aug info` names the stores. Stage modules import only pydantic at the
top, so loading the registry is cheap.
"""

from __future__ import annotations

import importlib

from wsi_aug.stages.base import Stage

MODULES: dict[str, str] = {
    "phantom": "wsi_aug.stages.phantom",
    "extract": "wsi_aug.stages.extract",
    "structure": "wsi_aug.stages.structure",
    "train-gan": "wsi_aug.stages.train_gan",
    "train-conditions": "wsi_aug.stages.train_conditions",
    "eval-conditions": "wsi_aug.stages.eval_conditions",
    "synthesize": "wsi_aug.stages.synthesize",
    "eval-seg": "wsi_aug.stages.eval_seg",
    "eval-gan": "wsi_aug.stages.eval_gan",
    "train-seg": "wsi_aug.stages.train_seg",
    "segment": "wsi_aug.stages.segment",
    "export": "wsi_aug.stages.export",
}
NAMES: tuple[str, ...] = tuple(MODULES)


def get(name: str) -> Stage:
    """The stage called `name` (KeyError for an unknown one)."""
    stage = importlib.import_module(MODULES[name]).STAGE
    if not isinstance(stage, Stage) or stage.name != name:
        raise RuntimeError(f"{MODULES[name]}.STAGE is not the stage {name!r}")
    return stage


def stages() -> list[Stage]:
    """Every stage, in pipeline order."""
    return [get(n) for n in NAMES]
