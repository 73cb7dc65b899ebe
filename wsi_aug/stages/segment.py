"""Stage `segment`: apply a trained U-Net to whole slides and write the glomeruli it finds.

For each slide (`wsi_aug.seg.apply.segment_slide`): tissue on a thumbnail, overlapping tiles at
the model's pixel size, blended probabilities, threshold, polygons in level-0 pixels. Per slide,
``WORK/segment/`` gets ``<slide>.geojson`` (QuPath), with ``--format asap`` ``<slide>.xml``, and
with ``--overlay`` ``<slide>.mask.png`` and ``<slide>.overlay.png``. Slides with annotations (paired
as `extract` pairs them) are scored: object precision/recall/F1 at IoU >= 0.5 and pooled Dice, in
``scores.csv`` and ``scores.md``. ``segment.zarr`` holds the per-slide table. A slide that fails is
reported and skipped.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from wsi_aug.errors import WsiAugError
from wsi_aug.stages.base import Stage, StageParams, param

if TYPE_CHECKING:
    import numpy as np
    import torch

    from wsi_aug.seg.apply import ModelSpec, SlideSegmentation

NAME = "segment"
MADE_BY = "wsi-aug segment SLIDES"
_SLIDES = "slides"
_COUNTS = ("tp", "fp", "fn", "intersection", "pred_area", "true_area")
_SCORES = ("obj_precision", "obj_recall", "obj_f1", "dice")


class SegmentParams(StageParams):
    """Which slides and model, how to tile and threshold, and what to write."""

    stage = NAME

    inputs: tuple[Path, ...] = param(
        (), "Slide files or folders to segment.", argument=True, key=False
    )
    model: Path | None = param(
        None,
        "A train-seg store (train-seg.zarr), a work folder holding one, or a model.safetensors "
        "(default: the work folder's train-seg).",
        key=False,
    )
    annotations: Path | None = param(
        None,
        "Folder of annotation files named like the slides, for scoring (default: beside them).",
        key=False,
    )
    recursive: bool = param(False, "Look for slides in sub-folders too.", key=False)
    labels: tuple[str, ...] = param(
        ("glomerulus", "glomeruli"),
        "Annotation class scored against, case-insensitive (repeatable).",
        cli="--label",
        min_length=1,
    )
    tile_size: int | None = param(
        None, "Tile side in pixels at the model's pixel size (default: its patch size).", ge=16
    )
    overlap: float = param(
        0.25, "Overlap of neighbouring tiles, a fraction of the tile.", ge=0, lt=1
    )
    tissue: Literal["otsu", "all"] = param(
        "otsu", "Tiles to run: those meeting tissue (Otsu on a thumbnail), or all."
    )
    threshold: float | None = param(
        None, "Probability threshold (default: the model's).", gt=0, lt=1
    )
    min_object_area: float = param(
        1000.0, "Drop objects smaller than this, in µm² (holes not counted).", ge=0,
        allow_inf_nan=False,
    )
    formats: tuple[Literal["geojson", "asap"], ...] = param(
        ("geojson",), "Annotation files to write per slide (repeatable).", cli="--format",
        min_length=1,
    )
    overlay: bool = param(False, "Also write a low-resolution mask PNG and an overlay PNG.")
    backend: Literal["auto", "openslide", "tifffile", "image"] = param(
        "auto", "Slide reader; auto takes the first that opens the file."
    )
    slide_mpp: float | None = param(
        None, "The slides' own pixel size in µm/px (plain images, or wrong metadata).", gt=0
    )
    batch_size: int = param(16, "Tiles per U-Net batch.", ge=1, key=False)
    device: str = param(
        "auto", "torch device: auto (CUDA when present, else CPU), cpu, cuda ...", key=False
    )


@dataclass(frozen=True)
class SegmentResult:
    """The store, the per-slide rows, the skipped slides and the files people look at."""

    path: Path
    cached: bool
    rows: list[dict[str, Any]]
    skipped: list[str] = field(default_factory=list)
    outputs: tuple[Path, ...] = ()
    overall: dict[str, float] | None = None

    @property
    def text(self) -> str:
        lines = [
            f"{r['slide']}: {r['objects']} objects, {r['tiles']} tiles, {r['seconds']:.1f} s"
            + (f", object F1 {r['obj_f1']:.3f}, Dice {r['dice']:.3f}" if r["annotated"] else "")
            for r in self.rows
        ]
        if self.overall is not None:
            o = self.overall
            lines.append(
                f"overall: object precision {o['obj_precision']:.3f}, recall "
                f"{o['obj_recall']:.3f}, F1 {o['obj_f1']:.3f}, Dice {o['dice']:.3f}"
            )
        from wsi_aug.extract import group_messages

        lines += [f"skipped: {m}" for m in group_messages(self.skipped)]
        return "\n".join(lines)


def resolve_model(work: Path, model: Path | None) -> tuple[Path, str, str]:
    """(path, kind, fingerprint) of the model to apply: a train-seg store or a safetensors file."""
    from wsi_aug import store
    from wsi_aug.stages.train_seg import SegModelStore

    if model is not None and Path(model).is_file():
        return Path(model), "file", store.fingerprint_file(model)
    where = Path(model) if model is not None else work
    if model is not None and not where.exists():
        raise WsiAugError(f"{where}: no such model; give a train-seg store, work folder or file")
    ms = SegModelStore.at(where)
    return ms.path, "store", ms.fingerprint()


def load(path: Path, kind: str, device: torch.device) -> tuple[torch.nn.Module, ModelSpec]:
    """The model and its spec from a store or a file (one-line errors)."""
    from wsi_aug.seg.apply import load_model
    from wsi_aug.stages.train_seg import SegModelStore

    if kind == "file":
        return load_model(path, device)
    return SegModelStore.at(path).load_model(device)


def _names(slides: Sequence[Path]) -> list[str]:
    """A file stem per slide, unique (``a``, ``a-2`` for a second ``a.tif`` elsewhere)."""
    seen: dict[str, int] = {}
    out = []
    for s in slides:
        stem = s.stem
        seen[stem] = seen.get(stem, 0) + 1
        out.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return out


def _truth(annotation: Path | None, labels: Sequence[str]) -> tuple[list[Any] | None, str]:
    """The annotated objects of the scored classes (None: no file, or none usable) and a note."""
    from wsi_aug.annotations.read import read_annotations

    if annotation is None:
        return None, ""
    try:
        # a mask image has no class names: its objects take the first scored class
        aset = read_annotations(annotation, objects=("annotation",), label=labels[0])
        return [a.geometry for a in aset.select(labels)], ""
    except WsiAugError as exc:
        return None, f"not scored: {exc}"


def _write_pngs(seg: SlideSegmentation, level0: tuple[int, int], stem: str, folder: Path) -> None:
    """A thumbnail-sized mask and the thumbnail with the objects' outlines."""
    from PIL import Image, ImageDraw

    th, tw = seg.thumbnail.shape[:2]
    fx, fy = tw / level0[0], th / level0[1]
    mask = Image.new("L", (tw, th), 0)
    over = Image.fromarray(seg.thumbnail)
    dm, do = ImageDraw.Draw(mask), ImageDraw.Draw(over)
    for geom in seg.objects:
        for poly in getattr(geom, "geoms", [geom]):
            ext = [(x * fx, y * fy) for x, y in poly.exterior.coords]
            dm.polygon(ext, fill=255)
            for ring in poly.interiors:
                dm.polygon([(x * fx, y * fy) for x, y in ring.coords], fill=0)
            do.line(ext, fill=(0, 200, 60), width=2)
    mask.save(folder / f"{stem}.mask.png")
    over.save(folder / f"{stem}.overlay.png")


def _segment_one(
    slide_path: Path,
    annotation: Path | None,
    stem: str,
    model: torch.nn.Module,
    spec: ModelSpec,
    p: SegmentParams,
    device: torch.device,
    folder: Path,
    progress: bool,
) -> dict[str, Any]:
    """Segment, write and score one slide; its table row."""
    from tqdm import tqdm

    from wsi_aug.annotations.write import write_asap_xml, write_qupath_geojson
    from wsi_aug.seg.apply import score_objects, segment_slide, summarise_scores
    from wsi_aug.slides.open import open_slide

    start = time.perf_counter()
    with open_slide(slide_path, backend=p.backend, slide_mpp=p.slide_mpp) as slide:
        bar = tqdm(desc=slide_path.name, unit="tile", disable=not progress, leave=False)
        try:
            seg = segment_slide(
                slide,
                model,
                spec,
                device=device,
                tile=p.tile_size,
                overlap=p.overlap,
                tissue=p.tissue,
                threshold=p.threshold,
                min_area=p.min_object_area,
                batch_size=p.batch_size,
                on_plan=lambda n: bar.reset(total=n),
                on_tiles=bar.update,
            )
        finally:
            bar.close()
        level0 = slide.dimensions
        mx, my = slide.mpp
    if "geojson" in p.formats:
        write_qupath_geojson(folder / f"{stem}.geojson", seg.objects)
    if "asap" in p.formats:
        write_asap_xml(folder / f"{stem}.xml", seg.objects)
    if p.overlay:
        _write_pngs(seg, level0, stem, folder)
    row: dict[str, Any] = {
        "slide": slide_path.name,
        "path": str(slide_path),
        "objects": len(seg.objects),
        "tiles": seg.tiles,
        "seconds": time.perf_counter() - start,
        "tiles_per_s": seg.tiles_per_s,
        "max_buffer_rows": seg.max_buffer_rows,
        "annotated": False,
        "note": "",
    }
    truth, row["note"] = _truth(annotation, p.labels)
    counts = {k: 0.0 for k in _COUNTS}
    if truth is not None:
        um2 = mx * my  # level-0 px² to µm², so slides of different pixel size pool
        c = score_objects(seg.objects, truth, min_area=p.min_object_area / um2)
        counts = {k: float(c[k]) * (um2 if k not in ("tp", "fp", "fn") else 1.0) for k in _COUNTS}
        row["annotated"] = True
        row["true_objects"] = int(c["tp"] + c["fn"])
    row.setdefault("true_objects", 0)
    row.update(counts)
    scores = summarise_scores(counts) if truth is not None else dict.fromkeys(_SCORES, math.nan)
    row.update(scores)
    return row


def _write_scores(rows: Sequence[dict[str, Any]], folder: Path) -> dict[str, float] | None:
    """``scores.csv`` and ``scores.md``: per annotated slide and overall (pooled); None if none."""
    from wsi_aug.eval_seg import markdown_table, write_csv
    from wsi_aug.seg.apply import summarise_scores

    scored = [r for r in rows if r["annotated"]]
    if not scored:
        return None
    total = {k: sum(float(r[k]) for r in scored) for k in _COUNTS}
    overall = summarise_scores(total)
    cols = ("slide", "objects", "true_objects", "tp", "fp", "fn", *_SCORES)
    table = [{k: r[k] for k in cols} for r in scored]
    table.append({
        "slide": "overall", "objects": sum(r["objects"] for r in scored),
        "true_objects": sum(r["true_objects"] for r in scored),
        **{k: int(total[k]) for k in ("tp", "fp", "fn")}, **overall,
    })
    write_csv(table, folder / "scores.csv")
    titles = ["slide", "objects", "annotated", "TP", "FP", "FN", "Obj. precision",
              "Obj. recall", "Obj. F1", "Dice (pooled)"]
    md = markdown_table(titles, [[r[k] for k in cols] for r in table])
    (folder / "scores.md").write_text(
        "segment: objects matched at IoU >= 0.5; Dice pooled over each slide (overall: over all "
        "slides)\n\n" + md
    )
    return overall


def segment(
    work: str | Path,
    params: SegmentParams | None = None,
    *,
    force: bool = False,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
    **overrides: Any,
) -> SegmentResult:
    """Stage: segment slides with a train-seg model into ``WORK/segment/`` (one bad slide is
    reported and skipped; an error only when none could be segmented)."""
    from wsi_aug import store
    from wsi_aug.annotations.pairing import find_slides, pair_annotations
    from wsi_aug.device import resolve_device
    from wsi_aug.extract import SlideMessage, group_messages
    from wsi_aug.slides.open import SLIDE_SUFFIXES

    p = SegmentParams.build(params, **overrides)
    if not p.inputs:
        raise WsiAugError("segment: give slide files or folders")
    for i in p.inputs:
        if not Path(i).exists():
            raise WsiAugError(f"{i}: no such file or folder; check the path")
    slides = find_slides(list(p.inputs), set(SLIDE_SUFFIXES), recursive=p.recursive)
    if not slides:
        raise WsiAugError(
            f"{', '.join(map(str, p.inputs))}: no slide found; give slide files or folders"
        )
    entries = pair_annotations(slides, p.annotations)
    wd = store.WorkDir(Path(work))
    wd.check_layout(force)
    model_path, kind, model_fp = resolve_model(wd.root, p.model)
    slide_fps = {
        str(e.slide.resolve()): [
            store.fingerprint_file(e.slide),
            store.fingerprint_file(e.annotation) if e.annotation is not None else None,
        ]
        for e in entries
    }
    inputs = {"model": model_fp, "slides": slide_fps}
    path = wd.store(NAME)
    hit = store.cached_result(path, stage=NAME, params=p.key_dict(), inputs=inputs, force=force)
    if hit is not None:
        return _from_store(path, True)
    device = resolve_device(p.device)
    model, spec = load(model_path, kind, device)
    model.to(device)
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    keys = {
        str(e.slide.resolve()): slide_key(model_fp, p.key_dict(), fps)
        for e, fps in zip(entries, slide_fps.values())
    }
    before = _previous(path, wd.files(NAME)) if not force else {}
    with store.build_stage(
        path, stage=NAME, params=p.key_dict(), inputs=inputs, files=wd.files(NAME)
    ) as b:
        assert b.files is not None
        for e, stem in zip(entries, _names([e.slide for e in entries])):
            key = keys[str(e.slide.resolve())]
            reused = _reuse(before.get(key), e.slide, stem, p, b.files)
            if reused is not None:  # the same slide, model and settings: last run's files
                rows.append(reused)
                if report is not None:
                    report(f"segment: {reused['slide']}: unchanged, kept from the last run")
                continue
            try:
                row = _segment_one(
                    e.slide, e.annotation, stem, model, spec, p, device, b.files, progress
                )
                row["key"], row["stem"] = key, stem
            except WsiAugError as exc:
                msg = SlideMessage.of_error(exc, e.slide, e.annotation)
                skipped.append(msg)
                if report is not None:
                    report(f"segment: skipped {msg}")
                continue
            rows.append(row)
            if report is not None:
                report(
                    f"segment: {row['slide']}: {row['objects']} objects, {row['tiles']} tiles, "
                    f"{row['tiles_per_s']:.1f} tiles/s"
                )
        if not rows:
            raise WsiAugError("nothing segmented: " + "; ".join(group_messages(skipped)))
        overall = _write_scores(rows, b.files)
        cols = [k for k in rows[0] if k != "note"] + ["note"]
        store.write_table(b.group, _SLIDES, {k: [r[k] for r in rows] for k in cols})
        b.group.attrs["skipped"] = [str(m) for m in skipped]
        b.group.attrs["overall"] = json.dumps(overall)
        b.group.attrs["model"] = {"path": str(model_path), "spec": json.loads(spec.to_json())}
    return _from_store(path, False)


def slide_key(model: str, params: dict[str, Any], slide: Any) -> str:
    """What one slide's output depends on: the model, the settings, the slide (+ annotations)."""
    from wsi_aug import store

    return store.fingerprint_value({"model": model, "params": params, "slide": slide})


def _outputs(stem: str, p: SegmentParams) -> list[str]:
    """The file names written for one slide."""
    names = [f"{stem}.geojson"] if "geojson" in p.formats else []
    names += [f"{stem}.xml"] if "asap" in p.formats else []
    names += [f"{stem}.mask.png", f"{stem}.overlay.png"] if p.overlay else []
    return names


def _previous(path: Path, files: Path) -> dict[str, dict[str, Any]]:
    """The last complete run's rows by slide key (empty when there is none to reuse)."""
    from wsi_aug import store

    if not store.is_complete(path):
        return {}
    try:
        rows = _from_store(path, True).rows
    except (WsiAugError, KeyError, OSError, ValueError):
        return {}
    return {
        str(r["key"]): {**r, "_files": files} for r in rows if r.get("key") and r.get("stem")
    }


def _reuse(
    old: dict[str, Any] | None, slide: Path, stem: str, p: SegmentParams, folder: Path
) -> dict[str, Any] | None:
    """Copy a slide's files from the last run into `folder` under `stem`; its row, or None."""
    import shutil

    if old is None:
        return None
    src = [old["_files"] / n for n in _outputs(str(old["stem"]), p)]
    if not all(f.is_file() for f in src):
        return None
    for f, name in zip(src, _outputs(stem, p)):
        shutil.copy2(f, folder / name)
    row = {k: v for k, v in old.items() if not k.startswith("_")}
    return row | {"slide": slide.name, "path": str(slide), "stem": stem}


def _from_store(path: Path, cached: bool) -> SegmentResult:
    """The result as the store records it (the same for a fresh and a cached run)."""
    from wsi_aug import store

    g = store.open_stage(path, stage=NAME, made_by=MADE_BY)
    table = store.read_table(g, _SLIDES)
    n = len(next(iter(table.values())))
    rows = [{k: (v[i].item() if hasattr(v[i], "item") else v[i]) for k, v in table.items()}
            for i in range(n)]
    for r in rows:
        r["annotated"] = bool(r["annotated"])
    overall = json.loads(str(g.attrs.get("overall", "null")))
    files = path.parent / NAME
    outputs = tuple(q for q in (files / "scores.md",) if q.is_file())
    skipped = [str(m) for m in g.attrs.get("skipped", [])]  # type: ignore[union-attr]
    return SegmentResult(path, cached, rows, skipped, outputs, overall)


def slide_rows(work: str | Path) -> list[dict[str, Any]]:
    """The per-slide rows of a work folder's complete segment store."""
    return _from_store(Path(work) / f"{NAME}.zarr", True).rows


def read_mask_png(path: Path) -> np.ndarray:
    """A written ``.mask.png`` as a boolean array (for checks)."""
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(path)) > 0


STAGE = Stage(
    name=NAME,
    params=SegmentParams,
    run=segment,
    help="Segment slides with the train-seg U-Net: QuPath GeoJSON per slide, scores where "
    "annotated (writes segment/).",
    store="segment.zarr",
    inputs=("train-seg",),
)
