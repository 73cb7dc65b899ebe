"""Extraction: slides + annotation polygons -> glomerulus-centred patches (the extract stage).

One patch per annotated object of the chosen class: a window of `size` pixels at `mpp`
micrometres per pixel centred on the polygon's centroid. The mask rasterises every object of that
class that meets the window (holes stay holes). Windows crossing the slide's edge are padded with
white and flagged. Optional negatives are random tissue windows (Otsu on a thumbnail) that touch no
object. Splits are drawn per patient (per slide where no patient is known), never per patch.

The work is one task per slide (`extract_slide`), a plain picklable function, so it runs in this
process, in a process pool (``workers``), or on a Dask cluster (``scheduler``) alike. In this
process, the next slides are opened (a plain image: decoded) ahead in threads while this thread
extracts the current one (`opening_ahead`); the results are the same, in the same order.
"""

from __future__ import annotations

import contextlib
import os
import threading
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from wsi_aug.annotations.suffixes import MASK_SUFFIXES
from wsi_aug.errors import WsiAugError

if TYPE_CHECKING:
    from concurrent.futures import Future

    from shapely.geometry.base import BaseGeometry

    from wsi_aug.annotations.index import ObjectIndex
    from wsi_aug.annotations.model import Annotation
    from wsi_aug.annotations.pairing import SlideEntry
    from wsi_aug.slides.base import Slide

DEFAULT_LABELS: tuple[str, ...] = ("glomerulus", "glomeruli")
Box = tuple[float, float, float, float]


class ExtractOptions(Protocol):
    """What the per-slide work reads of the extract stage's parameters (`ExtractParams`)."""

    @property
    def size(self) -> int: ...
    @property
    def mpp(self) -> float: ...
    @property
    def labels(self) -> tuple[str, ...]: ...
    @property
    def negatives(self) -> int: ...
    @property
    def split(self) -> tuple[float, float, float]: ...
    @property
    def seed(self) -> int: ...
    @property
    def min_area(self) -> float: ...  # square micrometres; smaller objects are fragments
    @property
    def objects(self) -> tuple[str, ...]: ...
    @property
    def mask_value(self) -> int | None: ...
    @property
    def mask_channel(self) -> int | None: ...
    @property
    def backend(self) -> str | None: ...
    @property
    def slide_mpp(self) -> float | None: ...


@dataclass(frozen=True)
class SlideTask:
    """One slide's work: its files, patient and split, and the extraction parameters."""

    slide: Path
    annotation: Path
    patient: str
    split: str
    params: ExtractOptions
    slide_mpp: float | None = None  # this slide's own pixel size (manifest), over params.slide_mpp


@dataclass(frozen=True)
class PatchRow:
    """One patch's row of the table: where it came from, its split, what it holds."""

    slide: str  # the slide's file name
    patient: str
    object_id: str  # the annotation's id ('' for negatives)
    label: str  # the annotation's class ('' for negatives)
    cx: float  # window centre, level-0 pixels
    cy: float
    mpp: float  # the patch's µm/px
    split: str  # train / val / test
    padded: bool  # the window crosses the slide's edge (white there)
    positive: bool  # centred on an object of the class


@dataclass
class SlideOutput:
    """What one slide gave: patches, their table rows, and what went wrong or was noteworthy."""

    slide: Path
    images: np.ndarray
    masks: np.ndarray
    rows: list[PatchRow] = field(default_factory=list)
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

    def add(self, o: SlideOutput) -> None:
        """Add one slide's outcome."""
        self.notes.extend(o.notes)
        if o.error is not None:
            self.skipped.append(o.error)
        elif not o.rows:
            cause = (
                "no patch (no object of the class above the minimum area, and no negative window)"
            )
            self.skipped.append(SlideMessage(f"{o.slide}: {cause}", o.slide.name, cause))
        else:
            pos = sum(r.positive for r in o.rows)
            pad = sum(r.padded for r in o.rows)
            self.slides_done.append((o.slide.name, pos, len(o.rows) - pos, pad))

    def lines(self) -> list[str]:
        out = [
            f"{n}: {p} glomeruli, {g} negatives, {pad} padded" for n, p, g, pad in self.slides_done
        ]
        out += [f"note: {m}" for m in self.notes]
        out += [f"skipped: {m}" for m in group_messages(self.skipped)]  # one line per cause
        return out


class SlideMessage(str):
    """One slide's skip message: the full one-line text (this str), plus its parts.

    `slide` names the slide, `cause` is the text without it (the same for every slide with that
    problem, so messages group on it), and `classes` / `asked` hold the classes found and asked
    for when the cause is an unknown class, so that `group_messages` sums counts without parsing
    text. A message read back as a plain str (from a progress record) loses the parts;
    `group_messages` then splits it at the first ``": "``.
    """

    slide: str
    cause: str
    classes: dict[str, int]
    asked: tuple[str, ...]

    def __new__(
        cls,
        text: str,
        slide: str = "",
        cause: str = "",
        classes: Mapping[str, int] | None = None,
        asked: Sequence[str] = (),
    ) -> SlideMessage:
        self = super().__new__(cls, text)
        self.slide, self.cause = slide, cause or text
        self.classes, self.asked = dict(classes or {}), tuple(asked)
        return self

    def __reduce__(self) -> tuple[type[SlideMessage], _MessageArgs]:
        """Pickle with the parts (worker processes return these)."""
        return (type(self), (str(self), self.slide, self.cause, self.classes, self.asked))

    @classmethod
    def of_error(cls, exc: WsiAugError, slide: Path, annotation: Path | None) -> SlideMessage:
        """The message of a slide's error; its cause is the text after the file it names."""
        from wsi_aug.annotations.model import UnknownClassError, asked_text

        text = str(exc)
        if isinstance(exc, UnknownClassError):
            cause = "no object of class " + asked_text(exc.asked)
            return cls(text, slide.name, cause, exc.classes, exc.asked)
        names = [str(slide), slide.name]
        if annotation is not None:
            names += [str(annotation), annotation.name]
        for name in names:
            if text.startswith(name + ": "):
                return cls(text, slide.name, text[len(name) + 2 :])
        return cls(text, slide.name, text)


_MessageArgs = tuple[str, str, str, dict[str, int], tuple[str, ...]]


def _parts(message: str) -> SlideMessage:
    """A message with its parts: as given, or split at the first ``": "`` for a plain str."""
    if isinstance(message, SlideMessage) and message.slide:
        return message
    subject, sep, cause = message.partition(": ")
    if not sep:
        return SlideMessage(message, "", message)
    return SlideMessage(message, Path(subject).name, cause)


def group_messages(messages: Sequence[str]) -> list[str]:
    """Per-slide messages grouped by cause, one line per distinct cause, in first-seen order.

    A cause that only one slide has keeps its message as it was. Several slides with one cause
    become ``"110 slides: CAUSE (e.g. a.jpg, b.jpg)"``; for an unknown class the object counts
    per class are summed over those slides and the most frequent class is suggested::

        110 slides: no object of class 'glomerulus'; classes found: Glomeruli (455 objects);
        use --label Glomeruli (e.g. 1.jpg, 10.jpg)
    """
    groups: dict[str, list[SlideMessage]] = {}
    for m in messages:
        part = _parts(m)
        groups.setdefault(part.cause, []).append(part)
    lines: list[str] = []
    for cause, group in groups.items():
        if len(group) == 1:
            lines.append(str(group[0]))
            continue
        names = list(dict.fromkeys(g.slide for g in group if g.slide))
        head = f"{len(group)} slides" if names else f"{len(group)} times"
        eg = f" (e.g. {', '.join(names[:2])})" if names else ""
        if any(g.classes for g in group):
            total: dict[str, int] = {}
            for g in group:
                for k, v in g.classes.items():
                    total[k] = total.get(k, 0) + v
            top = sorted(total.items(), key=lambda kv: (-kv[1], kv[0].lower()))
            found = ", ".join(f"{k} ({v} object{'s' if v != 1 else ''})" for k, v in top)
            lines.append(f"{head}: {cause}; classes found: {found}; use --label {top[0][0]}{eg}")
        else:
            lines.append(f"{head}: {cause}{eg}")
    return lines


def _empty(size: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((0, size, size, 3), np.uint8), np.zeros((0, size, size), np.uint8)


def rasterize(geoms: Iterable[BaseGeometry], box: Box, size: int) -> np.ndarray:
    """Binary (size, size) mask of the polygons over a level-0 box, sampled at pixel centres.

    A pixel is inside when its centre is covered by a polygon (holes excluded), so the mask is
    exact at the target resolution whatever the slide's own. For many windows over the same
    polygons, build one `ObjectIndex` and call its `rasterize` (this builds one per call).
    """
    from wsi_aug.annotations.index import ObjectIndex

    return ObjectIndex(geoms).rasterize(box, size)


def tissue_mask(thumb: np.ndarray) -> np.ndarray:
    """Tissue on a thumbnail: Otsu on saturation plus darkness (glass is bright and grey)."""
    from wsi_aug.imaging import is_flat, otsu_threshold

    f = thumb.astype(np.float32) / 255.0
    mx, mn = f.max(-1), f.min(-1)
    sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0)
    score = sat + (1.0 - f.mean(-1))
    if is_flat(score, 1e-3):
        return np.zeros(score.shape, bool)
    return np.asarray(score > otsu_threshold(score))


def _slide_rng(seed: int, name: str) -> np.random.Generator:
    """A generator per slide, so results do not depend on which worker ran which slide."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _read_objects(task: SlideTask, width: int, height: int, notes: list[str]) -> list[Annotation]:
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
    if rep.rejected:
        notes.append(
            f"{ann.name}: {rep.rejected} object(s) rejected (e.g. {rep.rejected_reasons[0]})"
        )
    if rep.simplified:
        notes.append(
            f"{ann.name}: {rep.simplified} object(s) simplified (e.g. {rep.simplified_reasons[0]})"
        )
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


def _open_task(task: SlideTask) -> Slide:
    """The task's slide, opened with the task's backend and pixel size."""
    from wsi_aug.slides.open import open_slide

    p = task.params
    return open_slide(task.slide, backend=p.backend, slide_mpp=task.slide_mpp or p.slide_mpp)


def extract_slide(task: SlideTask) -> SlideOutput:
    """Extract one slide's patches; user errors are returned in `error`, never raised.

    Within `opening_ahead`, the slide may already be open (or opening) in a thread.
    """
    p = task.params
    size = p.size
    images, masks = _empty(size)
    out = SlideOutput(task.slide, images, masks)
    try:
        with _opened(task) as slide:
            _extract_open_slide(task, slide, out)
    except WsiAugError as exc:
        out.error = SlideMessage.of_error(exc, task.slide, task.annotation)
        out.images, out.masks = _empty(size)
        out.rows = []
    return out


def _extract_open_slide(task: SlideTask, slide: Slide, out: SlideOutput) -> None:
    """One slide's patches into `out`.

    Where the slide has a level at exactly the target pixel size (HuBMAP tiles read at their own
    1 µm/px, say), each window's origin is moved to the nearest pixel of that level: the read is
    then a plain crop, and the patch is centred on the object to within half a pixel. The mask
    is rasterised over the same (moved) box, so image and mask agree.
    """
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
    from wsi_aug.annotations.index import ObjectIndex

    index = ObjectIndex(a.geometry for a in objects)
    w0, h0 = slide.pixel_aligned((0.0, 0.0, size * p.mpp / mpp_x, size * p.mpp / mpp_y), p.mpp)[2:]
    imgs: list[np.ndarray] = []
    msks: list[np.ndarray] = []
    name = task.slide.name
    for a in centred:
        c = a.geometry.centroid
        cx, cy = c.x, c.y
        box = slide.pixel_aligned((cx - w0 / 2, cy - h0 / 2, w0, h0), p.mpp)
        if box[:2] != (cx - w0 / 2, cy - h0 / 2):  # moved: the centre is the window's
            cx, cy = box[0] + w0 / 2, box[1] + h0 / 2
        imgs.append(slide.read_at_mpp(box, p.mpp, (size, size)))
        msks.append(index.rasterize(box, size))
        out.rows.append(_row(task, name, a.id, a.label, cx, cy, box, width, height, True))
    if p.negatives > 0:
        rng = _slide_rng(p.seed, name)
        for box in _negative_boxes(slide, index, (w0, h0), p.negatives, rng, p.mpp):
            imgs.append(slide.read_at_mpp(box, p.mpp, (size, size)))
            msks.append(np.zeros((size, size), np.uint8))
            cx, cy = box[0] + w0 / 2, box[1] + h0 / 2
            out.rows.append(_row(task, name, "", "", cx, cy, box, width, height, False))
        n_neg = sum(1 for r in out.rows if not r.positive)
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
    box: Box,
    width: int,
    height: int,
    positive: bool,
) -> PatchRow:
    x0, y0, w0, h0 = box
    padded = x0 < 0 or y0 < 0 or x0 + w0 > width or y0 + h0 > height
    return PatchRow(
        slide=name,
        patient=task.patient,
        object_id=str(oid),
        label=label,
        cx=float(cx),
        cy=float(cy),
        mpp=float(task.params.mpp),
        split=task.split,
        padded=bool(padded),
        positive=positive,
    )


def _negative_boxes(
    slide: Slide,
    objects: ObjectIndex,
    window: tuple[float, float],
    k: int,
    rng: np.random.Generator,
    mpp: float | None = None,
    tries_per_window: int = 60,
) -> list[Box]:
    """Up to `k` windows inside the slide, mostly tissue, touching no annotated object.

    With `mpp` (the target pixel size), each candidate is pixel-aligned as the positive
    windows are (`Slide.pixel_aligned`) before it is tested, so that its read is a crop too.
    """
    import shapely

    width, height = slide.dimensions
    w0, h0 = window
    thumb = slide.thumbnail(1024)
    tissue = tissue_mask(thumb)
    ys, xs = np.nonzero(tissue)
    if len(xs) == 0 or w0 > width or h0 > height:
        return []
    fx, fy = width / tissue.shape[1], height / tissue.shape[0]
    boxes: list[Box] = []
    for _ in range(k * tries_per_window):
        if len(boxes) == k:
            break
        i = rng.integers(len(xs))
        cx, cy = (xs[i] + rng.random()) * fx, (ys[i] + rng.random()) * fy
        x0 = float(np.clip(cx - w0 / 2, 0, width - w0))
        y0 = float(np.clip(cy - h0 / 2, 0, height - h0))
        if mpp is not None:
            x0, y0, _, _ = slide.pixel_aligned((x0, y0, w0, h0), mpp)
            if x0 < 0 or y0 < 0 or x0 + w0 > width or y0 + h0 > height:
                continue  # moved past the edge (a level whose pixels do not tile the slide)
        cand = shapely.box(x0, y0, x0 + w0, y0 + h0)
        if objects.touches((x0, y0, w0, h0)):
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
    params: ExtractOptions,
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
    usable: list[tuple[SlideEntry, Path]] = []  # with its annotation file
    for e in entries:
        if e.annotation is None:
            fix = "put one beside it or give --annotations DIR"
            text = (
                f"{e.slide}: no annotation file (looked for {e.slide.stem}.geojson/.json/.xml/"
                f".annotations or a mask image of that name); {fix}"
            )
            cause = (
                "no annotation file (looked for .geojson/.json/.xml/.annotations or a mask image "
                f"named like the slide); {fix}"
            )
            skipped.append(SlideMessage(text, e.slide.name, cause))
        else:
            usable.append((e, e.annotation))
    group_of = {e.slide: (e.patient or e.slide.stem) for e, _ in usable}
    auto = assign_splits(list(group_of.values()), params.split, params.seed)
    tasks = [
        SlideTask(
            e.slide,
            annotation,
            group_of[e.slide],
            e.split or auto[group_of[e.slide]],
            params,
            e.mpp,
        )
        for e, annotation in usable
    ]
    return tasks, skipped


OPEN_AHEAD_THREADS = 2
"""At most this many threads open the next slides while this one extracts the current one: one
per CPU this process may use, none on one CPU. On two CPUs two lanes measured 1.66-1.74 s against
1.85-1.87 s for one on the HuBMAP tiles (benchmarks/extract_vs_plain.py, quiet VM): this thread
mostly waits for decoded slides, so a lane on each CPU keeps both busy."""
OPEN_AHEAD_SLIDES = 32
"""At most this many slides are open ahead, waiting to be extracted (the window is deep enough
for the threads to keep decoding while the start-up imports, fingerprints and checks run) ..."""
OPEN_AHEAD_BYTES = 256 << 20
"""... and they hold at most about this many bytes of decoded pixels (plain images)."""


def _yield_to_others() -> None:
    """Give the calling thread the lowest scheduling priority (Linux; elsewhere nothing).

    The second and later opening lanes run this: the thread that rasterises and writes holds
    the GIL for most of a run and is its critical path, so on two CPUs three runnable threads
    would slow it by a third; a lane at nice 19 decodes only on CPU time no one else wants.
    Raising one's own niceness needs no privilege.
    """
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


class _OpenAhead:
    """Opens the slides of a task list in threads, in task order, a bounded window ahead.

    `take` hands over a task's slide (a future: the opening may still run, or have failed); the
    window then moves on. Slides opened ahead hold at most `max_bytes` (`Slide.held_bytes`, plus
    the ones still opening) and are at most `max_ahead`; those never taken are closed.

    Each thread is a lane of its own, and a slide is closed (`release`) on the lane that opened
    it: its pixels were allocated there, and freed on another thread the allocator gives their
    pages back to the system, so that the next slides fault them in again (about a fifth more
    CPU time on the HuBMAP tiles).
    """

    def __init__(
        self, tasks: Sequence[SlideTask], threads: int, max_ahead: int, max_bytes: int
    ) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._tasks = list(tasks)
        self._index = {id(t): i for i, t in enumerate(self._tasks)}
        self._max_ahead, self._max_bytes = max_ahead, max_bytes
        self._lock = threading.Lock()
        self._futures: dict[int, Future[Slide]] = {}  # task index -> its opening, not taken
        self._bytes: dict[int, int] = {}  # task index -> bytes held by its open slide
        self._lane_of: dict[int, int] = {}  # id of an open slide -> the lane that opened it
        self._next = 0  # the next task to open
        self._busy = [0] * threads  # openings submitted to each lane and not finished
        self._closed = False
        self._lanes = [
            ThreadPoolExecutor(
                1,
                thread_name_prefix=f"wsi-aug-open-{k}",
                initializer=_yield_to_others if k > 0 else None,
            )
            for k in range(threads)
        ]
        with self._lock:
            self._fill()

    def _fill(self) -> None:
        """Start openings while the window has room (called holding the lock)."""
        while (
            not self._closed
            and self._next < len(self._tasks)
            and min(self._busy) == 0
            and len(self._futures) < self._max_ahead
            and sum(self._bytes.values()) < self._max_bytes
        ):
            i = self._next
            lane = self._busy.index(0)
            self._next += 1
            self._busy[lane] += 1
            self._futures[i] = self._lanes[lane].submit(self._open, i, lane)

    def _open(self, i: int, lane: int) -> Slide:
        held = 0
        try:
            slide = _open_task(self._tasks[i])
            held = slide.held_bytes()
            with self._lock:
                self._lane_of[id(slide)] = lane
            return slide
        finally:
            with self._lock:
                self._busy[lane] -= 1
                if i in self._futures:  # not taken yet: it counts against the window
                    self._bytes[i] = held
                self._fill()

    def covers(self, task: SlideTask) -> bool:
        return id(task) in self._index

    def take(self, task: SlideTask) -> Future[Slide] | None:
        """The opening of `task`'s slide (None: not opened ahead; open it yourself).

        Slides of earlier tasks that were never taken are closed: the tasks run in order.
        """
        i = self._index.get(id(task))
        if i is None or self._tasks[i] is not task:
            return None
        with self._lock:
            skipped = [self._futures.pop(j) for j in list(self._futures) if j < i]
            for j in [j for j in self._bytes if j <= i]:
                del self._bytes[j]
            fut = self._futures.pop(i, None)
            self._next = max(self._next, i + 1)
            self._fill()
        for f in skipped:
            self.close_when_open(f)
        return fut

    def release(self, slide: Slide) -> None:
        """Close a taken slide, on the lane that opened it."""
        with self._lock:
            lane = self._lane_of.pop(id(slide), None)
        if lane is not None:
            try:
                self._lanes[lane].submit(slide.close)
                return
            except RuntimeError:  # the lanes are shut down
                pass
        slide.close()

    def close_when_open(self, fut: Future[Slide]) -> None:
        """Release the slide of an opening once it has opened (nothing if it failed)."""

        def release(f: Future[Slide]) -> None:
            if not f.cancelled() and f.exception() is None:
                self.release(f.result())

        fut.add_done_callback(release)

    def close(self) -> None:
        """Stop opening; close the slides opened and not taken (once their opening ends)."""
        with self._lock:
            self._closed = True
            futures = list(self._futures.values())
            self._futures.clear()
            self._bytes.clear()
        for fut in futures:
            fut.cancel()
            self.close_when_open(fut)
        for lane in self._lanes:
            lane.shutdown(wait=False)


_AHEAD: list[_OpenAhead] = []  # the windows of the `opening_ahead` blocks now running
_AHEAD_LOCK = threading.Lock()


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def opening_ahead(tasks: Sequence[SlideTask], threads: int | None = None) -> Iterator[None]:
    """Within the block, `tasks`' slides are opened in threads, in order, ahead of their use.

    `extract_slide` then takes each one's open slide (or waits for it) instead of opening it:
    decoding a plain image releases the GIL, so the next slides decode while this thread
    rasterises and writes. The window is bounded (`OPEN_AHEAD_SLIDES`, `OPEN_AHEAD_BYTES`).
    With `threads` None: one per CPU this process may use, at most `OPEN_AHEAD_THREADS` (none
    on one CPU: the block then changes nothing). Slides opened and never used are closed at the
    end of the block.
    """
    cpus = usable_cpus()
    n = threads if threads is not None else (min(OPEN_AHEAD_THREADS, cpus) if cpus > 1 else 0)
    if n <= 0 or len(tasks) < 2:
        yield
        return
    ahead = _OpenAhead(tasks, n, OPEN_AHEAD_SLIDES, OPEN_AHEAD_BYTES)
    with _AHEAD_LOCK:
        _AHEAD.append(ahead)
    try:
        yield
    finally:
        with _AHEAD_LOCK:
            _AHEAD.remove(ahead)
        ahead.close()


@contextlib.contextmanager
def _opened(task: SlideTask) -> Iterator[Slide]:
    """The task's slide, closed after the block: the one opened ahead for it, else opened here."""
    with _AHEAD_LOCK:
        windows = tuple(_AHEAD)
    for ahead in windows:
        fut = ahead.take(task)
        if fut is None:
            continue
        try:
            slide = fut.result()
        except BaseException:  # Ctrl-C while waiting: the slide is closed once it is open
            ahead.close_when_open(fut)
            raise
        try:
            yield slide
        finally:
            ahead.release(slide)
        return
    with _open_task(task) as slide:
        yield slide


def _opened_ahead(tasks: Sequence[SlideTask]) -> bool:
    with _AHEAD_LOCK:
        return bool(tasks) and any(a.covers(tasks[0]) for a in _AHEAD)


def iter_outputs(
    tasks: Sequence[SlideTask], workers: int, scheduler: str | None
) -> Iterator[SlideOutput]:
    """Run the per-slide tasks here, in a process pool or on a Dask cluster; yield in task order.

    A process pool holds at most ``2 * workers`` slides in flight or waiting, so memory holds a
    few slides' patches, never the whole run's; a Dask cluster keeps results on its workers until
    they are consumed here. Here, the next slides are opened ahead in threads (`opening_ahead`,
    unless the caller's block already does).
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
        from concurrent.futures import ProcessPoolExecutor

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
        ahead = contextlib.nullcontext() if _opened_ahead(tasks) else opening_ahead(tasks)
        with ahead:
            for t in tasks:
                yield extract_slide(t)
