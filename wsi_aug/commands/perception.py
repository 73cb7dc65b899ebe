"""`wsi-aug perception-test` and `wsi-aug perception-score`: can people tell real from synthetic?"""

from __future__ import annotations

from pathlib import Path

import click

from wsi_aug.options import work_option


@click.command("perception-test")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@work_option
@click.option(
    "--n",
    "n",
    default=40,
    show_default=True,
    type=click.IntRange(min=2),
    help="Patches shown: half real (test/val glomeruli), half synthetic; even.",
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Random seed: which patches, and their order.",
)
def perception_test(out: Path, work: Path, n: int, seed: int) -> None:
    """Write OUT.html, a page showing real and synthetic patches one at a time; the viewer
    answers real or synthetic (keys R/S) and gets the accuracy and a CSV of the answers."""
    from wsi_aug.perception import perception_page

    path = perception_page(work, out, n=n, seed=seed)
    click.echo(f"perception test: {path} ({n} patches); open it in a browser")


@click.command("perception-score")
@click.argument(
    "answers", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--markdown",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the table to this Markdown file.",
)
def perception_score(answers: tuple[Path, ...], markdown: Path | None) -> None:
    """Pool the answers CSVs of several viewers: accuracy per viewer and pooled, Wilson 95 %
    interval, and a binomial test against chance (0.5)."""
    from wsi_aug.perception import score_files, scores_table

    table = scores_table(score_files(list(answers)))
    click.echo(table, nl=False)
    if markdown is not None:
        markdown.parent.mkdir(parents=True, exist_ok=True)
        markdown.write_text("perception test: real or synthetic?\n\n" + table)
        click.echo(f"written: {markdown}")
