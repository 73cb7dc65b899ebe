"""Extraction on plain images: ``wsi-aug extract`` against the loop a user would write by hand.

The data are the HuBMAP tiles (110 JPEGs with LabelMe polygons, 455 glomeruli; pixel size given
as 1 µm/px, so windows are read at the tiles' own resolution). The plain loop, per tile: open the
JPEG with PIL, and per polygon crop the 256 px window centred (rounded) on its centroid and fill
every polygon of the tile into the window's mask with PIL ImageDraw. Against it, the CLI
``wsi-aug extract DATA --slide-mpp 1.0 --work W --force`` run as a subprocess (wall time, so
interpreter start-up and imports count; the ``wsi-aug`` script beside this Python, not a version
manager's shim found first on PATH), which also pairs files, parses annotations, writes the
Zarr store and its records. Each run gets a fresh work folder (removing the previous run's store
is not extraction; ``--force`` only makes sure nothing is cached). Both best of ``--repeat`` in
one run; prints plain / wsi-aug, and beside the wall times the CPU seconds of each (user + system,
best of the repeats) and the load average, since on a shared machine the wall ratio moves with
the other jobs' load while the CPU seconds move much less.

``--python`` runs the CLI in this process instead (``wsi_aug.cli.main``), e.g. for a profile:

    python benchmarks/extract_vs_plain.py [--data DIR] [--repeat 3]
    python -m cProfile -s cumtime benchmarks/extract_vs_plain.py --python --repeat 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZE = 256
MPP = 1.0
LABELS = ("glomerulus", "glomeruli")  # the plain loop's classes: the CLI's default --label


def default_data() -> Path:
    """``$WSI_AUG_DATA/hubmap-pas-tiles``, else ``../shared/data/hubmap-pas-tiles``."""
    env = os.environ.get("WSI_AUG_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"
    return root / "hubmap-pas-tiles"


def _centroid(pts: np.ndarray) -> tuple[float, float]:
    """Area centroid of a simple polygon (shoelace formula)."""
    x, y = pts[:, 0], pts[:, 1]
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    cross = x * yn - xn * y
    a = cross.sum() / 2
    return float(((x + xn) * cross).sum() / (6 * a)), float(((y + yn) * cross).sum() / (6 * a))


def plain_loop(data: Path) -> tuple[float, int, float]:
    """Seconds for the hand-written loop over every tile, the number of patches, CPU seconds."""
    from PIL import Image, ImageDraw

    cpu = time.process_time()
    t = time.perf_counter()
    images: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    for jpg in sorted(data.glob("*.jpg")):
        shapes = json.loads(jpg.with_suffix(".json").read_text())["shapes"]
        polys = [
            np.asarray(s["points"], np.float64)
            for s in shapes
            if s.get("shape_type", "polygon") == "polygon"
            and s["label"].casefold() in LABELS
            and len(s["points"]) >= 3
        ]
        with Image.open(jpg) as img:
            img.load()
            for pts in polys:
                cx, cy = _centroid(pts)
                x0, y0 = round(cx - SIZE / 2), round(cy - SIZE / 2)
                images.append(np.asarray(img.crop((x0, y0, x0 + SIZE, y0 + SIZE))))
                mask = Image.new("L", (SIZE, SIZE), 0)
                draw = ImageDraw.Draw(mask)
                for other in polys:
                    draw.polygon([(px - x0, py - y0) for px, py in other], fill=1)
                masks.append(np.asarray(mask))
    np.stack(images), np.stack(masks)
    return time.perf_counter() - t, len(images), time.process_time() - cpu


def _cli_args(data: Path, work: Path) -> list[str]:
    return ["extract", str(data), "--slide-mpp", "1.0", "--work", str(work), "--force"]


def _cli_command() -> list[str]:
    """The ``wsi-aug`` script of this Python's environment, else ``python -m wsi_aug``.

    Not the first ``wsi-aug`` on PATH: that may be a version manager's shim (pyenv's is a bash
    script that runs ``pyenv exec``, about 0.1 s), which is no part of wsi-aug's start-up.
    """
    exe = Path(sys.executable).with_name("wsi-aug")
    if exe.is_file() and os.access(exe, os.X_OK):
        return [str(exe)]
    return [sys.executable, "-m", "wsi_aug"]


def _cpu_seconds(in_process: bool) -> float:
    """User + system seconds used so far by this process, or by its finished children."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF if in_process else resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def wsi_aug_cli(data: Path, work: Path, in_process: bool) -> tuple[float, float]:
    """Wall and CPU seconds of one ``wsi-aug extract`` run (a subprocess, or ``in_process``)."""
    args = _cli_args(data, work)
    cpu = _cpu_seconds(in_process)
    t = time.perf_counter()
    if in_process:
        from wsi_aug.cli import main

        try:
            main(args)
        except SystemExit as exc:
            if exc.code:
                raise RuntimeError(f"wsi-aug extract failed with status {exc.code}") from exc
    else:
        cmd = [*_cli_command(), *args]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"wsi-aug extract failed ({res.returncode}): {res.stderr[-2000:]}")
    return time.perf_counter() - t, _cpu_seconds(in_process) - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=None, help="default: the HuBMAP tiles")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--python", action="store_true", help="run the CLI in this process")
    args = ap.parse_args()

    data = args.data or default_data()
    if not data.is_dir():
        sys.exit(f"{data}: no such folder; give --data or set WSI_AUG_DATA")
    tmp = Path(tempfile.mkdtemp(prefix="wsi-aug-vs-plain-"))
    try:
        load = os.getloadavg()[0]
        plain_loop(data)  # warm the page cache
        runs = [plain_loop(data) for _ in range(args.repeat)]
        plain, n = min(r[0] for r in runs), runs[0][1]
        plain_cpu = min(r[2] for r in runs)
        times = []
        for i in range(args.repeat):
            times.append(wsi_aug_cli(data, tmp / f"work-{i}", args.python))
            shutil.rmtree(tmp / f"work-{i}", ignore_errors=True)
        ours, ours_cpu = min(t for t, _ in times), min(c for _, c in times)
        load = max(load, os.getloadavg()[0])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    mode = "in process" if args.python else "subprocess, start-up included"
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, load average (1 min) up to {load:.1f}"
    )
    print(f"{data}: {n} windows of {SIZE} px at {MPP} µm/px, best of {args.repeat}")
    print("| measure | wall | CPU (user + system) |\n| --- | --- | --- |")
    print(
        f"| plain loop (PIL open, crop, ImageDraw masks) | {plain:.2f} s ({n / plain:.0f}/s) "
        f"| {plain_cpu:.2f} s |"
    )
    print(f"| wsi-aug extract ({mode}) | {ours:.2f} s ({n / ours:.0f}/s) | {ours_cpu:.2f} s |")
    ratio, cpu_ratio = plain / ours, plain_cpu / ours_cpu
    print(f"| ratio plain / wsi-aug (aim >= 0.9) | {ratio:.2f} | {cpu_ratio:.2f} |")


if __name__ == "__main__":
    main()
