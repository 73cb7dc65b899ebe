"""`wsi-aug run PIPELINE.toml`: every stage in order, from one file of parameters.

A pipeline file names a work folder and one table per stage, named as on the CLI (``[extract]``,
``[train-gan]`` ...; see `wsi_aug.stages.registry`); a stage missing from the file is not run.
Keys are the fields of the stage's `Params` (the CLI's options with ``_`` for ``-``), checked for
name and type before any stage runs. Each stage is skipped by its own cache when its parameters
and inputs are unchanged, so rerunning a pipeline after editing one table rebuilds that stage
and those after it, nothing before.

Paths in the file are relative to the current folder; ``{work}`` expands to the work folder.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsi_aug.errors import WsiAugError
from wsi_aug.stages import registry
from wsi_aug.stages.base import StageParams

STAGES: tuple[str, ...] = registry.NAMES


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
    except Exception as exc:  # tomllib / yaml / decoding errors: report, no traceback
        reason = " ".join(str(exc).split())
        raise WsiAugError(f"{p}: cannot parse ({reason}); fix the syntax") from exc
    if not isinstance(config, dict):
        raise WsiAugError(f"{p}: expected a table of stages at the top level")
    return check_pipeline(config, where=str(p))


def check_pipeline(config: Mapping[str, Any], *, where: str = "pipeline") -> dict[str, Any]:
    """Check stage names and the type of every top-level entry; returns a plain dict."""
    cfg = dict(config)
    unknown = [k for k in cfg if k != "work" and k not in STAGES]
    if unknown:
        raise WsiAugError(
            f"{where}: unknown stage(s) {', '.join(map(str, unknown))}; known: {', '.join(STAGES)}"
        )
    for name in STAGES:
        if name in cfg and not isinstance(cfg[name], Mapping):
            raise WsiAugError(f"{where}: [{name}] must be a table of options")
    if "work" in cfg and not isinstance(cfg["work"], str):
        raise WsiAugError(f"{where}: work = {cfg['work']!r}: expected a folder name (a string)")
    return cfg


def _expand(value: Any, work: Path) -> Any:
    if isinstance(value, str):
        return value.replace("{work}", str(work))
    if isinstance(value, list):
        return [_expand(v, work) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, work) for k, v in value.items()}
    return value


def pipeline_params(config: Mapping[str, Any], work: Path) -> dict[str, StageParams]:
    """Every stage table of a pipeline validated into its `Params` (one-line errors)."""
    out: dict[str, StageParams] = {}
    for name in STAGES:
        if name in config:
            stage = registry.get(name)
            table = _expand(dict(config[name]), work)
            out[name] = stage.params.parse(table, where=f"pipeline stage [{name}]")
    return out


def run_pipeline(
    config: Mapping[str, Any] | str | Path,
    *,
    work: str | Path | None = None,
    force: bool = False,
    only: tuple[str, ...] = (),
    progress: bool = True,
    report: Callable[[str], None] | None = None,
    on_result: Callable[[str, Any], None] | None = None,
) -> list[StageRun]:
    """Run the stages a pipeline names, in order; each is skipped when its cache is valid.

    Every table is validated before the first stage runs. `work` overrides the file's ``work``;
    `force` rebuilds every stage; `only` limits the run to the named stages (their caches still
    decide).
    """
    cfg = load_pipeline(config) if isinstance(config, (str, Path)) else check_pipeline(config)
    root = Path(work or cfg.get("work") or "wsi-aug-work")
    params = pipeline_params(cfg, root)
    unknown = [n for n in only if n not in STAGES]
    if unknown:
        raise WsiAugError(f"--only {', '.join(unknown)}: unknown stage; known: {', '.join(STAGES)}")
    runs: list[StageRun] = []
    for name, p in params.items():
        if only and name not in only:
            continue
        if report:
            report(f"[{name}] ...")
        result = registry.get(name).run(root, p, force=force, progress=progress, report=report)
        cached = bool(getattr(result, "cached", False))
        runs.append(StageRun(name, cached, result))
        if on_result:
            on_result(name, result)
        elif report:
            report(f"[{name}] {'cached' if cached else 'done'} {getattr(result, 'path', '')}")
    return runs
