"""Condition-model checkpoints: one safetensors file each (no pickle), written atomically.

Tensors ``model/...`` (the trained weights), ``ema/...`` (the EMA weights samples are drawn with),
``opt/<index>/<key>`` (Adam) and, for an area-conditioned model, ``areas`` (the training
conditions' mask areas, which samples draw theirs from), with the config, step and format in
the metadata (JSON). The same content gives the same bytes
(`wsi_aug.gan.checkpoints.canonical_header`), so file fingerprints identify a model. A folder's
``latest`` file names its newest checkpoint.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from wsi_aug.condgen.model import CondGenConfig, build_model
from wsi_aug.errors import CheckpointError
from wsi_aug.gan.checkpoints import (
    LATEST,
    canonical_header,
    flatten_optimizer,
    latest_checkpoint,
    unflatten_optimizer,
)
from wsi_aug.store import atomic_write_bytes

FORMAT = "wsi-aug-condgen/1"
RETRAIN = "retrain with `wsi-aug train-conditions --force`"

__all__ = ["FORMAT", "CondCheckpoint", "latest_checkpoint", "load", "load_ema", "save"]


@dataclass
class CondCheckpoint:
    """A loaded checkpoint (tensors on the CPU)."""

    path: Path
    config: CondGenConfig
    step: int
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor]
    ema_count: int = 0
    opt: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    areas: torch.Tensor | None = None  # (N,) the training masks' areas (area-conditioned models)


def _state(prefix: str, module: nn.Module) -> dict[str, torch.Tensor]:
    return {
        f"{prefix}/{k}": v.detach().cpu().clone().contiguous()
        for k, v in module.state_dict().items()
    }


def save(
    path: Path,
    *,
    config: CondGenConfig,
    model: nn.Module,
    ema: nn.Module,
    step: int,
    opt: torch.optim.Optimizer | None = None,
    extra: dict[str, Any] | None = None,
    areas: torch.Tensor | None = None,
) -> Path:
    """Write a checkpoint atomically and point the folder's ``latest`` at it.

    `ema` is the `AveragedModel`: its inner module's weights go under ``ema/``, its update count
    into the metadata.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    inner = getattr(ema, "module", ema)
    count = getattr(ema, "n_averaged", None)
    tensors = {**_state("model", model), **_state("ema", inner)}
    if areas is not None:
        tensors["areas"] = areas.detach().cpu().float().contiguous()
    meta = {
        "format": FORMAT,
        "config": json.dumps(config.to_dict(), sort_keys=True),
        "step": str(int(step)),
        "ema_count": str(int(count.item()) if isinstance(count, torch.Tensor) else 0),
        "extra": json.dumps(extra or {}, sort_keys=True, default=str),
    }
    if opt is not None:
        t, text = flatten_optimizer("opt", opt.state_dict())
        tensors.update(t)
        meta["opt"] = text
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        save_file(tensors, str(tmp), metadata=meta)
        canonical_header(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    atomic_write_bytes(path.parent / LATEST, (path.name + "\n").encode())
    return path


def _corrupt(path: Path, why: object) -> CheckpointError:
    return CheckpointError(
        f"{path}: corrupt or not a wsi-aug condition-model checkpoint ({why}); {RETRAIN} or pass "
        "another --condition-checkpoint"
    )


def load(path: str | os.PathLike[str], *, ema_only: bool = False) -> CondCheckpoint:
    """Read a checkpoint (safetensors, no pickle); any problem is a one-line `CheckpointError`."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint; {RETRAIN} or pass an existing one")
    try:
        with safe_open(str(p), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            if meta.get("format") != FORMAT:
                raise _corrupt(p, f"format {meta.get('format')!r}, expected {FORMAT!r}")
            names = [
                k
                for k in f.keys()  # noqa: SIM118
                if not ema_only or k.startswith("ema/") or k == "areas"
            ]
            tensors = {k: f.get_tensor(k) for k in names}
        ck = CondCheckpoint(
            path=p,
            config=CondGenConfig.from_dict(json.loads(meta["config"])),
            step=int(meta["step"]),
            model={k[6:]: v for k, v in tensors.items() if k.startswith("model/")},
            ema={k[4:]: v for k, v in tensors.items() if k.startswith("ema/")},
            ema_count=int(meta.get("ema_count", 0)),
            extra=json.loads(meta.get("extra", "{}")),
            areas=tensors.get("areas"),
        )
        if not ema_only and "opt" in meta:
            ck.opt = unflatten_optimizer("opt", tensors, meta["opt"])
    except CheckpointError:
        raise
    except Exception as exc:  # header errors, truncation, bad JSON, missing keys
        raise _corrupt(p, f"{type(exc).__name__}: {exc}") from exc
    if not ck.ema:
        raise _corrupt(p, "no EMA weights")
    if ck.config.area_condition and (ck.areas is None or ck.areas.ndim != 1 or not len(ck.areas)):
        raise _corrupt(p, "an area-conditioned model without its training areas")
    return ck


def load_into(module: nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    """Strict `load_state_dict`; a key or shape mismatch is a one-line `CheckpointError`."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = str(exc).strip().splitlines()
        detail = (lines[1] if len(lines) > 1 else lines[0]).strip()
        raise CheckpointError(
            f"{path}: another architecture than expected ({what}: {detail}); {RETRAIN}"
        ) from exc


def check_config(path: Path, found: CondGenConfig, expected: CondGenConfig) -> None:
    """A `CheckpointError` naming the differences when a checkpoint's architecture is another."""
    a, b = found.arch(), expected.arch()
    diff = [f"{k}={a[k]} vs {b[k]} expected" for k in a if a[k] != b[k]]
    if diff:
        raise CheckpointError(
            f"{path}: trained with another architecture ({', '.join(diff)}); {RETRAIN} with "
            "these options or pass the matching checkpoint"
        )


def load_ema(
    path: str | os.PathLike[str], device: torch.device | str = "cpu"
) -> tuple[nn.Module, CondCheckpoint]:
    """The EMA denoiser of a checkpoint, in eval mode on `device`."""
    ck = load(path, ema_only=True)
    with torch.random.fork_rng(devices=[]):
        model = build_model(ck.config)
    load_into(model, ck.ema, ck.path, "EMA weights")
    return model.to(device).eval(), ck
