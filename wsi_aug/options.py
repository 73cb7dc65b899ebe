"""Reusable click options, shared by every command so that they read and behave alike.

Only click is imported here: commands import the library inside their bodies so that
``wsi-aug --help`` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

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


def seed_option(f: F) -> F:
    """``--seed S``: the seed of every random choice the command makes."""
    return click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")(f)


def device_option(f: F) -> F:
    """``--device``: where torch runs; ``auto`` takes CUDA when present."""
    return click.option(
        "--device",
        default="auto",
        show_default=True,
        help="torch device: auto (CUDA when present, else CPU), cpu, cuda, cuda:1 ...",
    )(f)


def workers_option(f: F) -> F:
    """``--workers N``: parallel worker processes."""
    return click.option(
        "--workers",
        type=click.IntRange(min=1),
        default=1,
        show_default=True,
        help="Parallel worker processes.",
    )(f)


def slide_options(f: F) -> F:
    """Options that say how to open slides: ``--backend`` and ``--slide-mpp``."""
    f = click.option(
        "--slide-mpp",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        help="The slides' own pixel size in micrometres per pixel; required for plain images "
        "and slides without pixel size, and overrides wrong metadata.",
    )(f)
    f = click.option(
        "--backend",
        type=click.Choice(["auto", "openslide", "tifffile", "image"]),
        default="auto",
        show_default=True,
        help="Slide reader; auto takes the first that opens the file.",
    )(f)
    return f


def annotation_options(f: F) -> F:
    """Options that say how to read annotations (classes, object types, masks)."""
    f = click.option(
        "--mask-channel",
        type=click.IntRange(0, 3),
        default=None,
        help="For RGB mask images: the channel holding the mask (0 red, 1 green, 2 blue).",
    )(f)
    f = click.option(
        "--mask-value",
        type=int,
        default=None,
        help="For label-image masks: the pixel value of the class (default: any non-zero).",
    )(f)
    f = click.option(
        "--objects",
        type=click.Choice(["annotation", "detection", "cell"]),
        multiple=True,
        help="QuPath object types to read (repeatable; default: annotations only).",
    )(f)
    f = click.option(
        "--label",
        "labels",
        multiple=True,
        default=("glomerulus",),
        show_default=True,
        help="Annotation class to use, case-insensitive (repeatable).",
    )(f)
    return f


def run_stage_message(name: str, result: Any) -> None:
    """Report a stage result: where it is and whether it came from the cache."""
    state = (
        "cached (inputs and parameters unchanged; --force rebuilds)" if result.cached else "built"
    )
    click.echo(f"{name}: {result.path} [{state}]")
