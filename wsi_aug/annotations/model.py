"""What every annotation parser returns: polygons in level-0 pixels, a class, and a report.

Parsers never reject a file for a badly drawn or badly written object: self-intersections are
repaired, empty or degenerate shapes are dropped, objects with invalid values (a coordinate that is
not a number, NaN or infinite, beyond ±`MAX_COORDINATE` px; a list where a number belongs ...)
are rejected, objects with more than `MAX_VERTICES` vertices are simplified, and points, lines and
unwanted object types are skipped; each of these is counted in an `AnnotationReport` (with the
first few reasons, each naming the object) so that ``wsi-aug info`` can say what happened. Only a
file that cannot be read at all (not JSON or XML, not the format, a wrong type at its top level)
raises `AnnotationError`.

Reading costs time about linear in the file's size whatever it holds (see `bounded`). GEOS's
validity check costs time in the pairs of edges whose bounding boxes overlap, and its repair
(`shapely.make_valid`) in the number of self-crossings: a 501-vertex star takes seconds to repair,
a valid 50,000-vertex "urchin" seconds to check. So both are bounded (`overlap_bound`,
`crossings`) before they run: an object above `MAX_VERTICES` vertices or `MAX_OVERLAPS` such pairs,
or invalid with more than `REPAIR_MAX_VERTICES` vertices or `MAX_CROSSINGS` crossings, is first
simplified (Douglas-Peucker in steps of doubling tolerance, moving it by at most
`MAX_TOLERANCE_PX` px, noted in the report) and rejected when that is not enough; and the costly
part of this work is charged to a budget per file (`FILE_EFFORT_S`), so a file of many such
objects is bounded too.

Rings need not be closed: every format but GeoJSON leaves the closing vertex out, and a ring is
closed by joining its last vertex to its first. GeoJSON requires closed rings, so there an open
ring is closed the same way and the object counted as repaired (``ring not closed``).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon, box
from shapely.geometry.base import BaseGeometry

from wsi_aug.errors import AnnotationError

MIN_AREA = 1.0
"""Objects smaller than this (level-0 px²) are degenerate: a slip of the mouse, not a structure."""

MAX_REASONS = 10
"""How many individual reasons a report keeps per list (the counts stay exact)."""

MAX_COORDINATE = 1e9
"""Coordinates beyond ±this (level-0 px; 250 m at 0.25 µm/px) are a corrupt file, not a slide."""

MAX_VERTICES = 200_000
"""Objects with more vertices (all rings together) are simplified (`read_annotations`'s
``max_vertices`` overrides it)."""

REPAIR_MAX_VERTICES = 20_000
"""Invalid (self-intersecting) objects are simplified to at most this many vertices to repair."""

MAX_CROSSINGS = 20_000
"""Invalid objects whose edges cross more often (estimated) are simplified further before repair:
repair costs 15 to 40 µs a crossing, so this bounds it to under a second."""

MAX_OVERLAPS = 20_000_000
"""Objects with more pairs of edges whose bounding boxes overlap (a bound, see `overlap_bound`)
are simplified before their validity is checked: the check costs about 35 ns such a pair, and an
outline whose edges all cross near one point (a star, an urchin) would take minutes."""

SIMPLIFY_START_PX = 0.25
"""The first simplification tolerance (level-0 px); it doubles until the object fits."""

MAX_TOLERANCE_PX = 16.0
"""The most a simplification may move an outline (level-0 px, the sum of the tolerances of its
steps); an object that needs more is rejected."""

FILE_EFFORT_S = 5.0
"""What one file may spend on the costly part of checking, simplifying and repairing its objects,
in seconds modelled from counts (not measured, so results do not depend on the machine): only
what costs more than linear in an object's vertices is charged (simplification; edges side by
side; self-crossings beyond one a vertex), so ordinary files, however large, spend nothing.
Objects that would need more once it is spent are rejected."""

_SMALL = 300  # vertices: an object this small is checked without bounding its cost (<= 2 ms)
_CHUNK = 256  # vertices per piece simplified at once: bounds GEOS's recursion and its worst case
_SAMPLES = 1 << 17  # segment pairs tested to estimate an object's number of self-crossings
# modelled costs (measured on 2 shared cores; GEOS 3.14)
_S_PER_OVERLAP = 35e-9  # validity check, per pair of edges with overlapping bounding boxes
_S_PER_CROSSING = 40e-6  # repair (make_valid by structure), per crossing
_S_PER_PAIR = 1e-7  # `crossings`, per pair of edges tested
_S_PER_VERTEX = 7e-7  # simplification, per vertex: Douglas-Peucker's worst case, O(_CHUNK) each

Geometry: TypeAlias = Polygon | MultiPolygon


@dataclass
class Annotation:
    """One annotated object: its polygon(s) in level-0 pixel coordinates and its class."""

    geometry: Geometry
    label: str
    id: str
    object_type: str = "annotation"
    color: tuple[int, int, int] | None = None


@dataclass
class AnnotationReport:
    """What reading an annotation file kept, repaired, dropped and skipped, and why."""

    objects: dict[str, int] = field(default_factory=dict)
    repaired: int = 0
    dropped: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    repaired_reasons: list[str] = field(default_factory=list)
    dropped_reasons: list[str] = field(default_factory=list)
    skipped_reasons: dict[str, str] = field(default_factory=dict)
    rejected: int = 0
    rejected_reasons: list[str] = field(default_factory=list)
    simplified: int = 0
    simplified_reasons: list[str] = field(default_factory=list)
    effort: float = field(default=0.0, repr=False, compare=False)
    """Modelled seconds spent on costly checks and repairs (see `FILE_EFFORT_S`)."""

    def repair(self, where: str, reason: str) -> None:
        """Count one object repaired (kept), keeping the first few reasons."""
        self.repaired += 1
        if len(self.repaired_reasons) < MAX_REASONS:
            self.repaired_reasons.append(f"{where}: {reason}")

    def drop(self, where: str, reason: str) -> None:
        """Count one object dropped as unusable, keeping the first few reasons."""
        self.dropped += 1
        if len(self.dropped_reasons) < MAX_REASONS:
            self.dropped_reasons.append(f"{where}: {reason}")

    def reject(self, where: str, reason: str) -> None:
        """Count one object rejected for an invalid value or type, keeping the first few reasons."""
        self.rejected += 1
        if len(self.rejected_reasons) < MAX_REASONS:
            self.rejected_reasons.append(f"{where}: {reason}")

    def simplify(self, where: str, reason: str) -> None:
        """Count one object simplified (kept) for its size, keeping the first few reasons."""
        self.simplified += 1
        if len(self.simplified_reasons) < MAX_REASONS:
            self.simplified_reasons.append(f"{where}: {reason}")

    def skip(self, kind: str, reason: str = "") -> None:
        """Count one object skipped by kind (``point``, ``line``, ``detection`` ...)."""
        self.skipped[kind] = self.skipped.get(kind, 0) + 1
        if reason and kind not in self.skipped_reasons:
            self.skipped_reasons[kind] = reason

    @property
    def n_skipped(self) -> int:
        """All skipped objects, of every kind."""
        return sum(self.skipped.values())


def _count_text(counts: Mapping[str, int]) -> str:
    """``Tubule (12), Glomeruli (4)``: most frequent first."""
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0].lower()))
    return ", ".join(f"{k} ({v})" for k, v in items)


def asked_text(labels: Sequence[str]) -> str:
    """``'glomerulus' or 'glomeruli'``: the classes asked for, as an error names them."""
    return " or ".join(repr(lab) for lab in labels)


_UnknownClassArgs = tuple[Path, tuple[str, ...], dict[str, int]]


class UnknownClassError(AnnotationError):
    """No object of the asked classes in a file that holds objects of other classes.

    Keeps the file, the classes asked for and those found (with counts) apart from the text, so
    that the messages of many slides can be grouped by cause and their counts summed.
    """

    def __init__(self, source: Path, asked: Sequence[str], classes: Mapping[str, int]) -> None:
        self.source = Path(source)
        self.asked = tuple(asked)
        self.classes = dict(classes)
        super().__init__(
            f"{self.source}: no object of class {asked_text(self.asked)}; classes found: "
            f"{_count_text(self.classes)}; choose with --label"
        )

    def __reduce__(self) -> tuple[type[UnknownClassError], _UnknownClassArgs]:
        """Pickle by the parts (the default would call ``__init__`` with the text alone)."""
        return (type(self), (self.source, self.asked, self.classes))


@dataclass
class AnnotationSet:
    """The objects read from one annotation file, with the report of how they were read."""

    source: Path
    annotations: list[Annotation]
    report: AnnotationReport = field(default_factory=AnnotationReport)
    fmt: str = ""

    def __post_init__(self) -> None:
        self.source = Path(self.source)
        self.report.objects = self.classes()

    def __len__(self) -> int:
        return len(self.annotations)

    def classes(self) -> dict[str, int]:
        """Number of objects per class, most frequent first."""
        counts: dict[str, int] = {}
        for a in self.annotations:
            counts[a.label] = counts.get(a.label, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0].lower())))

    def select(self, labels: Sequence[str]) -> list[Annotation]:
        """The objects whose class is one of `labels` (case-insensitive); all if `labels` is empty.

        Raises `AnnotationError` listing the classes present when nothing matches, since a wrong
        ``--label`` is the usual reason.
        """
        if isinstance(labels, str):
            labels = [labels]
        if not labels:
            return list(self.annotations)
        wanted = {lab.strip().casefold() for lab in labels}
        chosen = [a for a in self.annotations if a.label.casefold() in wanted]
        if chosen:
            return chosen
        if self.annotations:
            raise UnknownClassError(self.source, labels, self.classes())
        raise AnnotationError(
            f"{self.source}: no object of class {asked_text(labels)}; {self._empty_text()}"
        )

    def _empty_text(self) -> str:
        """Why a file holds no usable object, and what to do about it."""
        rep = self.report
        parts = []
        if rep.skipped:
            parts.append("skipped " + ", ".join(f"{v} {k}" for k, v in rep.skipped.items()))
        if rep.dropped:
            parts.append(f"dropped {rep.dropped} empty or degenerate")
        if rep.rejected:
            first = rep.rejected_reasons[0] if rep.rejected_reasons else ""
            parts.append(f"rejected {rep.rejected} invalid, e.g. {first}")
        hints = [h for h in rep.skipped_reasons.values() if h]
        why = f" ({'; '.join(parts)})" if parts else ""
        if rep.rejected:
            fix = "correct or delete the invalid objects, or export the file again"
        else:
            fix = hints[0] if hints else "check that the file holds polygon annotations"
        return f"the file holds no polygon object{why}; {fix}"

    def outside(self, width: float, height: float) -> list[Annotation]:
        """The objects with no area inside the slide rectangle ``[0, width] x [0, height]``.

        Such objects usually mean the annotation belongs to another slide, or to another level.
        """
        frame = box(0, 0, width, height)
        out = []
        for a in self.annotations:
            x0, y0, x1, y1 = a.geometry.bounds
            inside = x0 >= 0 and y0 >= 0 and x1 <= width and y1 <= height
            if not inside and a.geometry.intersection(frame).area <= 0:
                out.append(a)
        return out


class InvalidObject(Exception):
    """One object of a file holds an invalid value; the message says which and what is wrong.

    Parsers raise it while reading an object and turn it into `AnnotationReport.reject`, so that a
    bad object is counted and skipped and the rest of the file is read.
    """


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def clean_text(text: str, limit: int = 200) -> str:
    """`text` fit for one line of a message: control characters and lone surrogates replaced,
    surrounding spaces stripped, at most `limit` characters."""
    text = _CONTROL.sub(" ", text).strip()
    text = text.encode("utf-8", "replace").decode("utf-8")
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return unicodedata.normalize("NFC", text)


def shown(value: Any, limit: int = 40) -> str:
    """A short description of a value read from a file, for a message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, int) and abs(value) >= 10**16:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1:,} digits"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return repr(clean_text(value, limit))
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value):,}" if value else "an empty list"
    if isinstance(value, dict):
        return "an object {...}" if value else "an empty object {}"
    return f"a {type(value).__name__}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_coordinates(xy: np.ndarray, what: str) -> np.ndarray:
    """`xy` (n, 2) itself, or `InvalidObject` naming the first non-finite or absurd point."""
    bad = ~np.isfinite(xy).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise InvalidObject(
            f"{what}: point {i} is ({xy[i, 0]:g}, {xy[i, 1]:g}), not finite "
            "(NaN, infinity or a number too large)"
        )
    far = (np.abs(xy) > MAX_COORDINATE).any(axis=1)
    if far.any():
        i = int(np.argmax(far))
        raise InvalidObject(
            f"{what}: point {i} is ({xy[i, 0]:.4g}, {xy[i, 1]:.4g}), beyond ±{MAX_COORDINATE:g} px"
        )
    return xy


def points_array(value: Any, what: str) -> np.ndarray:
    """The (n, 2) float64 x, y of a JSON list of points ``[x, y(, z ...)]``, validated.

    Raises `InvalidObject` naming `what` and the first bad point: not a list, a point that is not
    a list of at least two numbers (strings, booleans and null are not numbers), a coordinate that
    is not finite or is beyond ±`MAX_COORDINATE`. Extra values (z) are ignored.
    """
    if value is None:
        return np.zeros((0, 2))
    if not isinstance(value, (list, tuple)):
        raise InvalidObject(f"{what} is {shown(value)}, not a list of [x, y] points")
    xy: np.ndarray | None = None
    try:  # the fast path: one C call for a million points
        types = set(map(type, chain.from_iterable(value)))
        if types <= {int, float}:
            arr = np.asarray(value, dtype=np.float64)
            if arr.ndim == 2 and arr.shape[1] >= 2:
                xy = np.ascontiguousarray(arr[:, :2])
    except (TypeError, ValueError, OverflowError):
        xy = None
    if xy is None:
        xy = np.empty((len(value), 2))
        for i, p in enumerate(value):
            if not isinstance(p, (list, tuple)) or len(p) < 2:
                raise InvalidObject(f"{what}: point {i} is {shown(p)}, not [x, y]")
            for k in (0, 1):
                if not _is_number(p[k]):
                    raise InvalidObject(
                        f"{what}: point {i} has {'xy'[k]} = {shown(p[k])}, not a number"
                    )
                try:
                    xy[i, k] = float(p[k])
                except OverflowError:
                    xy[i, k] = math.copysign(math.inf, p[k])
    return check_coordinates(xy, what)


def ring_array(xy: np.ndarray, what: str, notes: list[str] | None = None) -> np.ndarray | None:
    """A closed ring (first vertex repeated last) from vertices, or None under 3 vertices.

    An open ring is closed; when `notes` is given (formats that require closed rings), that is
    noted there.
    """
    body = xy
    if len(xy) >= 2 and bool((xy[0] == xy[-1]).all()):
        body = xy[:-1]
    elif notes is not None and len(xy) >= 3:
        notes.append(f"{what} not closed (closed it)")
    if len(body) < 3:
        return None
    return np.concatenate([body, body[:1]])


def polygon_from(
    shell: np.ndarray,
    holes: Sequence[np.ndarray] = (),
    notes: list[str] | None = None,
    what: str = "ring",
) -> Polygon:
    """A polygon from validated vertex arrays (see `points_array`), empty if the shell has < 3.

    Holes with fewer than 3 vertices enclose nothing and are left out. Rings need not be closed
    (see `ring_array` for `notes`).
    """
    outer = ring_array(shell, f"{what} 0", notes)
    if outer is None:
        return Polygon()
    inner = [ring_array(h, f"{what} {k}", notes) for k, h in enumerate(holes, start=1)]
    return Polygon(outer, [h for h in inner if h is not None])


def to_polygon(
    shell: Iterable[Sequence[float]], holes: Iterable[Iterable[Sequence[float]]] = ()
) -> Polygon:
    """A polygon from vertex lists (x, y[, z]), or an empty one when the shell has < 3 vertices.

    Holes with fewer than 3 vertices enclose nothing and are left out. Rings need not be closed.
    Raises `InvalidObject` for a vertex that is not a pair of finite numbers within range.
    """
    return polygon_from(
        points_array(list(shell), "ring 0"),
        [points_array(list(h), f"ring {k}") for k, h in enumerate(holes, start=1)],
    )


def ellipse(x0: float, y0: float, x1: float, y1: float, n: int = 64) -> Polygon:
    """The ellipse inscribed in a bounding box, as a polygon of `n` vertices."""
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    rx, ry = abs(x1 - x0) / 2, abs(y1 - y0) / 2
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    return polygon_from(np.c_[cx + rx * np.cos(t), cy + ry * np.sin(t)])


def _polygonal(geom: BaseGeometry) -> list[Polygon]:
    """The non-empty polygons inside any geometry (collections are searched)."""
    if isinstance(geom, Polygon):
        return [] if geom.is_empty else [geom]
    if isinstance(geom, MultiPolygon):
        return [p for p in geom.geoms if not p.is_empty]
    if hasattr(geom, "geoms"):
        return [p for g in geom.geoms for p in _polygonal(g)]
    return []


def _n_vertices(geom: BaseGeometry) -> int:
    return int(shapely.get_num_coordinates(geom))


def _spend(report: AnnotationReport, seconds: float) -> None:
    """Charge `seconds` (modelled) to the file, or `InvalidObject` when its budget is spent."""
    if report.effort + seconds > FILE_EFFORT_S:
        raise InvalidObject(
            f"not checked: checking and repairing this file's objects would take more than the "
            f"{FILE_EFFORT_S:g} s allowed a file; simplify or repair its objects in the annotation "
            "tool"
        )
    report.effort += seconds


def _simplify_ring(ring: np.ndarray, tolerance: float) -> np.ndarray | None:
    """A closed ring simplified (Douglas-Peucker, in pieces of `_CHUNK` vertices), None if < 3."""
    last = len(ring) - 1
    pieces = [ring[a : min(a + _CHUNK, last) + 1] for a in range(0, last, _CHUNK)]
    lines = shapely.linestrings(
        np.concatenate(pieces), indices=np.repeat(np.arange(len(pieces)), [len(x) for x in pieces])
    )
    coords, index = shapely.get_coordinates(
        shapely.simplify(lines, tolerance, preserve_topology=False), return_index=True
    )
    first = np.r_[True, index[1:] != index[:-1]]
    first[0] = False  # each piece starts where the previous one ended, but the first
    out = coords[~first]
    return out if len(out) >= 4 else None


def _simplify(geom: BaseGeometry, tolerance: float) -> Geometry | None:
    """Every ring of `geom` simplified on its own; None when every shell collapses.

    Rings are simplified as lines, which never runs GEOS's polygon clean-up (that nodes every
    self-crossing and takes minutes on a tangled polygon); the result may be invalid, and is
    repaired after.
    """
    polys = []
    for p in _polygonal(geom):
        shell = _simplify_ring(np.asarray(p.exterior.coords)[:, :2], tolerance)
        if shell is None:
            continue
        holes = [_simplify_ring(np.asarray(h.coords)[:, :2], tolerance) for h in p.interiors]
        polys.append(Polygon(shell, [h for h in holes if h is not None]))
    if not polys:
        return None
    return polys[0] if len(polys) == 1 else MultiPolygon(polys)


def _edges(geom: BaseGeometry) -> tuple[np.ndarray, np.ndarray]:
    """The start and end points (n, 2) of every edge of every ring of `geom`."""
    rings = shapely.get_rings(_polygonal(geom))
    coords, index = shapely.get_coordinates(rings, return_index=True)
    same = index[1:] == index[:-1]
    return coords[:-1][same], coords[1:][same]


def _pairs(m: np.ndarray) -> np.ndarray:
    out: np.ndarray = m * (m - 1) / 2
    return out


def overlap_bound(geom: BaseGeometry) -> int:
    """An upper bound of the pairs of edges of `geom` whose bounding boxes overlap.

    What GEOS's validity check and noding cost is about proportional to. Counted on a grid of
    about 2 √n cells a side in O(n + cells): a pair is counted in the one cell that holds the
    lower-left corner of the intersection of the cells the two boxes cover, so no pair is counted
    twice and only pairs that share a cell without overlapping are counted in excess (within 2 to
    6 times for ordinary outlines, exactly for stars).
    """
    a, b = _edges(geom)
    n = len(a)
    if n < 2:
        return 0
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    origin = lo.min(axis=0)
    extent = hi.max(axis=0) - origin
    g = int(np.clip(2 * math.sqrt(n), 8, 2048))
    size = np.where(extent > 0, extent / g, 1.0)
    c0 = np.minimum(((lo - origin) / size).astype(np.int64), g - 1)
    c1 = np.minimum(((hi - origin) / size).astype(np.int64), g - 1)
    x0, y0, x1, y1 = c0[:, 0], c0[:, 1], c1[:, 0] + 1, c1[:, 1] + 1
    w = g + 1
    one = np.ones(n)

    def grid(cells: list[np.ndarray], signs: list[float]) -> np.ndarray:
        weights = np.concatenate([sign * one for sign in signs])
        return np.bincount(np.concatenate(cells), weights, minlength=w * w).reshape(w, w)

    # boxes covering each cell; those starting in its column; in its row; in the cell itself
    cover = grid([y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1], [1, -1, -1, 1])
    cover = cover.cumsum(0).cumsum(1)[:g, :g]
    col = grid([y0 * w + x0, y1 * w + x0], [1, -1]).cumsum(0)[:g, :g]
    row = grid([y0 * w + x0, y0 * w + x1], [1, -1]).cumsum(1)[:g, :g]
    both = grid([y0 * w + x0], [1])[:g, :g]
    # pairs covering the cell with at least one starting in its column and one in its row
    u = _pairs(cover) - _pairs(cover - col) - _pairs(cover - row) + _pairs(cover - col - row + both)
    return round(float(u.sum()))


def _orient(p: np.ndarray, q: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Twice the signed area of each triangle (p, q, r): > 0 when r lies left of p -> q."""
    out: np.ndarray = (q[:, 0] - p[:, 0]) * (r[:, 1] - p[:, 1]) - (q[:, 1] - p[:, 1]) * (
        r[:, 0] - p[:, 0]
    )
    return out


def crossings(geom: BaseGeometry, report: AnnotationReport | None = None) -> int:
    """The number of pairs of edges of `geom` that cross (exact up to ~510 edges, else estimated
    from `_SAMPLES` random pairs, within about 25 % at `MAX_CROSSINGS` for `REPAIR_MAX_VERTICES`
    edges; edges that only touch or overlap are not counted). Its cost is charged to `report`."""
    a, b = _edges(geom)
    n = len(a)
    total = n * (n - 1) // 2
    if total == 0:
        return 0
    if report is not None:  # the part beyond linear: ordinary files never run out
        _spend(report, max(0, min(total, _SAMPLES) - 50 * n) * _S_PER_PAIR)
    if total <= _SAMPLES:
        i, j = np.triu_indices(n, 1)
    else:
        rng = np.random.default_rng(n)
        i, j = rng.integers(0, n, (2, _SAMPLES))
        keep = i != j
        i, j = i[keep], j[keep]
    hits = 0
    for k in range(0, len(i), 1 << 16):
        ii, jj = i[k : k + (1 << 16)], j[k : k + (1 << 16)]
        p, q, r, t = a[ii], b[ii], a[jj], b[jj]
        d1, d2 = _orient(p, q, r), _orient(p, q, t)
        d3, d4 = _orient(r, t, p), _orient(r, t, q)
        hits += int(((d1 * d2 < 0) & (d3 * d4 < 0)).sum())
    return hits if len(i) == total else round(hits / len(i) * total)


def _make_valid(geom: BaseGeometry) -> BaseGeometry:
    """`shapely.make_valid` by structure (the area inside the outline, however it was wound):
    10 to 50 times faster than by linework on tangled outlines. Shapely 2.0 has linework only."""
    try:
        return shapely.make_valid(geom, method="structure", keep_collapsed=False)
    except TypeError:  # shapely < 2.1
        return shapely.make_valid(geom)


def bounded(
    geom: BaseGeometry, report: AnnotationReport | None = None, max_vertices: int | None = None
) -> tuple[Geometry | None, str, bool]:
    """`geom` brought within the cost bounds: (geometry, what was simplified or '', valid).

    An object is simplified when it has more than `max_vertices` vertices (default
    `MAX_VERTICES`), more than `MAX_OVERLAPS` pairs of edges with overlapping bounds, or, when
    invalid, more than `REPAIR_MAX_VERTICES` vertices or `MAX_CROSSINGS` crossings; by
    Douglas-Peucker in steps, each on the last one's result with twice its tolerance (from
    `SIMPLIFY_START_PX`), until it fits; the note gives the sum of the steps' tolerances, the
    most the outline moved. The geometry is None when simplification leaves no area. Raises
    `InvalidObject` when that sum would pass `MAX_TOLERANCE_PX`, or when the file's budget
    (`FILE_EFFORT_S`, charged to `report`) is spent.
    """
    report = AnnotationReport() if report is None else report
    limit = MAX_VERTICES if max_vertices is None else max(int(max_vertices), 4)
    repair_limit = min(limit, REPAIR_MAX_VERTICES)
    n0 = _n_vertices(geom)
    current: Geometry | None = geom
    step = moved = 0.0  # this step's tolerance; the sum of all steps' (the most it moved)
    why = ""
    causes: dict[str, str] = {}  # the first reason of each kind to simplify, for the note
    valid = False
    while current is not None:
        n = _n_vertices(current)
        if n > limit:
            kind, why = "size", f"it had {n:,} vertices (limit {limit:,})"
        else:
            overlaps = overlap_bound(current) if n > _SMALL else 0
            if overlaps > MAX_OVERLAPS:
                kind, why = "overlaps", f"about {overlaps:,} pairs of its edges lay side by side"
            else:
                _spend(report, max(0, overlaps - 10 * n) * _S_PER_OVERLAP)
                if current.is_valid:
                    valid = True
                    break
                if n > repair_limit:
                    kind = "repair"
                    why = f"it crossed itself, with {n:,} vertices (limit {repair_limit:,})"
                else:
                    k = crossings(current, report)
                    if k <= MAX_CROSSINGS:
                        _spend(report, max(0, k - n) * _S_PER_CROSSING)
                        break
                    kind = "crossings"
                    why = f"it crossed itself about {k:,} times (limit {MAX_CROSSINGS:,})"
        causes.setdefault(kind, why)
        step = SIMPLIFY_START_PX if step == 0 else 2 * step
        if moved + step > MAX_TOLERANCE_PX:
            raise InvalidObject(
                f"{why} even simplified by {moved:g} px ({n0:,} vertices as drawn); "
                "simplify or redraw it in the annotation tool"
            )
        _spend(report, n * _S_PER_VERTEX)
        current = _simplify(current, step)  # each step simplifies the last: fewer vertices
        moved += step
    if moved == 0 or current is None:
        return current, "", valid
    m = _n_vertices(current)
    note = f"{n0:,} vertices simplified to {m:,} (by at most {moved:g} px), as "
    return current, note + "; then ".join(causes.values()), valid


def clean_geometry(
    geom: BaseGeometry | None,
    report: AnnotationReport,
    where: str,
    *,
    notes: Sequence[str] = (),
    max_vertices: int | None = None,
) -> Geometry | None:
    """A usable polygon or multipolygon, or None (dropped or rejected, and counted in `report`).

    Invalid shapes (self-intersections, bow-ties, spikes) are repaired with `shapely.make_valid`
    and only their polygonal part is kept: annotators draw such shapes often and mean the area.
    Empty shapes and shapes smaller than `MIN_AREA` px² are dropped; shapes with non-finite or
    absurd coordinates are rejected. Shapes above `max_vertices` vertices (or too tangled to
    repair quickly) are simplified first: see `bounded`. `notes` are repairs the parser already
    made (e.g. a ring closed), reported with the object's other repairs.
    """
    if geom is None or geom.is_empty:
        report.drop(where, "empty (fewer than 3 vertices)")
        return None
    geom = shapely.force_2d(geom)
    try:
        check_coordinates(shapely.get_coordinates(geom), "coordinates")
        bounded_geom, simplified, valid = bounded(geom, report, max_vertices)
    except InvalidObject as exc:
        report.reject(where, str(exc))
        return None
    if bounded_geom is None:
        report.drop(where, "degenerate (no area left once simplified)")
        return None
    if simplified:
        report.simplify(where, simplified)
    geom = bounded_geom
    reasons = list(notes)
    if not valid:
        reasons.append(clean_text(str(shapely.is_valid_reason(geom))))
        geom = _make_valid(geom)
    parts = _polygonal(geom)
    area = sum(p.area for p in parts)
    if not parts or area < MIN_AREA:
        report.drop(where, f"degenerate (area {area:.3g} px²)")
        return None
    parts = [p for p in parts if p.area >= MIN_AREA] or parts  # slivers left by a repair
    result: Geometry = parts[0] if len(parts) == 1 else MultiPolygon(parts)
    if not valid and not result.is_valid:  # overlapping parts of a collection: merge them
        reasons.append(clean_text(str(shapely.is_valid_reason(result))))
        merged = _polygonal(shapely.union_all(parts))
        result = merged[0] if len(merged) == 1 else MultiPolygon(merged)
    if reasons:
        report.repair(where, "; ".join(reasons))
    return result


def parse_number(text: str | None) -> float:
    """A coordinate written by any locale: ``1234.5``, ``1234,5`` (decimal comma), `` 12 ``.

    Raises ValueError for anything else (a missing attribute included).
    """
    if text is None:
        raise ValueError("missing")
    s = text.strip()
    if "," in s and "." not in s:
        s = s.replace(",", ".")
    return float(s)


def packed_rgb(value: int) -> tuple[int, int, int]:
    """QuPath's packed (A)RGB integer, signed or not, as (r, g, b)."""
    v = int(value) & 0xFFFFFFFF
    return ((v >> 16) & 255, (v >> 8) & 255, v & 255)


def parse_color(value: Any) -> tuple[int, int, int] | None:
    """A colour given as [r, g, b(, a)], a packed integer, or ``#rrggbb``; None for anything else.

    Components are clipped to 0-255. A colour is never a reason to reject an object.
    """
    try:
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            return packed_rgb(value)
        if isinstance(value, (list, tuple)) and len(value) >= 3:
            if not all(_is_number(c) and math.isfinite(c) for c in value[:3]):
                return None
            r, g, b = (min(255, max(0, round(float(c)))) for c in value[:3])
            return (r, g, b)
        if isinstance(value, str) and re.fullmatch(r"#?[0-9a-fA-F]{6}", value.strip()):
            h = value.strip().lstrip("#")
            return (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16))
    except (TypeError, ValueError, OverflowError):
        return None
    return None
