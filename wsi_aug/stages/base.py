"""The stage contract: typed parameters defined once, and what every stage returns.

A stage's `Params` (a pydantic model) is the only place its defaults, types, ranges and help texts
live. The CLI derives its options from it (`wsi_aug.options.stage_command`), pipeline tables are
validated by it, and the cache key is its `key_dict()`. Fields that change how a stage runs but
not what it writes (the device, worker counts, progress) are marked ``key=False`` and stay out of
the key. This module imports only pydantic, so that `wsi-aug --help` stays fast.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Self, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from wsi_aug.errors import WsiAugError
from wsi_aug.result import StageResult

__all__ = ["ModelStore", "Stage", "StageParams", "StageResult", "StageStore", "param"]

_NUMBERS = (int, float)


def param(
    default: Any = ...,
    help: str = "",
    *,
    key: bool = True,
    cli: str | bool | None = None,
    argument: bool = False,
    **constraints: Any,
) -> Any:
    """A stage parameter: its default, help text and range, plus how the CLI shows it.

    ``key=False``: not part of the cache key (how to run, not what to make). ``cli``: the option's
    name when it differs from the field's (``"--label"``), or False to keep it off the CLI.
    ``argument``: a positional CLI argument (nargs=-1 for tuples). `constraints` go to pydantic
    (``ge``, ``gt``, ``le``, ``lt``, ``min_length`` ...); the CLI turns them into ranges.
    """
    extra: dict[str, Any] = {"key": key, "argument": argument}
    if cli is not None:
        extra["cli"] = cli
    return Field(default, description=help, json_schema_extra=extra, **constraints)


def field_extra(info: Any) -> dict[str, Any]:
    """The ``param`` extras of a pydantic FieldInfo (key, cli, argument)."""
    extra = info.json_schema_extra
    return dict(extra) if isinstance(extra, dict) else {}


def unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (annotation, False)."""
    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def _wants_number(annotation: Any) -> bool:
    base, _ = unwrap_optional(annotation)
    if base in _NUMBERS or base is bool:
        return True
    origin = get_origin(base)
    if origin in (tuple, list):
        args = [a for a in get_args(base) if a is not Ellipsis]
        return bool(args) and all(a in _NUMBERS or a is bool for a in args)
    return False


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class StageParams(BaseModel):
    """Base of every stage's parameters: unknown keys are errors, strings are not numbers."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    stage: ClassVar[str] = ""

    @field_validator("*", mode="before")
    @classmethod
    def _no_strings_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """Reject "2" where a number belongs (pydantic would coerce it; a pipeline typo)."""
        field = cls.model_fields.get(info.field_name or "")
        if field is not None and _wants_number(field.annotation):
            items = value if isinstance(value, (list, tuple)) else [value]
            if any(isinstance(v, str) for v in items):
                base, _ = unwrap_optional(field.annotation)
                kind = "true or false" if base is bool else "a number"
                raise ValueError(f"expected {kind}, not a string")
        return value

    @classmethod
    def parse(cls, values: Mapping[str, Any] | None = None, *, where: str = "") -> Self:
        """Validate `values` into Params, or raise one `WsiAugError` line naming each problem."""
        where = where or cls.stage
        data = dict(values or {})
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise WsiAugError(f"{where}: {describe_errors(cls, exc, data)}") from None

    @classmethod
    def build(cls, params: StageParams | None = None, **overrides: Any) -> Self:
        """`params` (or the defaults) with `overrides` applied, validated as a whole."""
        base = params.model_dump() if params is not None else {}
        return cls.parse({**base, **overrides})

    def key_dict(self) -> dict[str, Any]:
        """The parameters that decide the stage's output, as JSON values: the cache key's part."""
        keep = {n for n, f in type(self).model_fields.items() if field_extra(f).get("key", True)}
        return self.model_dump(mode="json", include=keep)


def describe_errors(cls: type[BaseModel], exc: ValidationError, data: Mapping[str, Any]) -> str:
    """pydantic's errors as one line: each field, the value given, and what is expected."""
    unknown: list[str] = []
    parts: list[str] = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err["loc"]]
        if err["type"] == "extra_forbidden":
            unknown.append(loc[0])
            continue
        name = loc[0] if loc else ""
        if not name:  # a model-level check (a before/after validator): its own message
            parts.append(str(err["msg"]).removeprefix("Value error, "))
            continue
        where = ".".join(loc)
        info = cls.model_fields.get(name)
        extra = field_extra(info) if info is not None else {"cli": False}
        if extra.get("cli") is not False and not extra.get("argument"):
            opt = extra.get("cli") or "--" + name.replace("_", "-")
            where = f"{where} ({opt})"
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "missing":
            parts.append(f"{where} is required")
        else:
            parts.append(f"{where} = {_show(data.get(name))}: {msg}")
    if unknown:
        valid = ", ".join(cls.model_fields)
        parts.insert(0, f"unknown key(s) {', '.join(sorted(unknown))}; valid keys: {valid}")
    return "; ".join(parts)


class StageStore:
    """Base of the stage store readers: a complete store opened read-only by stage name.

    Subclasses set `NAME` (the stage) and `MADE_BY` (the command that makes it) and add typed
    properties for their arrays and tables; the array names live only in their module.
    """

    NAME: ClassVar[str] = ""
    MADE_BY: ClassVar[str] = ""

    def __init__(self, path: Path, group: Any) -> None:
        self.path = path
        self.group = group

    @classmethod
    def open(cls, work: str | Path) -> Self:
        """Open the work folder's store of this stage, or fail naming the command that makes it."""
        from wsi_aug import store

        wd = store.WorkDir(Path(work))
        wd.check_layout()
        path = wd.store(cls.NAME)
        return cls(path, store.open_stage(path, stage=cls.NAME, made_by=cls.MADE_BY))

    @property
    def meta(self) -> dict[str, Any]:
        """The store's ``wsi_aug`` attributes (stage, params, inputs, key, completion)."""
        from wsi_aug import store

        return store.read_meta(self.path) or {}

    def array(self, name: str) -> Any:
        """One of the store's arrays (zarr.Array), or an error naming the store."""
        import zarr

        arr = self.group[name]
        if not isinstance(arr, zarr.Array):
            raise WsiAugError(f"{self.path}: {name!r} is not an array; rebuild with {self.MADE_BY}")
        return arr

    def fingerprint(self) -> str:
        """Changes on every rebuild: what downstream stores record as their input."""
        from wsi_aug import store

        return store.stage_fingerprint(self.path)


class ModelStore(StageStore):
    """A trained model's store with its files folder beside it (``NAME/``: checkpoints, sample
    grids, losses), which must belong to it; train-gan and train-conditions share this."""

    CHECKPOINTS: ClassVar[str] = "checkpoints"

    @classmethod
    def open(cls, work: str | Path) -> Self:
        """Open the store, checking that its files folder belongs to it."""
        from wsi_aug import store
        from wsi_aug.errors import StageMissingError

        s = super().open(work)
        if not store.files_match(s.path, s.meta):
            raise StageMissingError(
                f"{s.files}: does not belong to {s.path} (interrupted?); "
                f"rebuild it with `{cls.MADE_BY} --force`"
            )
        return s

    @property
    def files(self) -> Path:
        """The stage's folder of non-zarr files: checkpoints, samples, losses."""
        return self.path.with_suffix("")

    @classmethod
    def checkpoint_dir(cls, files: Path) -> Path:
        """Where a run (finished or in progress) keeps its checkpoints."""
        return files / cls.CHECKPOINTS

    @property
    def checkpoints(self) -> Path:
        return self.checkpoint_dir(self.files)

    def latest(self) -> Path:
        """The newest checkpoint, or an error naming the folder and the fix."""
        from wsi_aug.errors import StageMissingError
        from wsi_aug.gan.checkpoints import latest_checkpoint

        found = latest_checkpoint(self.checkpoints)
        if found is None:
            raise StageMissingError(
                f"{self.checkpoints}: holds no checkpoint; rebuild it with `{self.MADE_BY} --force`"
            )
        return found


RunFn = Callable[..., Any]


@dataclass(frozen=True)
class Stage:
    """A stage as the registry knows it: its one name, its parameters and its run function.

    ``run(work, params, *, force, progress, report)`` returns an object with ``path``,
    ``cached``, ``outputs`` and ``text`` (a `StageResult`, or a richer result with those fields).
    ``inputs`` names the stages whose stores it reads; ``store`` is its path in the work folder.
    """

    name: str
    params: type[StageParams]
    run: RunFn
    help: str
    store: str
    inputs: tuple[str, ...] = ()
    kind: Literal["store", "files"] = "store"
