"""Click options derived from a stage's `Params`, and the one command factory for every stage.

The option's name, type, range, default and help all come from the pydantic field, so the CLI
cannot disagree with the library. Only click and pydantic are imported here: stages import their
heavy dependencies inside `run`, so ``wsi-aug --help`` stays fast.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import click
from annotated_types import Ge, Gt, Le, Lt

from wsi_aug.stages.base import Stage, StageParams, field_extra, unwrap_optional

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_WORK = Path("wsi-aug-work")


def work_option(f: F) -> F:
    """``--work DIR``: the folder holding every stage's store."""
    return click.option(
        "--work",
        type=click.Path(file_okay=False, path_type=Path),
        default=DEFAULT_WORK,
        show_default=True,
        help="Work folder holding the stage stores (see README, 'The work folder').",
    )(f)


def force_option(f: F) -> F:
    """``--force``: rebuild even when the cached store is valid."""
    return click.option("--force", is_flag=True, help="Rebuild even if the cached store is valid.")(
        f
    )


class CommaFloats(click.ParamType):
    """``0.6,0.2,0.2`` -> (0.6, 0.2, 0.2); with `n`, exactly n numbers."""

    name = "numbers"

    def __init__(self, n: int | None = None) -> None:
        self.n = n

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, (tuple, list)):
            return tuple(float(v) for v in value)
        try:
            values = tuple(float(v) for v in str(value).split(",") if v.strip())
        except ValueError:
            values = ()
        if not values or (self.n is not None and len(values) != self.n):
            count = f"{self.n} " if self.n else ""
            self.fail(f"{value!r}: give {count}comma-separated numbers, e.g. 0.6,0.2,0.2")
        return values


def _range(base: type, metadata: list[Any]) -> click.ParamType:
    lo: Any = None
    hi: Any = None
    lo_open = hi_open = False
    for m in metadata:
        if isinstance(m, Ge):
            lo = m.ge
        elif isinstance(m, Gt):
            lo, lo_open = m.gt, True
        elif isinstance(m, Le):
            hi = m.le
        elif isinstance(m, Lt):
            hi, hi_open = m.lt, True
    if base is int:
        if lo is None and hi is None:
            return click.INT
        return click.IntRange(lo, hi, min_open=lo_open, max_open=hi_open)
    if lo is None and hi is None:
        return click.FLOAT
    return click.FloatRange(lo, hi, min_open=lo_open, max_open=hi_open)


def _scalar_type(base: Any, metadata: list[Any]) -> click.ParamType:
    if get_origin(base) is Literal:
        return click.Choice([str(a) for a in get_args(base)])
    if base in (int, float):
        return _range(base, metadata)
    if base is Path:
        return click.Path(path_type=Path)
    return click.STRING


def _show_default(default: Any) -> bool:
    if isinstance(default, (tuple, list)):
        return bool(default)
    return default is not None and default is not ...


def _param_decorator(name: str, info: Any) -> Callable[[F], F] | None:
    """The click decorator for one Params field (None when the field stays off the CLI)."""
    extra = field_extra(info)
    if extra.get("cli") is False:
        return None
    base, optional = unwrap_optional(info.annotation)
    default = None if info.is_required() else info.default
    opt = str(extra.get("cli") or "--" + name.replace("_", "-"))
    help_text = info.description or ""
    origin = get_origin(base)
    if extra.get("argument"):
        if origin in (tuple, list):
            return click.argument(name, nargs=-1, type=_scalar_type(get_args(base)[0], []))
        required = info.is_required() and not optional
        return click.argument(name, required=required, default=default, type=_scalar_type(base, []))
    kw: dict[str, Any] = {"help": help_text, "show_default": _show_default(default)}
    if base is bool:
        flag = opt.removeprefix("--")
        if default is None or default is True:
            return click.option(f"--{flag}/--no-{flag}", name, default=default, **kw)
        return click.option(opt, name, is_flag=True, default=False, help=help_text)
    if origin in (tuple, list):
        args = get_args(base)
        variadic = len(args) == 2 and args[1] is Ellipsis
        item = args[0] if args else str
        if item in (int, float) and not variadic:  # a fixed-length tuple: "a,b,c"
            return click.option(opt, name, type=CommaFloats(len(args)), default=default, **kw)
        if item is float:  # a list: repeat the option or give "a,b,c"
            return click.option(
                opt, name, type=CommaFloats(), multiple=True, default=default or (), **kw
            )
        return click.option(
            opt, name, type=_scalar_type(item, []), multiple=True, default=default or (), **kw
        )
    kw["type"] = _scalar_type(base, list(info.metadata))
    if info.is_required():
        return click.option(opt, name, required=True, **kw)
    return click.option(opt, name, default=default, **kw)


def params_options(
    params: type[StageParams], only: tuple[str, ...] | None = None
) -> Callable[[F], F]:
    """Decorate a command with one option (or argument) per field of `params`, in field order.

    `only` limits it to some fields (for a command that shares a stage's options, like info).
    """

    def decorate(f: F) -> F:
        for name, info in reversed(list(params.model_fields.items())):
            if only is not None and name not in only:
                continue
            deco = _param_decorator(name, info)
            if deco is not None:
                f = deco(f)
        return f

    return decorate


def _flatten_lists(params: type[StageParams], values: dict[str, Any]) -> dict[str, Any]:
    """Repeated comma-list options ((0, 0.5), (1,)) -> one flat tuple."""
    out = dict(values)
    for name, info in params.model_fields.items():
        if name not in out:
            continue
        base, _ = unwrap_optional(info.annotation)
        args = get_args(base)
        if get_origin(base) in (tuple, list) and args and args[0] is float:
            value = out[name]
            if value and isinstance(value[0], tuple):
                out[name] = tuple(v for group in value for v in group)
    return out


class _StderrHandler(logging.StreamHandler[Any]):
    """Writes to whatever ``sys.stderr`` is now (a test's capture, a redirected stream)."""

    _wsi_aug = True

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self) -> Any:
        import sys

        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def show_library_log() -> None:
    """Route the package logger to stderr as plain lines (once), and Python warnings into it."""
    logger = logging.getLogger("wsi_aug")
    handler = next((h for h in logger.handlers if isinstance(h, _StderrHandler)), None)
    if handler is None:
        handler = _StderrHandler()
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    logging.captureWarnings(True)
    warn_logger = logging.getLogger("py.warnings")
    if handler not in warn_logger.handlers:
        warn_logger.addHandler(handler)


def report_result(name: str, result: Any) -> None:
    """Print a stage result: where it is, whether the cache served it, and what to look at."""
    state = (
        "cached (inputs and parameters unchanged; --force rebuilds)" if result.cached else "built"
    )
    click.echo(f"{name}: {result.path} [{state}]")
    for path in getattr(result, "outputs", ()) or ():
        click.echo(f"  {path}")
    text = getattr(result, "text", "")
    if text:
        click.echo(f"\n{text}", nl=not text.endswith("\n"))


def stage_command(stage: Stage) -> click.Command:
    """The click command of a stage: ``--work``, one option per Params field, ``--force``."""

    def callback(work: Path, force: bool, **values: Any) -> None:
        import os

        show_library_log()
        params = stage.params.parse(_flatten_lists(stage.params, values), where=stage.name)
        result = stage.run(work, params, force=force, progress=True, report=click.echo)
        if int(os.environ.get("RANK", "0")) == 0:
            report_result(stage.name, result)

    callback.__doc__ = stage.help
    command = work_option(params_options(stage.params)(force_option(callback)))
    return click.command(stage.name, help=stage.help)(command)


__all__ = [
    "CommaFloats",
    "force_option",
    "params_options",
    "report_result",
    "show_library_log",
    "stage_command",
    "work_option",
]
