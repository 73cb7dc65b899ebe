"""Commands that run several stages: `run PIPELINE.toml` and `demo`."""

from __future__ import annotations

from pathlib import Path

import click

from wsi_aug.options import force_option

STAGE_NAMES = ("phantom", "extract", "structure", "train-gan", "synthesize", "eval-seg", "eval-gan")


def _print_outputs(work: Path) -> None:
    """Say where the results people look at are."""
    from wsi_aug.store import WorkDir

    wd = WorkDir(work)
    wanted = [
        wd.patches,
        wd.structure,
        wd.figures / "structure-grid.png",
        wd.gan,
        wd.synthetic,
        wd.eval_seg / "results.md",
        wd.eval_seg / "dice.png",
        wd.eval_gan / "results.md",
        wd.eval_gan / "grid.png",
    ]
    click.echo("outputs:")
    for p in wanted:
        if p.exists():
            click.echo(f"  {p}")
    for table in (wd.eval_seg / "results.md", wd.eval_gan / "results.md"):
        if table.exists():
            click.echo(f"\n{table}:\n{table.read_text()}")


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
    type=click.Choice(STAGE_NAMES),
    help="Run only these stages (repeatable).",
)
@force_option
def run(pipeline: Path, work: Path | None, only: tuple[str, ...], force: bool) -> None:
    """Run every stage a pipeline file (TOML or YAML) names; cached stages are skipped."""
    from wsi_aug.pipeline import load_pipeline, run_pipeline

    config = load_pipeline(pipeline)
    root = Path(work or config.get("work") or "wsi-aug-work")
    run_pipeline(config, work=root, force=force, only=only, report=click.echo)
    _print_outputs(root)


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

    source = files("wsi_aug.resources").joinpath("demo.toml")
    with as_file(source) as path:
        config = load_pipeline(path)
    run_pipeline(config, work=work, force=force, report=click.echo)
    _print_outputs(work)
