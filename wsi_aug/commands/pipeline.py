"""Commands that run several stages: `run PIPELINE.toml` and `demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from wsi_aug.options import force_option, report_result, show_library_log
from wsi_aug.stages.registry import NAMES

DEMO_MINUTES = "about 5 minutes"  # measured: see README, `wsi-aug demo`


def _print_outputs(runs: list[Any]) -> None:
    """At the end, say once more where every result people look at is."""
    click.echo("\noutputs:")
    for run in runs:
        click.echo(f"  {run.name}: {run.result.path}")
        for p in getattr(run.result, "outputs", ()) or ():
            click.echo(f"    {p}")


def _stage_done(name: str, result: Any) -> None:
    report_result(name, result)
    click.echo()


@click.command()
@click.argument("pipeline", type=click.Path(path_type=Path))
@click.option(
    "--work",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Work folder (default: the file's `work`, else ./wsi-aug-work).",
)
@click.option(
    "--only",
    multiple=True,
    type=click.Choice(NAMES),
    help="Run only these stages (repeatable).",
)
@force_option
def run(pipeline: Path, work: Path | None, only: tuple[str, ...], force: bool) -> None:
    """Run every stage a pipeline file (TOML or YAML) names; cached stages are skipped."""
    from wsi_aug.pipeline import load_pipeline, run_pipeline

    show_library_log()
    config = load_pipeline(pipeline)
    root = Path(work or config.get("work") or "wsi-aug-work")
    runs = run_pipeline(
        config, work=root, force=force, only=only, report=click.echo, on_result=_stage_done
    )
    _print_outputs(runs)


@click.command()
@click.option(
    "--work",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("wsi-aug-work/demo"),
    show_default=True,
    help="Work folder.",
)
@force_option
def demo(work: Path, force: bool) -> None:
    """Run the whole pipeline on phantom slides the tool makes itself (tiny models, CPU)."""
    from importlib.resources import as_file, files

    from wsi_aug.pipeline import load_pipeline, run_pipeline

    show_library_log()
    click.echo(
        f"demo: the whole pipeline on 4 phantom slides with tiny models, into {work}; "
        f"{DEMO_MINUTES} on an idle 2-core CPU (longer on a busy one; a rerun is cached)\n"
    )
    source = files("wsi_aug.resources").joinpath("demo.toml")
    with as_file(source) as path:
        config = load_pipeline(path)
    runs = run_pipeline(config, work=work, force=force, report=click.echo, on_result=_stage_done)
    _print_outputs(runs)
