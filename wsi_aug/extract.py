"""Extraction: slides + annotation polygons -> glomerulus-centred patches in ``patches.zarr``.

One patch per annotated object of the chosen class: a window of `size` pixels at `mpp`
micrometres per pixel centred on the polygon's centroid. The mask rasterises every object of that
class that meets the window (holes stay holes). Windows crossing the slide's edge are padded with
white and flagged. Optional negatives are random tissue windows (Otsu on a thumbnail) that touch no
object. Splits are drawn per patient (per slide where no patient is known), never per patch.

The work is one task per slide (`extract_slide`), a plain picklable function, so it runs in this
process, in a process pool (``workers``), or on a Dask cluster (``scheduler``) alike.
"""

from __future__ import annotations

import json
import shutil
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wsi_aug import store
from wsi_aug.errors import WsiAugError
from wsi_aug.store import StageResult, WorkDir

DEFAULT_LABELS: tuple[str, ...] = ("glomerulus", "glomeruli")
MASK_SUFFIXES = {".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp"}


@dataclass(frozen=True)
class ExtractParams:
    """Everything that decides the content of ``patches.zarr`` (recorded in its attributes)."""

    size: int = 256
    mpp: float = 1.0
    labels: tuple[str, ...] = DEFAULT_LABELS
    negatives: int = 0
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)
    seed: int = 0
    min_area: float = 500.0  # square micrometres; smaller objects are fragments, not glomeruli
    objects: tuple[str, ...] = ("annotation",)
    mask_value: int | None = None
    mask_channel: int | None = None
    backend: str | None = None
    slide_mpp: float | None = None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["labels"] = list(self.labels)
        d["split"] = list(self.split)
        d["objects"] = list(self.objects)
        return d


@dataclass(frozen=True)
class SlideTask:
    """One slide's work: its files, patient and split, and the extraction parameters."""

    slide: Path
    annotation: Path
    patient: str
    split: str
    params: ExtractParams
    slide_mpp: float | None = None  # this slide's own pixel size (manifest), over params.slide_mpp


@dataclass
class SlideOutput:
    """What one slide gave: patches, their table rows, and what went wrong or was noteworthy."""

    slide: Path
    images: np.ndarray
    masks: np.ndarray
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class ExtractSummary:
    """Per-slide counts and problems, printed by the CLI and stored in the store's attributes."""

    slides_done: list[tuple[str, int, int, int]] = field(
        default_factory=list
    )  # name, pos, neg, padded
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [
            f"{n}: {p} glomeruli, {g} negatives, {pad} padded" for n, p, g, pad in self.slides_done
        ]
        out += [f"note: {m}" for m in self.notes]
        out += [f"skipped: {m}" for m in self.skipped]
        return out


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


def _empty(size: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((0, size, size, 3), np.uint8), np.zeros((0, size, size), np.uint8)


def _fill_rings(rings: Sequence[np.ndarray], size: int) -> np.ndarray:
    """Even-odd scanline fill of closed rings (x, y in output pixels) at the pixel centres.

    Every row's centre line is cut with every edge at once (half-open rule, so each row meets an
    even number of edges); pixels whose centres lie between consecutive crossings are filled. The
    even-odd rule over a polygon's exterior and holes leaves the holes empty.
    """
    edges = np.concatenate([np.c_[r[:-1], r[1:]] for r in rings if len(r) > 1])
    x0, y0, x1, y1 = edges.T
    y = (np.arange(size) + 0.5)[:, None]
    cut = (y0 <= y) != (y1 <= y)
    rows, idx = np.nonzero(cut)
    if len(rows) == 0:
        return np.zeros((size, size), bool)
    t = (y[rows, 0] - y0[idx]) / (y1[idx] - y0[idx])
    xs = x0[idx] + t * (x1[idx] - x0[idx])
    order = np.lexsort((xs, rows))
    rows, xs = rows[order], xs[order]
    c0 = np.clip(np.ceil(xs[0::2] - 0.5), 0, size).astype(np.intp)
    c1 = np.clip(np.ceil(xs[1::2] - 0.5), 0, size).astype(np.intp)
    diff = np.zeros((size, size + 1), np.int32)
    np.add.at(diff, (rows[0::2], c0), 1)
    np.add.at(diff, (rows[0::2], c1), -1)
    return np.cumsum(diff[:, :size], axis=1) > 0


def rasterize(
    geoms: Iterable[Any], box: tuple[float, float, float, float], size: int
) -> np.ndarray:
    """Binary (size, size) mask of the polygons over a level-0 box, sampled at pixel centres.

    A pixel is inside when its centre is covered by a polygon (holes excluded), so the mask is
    exact at the target resolution whatever the slide's own.
    """
    import shapely

    x0, y0, w0, h0 = box
    scale = np.array([size / w0, size / h0])
    origin = np.array([x0, y0])
    out = np.zeros((size, size), bool)
    window = shapely.box(x0, y0, x0 + w0, y0 + h0)
    for geom in geoms:
        if not geom.intersects(window):
            continue
        for poly in getattr(geom, "geoms", [geom]):
            if poly.is_empty or poly.geom_type != "Polygon":
                continue
            rings = [poly.exterior, *poly.interiors]
            out |= _fill_rings([(np.asarray(r.coords) - origin) * scale for r in rings], size)
    return out.astype(np.uint8)


def tissue_mask(thumb: np.ndarray) -> np.ndarray:
    """Tissue on a thumbnail: Otsu on saturation plus darkness (glass is bright and grey)."""
    from skimage.filters import threshold_otsu

    f = thumb.astype(np.float32) / 255.0
    mx, mn = f.max(-1), f.min(-1)
    sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0)
    score = sat + (1.0 - f.mean(-1))
    if float(score.max() - score.min()) < 1e-3:
        return np.zeros(score.shape, bool)
    return score > threshold_otsu(score)


def _slide_rng(seed: int, name: str) -> np.random.Generator:
    """A generator per slide, so results do not depend on which worker ran which slide."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _read_objects(task: SlideTask, width: int, height: int, notes: list[str]):
    """The chosen class's polygons of a slide, scaled to level 0, with what was dropped noted."""
    from shapely import affinity

    from wsi_aug.annotations.read import read_annotations

    p = task.params
    ann = task.annotation
    aset = read_annotations(
        ann,
        objects=p.objects,
        label=p.labels[0],
        mask_value=p.mask_value,
        mask_channel=p.mask_channel,
    )
    selected = aset.select(p.labels)
    if ann.suffix.lower() in MASK_SUFFIXES:
        from PIL import Image

        with Image.open(ann) as im:
            mw, mh = im.size
        if (mw, mh) != (width, height):  # a mask at lower resolution than the slide
            fx, fy = width / mw, height / mh
            for a in selected:
                a.geometry = affinity.scale(a.geometry, fx, fy, origin=(0, 0))
            notes.append(f"{ann.name}: mask {mw}x{mh} scaled to the slide's {width}x{height}")
    rep = aset.report
    if getattr(rep, "repaired", None):
        notes.append(f"{ann.name}: {_count(rep.repaired)} invalid polygon(s) repaired")
    if getattr(rep, "dropped", None):
        notes.append(f"{ann.name}: {_count(rep.dropped)} empty or degenerate polygon(s) dropped")
    import shapely

    frame = shapely.box(0, 0, width, height)
    outside = [a for a in selected if not a.geometry.intersects(frame)]
    if outside:
        notes.append(
            f"{ann.name}: {len(outside)} object(s) outside the {width}x{height} slide ignored "
            f"(e.g. id {outside[0].id}); were they drawn on another slide or level?"
        )
    return [a for a in selected if a.geometry.intersects(frame)]


def _count(value: Any) -> int:
    if isinstance(value, int):
        return value
    try:
        return len(value)
    except TypeError:
        return int(bool(value))


def extract_slide(task: SlideTask) -> SlideOutput:
    """Extract one slide's patches; user errors are returned in `error`, never raised."""
    from wsi_aug.slides.open import open_slide

    p = task.params
    size = p.size
    images, masks = _empty(size)
    out = SlideOutput(task.slide, images, masks)
    try:
        mpp = task.slide_mpp or p.slide_mpp
        with open_slide(task.slide, backend=p.backend, slide_mpp=mpp) as slide:
            _extract_open_slide(task, slide, out)
    except WsiAugError as exc:
        out.error = str(exc)
        out.images, out.masks = _empty(size)
        out.rows = []
    return out


def _extract_open_slide(task: SlideTask, slide: Any, out: SlideOutput) -> None:
    p = task.params
    size = p.size
    width, height = slide.dimensions
    mpp_x, mpp_y = slide.mpp
    objects = _read_objects(task, width, height, out.notes)
    min_px = p.min_area / (mpp_x * mpp_y)
    small = [a for a in objects if a.geometry.area < min_px]
    if small:
        out.notes.append(
            f"{task.slide.name}: {len(small)} object(s) under {p.min_area:g} µm² skipped "
            "(fragments; change with --min-area)"
        )
    centred = [a for a in objects if a.geometry.area >= min_px]
    geoms = [a.geometry for a in objects]
    w0, h0 = size * p.mpp / mpp_x, size * p.mpp / mpp_y
    imgs: list[np.ndarray] = []
    msks: list[np.ndarray] = []
    name = task.slide.name
    for a in centred:
        c = a.geometry.centroid
        box = (c.x - w0 / 2, c.y - h0 / 2, w0, h0)
        imgs.append(slide.read_at_mpp(box, p.mpp, (size, size)))
        msks.append(rasterize(geoms, box, size))
        out.rows.append(_row(task, name, a.id, a.label, c.x, c.y, box, width, height, True))
    if p.negatives > 0:
        for box in _negative_boxes(slide, geoms, (w0, h0), p.negatives, _slide_rng(p.seed, name)):
            imgs.append(slide.read_at_mpp(box, p.mpp, (size, size)))
            msks.append(np.zeros((size, size), np.uint8))
            cx, cy = box[0] + w0 / 2, box[1] + h0 / 2
            out.rows.append(_row(task, name, "", "", cx, cy, box, width, height, False))
        n_neg = sum(1 for r in out.rows if not r["positive"])
        if n_neg < p.negatives:
            out.notes.append(
                f"{name}: only {n_neg} of {p.negatives} negative windows found "
                "(too little tissue free of glomeruli)"
            )
    if imgs:
        out.images, out.masks = np.stack(imgs), np.stack(msks)


def _row(
    task: SlideTask,
    name: str,
    oid: str,
    label: str,
    cx: float,
    cy: float,
    box: tuple[float, float, float, float],
    width: int,
    height: int,
    positive: bool,
) -> dict[str, Any]:
    x0, y0, w0, h0 = box
    padded = x0 < 0 or y0 < 0 or x0 + w0 > width or y0 + h0 > height
    return {
        "slide": name,
        "patient": task.patient,
        "object_id": str(oid),
        "label": label,
        "cx": float(cx),
        "cy": float(cy),
        "mpp": float(task.params.mpp),
        "split": task.split,
        "padded": bool(padded),
        "positive": positive,
    }


def _negative_boxes(
    slide: Any,
    geoms: Sequence[Any],
    window: tuple[float, float],
    k: int,
    rng: np.random.Generator,
    tries_per_window: int = 60,
) -> list[tuple[float, float, float, float]]:
    """Up to `k` windows inside the slide, mostly tissue, touching no annotated object."""
    import shapely

    width, height = slide.dimensions
    w0, h0 = window
    thumb = slide.thumbnail(1024)
    tissue = tissue_mask(thumb)
    ys, xs = np.nonzero(tissue)
    if len(xs) == 0 or w0 > width or h0 > height:
        return []
    fx, fy = width / tissue.shape[1], height / tissue.shape[0]
    union = shapely.union_all(list(geoms)) if geoms else None
    boxes: list[tuple[float, float, float, float]] = []
    for _ in range(k * tries_per_window):
        if len(boxes) == k:
            break
        i = rng.integers(len(xs))
        cx, cy = (xs[i] + rng.random()) * fx, (ys[i] + rng.random()) * fy
        x0 = float(np.clip(cx - w0 / 2, 0, width - w0))
        y0 = float(np.clip(cy - h0 / 2, 0, height - h0))
        cand = shapely.box(x0, y0, x0 + w0, y0 + h0)
        if union is not None and cand.intersects(union):
            continue
        if any(cand.intersects(shapely.box(b[0], b[1], b[0] + w0, b[1] + h0)) for b in boxes):
            continue
        t = tissue[
            int(y0 / fy) : max(int(y0 / fy) + 1, int((y0 + h0) / fy)),
            int(x0 / fx) : max(int(x0 / fx) + 1, int((x0 + w0) / fx)),
        ]
        if t.mean() < 0.5:
            continue
        boxes.append((x0, y0, w0, h0))
    return boxes


def assign_splits(groups: Sequence[str], fractions: Sequence[float], seed: int) -> dict[str, str]:
    """Split group names (patients, or slides) into train/val/test by the given fractions.

    Groups are shuffled with the seed; each split gets round(fraction * n) groups, train at least
    one, test what is left, so no patient is ever on two sides.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise WsiAugError(
            f"--split {','.join(map(str, fractions))}: give three non-negative "
            "fractions train,val,test, e.g. 0.6,0.2,0.2"
        )
    total = float(sum(fractions))
    fr = [f / total for f in fractions]
    names = sorted(set(groups))
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    n = len(order)
    n_train = min(n, max(1, round(fr[0] * n)))
    n_val = min(n - n_train, round(fr[1] * n))
    if fr[2] > 0 and n_train + n_val == n and n >= 2:  # keep a test group when one is asked for
        if n_val > 0:
            n_val -= 1
        elif n_train > 1:
            n_train -= 1
    out: dict[str, str] = {}
    for i, g in enumerate(order):
        out[g] = "train" if i < n_train else "val" if i < n_train + n_val else "test"
    return out


def plan_tasks(
    inputs: Sequence[str | Path],
    params: ExtractParams,
    *,
    annotations: str | Path | None = None,
    manifest: str | Path | None = None,
    recursive: bool = False,
) -> tuple[list[SlideTask], list[str]]:
    """Find slides and their annotation files, give each a patient and split; list the skipped."""
    from wsi_aug.annotations.pairing import find_slides, pair_annotations, read_manifest
    from wsi_aug.slides.open import SLIDE_SUFFIXES

    skipped: list[str] = []
    if manifest is not None:
        entries = read_manifest(Path(manifest))
    else:
        paths = [Path(p) for p in inputs]
        for p in paths:
            if not p.exists():
                raise WsiAugError(f"{p}: no such file or folder; check the path")
        slides = find_slides(paths, set(SLIDE_SUFFIXES), recursive=recursive)
        if not slides:
            where = ", ".join(str(p) for p in paths) or "(no input given)"
            raise WsiAugError(
                f"{where}: no slide found (looked for {', '.join(sorted(SLIDE_SUFFIXES))}); "
                "give slide files or folders holding them"
            )
        entries = pair_annotations(slides, Path(annotations) if annotations else None)
    usable = []
    for e in entries:
        if e.annotation is None:
            skipped.append(
                f"{e.slide}: no annotation file (looked for {e.slide.stem}.geojson/.json/.xml "
                "or a mask image of that name); put one beside it or give --annotations DIR"
            )
        else:
            usable.append(e)
    group_of = {e.slide: (e.patient or e.slide.stem) for e in usable}
    auto = assign_splits(list(group_of.values()), params.split, params.seed)
    tasks = [
        SlideTask(
            e.slide,
            e.annotation,
            group_of[e.slide],
            e.split or auto[group_of[e.slide]],
            params,
            e.mpp,
        )
        for e in usable
    ]
    return tasks, skipped


def _iter_outputs(
    tasks: Sequence[SlideTask], workers: int, scheduler: str | None
) -> Iterator[SlideOutput]:
    """Run the per-slide tasks here, in a process pool or on a Dask cluster; yield in task order.

    A process pool holds at most ``2 * workers`` slides in flight or waiting, so memory holds a
    few slides' patches, never the whole run's; a Dask cluster keeps results on its workers until
    they are consumed here.
    """
    if scheduler:
        try:
            from dask.distributed import Client
        except ImportError as exc:
            raise WsiAugError(
                "--scheduler needs dask.distributed: pip install 'wsi-aug[dask]'"
            ) from exc
        try:
            client = Client(scheduler, timeout="10s")
        except OSError as exc:
            raise WsiAugError(f"--scheduler {scheduler}: cannot reach it ({exc})") from exc
        with client:
            futures: list[Any] = client.map(extract_slide, list(tasks), pure=False)
            for i in range(len(futures)):
                fut, futures[i] = futures[i], None  # drop each result once it is consumed
                yield fut.result()
    elif workers > 1 and len(tasks) > 1:
        import multiprocessing as mp
        from concurrent.futures import Future, ProcessPoolExecutor

        ctx = mp.get_context("spawn")
        window = 2 * workers
        with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx) as pool:
            pending: dict[int, Future[SlideOutput]] = {}
            submitted = 0
            for i in range(len(tasks)):
                while submitted < len(tasks) and submitted < i + window:
                    pending[submitted] = pool.submit(extract_slide, tasks[submitted])
                    submitted += 1
                yield pending.pop(i).result()
    else:
        for t in tasks:
            yield extract_slide(t)


CHECKPOINT_SECONDS = 10.0
"""How often a running extraction records the slides it finished (what a crash can lose)."""


def _summarise(o: SlideOutput, summary: ExtractSummary) -> None:
    """Add one slide's outcome to the run summary."""
    summary.notes.extend(o.notes)
    if o.error is not None:
        summary.skipped.append(o.error)
    elif not o.rows:
        summary.skipped.append(
            f"{o.slide}: no patch (no object of the class above the "
            "minimum area, and no negative window)"
        )
    else:
        pos = sum(r["positive"] for r in o.rows)
        pad = sum(r["padded"] for r in o.rows)
        summary.slides_done.append((o.slide.name, pos, len(o.rows) - pos, pad))


def _done_slides(folder: Path, tasks: Sequence[SlideTask]) -> list[SlideOutput]:
    """The slides an interrupted run finished, from its progress records (in task order).

    A record that does not match the task at its place (the plan changed) ends the list.
    """
    done: list[SlideOutput] = []
    for i, task in enumerate(tasks):
        try:
            rec = json.loads((folder / f"{i:06d}.json").read_text())
        except (OSError, ValueError):
            break
        if rec.get("slide") != str(task.slide):
            break
        empty = np.zeros((0,), np.uint8)
        done.append(SlideOutput(task.slide, empty, empty, rec["rows"], rec["notes"], rec["error"]))
    return done


def _write_patches(
    g: Any,
    tasks: Sequence[SlideTask],
    summary: ExtractSummary,
    workers: int,
    scheduler: str | None,
    progress: bool,
    report: Callable[[str], None] | None,
) -> None:
    """Fill a (resumable) patches store: slide by slide, each recorded once it is written.

    The arrays grow as slides finish, so memory holds a few slides' patches. Every
    `CHECKPOINT_SECONDS` the patches written so far are flushed and a record per finished slide
    (its table rows and notes) goes to ``progress/`` in the store, so an interrupted run continues
    after the last recorded slide; the records are removed before completion.
    """
    from tqdm import tqdm

    size = tasks[0].params.size
    records = Path(g.store.root) / "progress"
    records.mkdir(exist_ok=True)
    done = _done_slides(records, tasks) if "images" in g else []
    rows: list[dict[str, Any]] = [r for o in done for r in o.rows]
    arrays = []
    for name, shape in (("images", (size, size, 3)), ("masks", (size, size))):
        if done:  # drop whatever the interrupted slide had written past the last record
            arr = g[name]
            arr.resize((len(rows), *shape))
        else:
            arr = store.create_stack(g, name, (0, *shape), items_per_chunk=16)
        arrays.append(store.StackWriter(arr, start=len(rows)))
    images, masks = arrays
    for o in done:
        _summarise(o, summary)
    if done and report:
        report(f"extract: resuming after {len(done)} of {len(tasks)} slides ({len(rows)} patches)")
    bar = tqdm(
        total=len(tasks), initial=len(done), desc="extract", unit="slide", disable=not progress
    )
    unrecorded: list[tuple[int, dict[str, Any]]] = []  # finished slides not yet on record
    last = time.monotonic()
    for i, o in enumerate(_iter_outputs(tasks[len(done) :], workers, scheduler), len(done)):
        _summarise(o, summary)
        if o.error is None and o.rows:
            images.append(o.images)
            masks.append(o.masks)
            rows.extend(o.rows)
        unrecorded.append(
            (i, {"slide": str(o.slide), "rows": o.rows, "notes": o.notes, "error": o.error})
        )
        if time.monotonic() - last >= CHECKPOINT_SECONDS and i + 1 < len(tasks):
            images.flush()  # the patches first, then the records that vouch for them
            masks.flush()
            for j, record in unrecorded:
                store.atomic_write_bytes(records / f"{j:06d}.json", json.dumps(record).encode())
            unrecorded.clear()
            last = time.monotonic()
        bar.update(1)
        bar.set_postfix(patches=len(rows))
    bar.close()
    images.close()
    masks.close()
    if report:
        for line in summary.lines():
            report(line)
    if not rows:  # a user error, not an interruption: keep no partial store to resume
        shutil.rmtree(Path(g.store.root), ignore_errors=True)
        raise WsiAugError("no slide gave a patch: " + " | ".join(summary.skipped))
    shutil.rmtree(records)
    columns = list(rows[0])
    table = {c: [r[c] for r in rows] for c in columns}
    for c in ("cx", "cy", "mpp"):
        table[c] = np.asarray(table[c], np.float64)
    for c in ("padded", "positive"):
        table[c] = np.asarray(table[c], bool)
    store.write_table(g, "table", table)
    g.attrs.update({"size": size, "mpp": tasks[0].params.mpp, "summary": summary.lines()})


def extract(
    inputs: Sequence[str | Path],
    work: str | Path,
    *,
    params: ExtractParams | None = None,
    annotations: str | Path | None = None,
    manifest: str | Path | None = None,
    recursive: bool = False,
    workers: int = 1,
    scheduler: str | None = None,
    force: bool = False,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
) -> ExtractResult:
    """Stage: extract glomerulus-centred patches from slides into ``<work>/patches.zarr``.

    Bad slides are reported in the summary and skipped; an error is raised only when no slide
    gave a patch.
    """
    params = params or ExtractParams()
    wd = WorkDir(Path(work))
    tasks, skipped = plan_tasks(
        inputs, params, annotations=annotations, manifest=manifest, recursive=recursive
    )
    summary = ExtractSummary(skipped=list(skipped))
    if not tasks:
        raise WsiAugError("nothing to extract: " + "; ".join(skipped))
    inputs_fp = {
        "slides": {
            str(t.slide.resolve()): [
                store.fingerprint_file(t.slide),
                store.fingerprint_file(t.annotation),
                t.patient,
                t.split,
                t.slide_mpp,
            ]
            for t in tasks
        }
    }
    hit = store.cached_result(
        wd.patches, stage="extract", params=params.as_dict(), inputs=inputs_fp, force=force
    )
    if hit is not None:
        return ExtractResult(hit, summary)
    key_args = {"stage": "extract", "params": params.as_dict(), "inputs": inputs_fp}
    if force:  # a forced rebuild does not resume an interrupted one
        shutil.rmtree(store.partial_path(wd.patches, store.stage_key(**key_args)), True)
    with store.build(wd.patches, resumable=True, **key_args) as g:
        _write_patches(g, tasks, summary, workers, scheduler, progress, report)
    return ExtractResult(StageResult(wd.patches, False, store.read_meta(wd.patches) or {}), summary)
