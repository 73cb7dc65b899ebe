"""Stage `export`: the patches (real, synthetic or both) as an nnU-Net v2, PNG or COCO dataset.

Writes files, not a store, into OUT (default ``WORK/export/FORMAT-WHAT``): see `wsi_aug.export`
for the layouts. The export is built in a hidden ``.OUT.tmp-PID-*`` folder beside OUT and moved
into place only when complete, with ``OUT/.export-params.json`` (its parameters and input
fingerprints) written last, so a rerun with the same inputs does nothing, a change rewrites OUT,
and a crash never leaves a half export that reads as complete.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from wsi_aug.errors import WsiAugError
from wsi_aug.stages.base import Stage, StageParams, StageResult, param

if TYPE_CHECKING:
    import numpy as np

    from wsi_aug.export import Case, Read

NAME = "export"
DONE = ".export-params.json"


class ExportParams(StageParams):
    """Which patches, in which format, where."""

    stage = NAME

    out: Path | None = param(
        None,
        "Folder to write (default: WORK/export/FORMAT-WHAT); for nnU-Net, "
        "$nnUNet_raw/DatasetNNN_NAME.",
        argument=True,
        key=False,
    )
    format: Literal["nnunet", "png", "coco"] = param(
        "nnunet",
        "nnunet (v2 raw dataset with patient-grouped splits_final.json), png (image/mask "
        "pairs) or coco (instance polygons JSON beside the PNGs).",
    )
    what: Literal["real", "synthetic", "both"] = param(
        "real", "real (extract.zarr), synthetic (synthesize.zarr) or both."
    )
    folds: int = param(
        5,
        "nnunet: cross-validation folds, each a group of patients (fewer when there are fewer "
        "patients); 1: extract's own train/val split.",
        ge=1,
    )
    negatives: bool = param(True, "Include the real patches without a glomerulus.")
    mask_values: Literal["0/255", "0/1"] = param(
        "0/255", "png: mask pixel values (nnU-Net labels are always 0/1)."
    )

    def key_dict(self) -> dict[str, Any]:
        """Options of another format leave the files unchanged: they stay out of the key."""
        d = super().key_dict()
        if self.format != "nnunet":
            d.pop("folds")
        if self.format != "png":
            d.pop("mask_values")
        return d


def export(
    work: str | Path,
    params: ExportParams | None = None,
    *,
    force: bool = False,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
    **overrides: Any,
) -> StageResult:
    """Write the chosen patches into ``params.out`` in the chosen format, unless already there."""
    from wsi_aug import store

    p = ExportParams.build(params, **overrides)
    wd = store.WorkDir(Path(work))
    wd.check_layout(force)
    out = Path(p.out) if p.out is not None else wd.files(NAME) / f"{p.format}-{p.what}"
    cases, read, inputs = _sources(Path(work), p)
    record = {"params": p.key_dict(), "inputs": inputs}
    if not force and _done(out) == record:
        return StageResult(out, True, record, outputs=(out,))
    if out.exists() and not out.is_dir():
        raise WsiAugError(f"{out}: is a file, not a folder; give another OUT folder")
    if out.is_dir() and any(out.iterdir()) and _done(out) is None:
        raise WsiAugError(
            f"{out}: exists and is not a wsi-aug export (no {DONE}); give a new or empty OUT "
            "folder, or remove this one"
        )
    store.remove_stale(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = out.parent / f".{out.name}.tmp-{owner}"
    tmp.mkdir()
    try:
        notes = _write(tmp, out.name, cases, read, p, progress)
        (tmp / DONE).write_text(json.dumps(record, sort_keys=True) + "\n")
        _replace(tmp, out, owner)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if report:
        for line in notes:
            report(line)
    return StageResult(out, False, record, outputs=(out,))


def _done(out: Path) -> Any:
    """The record of a complete export in `out`, or None."""
    try:
        return json.loads((out / DONE).read_text())
    except (OSError, ValueError):
        return None


def _replace(tmp: Path, out: Path, owner: str) -> None:
    """Move the finished `tmp` to `out`; an old export goes aside first, then away."""
    old = out.parent / f".{out.name}.old-{owner}"
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def _sources(work: Path, p: ExportParams) -> tuple[list[Case], Read, dict[str, str]]:
    """The cases to export (real first, then synthetic), a reader for their pixels, fingerprints."""
    from wsi_aug import store
    from wsi_aug.export import REAL, SYNTHETIC, Case, real_case_id, synthetic_case_id, unique_ids
    from wsi_aug.stages.extract import PatchStore

    patches = PatchStore.open(work)
    t = patches.table
    inputs = {"extract": patches.fingerprint()}
    real: list[tuple[str, Case]] = []
    if p.what in ("real", "both"):
        rows = patches.select(positive=None if p.negatives else True)
        for r in rows.tolist():
            cid = real_case_id(str(t.slide[r]), str(t.object_id[r]), float(t.cx[r]), float(t.cy[r]))
            real.append(
                (cid, Case(cid, REAL, str(t.split[r]), str(t.patient[r]), str(t.slide[r]),
                           str(t.object_id[r]), int(r)))
            )  # fmt: skip
    syn: list[tuple[str, Case]] = []
    synth: Any = None
    if p.what in ("synthetic", "both"):
        from wsi_aug.stages.synthesize import SyntheticStore

        synth = SyntheticStore.open(work)
        inputs["synthesize"] = synth.fingerprint()
        source = synth.provenance.source_index
        n = len(synth)
        for i in range(n):
            j = int(source[i])
            ok = 0 <= j < len(t)
            cid = synthetic_case_id(i, n)
            syn.append(
                (cid, Case(cid, SYNTHETIC, "train", str(t.patient[j]) if ok else "",
                           str(t.slide[j]) if ok else "", "", i, j))
            )  # fmt: skip
    # synthetic ids first, so that they stay syn_NNNNNN whatever the slides are called
    ids = unique_ids([cid for cid, _ in syn] + [cid for cid, _ in real])
    named = [c for _, c in syn + real]
    renamed = [_rename(c, cid) for c, cid in zip(named, ids)]
    cases = renamed[len(syn) :] + renamed[: len(syn)]
    if not cases:
        raise WsiAugError(
            f"{patches.path}: no patch to export; extract glomeruli with `wsi-aug extract`"
        )

    def read(kind: str, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if kind == REAL:
            return patches.read(rows)
        return store.read_rows(synth.images, rows), store.read_rows(synth.masks, rows)

    return cases, read, inputs


def _rename(case: Case, cid: str) -> Case:
    from dataclasses import replace

    return replace(case, case=cid)


def _write(
    tmp: Path,
    name: str,
    cases: list[Case],
    read: Read,
    p: ExportParams,
    progress: bool,
) -> list[str]:
    """Write the export's files into `tmp` (to become a folder called `name`); returns notes."""
    from tqdm.auto import tqdm

    from wsi_aug import __version__
    from wsi_aug.export import write_coco, write_nnunet, write_pngs

    description = f"glomerulus patches ({p.what}) exported by wsi-aug {__version__}"
    notes: list[str] = []
    with tqdm(total=len(cases), unit="png", desc="export", disable=not progress) as bar:
        if p.format == "nnunet":
            notes = write_nnunet(
                tmp,
                cases,
                read,
                name=name,
                folds=p.folds,
                description=description,
                progress=bar.update,
            )
        elif p.format == "png":
            mask_max = 255 if p.mask_values == "0/255" else 1
            write_pngs(tmp, cases, read, mask_max=mask_max, progress=bar.update)
        else:
            write_coco(tmp, cases, read, description=description, progress=bar.update)
    return notes


STAGE = Stage(
    name=NAME,
    params=ExportParams,
    run=export,
    help="Export patches (real, synthetic or both) as an nnU-Net v2 raw dataset, PNG pairs or "
    "COCO instances into OUT (default: WORK/export/FORMAT-WHAT).",
    store="export",
    inputs=("extract", "synthesize"),
    kind="files",
)
