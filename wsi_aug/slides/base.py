"""The abstract slide: one small typed interface over every reader backend.

A backend supplies the level geometry, the metadata and one low-level read of an in-bounds
rectangle at a level, in its own raw pixel layout (RGB, or OpenSlide's premultiplied BGRA). This
class does everything else the same way for all of them: clipping and white padding beyond the
slide, the choice of level for a pixel size, and antialiased resampling to an exact output size
with sub-pixel offsets. Resampling runs on the raw layout (premultiplied compositing onto white is
linear, so it commutes with averaging) and converts to RGB once, on the small output.
"""

from __future__ import annotations

import abc
import functools
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import ClassVar, TypeVar

import numpy as np
import numpy.typing as npt

from wsi_aug.errors import SlideError

Box = tuple[float, float, float, float]
_T = TypeVar("_T")

MPP_TOLERANCE = 1e-3  # relative slack when comparing a level's pixel size with a target
SAME_MPP = 1e-9  # relative: a target pixel size this close to a level's reads that level 1:1
_SNAP = 1e-6  # coordinates this close to an integer are taken as that integer
_BAND_PIXELS = 1 << 22  # raw pixels read at once; larger resamples run in bands of output rows
_KEEP_BYTES = 32 << 20  # scratch buffers up to this size are kept for the next read


def one_line(exc: BaseException) -> str:
    """An exception as one short line, for the one-line user errors."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


@dataclass(frozen=True)
class _Axis:
    """Resampling along one axis: output pixel i = sum_t weights[i, t] * raw[lo + cols[i, t]].

    `block` is n >= 1 when output pixel i is exactly the mean of raw pixels lo + n*i .. + n-1
    (1: a plain crop, with no cols or weights), else 0.
    """

    lo: int
    hi: int
    n_out: int
    cols: np.ndarray | None  # (n_out, taps) int32, relative to lo
    weights: np.ndarray | None  # (n_out, taps) float32
    block: int

    def shifted(self, by: int) -> _Axis:
        return _Axis(self.lo + by, self.hi + by, self.n_out, self.cols, self.weights, self.block)

    def rows(self, r0: int, r1: int) -> _Axis:
        """The axis restricted to output pixels r0 .. r1 - 1 (for reading in bands)."""
        if self.cols is None or self.weights is None:
            return _Axis(self.lo + r0, self.lo + r1, r1 - r0, None, None, 1)
        cols = self.cols[r0:r1]
        lo, hi = int(cols.min()), int(cols.max()) + 1
        return _Axis(
            self.lo + lo, self.lo + hi, r1 - r0, cols - lo, self.weights[r0:r1], self.block
        )


def _snap(v: np.ndarray) -> np.ndarray:
    """Round values within `_SNAP` of an integer to it, so float noise adds no zero-weight pixel."""
    r = np.round(v)
    return np.where(np.abs(v - r) < _SNAP, r, v)


def _axis(start: float, step: float, n_out: int) -> _Axis:
    """The resampling of one axis: output pixel i covers [start + i*step, start + (i+1)*step).

    Pixel k of the level covers [k, k+1). Downsampling (step > 1) averages each output pixel's
    exact footprint (area weights); otherwise output pixel centres are interpolated linearly from
    the two nearest level pixel centres. A unit step at an integral start is a plain crop.
    """
    if n_out <= 0:
        raise ValueError(f"output size must be positive, got {n_out}")
    s0 = float(_snap(np.array([float(start)]))[0])
    base = math.floor(s0)
    return _axis_at(s0 - base, float(step), int(n_out)).shifted(base)


@functools.lru_cache(maxsize=512)
def _axis_at(frac: float, step: float, n_out: int) -> _Axis:
    """`_axis` for a start in [0, 1); cached, as windows of one size repeat the same weights."""
    n = round(step)
    exact = abs(step - n) < _SNAP and frac == 0.0
    if exact and n == 1:
        return _Axis(0, n_out, n_out, None, None, 1)
    i = np.arange(n_out, dtype=np.float64)
    k: np.ndarray  # level pixel indices (as floats) of each output pixel's taps
    if step > 1.0 + _SNAP:  # area: the overlap of [a, b) with each pixel [k, k+1), over step
        a = frac + i * step
        k = np.floor(a)[:, None] + np.arange(math.ceil(step) + 1)
        w = np.minimum(k + 1, (a + step)[:, None])
        w -= np.maximum(k, a[:, None])
        np.maximum(w, 0.0, out=w)
        w *= 1.0 / step
    else:  # linear, between the two pixel centres around the output pixel's centre
        p = frac + (i + 0.5) * step - 0.5
        k0 = np.floor(p)
        k = np.empty((n_out, 2))
        k[:, 0], k[:, 1] = k0, k0 + 1
        w = np.empty((n_out, 2))
        w[:, 1] = p - k0
        w[:, 0] = 1.0 - w[:, 1]
    used = w > _SNAP  # float noise at footprint ends leaves slivers; they read no extra pixel
    w[~used] = 0.0
    w /= w.sum(axis=1, keepdims=True)
    lo, hi = int(k[used].min()), int(k[used].max()) + 1
    cols = (np.clip(k, lo, hi - 1) - lo).astype(np.int32)
    weights = w.astype(np.float32)
    cols.flags.writeable = weights.flags.writeable = False
    return _Axis(lo, hi, n_out, cols, weights, n if exact else 0)


def _same(a: float, b: float) -> bool:
    """True when two pixel sizes agree to within `SAME_MPP` (relative)."""
    return abs(a - b) <= SAME_MPP * max(abs(a), abs(b))


def _as_crop(box: Box, out_size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """(x, y, w, h) when resampling the level-pixel `box` to `out_size` is a plain crop, else None.

    That is when the box is `out_size` level pixels (within `SAME_MPP`) at an origin within
    `_SNAP` of a pixel corner: there `_axis` gives unit weights on whole pixels, the same pixels.
    """
    ow, oh = int(out_size[0]), int(out_size[1])
    x, y, bw, bh = box
    if ow < 1 or oh < 1 or not (_same(bw, ow) and _same(bh, oh)):
        return None
    rx, ry = round(x), round(y)
    if abs(x - rx) >= _SNAP or abs(y - ry) >= _SNAP:
        return None
    return (int(rx), int(ry), ow, oh)


def _pitch(n: int, channels: int) -> int:
    """Row length (in pixels) of a float32 scratch row of n pixels, padded off multiples of 256
    bytes: rows a power of two apart alias in the CPU cache and make transposes ~4x slower."""
    return n + 1 if (n * channels * 4) % 256 == 0 else n


@functools.cache
def _csr_matvecs() -> Callable[..., None] | None:
    """scipy's C kernel for Y += A @ X (the product writes into a reused buffer), or None.

    Imported on first use: scipy.sparse costs a tenth of a second to import, and reads that are
    plain crops (the target pixel size is the level's) never need it.
    """
    try:
        from scipy.sparse._sparsetools import csr_matvecs
    except ImportError:  # pragma: no cover - a scipy without it falls back to `A @ X`
        return None
    return csr_matvecs  # type: ignore[no-any-return]  # private scipy module without stubs


def _spmm(ax: _Axis, x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out = A @ x`` for the axis' (n_out, hi - lo) weight matrix A and C-contiguous float32 x."""
    assert ax.cols is not None and ax.weights is not None
    n_out, taps = ax.cols.shape
    indptr = np.arange(0, n_out * taps + 1, taps, dtype=np.int32)
    kernel = _csr_matvecs()
    if kernel is None:  # pragma: no cover
        import scipy.sparse as sp

        m = sp.csr_matrix((ax.weights.ravel(), ax.cols.ravel(), indptr), (n_out, ax.hi - ax.lo))
        np.copyto(out, m @ x)
        return out
    out.fill(0)
    kernel(
        n_out, ax.hi - ax.lo, x.shape[1], indptr, ax.cols.ravel(), ax.weights.ravel(),
        x.reshape(-1), out.reshape(-1),
    )  # fmt: skip
    return out


class Slide(abc.ABC):
    """A whole-slide image (or a plain image) read through one backend.

    Coordinates are level-0 pixels, (x, y) = (column, row); sizes are (width, height); images are
    (height, width, 3) uint8 RGB with transparency composited onto white and everything beyond
    the slide white.
    """

    backend: ClassVar[str]
    # The raw value of a pixel beyond the slide (white, or transparent where raw is premultiplied).
    _raw_fill: ClassVar[tuple[int, ...]] = (255, 255, 255)
    # Exceptions of the backend's reads that mean a bad file, reported as a one-line SlideError.
    _read_errors: ClassVar[tuple[type[BaseException], ...]] = (OSError,)

    def __init__(self, path: str | Path, slide_mpp: float | None = None) -> None:
        self.path = Path(path)
        if slide_mpp is not None and not (math.isfinite(slide_mpp) and slide_mpp > 0):
            raise SlideError(f"{self.path}: --slide-mpp must be a positive number, got {slide_mpp}")
        self._slide_mpp = slide_mpp
        self._scratch = threading.local()
        self._closed = False

    # ---- what a backend supplies -------------------------------------------------------------
    # Backends set these three when they open the file.
    _dims: tuple[tuple[int, int], ...]
    _downs: tuple[float, ...] = (1.0,)
    _props: dict[str, str]

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """(width, height) of every level, finest first."""
        return self._dims

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        """Level-0 pixels per level pixel, for every level (1.0 first)."""
        return self._downs

    @property
    def properties(self) -> dict[str, str]:
        """The backend's metadata as text (OpenSlide's property names where it has them)."""
        return dict(self._props)

    @abc.abstractmethod
    def _metadata_mpp(self) -> tuple[float, float] | None:
        """Level-0 pixel size from the file's metadata, or None."""

    @abc.abstractmethod
    def _read_raw(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        """Raw pixels (h, w, C) uint8 of a rectangle inside `level`, in level pixels.

        May return a reused scratch buffer: the caller consumes it before the next read.
        """

    def _finish(self, raw: np.ndarray) -> np.ndarray:
        """Raw pixels (uint8 or float) to a new (h, w, 3) uint8 RGB array; here raw is RGB."""
        out = np.empty((*raw.shape[:2], 3), np.uint8)
        if raw.dtype == np.uint8:
            np.copyto(out, raw[..., :3])
        else:
            np.add(raw[..., :3], 0.5, out=out, casting="unsafe")
        return out

    @property
    def vendor(self) -> str | None:
        """The scanner vendor or format family the metadata names, if any."""
        return None

    @property
    def objective_power(self) -> float | None:
        """The scan's objective magnification, if recorded."""
        return None

    @property
    def associated_image_names(self) -> tuple[str, ...]:
        """Names of the extra images in the file (label, macro, thumbnail ...)."""
        return ()

    def _associated(self, name: str) -> np.ndarray:
        raise KeyError(name)

    def _associated_size(self, name: str) -> tuple[int, int]:
        """(width, height) of an associated image; backends override with cheap metadata."""
        img = self.associated_image(name)
        return img.shape[1], img.shape[0]

    def _close(self) -> None:  # noqa: B027 - optional hook; backends without handles skip it
        """Release the backend's file handles."""

    def held_bytes(self) -> int:
        """About how many bytes of decoded pixels the open slide holds (0: it reads on demand).

        Plain images are decoded whole when opened; what opens slides ahead (`wsi_aug.extract`)
        bounds its window by this.
        """
        return 0

    # ---- metadata ----------------------------------------------------------------------------

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    @property
    def dimensions(self) -> tuple[int, int]:
        """(width, height) of level 0."""
        return self.level_dimensions[0]

    @property
    def mpp_or_none(self) -> tuple[float, float] | None:
        """Level-0 (x, y) micrometres per pixel: ``slide_mpp`` if given, else the metadata's."""
        if self._slide_mpp is not None:
            return (self._slide_mpp, self._slide_mpp)
        return self._metadata_mpp()

    @property
    def mpp(self) -> tuple[float, float]:
        """Level-0 (x, y) micrometres per pixel; a SlideError naming --slide-mpp when unknown."""
        mpp = self.mpp_or_none
        if mpp is None:
            raise SlideError(
                f"{self.path}: no pixel size in the metadata; "
                "give the slide's own pixel size with --slide-mpp"
            )
        return mpp

    def level_mpp(self, level: int) -> tuple[float, float]:
        """(x, y) micrometres per pixel at `level`."""
        mx, my = self.mpp
        ds = self.level_downsamples[self._check_level(level)]
        return (mx * ds, my * ds)

    def associated_image(self, name: str) -> np.ndarray:
        """An associated image (label, macro, thumbnail ...) as (h, w, 3) uint8 RGB."""
        if name not in self.associated_image_names:
            have = ", ".join(self.associated_image_names) or "none"
            raise SlideError(f"{self.path}: no associated image {name!r}; it has: {have}")
        return self._guard(lambda: self._associated(name), f"associated image {name!r}")

    # ---- reading -----------------------------------------------------------------------------

    def best_level_for_mpp(self, target_mpp: float) -> int:
        """The coarsest level whose pixel size is still <= `target_mpp` (level 0 if none is).

        Reading there and downsampling never upsamples and never reads more than needed.
        """
        base = sum(self.mpp) / 2
        best = 0
        for level, ds in enumerate(self.level_downsamples):
            if base * ds <= target_mpp * (1 + MPP_TOLERANCE):
                best = level if ds >= self.level_downsamples[best] else best
        return best

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        """(h, w, 3) uint8 RGB of `size` level pixels at `level`, from level-0 `location`.

        Like OpenSlide's read_region: the location may lie outside the slide (white there), and a
        location that falls between the level's pixels is interpolated.
        """
        level = self._check_level(level)
        w, h = int(size[0]), int(size[1])
        ds = self.level_downsamples[level]
        return self._resample(level, (location[0] / ds, location[1] / ds, w, h), (w, h))

    def read_at_mpp(self, box: Box, target_mpp: float, out_size: tuple[int, int]) -> np.ndarray:
        """(h, w, 3) uint8 RGB of level-0 box (x0, y0, width, height) resampled to `out_size`.

        Reads the level `best_level_for_mpp(target_mpp)` and averages each output pixel's exact
        footprint there (linear interpolation where it upsamples), sub-pixel offsets included.
        """
        level = self.best_level_for_mpp(target_mpp)
        ds = self.level_downsamples[level]
        x0, y0, bw, bh = (float(v) for v in box)
        if not (bw > 0 and bh > 0):
            raise ValueError(f"box width and height must be positive, got {box}")
        lbox = (x0 / ds, y0 / ds, bw / ds, bh / ds)
        crop = _as_crop(lbox, out_size)
        if crop is not None:  # one level pixel per output pixel, on the pixel grid: no resampling
            return self._finish(self._read_padded(level, *crop))
        return self._resample(level, lbox, out_size)

    def pixel_aligned(self, box: Box, target_mpp: float) -> Box:
        """`box` moved by under half a pixel so that a read at `target_mpp` is a plain crop.

        Only where the level read for `target_mpp` has that pixel size (within `SAME_MPP`): the
        origin then goes to the nearest pixel of that level, and a size within `SAME_MPP` of a
        whole number of its pixels to that number. Elsewhere `box` is returned as it is, since a
        resampled read honours sub-pixel offsets anyway.
        """
        level = self.best_level_for_mpp(target_mpp)
        lx, ly = self.level_mpp(level)
        if not (_same(lx, target_mpp) and _same(ly, target_mpp)):
            return box
        ds = self.level_downsamples[level]
        x0, y0, bw, bh = (v / ds for v in box)
        bw, bh = (float(round(v)) if _same(v, round(v)) else v for v in (bw, bh))
        return (round(x0) * ds, round(y0) * ds, bw * ds, bh * ds)

    def read_centered(
        self, cx: float, cy: float, size_px: int, target_mpp: float
    ) -> tuple[np.ndarray, bool]:
        """A `size_px` square at `target_mpp` centred on level-0 (cx, cy), and whether it crosses
        the slide's edge (the part beyond is white)."""
        mx, my = self.mpp
        fw, fh = size_px * target_mpp / mx, size_px * target_mpp / my
        box = (cx - fw / 2, cy - fh / 2, fw, fh)
        width, height = self.dimensions
        crosses = box[0] < 0 or box[1] < 0 or box[0] + fw > width or box[1] + fh > height
        return self.read_at_mpp(box, target_mpp, (size_px, size_px)), crosses

    def thumbnail(self, max_size: int) -> np.ndarray:
        """The whole slide, longer side `max_size` px (never enlarged), read from a coarse level."""
        if max_size < 1:
            raise ValueError(f"max_size must be positive, got {max_size}")
        width, height = self.dimensions
        scale = max(1.0, max(width, height) / max_size)
        out = (max(1, round(width / scale)), max(1, round(height / scale)))
        level = 0
        for i, ds in enumerate(self.level_downsamples):
            if ds <= scale * (1 + MPP_TOLERANCE) and ds >= self.level_downsamples[level]:
                level = i
        ds = self.level_downsamples[level]
        return self._resample(level, (0.0, 0.0, width / ds, height / ds), out)

    def close(self) -> None:
        """Release the file; further reads fail."""
        if not self._closed:
            self._closed = True
            self._close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    # ---- machinery ---------------------------------------------------------------------------

    def _check_level(self, level: int) -> int:
        if not 0 <= level < self.level_count:
            raise ValueError(f"{self.path}: level {level} not in 0..{self.level_count - 1}")
        return int(level)

    def _guard(self, fn: Callable[[], _T], what: str) -> _T:
        """Run a backend read, turning its file errors into one-line SlideErrors."""
        if self._closed:
            raise SlideError(f"{self.path}: the slide is closed; open it again")
        try:
            return fn()
        except SlideError:
            raise
        except self._read_errors as exc:
            raise SlideError(
                f"{self.path}: cannot read {what} ({one_line(exc)}); "
                "the file may be corrupt or truncated: copy or export it again"
            ) from exc

    def _buffer(self, name: str, shape: tuple[int, ...], dtype: npt.DTypeLike) -> np.ndarray:
        """A scratch array reused between reads of this thread (fresh pages are slow to fault)."""
        dtype = np.dtype(dtype)
        n = math.prod(shape)
        if n * dtype.itemsize > _KEEP_BYTES:
            return np.empty(shape, dtype)
        store: dict[str, np.ndarray] = self._scratch.__dict__.setdefault("buffers", {})
        buf = store.get(name)
        if buf is None or buf.dtype != dtype or buf.size < n:
            buf = np.empty(max(n, 1), dtype)
            store[name] = buf
        return buf[:n].reshape(shape)

    def _read_padded(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        """Raw (h, w, C) pixels of any rectangle at `level`; the part beyond the level is fill."""
        lw, lh = self.level_dimensions[level]
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + w, lw), min(y + h, lh)
        where = f"level {level} region x={x} y={y} {w}x{h}"
        if x0 == x and y0 == y and x1 == x + w and y1 == y + h:
            return self._guard(lambda: self._read_raw(level, x, y, w, h), where)
        fill = self._raw_fill
        canvas = np.empty((h, w, len(fill)), np.uint8)
        if len(set(fill)) == 1:
            canvas.fill(fill[0])  # white or transparent: 50x faster than broadcasting a tuple
        else:
            canvas[...] = np.asarray(fill, np.uint8)
        if x1 > x0 and y1 > y0:
            part = self._guard(lambda: self._read_raw(level, x0, y0, x1 - x0, y1 - y0), where)
            canvas[y0 - y : y1 - y, x0 - x : x1 - x] = part
        return canvas

    def _resample(self, level: int, box: Box, out_size: tuple[int, int]) -> np.ndarray:
        """(oh, ow, 3) RGB of the level-pixel box (x, y, w, h) resampled to out_size (ow, oh)."""
        ow, oh = int(out_size[0]), int(out_size[1])
        if ow < 1 or oh < 1:
            raise ValueError(f"output size must be positive, got {out_size}")
        x, y, bw, bh = box
        ax = _axis(x, bw / ow, ow)
        ay = _axis(y, bh / oh, oh)
        width = ax.hi - ax.lo
        if (ay.hi - ay.lo) * width <= _BAND_PIXELS:
            return self._resample_band(level, ax, ay)
        # Too large to read at once (a thumbnail of an unpyramided slide): bands of output rows.
        band = max(1, _BAND_PIXELS // max(1, width) // (math.ceil(bh / oh) + 1))
        parts = [
            self._resample_band(level, ax, ay.rows(r, min(r + band, oh)))
            for r in range(0, oh, band)
        ]
        return np.concatenate(parts, axis=0)

    def _resample_band(self, level: int, ax: _Axis, ay: _Axis) -> np.ndarray:
        raw = self._read_padded(level, ax.lo, ay.lo, ax.hi - ax.lo, ay.hi - ay.lo)
        if ax.block == 1 and ay.block == 1:
            return self._finish(raw)
        return self._finish(self._apply(raw, ay, ax))

    def _apply(self, raw: np.ndarray, ay: _Axis, ax: _Axis) -> np.ndarray:
        """Separable resampling of raw (H, W, C) uint8 to (oh, ow, C) float32, in scratch memory.

        Rows first, as one sparse product over (H, W*C); then columns, after a transpose that
        moves whole pixels (C floats as one item), so that both are contiguous sparse products.
        Exact block means of 4-channel raw take a faster integer path.
        """
        h, w, c = raw.shape
        if c == 4 and ay.block and ax.block and ay.block * ax.block <= 257:
            return self._block_mean4(raw, ay, ax)
        item = np.dtype((np.void, 4 * c))
        wp = _pitch(w, c)
        src = self._buffer("src", (h, wp * c), np.float32)
        np.copyto(src[:, : w * c], raw.reshape(h, w * c), casting="unsafe")
        if ay.block != 1:
            oh = ay.n_out
            rows = _spmm(ay, src, self._buffer("rows", (oh, wp * c), np.float32))
        else:
            oh, rows = h, src
        if ax.block == 1:
            return rows[:, : w * c].reshape(oh, w, c)
        ow = ax.n_out
        ohp = _pitch(oh, c)
        cols_in = self._buffer("cols_in", (w, ohp * c), np.float32)
        np.copyto(cols_in.view(item)[:, :oh], rows.view(item)[:, :w].T)
        cols = _spmm(ax, cols_in, self._buffer("cols", (ow, ohp * c), np.float32))
        out = self._buffer("out", (oh, ow * c), np.float32)
        np.copyto(out.view(item), cols.view(item)[:, :oh].T)
        return out.reshape(oh, ow, c)

    def _block_mean4(self, raw: np.ndarray, ay: _Axis, ax: _Axis) -> np.ndarray:
        """Means of ny x nx blocks of 4-channel uint8 raw, summed as packed uint16 lanes.

        Each pixel's four uint16 sums share one uint64, so one 64-bit add sums four channels;
        lanes cannot carry into each other while ny * nx * 255 < 65536.
        """
        ny, nx, oh, ow = ay.block, ax.block, ay.n_out, ax.n_out
        w = raw.shape[1]
        sums = self._buffer("sum16", (oh, w, 4), np.uint16)
        if ny == 1:
            np.copyto(sums, raw[:oh])
        else:
            np.add(raw[0 : oh * ny : ny], raw[1 : oh * ny : ny], out=sums, dtype=np.uint16)
            for m in range(2, ny):
                np.add(sums, raw[m : oh * ny : ny], out=sums)
        packed = sums.view(np.uint64).reshape(oh, w)
        if nx > 1:
            acc = self._buffer("sum64", (oh, ow), np.uint64)
            np.add(packed[:, 0 : ow * nx : nx], packed[:, 1 : ow * nx : nx], out=acc)
            for m in range(2, nx):
                np.add(acc, packed[:, m : ow * nx : nx], out=acc)
            packed = acc
        out = self._buffer("out", (oh, ow, 4), np.float32)
        lanes = packed.view(np.uint16).reshape(oh, ow, 4)
        np.multiply(lanes, np.float32(1.0 / (ny * nx)), out=out)
        return out
