"""Patches and masks -> datasets other tools train on: nnU-Net v2 raw, PNG pairs, COCO instances.

Nothing here knows the CLI or the stores: the stage (`wsi_aug.stages.export`) turns the stores
into `Case` records and a `Read` function, and these writers lay the files out.

- nnU-Net v2 raw dataset: ``imagesTr/CASE_0000.png`` (one RGB file, read by nnU-Net's
  NaturalImage2DIO, so ``channel_names`` are R, G, B), ``labelsTr/CASE.png`` in {0, 1}, the test
  split in ``imagesTs``/``labelsTs``, ``dataset.json``, and ``splits_final.json`` whose folds are
  groups of patients, so that nnU-Net's cross-validation never puts one patient on both sides.
- PNG pairs: ``images/CASE.png`` (RGB) and ``masks/CASE.png`` (0/255 or 0/1).
- COCO: ``images/CASE.png`` and ``instances_SPLIT.json``, one polygon instance per connected
  glomerulus of each mask.

Every format also gets ``cases.csv``: where each case came from (slide, object, patient, split,
store row; for synthetic cases the row of the real condition they were made from).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wsi_aug.errors import WsiAugError

REAL, SYNTHETIC = "real", "synthetic"
LABELS = {"background": 0, "glomerulus": 1}
CATEGORY = {"id": 1, "name": "glomerulus", "supercategory": "kidney"}
CASES_CSV = "cases.csv"
CASE_COLUMNS = ("case", "source", "split", "patient", "slide", "object", "row", "condition_row")

Read = Callable[[str, np.ndarray], tuple[np.ndarray, np.ndarray]]
"""(source, rows) -> (images (n, S, S, 3) uint8, masks (n, S, S) in {0, 1}), rows in that order."""


@dataclass(frozen=True)
class Case:
    """One exported patch: its id, where it came from, and which split it belongs to."""

    case: str  # the file stem: safe characters only, unique in the export
    source: str  # REAL or SYNTHETIC
    split: str  # train / val / test (synthetic: train)
    patient: str  # the patient (real), or the patient of the condition (synthetic)
    slide: str  # the slide's file name (synthetic: that of the condition)
    object: str  # the annotation's id ('' for negatives and synthetic cases)
    row: int  # row in its store (extract.zarr or synthesize.zarr)
    condition_row: int = -1  # synthetic: the row in extract.zarr of its condition


_UNSAFE = re.compile(r"[^A-Za-z0-9-]+")


def safe_part(text: str, limit: int = 60) -> str:
    """`text` with every run of characters other than letters, digits and '-' made one '-'."""
    return _UNSAFE.sub("-", text).strip("-")[:limit].strip("-") or "x"


def real_case_id(slide: str, object_id: str, cx: float, cy: float) -> str:
    """``{slide stem}_{object id}``, or ``{slide stem}_neg-x{cx}-y{cy}`` for a negative window."""
    stem = safe_part(Path(slide).stem if Path(slide).suffix else slide)
    obj = safe_part(object_id, 40) if object_id else f"neg-x{round(cx)}-y{round(cy)}"
    return f"{stem}_{obj}"


def synthetic_case_id(index: int, n: int) -> str:
    """``syn_{index}``, zero-padded to at least 6 digits so names sort in index order."""
    return f"syn_{index:0{max(6, len(str(max(n - 1, 0))))}d}"


def unique_ids(ids: Sequence[str]) -> list[str]:
    """`ids` with repeats made unique by ``-2``, ``-3`` ... (case-insensitively: macOS, Windows)."""
    seen: set[str] = set()
    out = []
    for base in ids:
        name, k = base, 1
        while name.lower() in seen:
            k += 1
            name = f"{base}-{k}"
        seen.add(name.lower())
        out.append(name)
    return out


def iter_pixels(
    cases: Sequence[Case], read: Read, chunk: int = 256
) -> Iterator[tuple[Case, np.ndarray, np.ndarray]]:
    """Each case with its image and mask, read `chunk` rows of one store at a time."""
    start = 0
    while start < len(cases):
        end = start + 1
        while end < len(cases) and end - start < chunk and cases[end].source == cases[start].source:
            end += 1
        batch = cases[start:end]
        images, masks = read(batch[0].source, np.asarray([c.row for c in batch], np.int64))
        for c, image, mask in zip(batch, images, masks):
            yield c, np.asarray(image, np.uint8), (np.asarray(mask) > 0).astype(np.uint8)
        start = end


def save_png(path: Path, pixels: np.ndarray) -> None:
    """A lossless PNG (RGB or 8-bit grey), its folder made as needed."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(pixels, np.uint8)).save(path)


def write_pair(out: Path, name: str, image: np.ndarray, mask: np.ndarray, mask_max: int) -> None:
    """``out/images/NAME.png`` (RGB) and ``out/masks/NAME.png`` (0/`mask_max`)."""
    save_png(out / f"images/{name}.png", image)
    save_png(out / f"masks/{name}.png", (np.asarray(mask) > 0).astype(np.uint8) * mask_max)


def write_cases(out: Path, cases: Sequence[Case], folds: dict[str, int] | None = None) -> Path:
    """``out/cases.csv``: one row per case (with its validation fold, for nnU-Net)."""
    path = out / CASES_CSV
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*CASE_COLUMNS, *(("fold",) if folds is not None else ())])
        for c in cases:
            row: list[Any] = [getattr(c, k) for k in CASE_COLUMNS]
            if folds is not None:
                row.append(folds.get(c.case, ""))
            w.writerow(row)
    return path


def write_pngs(
    out: Path,
    cases: Sequence[Case],
    read: Read,
    *,
    mask_max: int = 255,
    progress: Callable[[int], None] | None = None,
) -> None:
    """PNG pairs for every case, and ``cases.csv``."""
    for c, image, mask in iter_pixels(cases, read):
        write_pair(out, c.case, image, mask, mask_max)
        if progress:
            progress(1)
    write_cases(out, cases)


# -- nnU-Net -------------------------------------------------------------------------------------


def patient_folds(cases: Sequence[Case], folds: int) -> list[list[str]]:
    """Patients of the real training cases in `folds` groups (fewer when fewer patients).

    Deterministic and balanced by case count: patients with most cases first, each to the fold
    holding fewest cases so far. ``folds == 1``: the extract stage's own val split is the fold.
    """
    real = [c for c in cases if c.source == REAL]
    if folds == 1:
        val = sorted({c.patient for c in real if c.split == "val"})
        return [val] if val else []
    counts: dict[str, int] = {}
    for c in real:
        counts[c.patient] = counts.get(c.patient, 0) + 1
    k = min(folds, len(counts))
    if k < 2:
        return []
    groups: list[list[str]] = [[] for _ in range(k)]
    sizes = [0] * k
    for patient in sorted(counts, key=lambda p: (-counts[p], p)):
        i = min(range(k), key=lambda j: (sizes[j], j))
        groups[i].append(patient)
        sizes[i] += counts[patient]
    return [sorted(g) for g in groups]


def nnunet_splits(
    cases: Sequence[Case], groups: Sequence[Sequence[str]]
) -> list[dict[str, list[str]]]:
    """``splits_final.json``'s list: per fold, ``train`` and ``val`` case ids.

    A fold's val holds the real cases of its patients; its train the other real cases and the
    synthetic ones, except those made from a condition of a val patient (they would carry that
    patient's glomeruli into training).
    """
    out = []
    for group in groups:
        val_patients = set(group)
        val = [c.case for c in cases if c.source == REAL and c.patient in val_patients]
        train = [c.case for c in cases if c.patient not in val_patients]
        out.append({"train": train, "val": val})
    return out


def dataset_json(name: str, n_training: int, description: str) -> dict[str, Any]:
    """nnU-Net v2's ``dataset.json`` for RGB PNG patches with one foreground label."""
    return {
        "name": name,
        "description": description,
        "channel_names": {"0": "R", "1": "G", "2": "B"},
        "labels": dict(LABELS),
        "numTraining": n_training,
        "file_ending": ".png",
    }


def write_nnunet(
    out: Path,
    cases: Sequence[Case],
    read: Read,
    *,
    name: str | None = None,
    folds: int = 5,
    description: str = "",
    progress: Callable[[int], None] | None = None,
) -> list[str]:
    """An nnU-Net v2 raw dataset in `out`, called `name` (default: out's name); returns notes.

    Real train and val cases go to ``imagesTr``/``labelsTr``, test cases to
    ``imagesTs``/``labelsTs``, synthetic cases to training only.
    """
    training = [c for c in cases if c.split != "test"]
    if not training:
        raise WsiAugError(
            "export --format nnunet: every patch is in the test split, none to train on; "
            "re-split with `wsi-aug extract --split TRAIN,VAL,TEST`"
        )
    notes: list[str] = []
    for c, image, mask in iter_pixels(cases, read):
        part = "Ts" if c.split == "test" else "Tr"
        save_png(out / f"images{part}" / f"{c.case}_0000.png", image)
        save_png(out / f"labels{part}" / f"{c.case}.png", mask)
        if progress:
            progress(1)
    name = name or out.name
    meta = dataset_json(name, len(training), description)
    (out / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    groups = patient_folds(training, folds)
    fold_of: dict[str, int] = {}
    if groups:
        splits = nnunet_splits(training, groups)
        for i, s in enumerate(splits):
            fold_of.update({case: i for case in s["val"]})
        (out / "splits_final.json").write_text(json.dumps(splits, indent=1) + "\n")
    elif any(c.source == REAL for c in training):
        notes.append(
            "export: fewer than 2 patients (or, with --folds 1, no val patient) for training: no "
            "splits_final.json, nnU-Net will split cases of one patient across folds"
        )
    else:
        notes.append("export: synthetic cases only: no splits_final.json (no patient to group by)")
    if not re.fullmatch(r"Dataset\d{3}_\w+", name):
        notes.append(
            f"export: nnU-Net finds datasets as $nnUNet_raw/DatasetNNN_NAME; {name!r} is not "
            "such a name: rename it (e.g. Dataset501_Glomeruli) before planning"
        )
    write_cases(out, cases, fold_of)
    return notes


# -- COCO ----------------------------------------------------------------------------------------


def mask_instances(mask: np.ndarray, tolerance: float = 0.5) -> list[dict[str, Any]]:
    """One COCO instance (polygons, bbox, area) per 8-connected component of `mask`.

    Polygons trace each component's outline through the pixel edges' midpoints, in COCO's
    coordinates (x right, y down, pixel (r, c) covering [c, c+1) x [r, r+1)), simplified to
    `tolerance` px. COCO polygons cannot hold holes: a component's holes are filled in its
    polygon, while ``area`` counts its pixels.
    """
    from scipy import ndimage
    from skimage.measure import approximate_polygon, find_contours, label

    labelled = label(np.asarray(mask) > 0, connectivity=2)
    out: list[dict[str, Any]] = []
    for index, box in enumerate(ndimage.find_objects(labelled), start=1):
        if box is None:
            continue
        rows, cols = box
        comp = ndimage.binary_fill_holes(labelled[box] == index)
        padded = np.pad(comp, 1).astype(np.float32)
        polygons = []
        for contour in find_contours(padded, 0.5, fully_connected="high"):
            simple = approximate_polygon(contour, tolerance)
            if len(simple) < 4:  # a pixel or two: simplified to a line, keep every point
                simple = contour
            simple = simple[:-1]  # closed: the last point repeats the first
            if len(simple) < 3:
                continue
            xy = np.stack([simple[:, 1] + cols.start - 0.5, simple[:, 0] + rows.start - 0.5], 1)
            polygons.append([round(float(v), 2) for v in xy.ravel()])
        if not polygons:
            continue
        out.append(
            {
                "segmentation": polygons,
                "area": int((labelled[box] == index).sum()),
                "bbox": [cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start],
                "iscrowd": 0,
                "category_id": CATEGORY["id"],
            }
        )
    return out


def write_coco(
    out: Path,
    cases: Sequence[Case],
    read: Read,
    *,
    description: str = "",
    progress: Callable[[int], None] | None = None,
) -> list[Path]:
    """``out/images/CASE.png`` and one ``out/instances_SPLIT.json`` per split present."""
    from wsi_aug import __version__

    pictures: dict[str, list[dict[str, Any]]] = {}  # per split: COCO's image entries
    instances: dict[str, list[dict[str, Any]]] = {}  # per split: its annotations
    for c, image, mask in iter_pixels(cases, read):
        rel = f"images/{c.case}.png"
        save_png(out / rel, image)
        entries = pictures.setdefault(c.split, [])
        found = instances.setdefault(c.split, [])
        image_id = len(entries) + 1
        height, width = mask.shape
        entries.append({"id": image_id, "file_name": rel, "width": width, "height": height})
        for inst in mask_instances(mask):
            found.append({"id": len(found) + 1, "image_id": image_id, **inst})
        if progress:
            progress(1)
    written = []
    for split in sorted(pictures):
        doc = dict(
            info={"description": description, "version": __version__},
            licenses=[],
            images=pictures[split],
            annotations=instances[split],
            categories=[dict(CATEGORY)],
        )
        path = out / f"instances_{split}.json"
        path.write_text(json.dumps(doc) + "\n")
        written.append(path)
    write_cases(out, cases)
    return written
