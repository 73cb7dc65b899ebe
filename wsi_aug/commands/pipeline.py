"""Commands that run several stages: `run PIPELINE.toml` and `demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from wsi_aug.options import force_option, report_result, show_library_log
from wsi_aug.stages.registry import NAMES

DEMO_WORK = Path("wsi-aug-work/demo")
DEMO_MINUTES = {"quick": "about 4 minutes", "full": "more than 5 minutes"}  # measured: README


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
    default=DEMO_WORK,
    show_default=True,
    help="Work folder.",
)
@click.option(
    "--full",
    is_flag=True,
    help="The longer demo (more training, about 5 minutes), into WORK-full by default.",
)
@force_option
def demo(work: Path, full: bool, force: bool) -> None:
    """Run the whole pipeline on phantom slides the tool makes itself (tiny models, CPU)."""
    import time
    from importlib.resources import as_file, files

    from wsi_aug.pipeline import load_pipeline, run_pipeline

    show_library_log()
    if full and work == DEMO_WORK:
        work = DEMO_WORK.with_name(DEMO_WORK.name + "-full")
    minutes = DEMO_MINUTES["full" if full else "quick"]
    click.echo(
        f"demo: the whole pipeline on 4 phantom slides with tiny models, into {work}; "
        f"{minutes} on an idle 2-core CPU (longer on a busy one; a rerun is cached)\n"
    )
    start = time.monotonic()
    source = files("wsi_aug.resources").joinpath("demo-full.toml" if full else "demo.toml")
    with as_file(source) as path:
        config = load_pipeline(path)
    runs = run_pipeline(config, work=work, force=force, report=click.echo, on_result=_stage_done)
    _print_outputs(runs)
    took = time.monotonic() - start
    click.echo(f"\ndemo: done in {int(took // 60)} min {took % 60:.0f} s")
