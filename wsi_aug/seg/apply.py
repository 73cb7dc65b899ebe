"""Applying a trained U-Net to whole slides: tissue, tiles, blended probabilities, polygons.

A slide is read at the model's pixel size on a grid of output tiles (the model's patch size,
overlapping by a fraction), only where a tile meets tissue (Otsu on a thumbnail). The U-Net's
glomerulus probabilities are accumulated with a separable triangular window, so overlapping
tiles blend without seams, and divided by the summed weights. Tiles are processed one row of
tiles (a band) at a time: the buffer holds one band, the rows no later band reaches are
thresholded and handed to `wsi_aug.seg.polygons.StripVectorizer`, which carries objects that go on
into the next band. Memory is bounded by the slide's width, never its area.

`ModelSpec` is what applying a model needs besides its weights; it travels in the safetensors
metadata (and in the train-seg store), so a model file is self-contained.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wsi_aug.errors import CheckpointError
from wsi_aug.seg.polygons import Geometry, StripVectorizer
from wsi_aug.seg.unet import UNet, load_unet, output_size, save_unet, to_input

NORMALIZATION = "rgb/255*2-1"  # `wsi_aug.seg.unet.to_input`; a model trained otherwise is refused
SPEC_KEY = "wsi_aug_model"  # safetensors metadata key of the ModelSpec JSON
THUMBNAIL = 2048  # longer side of the thumbnail tissue is found on


@dataclass(frozen=True)
class ModelSpec:
    """How to apply a segmentation U-Net: its input, architecture, threshold and provenance."""

    patch_size: int  # training patch side in pixels (the default tile side)
    mpp: float  # µm per pixel of the training patches: slides are read at this pixel size
    padding: str
    depth: int
    width: float
    batch_norm: bool
    normalization: str = NORMALIZATION
    threshold: float = 0.5  # on the glomerulus probability (0.5 = the argmax of training)
    val_dice: float = float("nan")
    trained_on: dict[str, str] = field(default_factory=dict)  # input fingerprints
    synthetic_ratio: float = 0.0
    seed: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str, where: Path) -> ModelSpec:
        """Parse and check a spec, or a `CheckpointError` naming `where`."""
        try:
            data = json.loads(text)
            spec = cls(**data)
            ok = (
                spec.patch_size > 0
                and spec.mpp > 0
                and spec.padding in ("same", "valid")
                and 0 < spec.threshold < 1
            )
            if not ok:
                raise ValueError("values out of range")
        except (TypeError, ValueError) as exc:
            raise CheckpointError(
                f"{where}: the model description is damaged ({exc}); rebuild it with "
                "`wsi-aug train-seg --force`"
            ) from None
        return spec

    def output_size(self, tile: int) -> int:
        """The output side of an input tile of side `tile`."""
        return output_size(tile, self.depth, self.padding)


def save_model(model: UNet, spec: ModelSpec, path: str | Path) -> Path:
    """The U-Net's weights as safetensors, with its `ModelSpec` in the metadata."""
    return save_unet(model, path, extra={SPEC_KEY: spec.to_json()})


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[UNet, ModelSpec]:
    """Load a model saved by `save_model`, checking that spec and weights agree.

    A damaged, foreign or mismatched file is a one-line `CheckpointError`.
    """
    from safetensors import safe_open

    p = Path(path)
    fix = "rebuild it with `wsi-aug train-seg --force`"
    if not p.is_file():
        raise CheckpointError(f"{p}: no model file here; {fix}")
    try:
        model = load_unet(p, device)
    except CheckpointError as exc:
        reason = str(exc).removeprefix(f"{p}: ").split(";")[0]
        raise CheckpointError(f"{p}: not a readable model ({reason}); {fix}") from None
    with safe_open(str(p), framework="pt") as f:
        meta = f.metadata() or {}
    if SPEC_KEY not in meta:
        raise CheckpointError(f"{p}: a U-Net without its application settings; {fix}")
    spec = ModelSpec.from_json(meta[SPEC_KEY], p)
    cfg = model.config
    arch = {"depth": spec.depth, "width": spec.width, "batch_norm": spec.batch_norm,
            "padding": spec.padding}
    wrong = [k for k, v in arch.items() if cfg.get(k) != v]
    if wrong:
        raise CheckpointError(
            f"{p}: the weights do not match the model's settings ({', '.join(wrong)}); {fix}"
        )
    if spec.normalization != NORMALIZATION:
        raise CheckpointError(
            f"{p}: trained with input normalisation {spec.normalization!r}, this version "
            f"applies {NORMALIZATION!r}; {fix}"
        )
    return model, spec


# --- tissue and tiles ---------------------------------------------------------------------------


def tissue_mask(thumb: np.ndarray) -> np.ndarray:
    """Tissue on an RGB thumbnail: darker than Otsu's threshold of its grey levels, grown by one
    pixel so that tiles at the tissue's edge are kept. A flat thumbnail has no tissue."""
    from scipy import ndimage

    from wsi_aug.imaging import is_flat, otsu_threshold

    grey = thumb.astype(np.float32).mean(axis=2)
    if is_flat(grey, min_range=10.0):
        return np.zeros(grey.shape, bool)
    mask = grey < otsu_threshold(grey)
    return np.asarray(ndimage.binary_dilation(mask, iterations=1), bool)


@dataclass(frozen=True)
class Grid:
    """Output tiles over the slide at the model's pixel size (all sides in those pixels)."""

    width: int  # the slide at the model's pixel size
    height: int
    tile_in: int  # input side read per tile
    tile_out: int  # output side (smaller for a valid-padding U-Net)
    stride: int
    scale: tuple[float, float]  # level-0 pixels per model pixel (x, y)

    @property
    def margin(self) -> int:
        """Input pixels around the output of a tile (the valid U-Net's context)."""
        return (self.tile_in - self.tile_out) // 2

    def _starts(self, size: int) -> list[int]:
        n = max(1, math.ceil(max(0, size - self.tile_out) / self.stride) + 1)
        return [k * self.stride for k in range(n)]

    @property
    def row_starts(self) -> list[int]:
        return self._starts(self.height)

    @property
    def col_starts(self) -> list[int]:
        return self._starts(self.width)

    def read_box(self, ox: int, oy: int) -> tuple[float, float, float, float]:
        """The level-0 box read for the output tile at (ox, oy)."""
        sx, sy = self.scale
        m = self.margin
        return ((ox - m) * sx, (oy - m) * sy, self.tile_in * sx, self.tile_in * sy)


def make_grid(slide: Any, spec: ModelSpec, tile: int | None, overlap: float) -> Grid:
    """The tile grid of `slide` for `spec` (`tile`: input side, default the patch size)."""
    from wsi_aug.errors import WsiAugError

    t_in = int(tile or spec.patch_size)
    t_out = spec.output_size(t_in)
    if t_out <= 0:
        raise WsiAugError(f"--tile-size {t_in}: too small for the valid-padding model")
    mx, my = slide.mpp
    sx, sy = spec.mpp / mx, spec.mpp / my
    w0, h0 = slide.dimensions
    stride = max(1, round(t_out * (1.0 - overlap)))
    return Grid(
        width=max(1, math.ceil(w0 / sx - 1e-9)),
        height=max(1, math.ceil(h0 / sy - 1e-9)),
        tile_in=t_in,
        tile_out=t_out,
        stride=stride,
        scale=(sx, sy),
    )


def tissue_tiles(grid: Grid, tissue: np.ndarray | None, level0: tuple[int, int]) -> list[list[int]]:
    """Per row of tiles, the column starts of the tiles whose output meets tissue.

    `tissue` is a thumbnail mask of the whole slide (None: every tile); `level0` is the slide's
    level-0 (width, height).
    """
    cols = grid.col_starts
    if tissue is None:
        return [list(cols) for _ in grid.row_starts]
    th, tw = tissue.shape
    fx, fy = tw / level0[0], th / level0[1]  # thumbnail pixels per level-0 pixel
    integral = np.zeros((th + 1, tw + 1), np.int64)
    integral[1:, 1:] = np.cumsum(np.cumsum(tissue, axis=0), axis=1)
    sx, sy = grid.scale
    out = []
    for oy in grid.row_starts:
        r0 = min(th, max(0, math.floor(oy * sy * fy)))
        r1 = min(th, max(r0 + 1, math.ceil((oy + grid.tile_out) * sy * fy)))
        row = []
        for ox in cols:
            c0 = min(tw, max(0, math.floor(ox * sx * fx)))
            c1 = min(tw, max(c0 + 1, math.ceil((ox + grid.tile_out) * sx * fx)))
            hits = integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]
            if hits > 0:
                row.append(ox)
        out.append(row)
    return out


def blend_window(size: int) -> np.ndarray:
    """The (size, size) blending weights: a separable triangle, highest in the middle and
    positive to the edge (a pixel that one tile alone covers keeps that tile's value)."""
    i = np.arange(size, dtype=np.float32)
    w1 = np.minimum(i + 0.5, size - i - 0.5) / (size / 2.0)
    return np.outer(w1, w1).astype(np.float32)


# --- running the model --------------------------------------------------------------------------


@torch.inference_mode()
def probabilities(model: torch.nn.Module, tiles: np.ndarray, device: torch.device) -> np.ndarray:
    """Glomerulus probabilities (N, h, w) float32 of uint8 (N, H, W, 3) tiles (bf16 on CUDA)."""
    x = to_input(tiles, device)
    if device.type == "cuda":
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(x)
    else:
        logits = model(x)
    return torch.softmax(logits.float(), dim=1)[:, 1].cpu().numpy()


@dataclass
class SlideSegmentation:
    """One slide's objects (level-0 polygons) and how they were found."""

    objects: list[Geometry]
    tiles: int
    seconds: float
    grid: Grid
    thumbnail: np.ndarray
    tissue: np.ndarray | None
    max_buffer_rows: int = 0  # the most mask rows held at once (band + carried objects)

    @property
    def tiles_per_s(self) -> float:
        return self.tiles / self.seconds if self.seconds > 0 else float("nan")


def _read_row(slide: Any, grid: Grid, spec: ModelSpec, oy: int, cols: Sequence[int]) -> np.ndarray:
    """The input tiles of one row of tiles, (n, T, T, 3) uint8."""
    out = np.empty((len(cols), grid.tile_in, grid.tile_in, 3), np.uint8)
    for k, ox in enumerate(cols):
        out[k] = slide.read_at_mpp(grid.read_box(ox, oy), spec.mpp, (grid.tile_in, grid.tile_in))
    return out


def _rows_ahead(
    slide: Any, grid: Grid, spec: ModelSpec, plan: Sequence[Sequence[int]]
) -> Iterator[np.ndarray]:
    """Each row's tiles, the next row read in a thread while the caller runs the model."""
    starts = grid.row_starts
    with ThreadPoolExecutor(1) as pool:
        ahead: Future[np.ndarray] | None = None
        for k in range(len(starts)):
            if ahead is None:
                ahead = pool.submit(_read_row, slide, grid, spec, starts[k], plan[k])
            current = ahead
            nxt = k + 1
            ahead = (
                pool.submit(_read_row, slide, grid, spec, starts[nxt], plan[nxt])
                if nxt < len(starts)
                else None
            )
            yield current.result()


def segment_slide(
    slide: Any,
    model: torch.nn.Module,
    spec: ModelSpec,
    *,
    device: torch.device,
    tile: int | None = None,
    overlap: float = 0.25,
    tissue: str = "otsu",
    threshold: float | None = None,
    min_area: float = 0.0,
    batch_size: int = 16,
    on_tiles: Callable[[int], None] | None = None,
    on_plan: Callable[[int], None] | None = None,
) -> SlideSegmentation:
    """Segment one open slide: the polygons (level-0 pixels) of the thresholded, blended map.

    `min_area` (µm²) drops smaller objects; `tissue` "otsu" runs only tiles meeting tissue,
    "all" every tile. `on_plan(n)` is told the number of tiles, `on_tiles(k)` each batch done.
    """
    start = time.perf_counter()
    grid = make_grid(slide, spec, tile, overlap)
    thumb = slide.thumbnail(THUMBNAIL)
    tmask = tissue_mask(thumb) if tissue == "otsu" else None
    plan = tissue_tiles(grid, tmask, slide.dimensions)
    n_tiles = sum(len(r) for r in plan)
    if on_plan is not None:
        on_plan(n_tiles)
    thr = spec.threshold if threshold is None else threshold
    t_out, stride = grid.tile_out, grid.stride
    win = blend_window(t_out)
    width = grid.width
    buf_w = grid.col_starts[-1] + t_out
    acc = np.zeros((t_out, buf_w), np.float32)
    wsum = np.zeros((t_out, buf_w), np.float32)
    vec = StripVectorizer(
        width, min_pixels=min_area / spec.mpp**2, scale=grid.scale
    )
    objects: list[Geometry] = []
    model.eval()
    starts = grid.row_starts
    for k, images in enumerate(_rows_ahead(slide, grid, spec, plan)):
        oy = starts[k]
        cols = plan[k]
        for b in range(0, len(cols), batch_size):
            probs = probabilities(model, images[b : b + batch_size], device)
            for ox, p in zip(cols[b : b + batch_size], probs):
                acc[:, ox : ox + t_out] += p * win
                wsum[:, ox : ox + t_out] += win
            if on_tiles is not None:
                on_tiles(len(probs))
        last = k == len(starts) - 1
        n_final = min(t_out if last else stride, grid.height - oy)
        with np.errstate(invalid="ignore", divide="ignore"):
            prob = np.where(wsum[:n_final] > 0, acc[:n_final] / wsum[:n_final], 0.0)
        objects += vec.add(prob[:, :width] > thr)
        if not last:  # shift the band up by one stride
            acc[:-stride] = acc[stride:]
            wsum[:-stride] = wsum[stride:]
            acc[-stride:] = 0.0
            wsum[-stride:] = 0.0
    objects += vec.finish()
    return SlideSegmentation(
        objects=objects,
        tiles=n_tiles,
        seconds=time.perf_counter() - start,
        grid=grid,
        thumbnail=thumb,
        tissue=tmask,
        max_buffer_rows=t_out + vec.carried_rows_max,
    )


# --- scores against annotations ----------------------------------------------------------------


def score_objects(
    pred: Sequence[Geometry],
    truth: Sequence[Any],
    *,
    iou_threshold: float = 0.5,
    min_area: float = 0.0,
) -> dict[str, float]:
    """Object TP/FP/FN (IoU >= `iou_threshold` on hole-filled outlines, matched one-to-one by
    maximum total IoU) and the pooled Dice's parts, of level-0 polygons.

    Ground-truth objects below `min_area` (level-0 px², holes filled) are left out, as the
    prediction's are. Returns tp, fp, fn, intersection, pred_area, true_area (px²).
    """
    import shapely
    from scipy.optimize import linear_sum_assignment
    from shapely.geometry import Polygon

    def filled(g: Any) -> Any:
        parts = list(getattr(g, "geoms", [g]))
        return shapely.union_all([Polygon(p.exterior) for p in parts if hasattr(p, "exterior")])

    truth = [g for g in truth if filled(g).area >= min_area]
    pf = [filled(g) for g in pred]
    tf = [filled(g) for g in truth]
    tp = 0
    if pf and tf:
        tree = shapely.STRtree(tf)
        pi, ti = tree.query(pf, predicate="intersects")
        if len(pi):
            rows, r_inv = np.unique(pi, return_inverse=True)
            cols, c_inv = np.unique(ti, return_inverse=True)
            ious = np.zeros((len(rows), len(cols)))
            for a, b, i, j in zip(pi, ti, r_inv, c_inv):
                inter = pf[a].intersection(tf[b]).area
                union = pf[a].area + tf[b].area - inter
                ious[i, j] = inter / union if union > 0 else 0.0
            ious[ious < iou_threshold] = 0.0
            r, c = linear_sum_assignment(-ious)
            tp = int(np.count_nonzero(ious[r, c] >= iou_threshold))
    p_union = shapely.union_all(list(pred)) if pred else Polygon()
    t_union = shapely.union_all(list(truth)) if truth else Polygon()
    return {
        "tp": tp,
        "fp": len(pf) - tp,
        "fn": len(tf) - tp,
        "intersection": float(p_union.intersection(t_union).area),
        "pred_area": float(p_union.area),
        "true_area": float(t_union.area),
    }


def summarise_scores(counts: Mapping[str, float]) -> dict[str, float]:
    """Precision, recall, F1 and pooled Dice from `score_objects`' counts (or their sums)."""

    def ratio(a: float, b: float) -> float:
        return a / b if b > 0 else 1.0

    tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
    return {
        "obj_precision": ratio(tp, tp + fp),
        "obj_recall": ratio(tp, tp + fn),
        "obj_f1": ratio(2 * tp, 2 * tp + fp + fn),
        "dice": ratio(2 * counts["intersection"], counts["pred_area"] + counts["true_area"]),
    }
