"""Stage `phantom`: synthetic PAS-like slides with GeoJSON glomeruli, for the demo and tests.

Writes files, not a store: ``OUT/phantom-NNN.tif`` + ``.geojson`` (default OUT: ``WORK/slides``)
and ``OUT/.phantom-params.json``, the parameters they were made with, so a rerun with the same
parameters does nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wsi_aug.stages.base import Stage, StageParams, StageResult, param

NAME = "phantom"
_DONE = ".phantom-params.json"


class PhantomParams(StageParams):
    """How many phantom slides, of which size and pixel size, from which seed."""

    stage = NAME

    out: Path | None = param(
        None, "Folder for the slides (default: WORK/slides).", argument=True, key=False
    )
    slides: int = param(4, "Number of slides.", ge=1)
    width: int = param(4096, "Slide width in pixels.", ge=256)
    height: int = param(3072, "Slide height in pixels.", ge=256)
    mpp: float = param(0.5, "Pixel size written, micrometres per pixel.", gt=0)
    seed: int = param(0, "Random seed.", ge=0)


def phantom(
    work: str | Path,
    params: PhantomParams | None = None,
    *,
    force: bool = False,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
    **overrides: Any,
) -> StageResult:
    """Write phantom slides into ``params.out`` (default ``WORK/slides``), unless already there."""
    from wsi_aug.phantom import make_phantom_dataset

    p = PhantomParams.build(params, **overrides)
    out = Path(p.out) if p.out is not None else Path(work) / "slides"
    done = out / _DONE
    key = p.key_dict()
    try:
        same = json.loads(done.read_text()) == key
    except (OSError, ValueError):
        same = False
    slides = sorted(out.glob("phantom-*.tif"))
    if same and not force and len(slides) == p.slides:
        return StageResult(out, True, {"params": key}, outputs=tuple(slides))
    pairs = make_phantom_dataset(
        out, slides=p.slides, seed=p.seed, width=p.width, height=p.height, mpp=p.mpp
    )
    done.write_text(json.dumps(key))
    if report:
        for slide, ann in pairs:
            report(f"{slide}  {ann.name}")
    return StageResult(out, False, {"params": key}, outputs=tuple(s for s, _ in pairs))


STAGE = Stage(
    name=NAME,
    params=PhantomParams,
    run=phantom,
    help="Write synthetic PAS-like kidney slides (pyramidal JPEG TIFF) with GeoJSON glomeruli "
    "into OUT (default: WORK/slides).",
    store="slides",
    kind="files",
)
