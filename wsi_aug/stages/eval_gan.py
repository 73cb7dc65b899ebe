"""Stage `eval-gan`: how good the synthetic set is, measured against the real patches.

Writes ``eval-gan.zarr`` (a ``metrics`` table: metric, value, meaning) and, beside it,
``eval-gan/``: ``results.csv``, ``results.md``, ``results.json``, ``grid.png`` (real and synthetic
side by side) and ``unet.safetensors`` (the real-trained U-Net used as the instrument). The
measures themselves live in `wsi_aug.eval_gan`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsi_aug.stages.base import Stage, StageParams, StageResult, param

NAME = "eval-gan"
MADE_BY = "wsi-aug eval-gan"
_METRICS = "metrics"


class EvalGanParams(StageParams):
    """The measures' sample sizes and the real-trained U-Net used as the instrument."""

    stage = NAME

    unet_epochs: int = param(
        30, "Epochs of the real-trained U-Net used for mask consistency and features.", ge=1
    )
    unet_width: float = param(
        0.25, "That U-Net's filter multiplier (64 x width at the top).", gt=0
    )
    unet_samples_per_epoch: int | None = param(
        None, "That U-Net's training samples per epoch (default: the real train set).", ge=1
    )
    n_pairs: int = param(200, "Image pairs per set for the diversity measures.", ge=1)
    max_images: int = param(1000, "At most this many images of each set are compared.", ge=2)
    batch_size: int = param(8, "U-Net batch size.", ge=1)
    grid_rows: int = param(8, "Rows of eval-gan/grid.png.", ge=1)
    seed: int = param(0, "Random seed (U-Net, image choice, pairs).", ge=0)
    device: str = param(
        "auto", "torch device: auto (CUDA when present, else CPU), cpu, cuda ...", key=False
    )


@dataclass(frozen=True)
class EvalGanResult:
    """The metrics, their Markdown table and the files written."""

    metrics: dict[str, float]
    notes: dict[str, str]
    table: str
    csv: Path
    markdown: Path
    grid: Path
    store: StageResult

    @property
    def cached(self) -> bool:
        return self.store.cached

    @property
    def path(self) -> Path:
        return self.store.path

    @property
    def outputs(self) -> tuple[Path, ...]:
        return (self.markdown, self.grid)

    @property
    def text(self) -> str:
        return self.table


def read_metrics(path: Path) -> tuple[dict[str, float], dict[str, str]]:
    """The metrics and their meanings from a complete ``eval-gan.zarr``."""
    from wsi_aug import store

    g = store.open_stage(path, stage=NAME, made_by=MADE_BY)
    t = store.read_table(g, _METRICS)
    metrics = {str(k): float(v) for k, v in zip(t["metric"], t["value"])}
    notes = {str(k): str(m) for k, m in zip(t["metric"], t["meaning"])}
    return metrics, notes


def eval_gan(
    work: str | Path,
    params: EvalGanParams | None = None,
    *,
    force: bool = False,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
    **overrides: Any,
) -> EvalGanResult:
    """Stage: measure the synthetic set against the real patches (cached)."""
    import numpy as np

    from wsi_aug import store
    from wsi_aug.device import resolve_device
    from wsi_aug.eval_gan import DESCRIPTIONS, measure, metrics_markdown, write_tables
    from wsi_aug.stages.structure import PairedStores
    from wsi_aug.stages.synthesize import SyntheticStore

    p = EvalGanParams.build(params, **overrides)
    wd = store.WorkDir(Path(work))
    wd.check_layout(force)
    pairs = PairedStores(work)
    synth = SyntheticStore.open(work)
    inputs = {**pairs.fingerprints(), "synthetic": synth.fingerprint()}
    key = p.key_dict()
    path, files = wd.store(NAME), wd.files(NAME)
    res = store.cached_result(path, stage=NAME, params=key, inputs=inputs, force=force)
    if res is None:
        patches = pairs.patches
        table = patches.table
        images, masks = patches.read_all()
        splits = {s: np.flatnonzero(table.split == s) for s in ("train", "val", "test")}
        result = measure(
            images,
            masks,
            splits,
            synthetic=synth.read_all(),
            source_index=synth.provenance.source_index,
            structure_params=pairs.structure.map_options,
            n_pairs=p.n_pairs,
            seed=p.seed,
            unet_epochs=p.unet_epochs,
            unet_width=p.unet_width,
            unet_samples_per_epoch=p.unet_samples_per_epoch,
            batch_size=p.batch_size,
            max_images=p.max_images,
            grid_rows=p.grid_rows,
            device=resolve_device(p.device),
            progress=progress,
            where=str(patches.path),
        )
        with store.build_stage(path, stage=NAME, params=key, inputs=inputs, files=files) as b:
            m = result.metrics
            store.write_table(
                b.group,
                _METRICS,
                {
                    "metric": list(m),
                    "value": np.array(list(m.values()), np.float64),
                    "meaning": [result.notes.get(k) or DESCRIPTIONS[k] for k in m],
                },
            )
            b.group.attrs["structure_method"] = result.structure_method
            b.group.attrs["unet_best_epoch"] = result.unet_best_epoch
            assert b.files is not None
            result.save(b.files)
            write_tables(b.files, m, result.notes)
        res = StageResult(path, False, store.read_meta(path) or {})
    metrics, notes = read_metrics(path)
    return EvalGanResult(
        metrics=metrics,
        notes=notes,
        table=metrics_markdown(metrics, notes),
        csv=files / "results.csv",
        markdown=files / "results.md",
        grid=files / "grid.png",
        store=res,
    )


STAGE = Stage(
    name=NAME,
    params=EvalGanParams,
    run=eval_gan,
    help="Measure the synthetic set against the real patches: diversity, structure, masks, "
    "colour, Fréchet distance (writes eval-gan.zarr and eval-gan/).",
    store="eval-gan.zarr",
    inputs=("extract", "structure", "synthesize"),
)
