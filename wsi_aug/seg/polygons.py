"""A mask given strip by strip, top to bottom, as the polygons of its connected components.

`wsi-aug segment` never holds a slide's full-resolution mask: it thresholds finished rows of the
blended probability map and hands them here. Components that reach the last row given so far
may go on below, so their rows are carried into the next strip; the others are finished and
traced. The polygons are therefore exactly the 8-connected components of the whole mask, whatever
the strip boundaries, at the cost of keeping the rows of the objects still open.
"""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
import shapely
from scipy import ndimage
from shapely.geometry import MultiPolygon, Polygon

EIGHT = np.ones((3, 3), bool)

Geometry: TypeAlias = Polygon | MultiPolygon


def component_polygon(sub: np.ndarray, x0: float, y0: float) -> Geometry:
    """The exact outline (holes kept) of a boolean component, pixel (i, j) covering
    [x0 + j, x0 + j + 1) x [y0 + i, y0 + i + 1): the union of its row runs, collinear vertices
    removed. Parts touching only at a corner make a MultiPolygon."""
    padded = np.zeros((sub.shape[0], sub.shape[1] + 2), np.int8)
    padded[:, 1:-1] = sub
    d = np.diff(padded, axis=1)
    rs, cs = np.nonzero(d == 1)
    _, ce = np.nonzero(d == -1)  # row by row, left to right: the i-th end closes the i-th start
    geom = shapely.union_all(shapely.box(x0 + cs, y0 + rs, x0 + ce, y0 + rs + 1))
    out = shapely.simplify(geom, 0.0)  # drops the run corners along straight edges only
    assert isinstance(out, Polygon | MultiPolygon)
    return out


class StripVectorizer:
    """Polygons of the components of a mask fed as consecutive strips of rows.

    ``scale`` (sx, sy) maps mask pixels to output coordinates (level-0 pixels); components of
    fewer than ``min_pixels`` mask pixels are dropped (holes are not filled first).
    """

    def __init__(
        self, width: int, *, min_pixels: float = 0.0, scale: tuple[float, float] = (1.0, 1.0)
    ) -> None:
        self.width = int(width)
        self.min_pixels = float(min_pixels)
        self.scale = (float(scale[0]), float(scale[1]))
        self._carry = np.zeros((0, self.width), bool)
        self._top = 0  # mask row of the carried strip's first row
        self.carried_rows_max = 0  # the most rows ever carried (for memory checks)

    def _trace(self, labels: np.ndarray, ids: np.ndarray, slices: list, top: int) -> list[Geometry]:
        """Polygons of the components `ids` (labels of `labels`, starting at mask row `top`)."""
        out: list[Geometry] = []
        sx, sy = self.scale
        for i in ids:
            slc = slices[int(i) - 1]
            sub = labels[slc] == i
            if sub.sum() < self.min_pixels:
                continue
            geom = component_polygon(sub, slc[1].start, top + slc[0].start)
            if (sx, sy) != (1.0, 1.0):
                geom = shapely.transform(geom, lambda xy: xy * np.array([sx, sy]))
            out.append(geom)
        return out

    def add(self, rows: np.ndarray) -> list[Geometry]:
        """Append the next rows (h, width) of the mask; returns the components now finished."""
        rows = np.asarray(rows, bool)
        if rows.ndim != 2 or rows.shape[1] != self.width:
            raise ValueError(f"rows must be (h, {self.width}), got {rows.shape}")
        strip = np.concatenate([self._carry, rows]) if len(self._carry) else rows
        top = self._top
        labels, n = ndimage.label(strip, structure=EIGHT)
        if n == 0:
            self._carry = np.zeros((0, self.width), bool)
            self._top = top + len(strip)
            return []
        slices = ndimage.find_objects(labels)
        last = labels[-1]
        open_ids = np.unique(last[last > 0])
        done = np.setdiff1d(np.arange(1, n + 1), open_ids)
        out = self._trace(labels, done, slices, top)
        if len(open_ids):
            r0 = min(slices[int(i) - 1][0].start for i in open_ids)
            self._carry = np.isin(labels[r0:], open_ids)
            self._top = top + r0
        else:
            self._carry = np.zeros((0, self.width), bool)
            self._top = top + len(strip)
        self.carried_rows_max = max(self.carried_rows_max, len(self._carry))
        return out

    def finish(self) -> list[Geometry]:
        """The components still open (the mask has no more rows)."""
        if not len(self._carry):
            return []
        labels, n = ndimage.label(self._carry, structure=EIGHT)
        out = self._trace(labels, np.arange(1, n + 1), ndimage.find_objects(labels), self._top)
        self._top += len(self._carry)
        self._carry = np.zeros((0, self.width), bool)
        return out


def mask_polygons(
    mask: np.ndarray, *, min_pixels: float = 0.0, scale: tuple[float, float] = (1.0, 1.0)
) -> list[Geometry]:
    """The polygons of a whole mask in one strip (the reference `StripVectorizer` must match)."""
    vec = StripVectorizer(mask.shape[1], min_pixels=min_pixels, scale=scale)
    return vec.add(mask) + vec.finish()
