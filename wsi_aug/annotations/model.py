"""What every annotation parser returns: polygons in level-0 pixels, a class, and a report.

Parsers never reject a file for a badly drawn polygon: self-intersections are repaired, empty or
degenerate shapes are dropped, and points, lines and unwanted object types are skipped; each of
these is counted in an `AnnotationReport` so that ``wsi-aug info`` can say what happened.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
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
        hints = [h for h in rep.skipped_reasons.values() if h]
        why = f" ({'; '.join(parts)})" if parts else ""
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


def to_polygon(
    shell: Iterable[Sequence[float]], holes: Iterable[Iterable[Sequence[float]]] = ()
) -> Polygon:
    """A polygon from vertex lists (x, y[, z]), or an empty one when the shell has < 3 vertices.

    Holes with fewer than 3 vertices enclose nothing and are left out. Rings need not be closed.
    """
    pts = [(float(p[0]), float(p[1])) for p in shell]
    if len(pts) < 3:
        return Polygon()
    inner = []
    for hole in holes:
        h = [(float(p[0]), float(p[1])) for p in hole]
        if len(h) >= 3:
            inner.append(h)
    return Polygon(pts, inner)


def ellipse(x0: float, y0: float, x1: float, y1: float, n: int = 64) -> Polygon:
    """The ellipse inscribed in a bounding box, as a polygon of `n` vertices."""
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    rx, ry = abs(x1 - x0) / 2, abs(y1 - y0) / 2
    t = [2 * math.pi * i / n for i in range(n)]
    return to_polygon([(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in t])


def _polygonal(geom: BaseGeometry) -> list[Polygon]:
    """The non-empty polygons inside any geometry (collections are searched)."""
    if isinstance(geom, Polygon):
        return [] if geom.is_empty else [geom]
    if isinstance(geom, MultiPolygon):
        return [p for p in geom.geoms if not p.is_empty]
    if hasattr(geom, "geoms"):
        return [p for g in geom.geoms for p in _polygonal(g)]
    return []


def clean_geometry(
    geom: BaseGeometry | None, report: AnnotationReport, where: str
) -> Geometry | None:
    """A usable polygon or multipolygon, or None (dropped, and counted in `report`).

    Invalid shapes (self-intersections, bow-ties, spikes) are repaired with `shapely.make_valid`
    and only their polygonal part is kept: annotators draw such shapes often and mean the area.
    Empty shapes, shapes with non-finite coordinates and shapes smaller than `MIN_AREA` px² are
    dropped.
    """
    if geom is None or geom.is_empty:
        report.drop(where, "empty (fewer than 3 vertices)")
        return None
    geom = shapely.force_2d(geom)
    if not np.isfinite(shapely.get_coordinates(geom)).all():
        report.drop(where, "non-finite coordinates")
        return None
    repaired = False
    if not geom.is_valid:
        reason = shapely.is_valid_reason(geom)
        geom = shapely.make_valid(geom)
        repaired = True
    parts = _polygonal(geom)
    area = sum(p.area for p in parts)
    if not parts or area < MIN_AREA:
        report.drop(where, f"degenerate (area {area:.3g} px²)")
        return None
    parts = [p for p in parts if p.area >= MIN_AREA] or parts  # slivers left by a repair
    result: Geometry = parts[0] if len(parts) == 1 else MultiPolygon(parts)
    if not result.is_valid:  # overlapping parts of a collection: merge them
        reason = shapely.is_valid_reason(result)
        merged = _polygonal(shapely.union_all(parts))
        result = merged[0] if len(merged) == 1 else MultiPolygon(merged)
        repaired = True
    if repaired:
        report.repair(where, reason)
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
    """A colour given as [r, g, b(, a)], a packed integer, or ``#rrggbb``."""
    try:
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            return packed_rgb(value)
        if isinstance(value, (list, tuple)) and len(value) >= 3:
            r, g, b = (round(float(c)) for c in value[:3])
            return (r, g, b)
        if isinstance(value, str) and re.fullmatch(r"#?[0-9a-fA-F]{6}", value.strip()):
            h = value.strip().lstrip("#")
            return (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16))
    except (TypeError, ValueError):
        return None
    return None
