"""Stage `extract`: slides + annotations -> glomerulus-centred patches in ``extract.zarr``.

The store holds ``images`` (N, S, S, 3) uint8, ``masks`` (N, S, S) uint8 in {0, 1} and a table
with one row per patch (`PatchTable`); `PatchStore` reads it, `PatchWriter` writes it, and no
other module knows those names. The per-slide work lives in `wsi_aug.extract`.

Extraction resumes: every `CHECKPOINT_SECONDS` the run records which slides are finished (in a
hidden ``.extract.zarr.partial-KEY.progress/`` folder beside the unfinished store), so a rerun
with the same inputs and options continues after the last recorded slide.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from wsi_aug.errors import WsiAugError
from wsi_aug.stages.base import Stage, StageParams, StageResult, StageStore, param

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import zarr

    from wsi_aug.extract import ExtractSummary, SlideOutput, SlideTask
    from wsi_aug.fingerprint import FileFingerprints

NAME = "extract"
MADE_BY = "wsi-aug extract SLIDES"
_IMAGES, _MASKS, _TABLE = "images", "masks", "table"
CHUNK_BYTES = 12 << 20
"""About the uncompressed bytes of one chunk of ``images``: 64 patches of 256 px RGB. Each chunk
write costs about 1 ms of zarr's Python work besides its bytes; 64 a chunk writes the 455 HuBMAP
patches in 0.09 s against 0.13 s at 16, and readers take rows in blocks (`store.read_rows`), where
decompressing a whole LZ4 chunk costs a few milliseconds. Larger patches get fewer a chunk, so
that a chunk (held in memory while it fills, and read whole for one row) stays this size."""
MAX_ITEMS_PER_CHUNK = 64


def items_per_chunk(size: int) -> int:
    """Patches per chunk of ``images`` and ``masks`` for patches of `size` px (1 to 64)."""
    return max(1, min(MAX_ITEMS_PER_CHUNK, CHUNK_BYTES // (size * size * 3)))


CHECKPOINT_SECONDS = 10.0
"""How often a running extraction records the slides it finished (what a crash can lose)."""

ObjectType = Literal["annotation", "detection", "cell"]


class ExtractParams(StageParams):
    """Which slides, and everything that decides the content of ``extract.zarr``."""

    stage = NAME

    inputs: tuple[Path, ...] = param(
        (),
        "Slide files or folders (each slide pairs with an annotation file).",
        argument=True,
        key=False,
    )
    annotations: Path | None = param(
        None,
        "Folder of annotation files named like the slides (default: beside them).",
        key=False,
    )
    manifest: Path | None = param(
        None,
        "CSV with columns slide, annotation[, patient, split, mpp] instead of INPUTS.",
        key=False,
    )
    recursive: bool = param(False, "Look for slides in sub-folders too.", key=False)
    size: int = param(256, "Patch side in pixels.", ge=16)
    mpp: float = param(1.0, "Target resolution of the patches, micrometres per pixel.", gt=0)
    labels: tuple[str, ...] = param(
        ("glomerulus", "glomeruli"),
        "Annotation class to use, case-insensitive (repeatable).",
        cli="--label",
        min_length=1,
    )
    negatives: int = param(
        0, "Random tissue windows without glomeruli per slide (for segmentation).", ge=0
    )
    split: tuple[float, float, float] = param(
        (0.6, 0.2, 0.2), "Train,val,test fractions of patients (or slides where none is given)."
    )
    seed: int = param(0, "Random seed (splits and negative windows).", ge=0)
    min_area: float = param(
        500.0, "Objects under this area (square micrometres) get no patch of their own.", ge=0
    )
    objects: tuple[ObjectType, ...] = param(
        ("annotation",), "QuPath object types to read (repeatable).", min_length=1
    )
    mask_value: int | None = param(
        None, "For label-image masks: the pixel value of the class (default: any non-zero)."
    )
    mask_channel: int | None = param(
        None,
        "For RGB mask images: the channel holding the mask (0 red, 1 green, 2 blue).",
        ge=0,
        le=3,
    )
    backend: Literal["auto", "openslide", "tifffile", "image"] = param(
        "auto", "Slide reader; auto takes the first that opens the file."
    )
    slide_mpp: float | None = param(
        None,
        "The slides' own pixel size in micrometres per pixel; required for plain images and "
        "slides without pixel size, and overrides wrong metadata.",
        gt=0,
    )
    workers: int = param(1, "Parallel worker processes (one slide each).", ge=1, key=False)
    scheduler: str | None = param(
        None,
        "Address of a Dask scheduler to send the per-slide tasks to (wsi-aug[dask]).",
        key=False,
    )


def _done_slides(folder: Path, tasks: Sequence[SlideTask]) -> list[SlideOutput]:
    """The slides an interrupted run finished, from its progress records (in task order).

    Each checkpoint wrote one file, ``NNNNNN.json`` after the index of its first slide, holding
    the list of the records of the slides it vouches for (a file holding one record, not a list,
    is read as such a list too). A file that is missing or unreadable, or a record that does not
    match the task at its place (the plan changed), ends the list.
    """
    import numpy as np

    from wsi_aug.extract import PatchRow, SlideOutput

    done: list[SlideOutput] = []
    empty = np.zeros((0,), np.uint8)
    while len(done) < len(tasks):
        try:
            data = json.loads((folder / f"{len(done):06d}.json").read_text())
        except (OSError, ValueError):
            break
        for rec in data if isinstance(data, list) else [data]:
            i = len(done)
            if i >= len(tasks) or not isinstance(rec, dict):
                return done
            if rec.get("slide") != str(tasks[i].slide):
                return done
            rows = [PatchRow(**r) for r in rec["rows"]]
            done.append(SlideOutput(tasks[i].slide, empty, empty, rows, rec["notes"], rec["error"]))
    return done


def _write_records(folder: Path, outputs: Sequence[tuple[int, SlideOutput]]) -> None:
    """One checkpoint's records (slides in order from ``outputs[0][0]`` on) as one file.

    One file, so one fsync per checkpoint: a fsync per slide costs about 4 ms here, more than a
    small plain image takes to extract.
    """
    from dataclasses import asdict

    from wsi_aug import store

    if not outputs:
        return
    records = [
        {
            "slide": str(o.slide),
            "rows": [asdict(r) for r in o.rows],
            "notes": o.notes,
            "error": o.error,
        }
        for _, o in outputs
    ]
    store.atomic_write_bytes(folder / f"{outputs[0][0]:06d}.json", json.dumps(records).encode())


def _write_patches(
    g: zarr.Group,
    records: Path,
    tasks: Sequence[SlideTask],
    summary: ExtractSummary,
    p: ExtractParams,
    progress: bool,
    report: Callable[[str], None] | None,
) -> None:
    """Fill a (resumable) patches store: slide by slide, each recorded once it is written.

    The arrays grow as slides finish, so memory holds a few slides' patches. Every
    `CHECKPOINT_SECONDS` the patches written so far are flushed and a record per finished slide
    (its table rows and notes) goes to `records`, so an interrupted run continues after the
    last recorded slide; the records are removed once the store is complete.
    """
    import numpy as np
    from tqdm import tqdm

    from wsi_aug.extract import SlideOutput, group_messages, iter_outputs

    records.mkdir(parents=True, exist_ok=True)
    done = _done_slides(records, tasks) if PatchWriter.resumable(g) else []
    rows = [r for o in done for r in o.rows]
    writer = PatchWriter(g, p.size, resume_rows=len(rows) if done else None)
    for o in done:
        summary.add(o)
    if done and report:
        report(f"extract: resuming after {len(done)} of {len(tasks)} slides ({len(rows)} patches)")
    bar = tqdm(
        total=len(tasks), initial=len(done), desc="extract", unit="slide", disable=not progress
    )
    unrecorded: list[tuple[int, SlideOutput]] = []  # finished slides not yet on record (no pixels)
    last = time.monotonic()
    try:
        for i, o in enumerate(iter_outputs(tasks[len(done) :], p.workers, p.scheduler), len(done)):
            summary.add(o)
            if o.error is None and o.rows:
                writer.append(o.images, o.masks)
                rows.extend(o.rows)
            empty = np.zeros((0,), np.uint8)
            unrecorded.append((i, SlideOutput(o.slide, empty, empty, o.rows, o.notes, o.error)))
            if time.monotonic() - last >= CHECKPOINT_SECONDS and i + 1 < len(tasks):
                writer.flush()  # the patches first, then the records that vouch for them
                _write_records(records, unrecorded)
                unrecorded.clear()
                last = time.monotonic()
            bar.update(1)
            bar.set_postfix(patches=len(rows), refresh=False)  # shown at the bar's next refresh
    except BaseException:
        writer.abort()  # no write of this run may land after it (a rerun resumes this store)
        raise
    bar.close()
    if report:
        for line in summary.lines():
            report(line)
    if not rows:  # a user error, not an interruption: keep no partial store to resume
        writer.abort()
        shutil.rmtree(records.with_suffix(""), ignore_errors=True)  # the partial store itself
        shutil.rmtree(records, ignore_errors=True)
        raise WsiAugError("no slide gave a patch: " + "; ".join(group_messages(summary.skipped)))
    writer.finish(
        PatchTable.from_rows(rows),
        {"size": p.size, "mpp": p.mpp, "summary": summary.lines()},
    )


@dataclass
class ExtractResult:
    """The stage result plus the summary of this run (empty when cached)."""

    stage: StageResult
    summary: ExtractSummary

    @property
    def path(self) -> Path:
        return self.stage.path

    @property
    def cached(self) -> bool:
        return self.stage.cached

    @property
    def outputs(self) -> tuple[Path, ...]:
        return self.stage.outputs

    @property
    def text(self) -> str:
        return ""


def extract(
    work: str | Path,
    params: ExtractParams | None = None,
    *,
    force: bool = False,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
    **overrides: Any,
) -> ExtractResult:
    """Stage: extract glomerulus-centred patches from slides into ``WORK/extract.zarr``.

    Bad slides are reported in the summary and skipped; an error is raised only when no slide
    gave a patch. ``extract(work, inputs=["slides/"], size=256)`` or with `ExtractParams`.
    """
    from wsi_aug.extract import opening_ahead, plan_tasks
    from wsi_aug.fingerprint import fingerprinting

    p = ExtractParams.build(params, **overrides)
    if not p.inputs and p.manifest is None:
        raise WsiAugError("extract: give slide files or folders, or --manifest CSV")
    tasks, skipped = plan_tasks(
        p.inputs, p, annotations=p.annotations, manifest=p.manifest, recursive=p.recursive
    )
    # The inputs are hashed and the first slides open (decode) in threads while the store module
    # (zarr) is imported and the cache is checked; a cached result closes the slides unused.
    here = p.workers <= 1 and not p.scheduler
    files = [f for t in tasks for f in (t.slide, t.annotation)]
    with fingerprinting(files) as prints, opening_ahead(tasks if here else ()):
        return _extract(Path(work), p, tasks, skipped, force, progress, report, prints)


def _extract(
    work: Path,
    p: ExtractParams,
    tasks: list[SlideTask],
    skipped: list[str],
    force: bool,
    progress: bool,
    report: Callable[[str], None] | None,
    prints: FileFingerprints,
) -> ExtractResult:
    from wsi_aug import store
    from wsi_aug.extract import ExtractSummary, group_messages

    wd = store.WorkDir(work)
    wd.check_layout(force)
    summary = ExtractSummary(skipped=list(skipped))
    if not tasks:
        raise WsiAugError("nothing to extract: " + "; ".join(group_messages(skipped)))
    inputs_fp = {
        "slides": {
            str(t.slide.resolve()): [
                prints.get(t.slide),
                prints.get(t.annotation),
                t.patient,
                t.split,
                t.slide_mpp,
            ]
            for t in tasks
        }
    }
    key_args: dict[str, Any] = {"stage": NAME, "params": p.key_dict(), "inputs": inputs_fp}
    hit = store.cached_result(wd.patches, force=force, **key_args)
    if hit is not None:
        return ExtractResult(StageResult(hit.path, True, hit.meta), summary)
    partial = store.partial_path(wd.patches, store.stage_key(**key_args))
    records = partial.with_name(partial.name + ".progress")
    if force:  # a forced rebuild does not resume an interrupted one
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(records, ignore_errors=True)
    with store.build(wd.patches, resumable=True, **key_args) as g:
        _write_patches(g, records, tasks, summary, p, progress, report)
    shutil.rmtree(records, ignore_errors=True)
    meta = store.read_meta(wd.patches) or {}
    return ExtractResult(StageResult(wd.patches, False, meta), summary)


@dataclass(frozen=True)
class PatchTable:
    """One row per patch: where it came from, its split and whether it holds a glomerulus."""

    slide: np.ndarray  # str: the slide's file name
    patient: np.ndarray  # str: the patient (the slide where none is given)
    object_id: np.ndarray  # str: the annotation's id ('' for negatives)
    label: np.ndarray  # str: the annotation's class ('' for negatives)
    cx: np.ndarray = field(metadata={"dtype": "float64"})  # window centre, level-0 pixels
    cy: np.ndarray = field(metadata={"dtype": "float64"})
    mpp: np.ndarray = field(metadata={"dtype": "float64"})  # the patch's µm/px
    split: np.ndarray  # str: train / val / test
    padded: np.ndarray = field(metadata={"dtype": bool})  # crossed the slide's edge (white padding)
    positive: np.ndarray = field(metadata={"dtype": bool})  # centred on a glomerulus

    @classmethod
    def columns(cls) -> tuple[str, ...]:
        """The column names, in the stored order."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_rows(cls, rows: Sequence[Any]) -> PatchTable:
        """A table from per-patch rows (objects with one attribute per column, e.g. PatchRow)."""
        import numpy as np

        col = {c: [getattr(r, c) for r in rows] for c in cls.columns()}
        kinds = {f.name: f.metadata.get("dtype", str) for f in fields(cls)}
        return cls(**{c: np.asarray(col[c], dtype=kinds[c]) for c in cls.columns()})

    def __len__(self) -> int:
        return len(self.split)

    def as_columns(self) -> dict[str, np.ndarray]:
        """Column name -> array, for `store.write_table`."""
        return {c: getattr(self, c) for c in self.columns()}


class PatchStore(StageStore):
    """A complete ``extract.zarr``, read-only."""

    NAME = NAME
    MADE_BY = MADE_BY

    def __init__(self, path: Path, group: zarr.Group) -> None:
        super().__init__(path, group)
        self._table: PatchTable | None = None

    @property
    def images(self) -> zarr.Array[Any]:
        """(N, S, S, 3) uint8 patches (lazy: index it to read)."""
        arr: zarr.Array[Any] = self.array(_IMAGES)
        return arr

    @property
    def masks(self) -> zarr.Array[Any]:
        """(N, S, S) uint8 glomerulus masks in {0, 1}."""
        arr: zarr.Array[Any] = self.array(_MASKS)
        return arr

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    @property
    def size(self) -> int:
        """The patch side in pixels."""
        return int(self.masks.shape[-1])

    @property
    def table(self) -> PatchTable:
        """The per-patch table (read once)."""
        if self._table is None:
            from wsi_aug import store

            cols = store.read_table(self.group, _TABLE)
            self._table = PatchTable(**{c: cols[c] for c in PatchTable.columns()})
        return self._table

    def select(self, split: str | None = None, positive: bool | None = None) -> np.ndarray:
        """Row indices of one split (None: all) and kind (True: glomeruli, False: negatives)."""
        import numpy as np

        t = self.table
        keep = np.ones(len(t), bool)
        if split is not None:
            keep &= t.split == split
        if positive is not None:
            keep &= t.positive == positive
        return np.flatnonzero(keep)

    def read(self, rows: np.ndarray | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Images and masks of the given rows (in that order)."""
        from wsi_aug import store

        return store.read_rows(self.images, rows), store.read_rows(self.masks, rows)

    def padding_insets(self, rows: np.ndarray | Sequence[int], batch: int = 256) -> np.ndarray:
        """(N, 4) int per row: its border band of white padding, (top, bottom, left, right) px.

        Zeros for the rows that cross no slide edge; only the padded rows' images are read (in
        batches), as `wsi_aug.imaging.padding_insets` measures them.
        """
        import numpy as np

        from wsi_aug import store
        from wsi_aug.imaging import padding_insets

        rows = np.asarray(rows, np.int64)
        out = np.zeros((len(rows), 4), np.int64)
        hit = np.flatnonzero(self.table.padded[rows]) if len(rows) else rows
        for start in range(0, len(hit), batch):
            part = hit[start : start + batch]
            out[part] = padding_insets(store.read_rows(self.images, rows[part]))
        return out

    def read_all(self) -> tuple[np.ndarray, np.ndarray]:
        """Every image and mask, in memory."""
        from wsi_aug import store

        return store.read_all(self.images), store.read_all(self.masks)


def patch_codecs() -> tuple[Any, ...]:
    """The compression of the patch and mask stacks: Blosc LZ4 (level 1, no shuffle).

    On the HuBMAP tiles' patches it writes about 14x faster than zarr's default Zstandard
    (level 3) and reads about 8x faster, for a store about a quarter larger (JPEG-decoded
    pixels compress little whatever the codec); masks stay small either way. Any zarr v3
    reader opens it (Blosc is one of the core codecs).
    """
    from zarr.codecs import BloscCodec

    return (BloscCodec(cname="lz4", clevel=1, shuffle="noshuffle"),)


class PatchWriter:
    """Writes ``extract.zarr``'s arrays as slides finish (growing), then its table.

    Where this process may use more than one CPU (or with ``background=True``), the chunks are
    compressed and written on a thread of their own while the caller extracts the next slides;
    `flush` and `finish` wait for them, `abort` drops those not started.
    """

    def __init__(
        self,
        group: zarr.Group,
        size: int,
        resume_rows: int | None = None,
        background: bool | None = None,
    ) -> None:
        """New arrays, or (`resume_rows`) those of an interrupted run cut to that many rows."""
        import zarr

        from wsi_aug import store

        if background is None:
            from wsi_aug.extract import usable_cpus

            background = usable_cpus() > 1
        self._pool: ThreadPoolExecutor | None = None
        if background:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(1, thread_name_prefix="wsi-aug-write")
        self.group = group
        writers = []
        for name, shape in ((_IMAGES, (size, size, 3)), (_MASKS, (size, size))):
            if resume_rows is not None:
                arr = group[name]
                assert isinstance(arr, zarr.Array)
                arr.resize((resume_rows, *shape))
            else:
                arr = store.create_stack(
                    group,
                    name,
                    (0, *shape),
                    items_per_chunk=items_per_chunk(size),
                    compressors=patch_codecs(),
                )
            writers.append(store.StackWriter(arr, start=resume_rows or 0, executor=self._pool))
        self._images, self._masks = writers

    @staticmethod
    def resumable(group: zarr.Group) -> bool:
        """True when `group` holds an interrupted run's arrays."""
        return _IMAGES in group and _MASKS in group

    def append(self, images: np.ndarray, masks: np.ndarray) -> None:
        self._images.append(images)
        self._masks.append(masks)

    def flush(self) -> None:
        self._images.flush()
        self._masks.flush()

    def finish(self, table: PatchTable, attrs: Mapping[str, Any]) -> None:
        """Write what is left, the table, and the store's descriptive attributes."""
        from wsi_aug import store

        try:
            self._images.close()
            self._masks.close()
        finally:
            self.abort()
        store.write_table(self.group, _TABLE, table.as_columns())
        self.group.attrs.update(dict(attrs))

    def abort(self) -> None:
        """Stop: drop the writes not started, wait for the running one, end the thread."""
        self._images.abort()
        self._masks.abort()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def write_patch_store(
    work: str | Path,
    images: np.ndarray,
    masks: np.ndarray,
    table: PatchTable,
    *,
    params: Mapping[str, Any],
    inputs: Mapping[str, Any] | None = None,
    mpp: float = 1.0,
) -> Path:
    """A complete patch store from arrays in memory (for tests and imports of other data)."""
    from wsi_aug import store

    wd = store.WorkDir(Path(work))
    with store.build(wd.patches, stage=NAME, params=params, inputs=inputs or {}) as g:
        w = PatchWriter(g, int(masks.shape[-1]))
        w.append(images, masks)
        w.finish(table, {"size": int(masks.shape[-1]), "mpp": mpp})
    return wd.patches


STAGE = Stage(
    name=NAME,
    params=ExtractParams,
    run=extract,
    help="Extract glomerulus-centred patches (and masks) from slides into WORK/extract.zarr. "
    "INPUTS are slide files or folders; each slide pairs with an annotation file of the same "
    "name (QuPath GeoJSON, ASAP or ImageScope XML, LabelMe JSON, or a mask image).",
    store="extract.zarr",
)
