"""`wsi-aug run PIPELINE.toml`: every stage in order, from one file of parameters.

A pipeline file names a work folder and one table per stage (``[phantom]``, ``[extract]``,
``[structure]``, ``[train-gan]``, ``[synthesize]``, ``[eval-seg]``, ``[eval-gan]``); a stage
missing from the file is not run. Keys are the library functions' keyword arguments. Each stage
is skipped by its own cache when its parameters and inputs are unchanged, so rerunning a pipeline
after editing one table rebuilds that stage and those after it, nothing before.

Paths in the file are relative to the current folder; ``{work}`` expands to the work folder.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsi_aug.errors import WsiAugError

STAGES: tuple[str, ...] = (
    "phantom",
    "extract",
    "structure",
    "train-gan",
    "synthesize",
    "eval-seg",
    "eval-gan",
)


@dataclass
class StageRun:
    """One stage of a pipeline run: its name, whether the cache served it, and its result."""

    name: str
    cached: bool
    result: Any


def load_pipeline(path: str | Path) -> dict[str, Any]:
    """Read a pipeline file (TOML, or YAML by suffix) and check its stage names."""
    p = Path(path)
    if not p.is_file():
        raise WsiAugError(f"{p}: no such pipeline file; see pipelines/ for examples")
    try:
        if p.suffix.lower() in {".yaml", ".yml"}:
            import yaml

            config = yaml.safe_load(p.read_text()) or {}
        else:
            config = tomllib.loads(p.read_text())
    except Exception as exc:  # tomllib / yaml errors: report, no traceback
        raise WsiAugError(f"{p}: cannot parse ({exc}); fix the syntax") from exc
    if not isinstance(config, dict):
        raise WsiAugError(f"{p}: expected a table of stages at the top level")
    unknown = [k for k, v in config.items() if isinstance(v, dict) and k not in STAGES]
    if unknown:
        raise WsiAugError(f"{p}: unknown stage(s) {', '.join(unknown)}; known: {', '.join(STAGES)}")
    return config


def _expand(value: Any, work: Path) -> Any:
    if isinstance(value, str):
        return value.replace("{work}", str(work))
    if isinstance(value, list):
        return [_expand(v, work) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, work) for k, v in value.items()}
    return value


def _call(fn: Callable[..., Any], stage: str, *args: Any, **kw: Any) -> Any:
    """Call a stage function, turning keys it does not take into an error naming the stage."""
    import inspect

    accepted = inspect.signature(fn).parameters
    unknown = sorted(k for k in kw if k not in accepted)
    if unknown:
        valid = ", ".join(k for k, p in accepted.items() if p.kind == p.KEYWORD_ONLY)
        raise WsiAugError(
            f"pipeline stage [{stage}]: unknown key(s) {', '.join(unknown)}; valid keys: {valid}"
        )
    return fn(*args, **kw)


def _run_phantom(work: Path, kw: dict[str, Any], force: bool, progress: bool) -> Any:
    from wsi_aug.phantom import make_phantom_dataset

    out = Path(kw.pop("out", work / "slides"))
    done = out / ".phantom-params.json"
    import json

    if not force and done.is_file() and json.loads(done.read_text()) == kw:
        return _Cached(out)
    pairs = _call(make_phantom_dataset, "phantom", out, **kw)
    done.write_text(json.dumps(kw))
    return _Built(out, pairs)


@dataclass
class _Cached:
    path: Path
    cached: bool = True


@dataclass
class _Built:
    path: Path
    pairs: Any
    cached: bool = False


def _run_extract(work: Path, kw: dict[str, Any], force: bool, progress: bool) -> Any:
    from wsi_aug.extract import ExtractParams, extract

    fields = set(ExtractParams.__dataclass_fields__)
    pkw = {k: kw.pop(k) for k in list(kw) if k in fields}
    for key in ("labels", "split", "objects"):
        if key in pkw:
            pkw[key] = tuple(pkw[key])
    inputs = kw.pop("inputs", [str(work / "slides")])
    return _call(
        extract,
        "extract",
        inputs,
        work,
        params=ExtractParams(**pkw),
        force=force,
        progress=progress,
        **kw,
    )


def _run_structure(work: Path, kw: dict[str, Any], force: bool, progress: bool) -> Any:
    from wsi_aug.structure import build_structure

    return _call(build_structure, "structure", work, force=force, progress=progress, **kw)


def _run_train_gan(work: Path, kw: dict[str, Any], force: bool, progress: bool) -> Any:
    from wsi_aug.gan.train import train_gan

    if "betas" in kw:
        kw["betas"] = tuple(kw["betas"])
    return _call(train_gan, "train-gan", work, force=force, progress=progress, **kw)


def _run_synthesize(work: Path, kw: dict[str, Any], force: bool, progress: bool) -> Any:
    from wsi_aug.synthesize import synthesize

    return _call(synthesize, "synthesize", work, force=force, progress=progress, **kw)


def _run_eval_seg(work: Path, kw: dict[str, Any], force: bool, progress: bool) -> Any:
    from wsi_aug.eval_seg import eval_seg

    return _call(eval_seg, "eval-seg", work, force=force, progress=progress, **kw)


def _run_eval_gan(work: Path, kw: dict[str, Any], force: bool, progress: bool) -> Any:
    from wsi_aug.eval_gan import eval_gan

    return _call(eval_gan, "eval-gan", work, force=force, progress=progress, **kw)


RUNNERS: dict[str, Callable[[Path, dict[str, Any], bool, bool], Any]] = {
    "phantom": _run_phantom,
    "extract": _run_extract,
    "structure": _run_structure,
    "train-gan": _run_train_gan,
    "synthesize": _run_synthesize,
    "eval-seg": _run_eval_seg,
    "eval-gan": _run_eval_gan,
}


def run_pipeline(
    config: Mapping[str, Any] | str | Path,
    *,
    work: str | Path | None = None,
    force: bool = False,
    only: tuple[str, ...] = (),
    progress: bool = True,
    report: Callable[[str], None] | None = None,
) -> list[StageRun]:
    """Run the stages a pipeline names, in order; each is skipped when its cache is valid.

    `work` overrides the file's ``work``; `force` rebuilds every stage; `only` limits the run
    to the named stages (their caches still decide).
    """
    cfg = load_pipeline(config) if isinstance(config, (str, Path)) else dict(config)
    root = Path(work or cfg.get("work") or "wsi-aug-work")
    runs: list[StageRun] = []
    for name in STAGES:
        if name not in cfg or (only and name not in only):
            continue
        kwargs = _expand(dict(cfg[name]), root)
        if report:
            report(f"[{name}] ...")
        result = RUNNERS[name](root, kwargs, force, progress)
        cached = bool(getattr(result, "cached", False))
        runs.append(StageRun(name, cached, result))
        if report:
            where = getattr(result, "path", "")
            report(f"[{name}] {'cached' if cached else 'done'} {where}")
    return runs
