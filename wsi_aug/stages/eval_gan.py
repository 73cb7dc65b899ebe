"""Stage `eval-gan`: how good the synthetic set is, measured against the real patches.

Several synthetic sets (this work folder's and those of ``synthetic``, e.g. one per GAN variant)
are measured against the same real patches, each as one row of the comparison table, beside the
floor row (two halves of the real set). Writes ``eval-gan.zarr`` (a ``metrics`` table: set,
metric, value, meaning) and, beside it, ``eval-gan/``: ``results.csv``, ``results.md``,
``results.json``, ``grid.png`` (real and synthetic side by side; ``grid-LABEL.png`` for the further
sets), ``spectrum.png`` (the power spectra) and ``unet.safetensors`` (the real-trained U-Net used
as the instrument). The measures themselves live in `wsi_aug.eval_gan` and `wsi_aug.realism`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from wsi_aug.errors import WsiAugError
from wsi_aug.stages.base import Stage, StageParams, StageResult, param

NAME = "eval-gan"
MADE_BY = "wsi-aug eval-gan"
_METRICS = "metrics"

if TYPE_CHECKING:
    from wsi_aug.stages.synthesize import SyntheticStore


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
    seed: int = param(0, "Random seed (U-Net, image choice, pairs, C2ST).", ge=0)
    synthetic: tuple[str, ...] = param(
        (),
        "Further synthetic sets to compare (repeatable): a work folder or a synthesize.zarr, as "
        "PATH or LABEL=PATH (label: the folder's name); this work folder's set comes first.",
        key=False,  # their fingerprints and labels are the inputs
    )
    c2st_epochs: int = param(
        20, "Training passes of the C2ST classifier (real vs synthetic); 0: no C2ST.", ge=0
    )
    c2st_size: int = param(
        64, "Side in pixels of what the C2ST classifier sees (crops, or the resized patch).", ge=8
    )
    c2st_view: Literal["crop", "resize"] = param(
        "crop",
        "C2ST input: crops at full resolution (fine texture) or the patch resized (layout).",
    )
    c2st_train_fraction: float = param(
        0.5, "Share of each set the C2ST classifier trains on; it is scored on the rest.",
        gt=0, lt=1,
    )
    device: str = param(
        "auto", "torch device: auto (CUDA when present, else CPU), cpu, cuda ...", key=False
    )


@dataclass(frozen=True)
class EvalGanResult:
    """The metrics (the first set's; every set's in ``sets``), the table and the files written."""

    metrics: dict[str, float]
    notes: dict[str, str]
    table: str
    csv: Path
    markdown: Path
    grid: Path
    store: StageResult
    sets: dict[str, dict[str, float]]  # label -> metrics, the floor row (`FLOOR`) last
    spectrum: Path

    @property
    def cached(self) -> bool:
        return self.store.cached

    @property
    def path(self) -> Path:
        return self.store.path

    @property
    def outputs(self) -> tuple[Path, ...]:
        return (self.markdown, self.grid, self.spectrum)

    @property
    def text(self) -> str:
        return self.table


def read_sets(path: Path) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """Every set's metrics (label -> metric -> value, the floor row last) and their meanings
    from a complete ``eval-gan.zarr``."""
    from wsi_aug import store

    g = store.open_stage(path, stage=NAME, made_by=MADE_BY)
    t = store.read_table(g, _METRICS)
    if "set" not in t:
        raise WsiAugError(f"{path}: made by an older eval-gan; rerun `wsi-aug eval-gan --force`")
    sets: dict[str, dict[str, float]] = {}
    for label, k, v in zip(t["set"], t["metric"], t["value"]):
        sets.setdefault(str(label), {})[str(k)] = float(v)
    notes = {str(k): str(m) for k, m in zip(t["metric"], t["meaning"])}
    return sets, notes


def read_metrics(path: Path) -> tuple[dict[str, float], dict[str, str]]:
    """The first set's metrics and their meanings from a complete ``eval-gan.zarr``."""
    sets, notes = read_sets(path)
    return next(iter(sets.values())), notes


def _split_spec(spec: str) -> tuple[str | None, Path]:
    """``LABEL=PATH`` -> (LABEL, PATH); a plain path (even one holding "=") -> (None, PATH)."""
    label, eq, rest = spec.partition("=")
    if eq and label and rest and "/" not in label and not Path(spec).exists():
        return label, Path(rest)
    return None, Path(spec)


def open_synthetic(spec: str) -> tuple[str, SyntheticStore]:
    """A ``--synthetic`` value (PATH or LABEL=PATH: a work folder or a synthesize.zarr) opened,
    with its label (given, else the work folder's name)."""
    from wsi_aug import store
    from wsi_aug.stages.synthesize import MADE_BY as SYN_MADE_BY
    from wsi_aug.stages.synthesize import NAME as SYN_NAME
    from wsi_aug.stages.synthesize import SyntheticStore

    label, path = _split_spec(spec)
    if not path.is_dir():
        raise WsiAugError(
            f"eval-gan --synthetic {spec}: {path} is not a folder; give a work folder or its "
            "synthesize.zarr, as PATH or LABEL=PATH"
        )
    path = path.resolve()
    if (path / "zarr.json").is_file():
        group = store.open_stage(path, stage=SYN_NAME, made_by=SYN_MADE_BY)
        syn = SyntheticStore(path, group)
        default = path.parent.name if path.name == f"{SYN_NAME}.zarr" else path.stem
    else:
        syn = SyntheticStore.open(path)
        default = path.name
    return label or default, syn


def _sets(
    work: Path, specs: tuple[str, ...], patches_fp: str
) -> tuple[list[tuple[str, SyntheticStore, bool]], dict[str, str]]:
    """The synthetic sets (label, store, whether its source indices are this folder's patches)
    and their input fingerprints. This work folder's set comes first; with further sets given,
    it is left out where it was never built."""
    from wsi_aug import store
    from wsi_aug.stages.synthesize import SyntheticStore

    out: list[tuple[str, SyntheticStore, bool]] = []
    inputs: dict[str, str] = {}
    wd = store.WorkDir(work)
    if not specs or store.read_meta(wd.synthetic) is not None:
        own = SyntheticStore.open(work)
        out.append((work.resolve().name, own, True))
        inputs["synthetic"] = own.fingerprint()
    for spec in specs:
        label, syn = open_synthetic(spec)
        made_from = (syn.meta.get("inputs") or {}).get("patches")
        out.append((label, syn, made_from == patches_fp))
        inputs[f"synthetic:{label}"] = syn.fingerprint()
    labels = [label for label, _, _ in out]
    if len(set(labels)) != len(labels):
        raise WsiAugError(
            f"eval-gan --synthetic: the labels {labels} repeat; name the sets as LABEL=PATH"
        )
    inputs["sets"] = ",".join(labels)
    return out, inputs


def eval_gan(
    work: str | Path,
    params: EvalGanParams | None = None,
    *,
    force: bool = False,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
    **overrides: Any,
) -> EvalGanResult:
    """Stage: measure the synthetic sets against the real patches (cached)."""
    import numpy as np

    from wsi_aug import store
    from wsi_aug.device import resolve_device
    from wsi_aug.eval_gan import (
        DESCRIPTIONS,
        SyntheticSet,
        measure,
        result_rows,
        results_markdown,
        write_tables,
    )
    from wsi_aug.stages.structure import PairedStores

    p = EvalGanParams.build(params, **overrides)
    wd = store.WorkDir(Path(work))
    wd.check_layout(force)
    pairs = PairedStores(work)
    fps = pairs.fingerprints()
    sets, set_inputs = _sets(Path(work), p.synthetic, fps["patches"])
    inputs = {**fps, **set_inputs}
    key = p.key_dict()
    path, files = wd.store(NAME), wd.files(NAME)
    res = store.cached_result(path, stage=NAME, params=key, inputs=inputs, force=force)
    if res is None:
        patches = pairs.patches
        table = patches.table
        images, masks = patches.read_all()
        splits = {s: np.flatnonzero(table.split == s) for s in ("train", "val", "test")}
        synthetic = []
        for label, syn, same_patches in sets:
            sx, sy, ss = syn.read_all()
            src = syn.provenance.source_index if same_patches else None
            synthetic.append(SyntheticSet(label, sx, sy, ss, src))
        result = measure(
            images,
            masks,
            splits,
            synthetic=synthetic,
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
            c2st_options={
                "epochs": p.c2st_epochs,
                "size": p.c2st_size,
                "view": p.c2st_view,
                "train_fraction": p.c2st_train_fraction,
            },
            progress=progress,
            where=str(patches.path),
        )
        with store.build_stage(path, stage=NAME, params=key, inputs=inputs, files=files) as b:
            rows = result_rows(result.sets, result.notes)
            store.write_table(
                b.group,
                _METRICS,
                {
                    "set": [r["set"] for r in rows],
                    "metric": [r["metric"] for r in rows],
                    "value": np.array([r["value"] for r in rows], np.float64),
                    "meaning": [r["meaning"] or DESCRIPTIONS.get(r["metric"], "") for r in rows],
                },
            )
            b.group.attrs["structure_method"] = result.structure_method
            b.group.attrs["unet_best_epoch"] = result.unet_best_epoch
            assert b.files is not None
            result.save(b.files)
            write_tables(b.files, result.sets, result.notes)
        res = StageResult(path, False, store.read_meta(path) or {})
    all_sets, notes = read_sets(path)
    return EvalGanResult(
        metrics=next(iter(all_sets.values())),
        notes=notes,
        table=results_markdown(all_sets, notes),
        csv=files / "results.csv",
        markdown=files / "results.md",
        grid=files / "grid.png",
        store=res,
        sets=all_sets,
        spectrum=files / "spectrum.png",
    )


STAGE = Stage(
    name=NAME,
    params=EvalGanParams,
    run=eval_gan,
    help="Measure synthetic sets against the real patches: C2ST, power spectrum, diversity, "
    "structure, masks, colour, Fréchet distance (writes eval-gan.zarr and eval-gan/).",
    store="eval-gan.zarr",
    inputs=("extract", "structure", "synthesize"),
)
