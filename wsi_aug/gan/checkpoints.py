"""GAN checkpoints: one safetensors file per checkpoint, written atomically, read without pickle.

A checkpoint holds the generator and discriminator weights (and buffers), both Adam optimisers
(their state dicts flattened into tensors ``optG/<param index>/<key>`` plus JSON param groups),
the step / epoch counters, the dropout generator's state (tensor ``rng/torch``) and the numpy
bit-generator states of the data augmentation (JSON, one per process), so that training resumes
exactly. Tensors are stored as safetensors, everything else as JSON in its metadata; files are
written to a temporary name and `os.replace`d, so a crash never leaves a half-written checkpoint.
The same content always gives the same bytes (the header's metadata keys are sorted), so file
fingerprints of checkpoints compare runs. A folder's ``latest`` file names its newest checkpoint.
The config JSON holds every `GanConfig` field, the architecture variants (``upsample``,
``spectral_norm``) among them, so the generator is rebuilt as trained; a checkpoint written before
a field existed lacks it and loads with its default, which is the behaviour it was trained with.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from wsi_aug.errors import CheckpointError
from wsi_aug.gan.models import GanConfig, UNetGenerator, build_generator
from wsi_aug.store import atomic_write_bytes

log = logging.getLogger(__name__)

FORMAT = "wsi-aug-gan/1"
LATEST = "latest"
RETRAIN = "retrain with `wsi-aug train-gan`"

# Adam hyperparameters taken from a checkpoint; flags such as `capturable` or `foreach` stay as
# the running optimiser has them (a CUDA-graph run's checkpoint must load into an eager one).
_HYPER = ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize", "decoupled_weight_decay")


@dataclass
class Checkpoint:
    """A loaded checkpoint (tensors on the CPU)."""

    path: Path
    config: GanConfig
    step: int = 0
    epoch: int = 0
    epoch_step: int = 0
    generator: dict[str, torch.Tensor] = field(default_factory=dict)
    discriminator: dict[str, torch.Tensor] = field(default_factory=dict)
    opt_g: dict[str, Any] | None = None
    opt_d: dict[str, Any] | None = None
    torch_rng: torch.Tensor | None = None
    numpy_rng: list[dict[str, Any]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _module_state(prefix: str, module: nn.Module) -> dict[str, torch.Tensor]:
    """A module's state dict as contiguous, unshared CPU tensors under `prefix/`."""
    return {
        f"{prefix}/{k}": v.detach().cpu().clone().contiguous()
        for k, v in module.state_dict().items()
    }


def flatten_optimizer(prefix: str, state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    """An optimiser state dict as tensors ``prefix/<index>/<key>`` and a JSON string of the rest."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}/{idx}/{key}"] = value.detach().cpu().clone().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    groups = [
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
        for g in state["param_groups"]
    ]
    return tensors, json.dumps({"param_groups": groups, "scalars": scalars})


def unflatten_optimizer(prefix: str, tensors: dict[str, torch.Tensor], text: str) -> dict[str, Any]:
    """The inverse of `flatten_optimizer`."""
    meta = json.loads(text)
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith(prefix + "/"):
            idx, key = name[len(prefix) + 1 :].split("/", 1)
            state.setdefault(int(idx), {})[key] = value
    for idx, entry in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(entry)
    return {"state": dict(sorted(state.items())), "param_groups": meta["param_groups"]}


def load_optimizer(opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load a saved optimiser state, keeping the running optimiser's implementation flags."""
    groups = []
    for current, saved in zip(opt.param_groups, state["param_groups"]):
        g = {k: v for k, v in current.items() if k != "params"}
        g.update({k: (tuple(v) if k == "betas" else v) for k, v in saved.items() if k in _HYPER})
        g["params"] = saved["params"]
        groups.append(g)
    opt.load_state_dict({"state": state["state"], "param_groups": groups})


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    config: GanConfig,
    generator: nn.Module,
    discriminator: nn.Module | None = None,
    opt_g: torch.optim.Optimizer | None = None,
    opt_d: torch.optim.Optimizer | None = None,
    step: int = 0,
    epoch: int = 0,
    epoch_step: int = 0,
    torch_rng: torch.Tensor | None = None,
    numpy_rng: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
    update_latest: bool = True,
) -> Path:
    """Write a checkpoint atomically (temporary file + `os.replace`) and point ``latest`` at it."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tensors = _module_state("G", generator)
    meta = {
        "format": FORMAT,
        "config": json.dumps(config.to_dict()),
        "step": str(int(step)),
        "epoch": str(int(epoch)),
        "epoch_step": str(int(epoch_step)),
        "torch_version": torch.__version__,
        "extra": json.dumps(extra or {}, default=str),
    }
    if discriminator is not None:
        tensors.update(_module_state("D", discriminator))
    for name, opt in (("optG", opt_g), ("optD", opt_d)):
        if opt is not None:
            t, text = flatten_optimizer(name, opt.state_dict())
            tensors.update(t)
            meta[name] = text
    if torch_rng is not None:
        tensors["rng/torch"] = torch_rng.detach().cpu().clone().contiguous()
    if numpy_rng is not None:
        meta["rng_numpy"] = json.dumps(numpy_rng)
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        save_file(tensors, str(tmp), metadata=meta)
        canonical_header(tmp)
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    if update_latest:
        atomic_write_bytes(out.parent / LATEST, (out.name + "\n").encode())
    return out


def canonical_header(path: Path) -> None:
    """Rewrite a safetensors file's header with its metadata keys in sorted order.

    safetensors writes the metadata from a hash map whose order changes from call to call, so two
    identical checkpoints would differ in bytes. Tensor entries keep their (deterministic) order;
    the data is untouched, moved only if the header's length changes.
    """
    with path.open("r+b") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        meta = header.pop("__metadata__", None)
        ordered: dict[str, Any] = {}
        if meta is not None:
            ordered["__metadata__"] = dict(sorted(meta.items()))
        ordered.update(header)
        text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()
        text += b" " * (-len(text) % 8)  # data stays 8-byte aligned, as safetensors pads
        if len(text) == n:
            f.seek(8)
            f.write(text)
            return
    moved = path.with_name(path.name + ".header")
    try:
        with path.open("rb") as src, moved.open("wb") as dst:
            dst.write(struct.pack("<Q", len(text)))
            dst.write(text)
            src.seek(8 + n)
            shutil.copyfileobj(src, dst, 16 << 20)
        os.replace(moved, path)
    finally:
        moved.unlink(missing_ok=True)


def latest_checkpoint(folder: str | os.PathLike[str]) -> Path | None:
    """The checkpoint a folder's ``latest`` file names, else the newest one there, else None.

    A ``latest`` marker that is missing or names a deleted file falls back to the most recently
    written checkpoint, with a log line saying so, rather than to "no checkpoint".
    """
    folder = Path(folder)
    marker = folder / LATEST
    if marker.is_file():
        name = marker.read_text().strip()
        path = folder / name
        if name and path.is_file():
            return path
    found = sorted(folder.glob("*.safetensors"), key=lambda p: (p.stat().st_mtime_ns, p.name))
    if not found:
        return None
    log.info("%s: no usable 'latest' marker; using the newest, %s", folder, found[-1].name)
    return found[-1]


def _corrupt(path: Path, why: object) -> CheckpointError:
    return CheckpointError(
        f"{path}: corrupt or not a wsi-aug GAN checkpoint ({why}); {RETRAIN} or pass another "
        "--checkpoint"
    )


def load_checkpoint(path: str | os.PathLike[str], *, generator_only: bool = False) -> Checkpoint:
    """Read a checkpoint (safetensors, no pickle); any problem is a `CheckpointError`."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(
            f"{p}: no such checkpoint; {RETRAIN} or pass an existing --checkpoint"
        )
    try:
        with safe_open(str(p), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            if meta.get("format") != FORMAT:
                raise _corrupt(p, f"format {meta.get('format')!r}, expected {FORMAT!r}")
            names = [k for k in f.keys() if not generator_only or k.startswith("G/")]  # noqa: SIM118
            tensors = {k: f.get_tensor(k) for k in names}
        config = GanConfig.from_dict(json.loads(meta["config"]))
        ck = Checkpoint(
            path=p,
            config=config,
            step=int(meta["step"]),
            epoch=int(meta["epoch"]),
            epoch_step=int(meta.get("epoch_step", 0)),
            generator={k[2:]: v for k, v in tensors.items() if k.startswith("G/")},
            discriminator={k[2:]: v for k, v in tensors.items() if k.startswith("D/")},
            torch_rng=tensors.get("rng/torch"),
            numpy_rng=json.loads(meta["rng_numpy"]) if "rng_numpy" in meta else None,
            extra=json.loads(meta.get("extra", "{}")),
        )
        if not generator_only:
            if "optG" in meta:
                ck.opt_g = unflatten_optimizer("optG", tensors, meta["optG"])
            if "optD" in meta:
                ck.opt_d = unflatten_optimizer("optD", tensors, meta["optD"])
    except CheckpointError:
        raise
    except Exception as exc:  # safetensors header errors, truncation, bad JSON, missing keys
        raise _corrupt(p, f"{type(exc).__name__}: {exc}") from exc
    if not ck.generator:
        raise _corrupt(p, "no generator weights")
    return ck


def check_architecture(
    path: Path, found: GanConfig, expected: GanConfig, hint: str = "--checkpoint"
) -> None:
    """Raise `CheckpointError` when a checkpoint's architecture differs from the expected one."""
    a, b = found.arch(), expected.arch()
    diff = [f"{k}={a[k]} vs {b[k]} expected" for k in a if a[k] != b[k]]
    if diff:
        raise CheckpointError(
            f"{path} was trained with another architecture ({', '.join(diff)}); {RETRAIN} or pass "
            f"the matching {hint}"
        )


def load_state(module: nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    """`load_state_dict` (strict), turning a shape or key mismatch into a `CheckpointError`."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        raise CheckpointError(
            f"{path} was trained with another architecture ({what}: {detail}); {RETRAIN} or pass "
            "the matching --checkpoint"
        ) from exc


def load_generator(
    path: str | os.PathLike[str],
    *,
    expected: GanConfig | None = None,
    device: torch.device | str = "cpu",
) -> tuple[UNetGenerator, Checkpoint]:
    """The generator of a checkpoint, in eval mode on `device`, checked against `expected`."""
    ck = load_checkpoint(path, generator_only=True)
    if expected is not None:
        check_architecture(ck.path, ck.config, expected)
    g = build_generator(ck.config)
    load_state(g, ck.generator, ck.path, "generator")
    return g.to(device).eval(), ck
