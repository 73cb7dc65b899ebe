"""`wsi-aug report`: one self-contained HTML page of a work folder."""

from __future__ import annotations

from pathlib import Path

import click

from wsi_aug.options import work_option


@click.command()
@click.argument("out", required=False, type=click.Path(dir_okay=False, path_type=Path))
@work_option
def report(out: Path | None, work: Path) -> None:
    """Write OUT (default WORK/report.html): every stage's state, parameters, inputs, tables and
    figures, in one HTML file that opens offline (images embedded)."""
    from wsi_aug.report import write_report

    path = write_report(work, out)
    click.echo(f"report: {path}")
