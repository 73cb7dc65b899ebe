"""`wsi-aug info`: describe slides, annotation files, or the stage stores of a work folder.

Its slide and annotation options are the extract stage's own (`ExtractParams`), so the two
commands read files alike.
"""

from __future__ import annotations

from pathlib import Path

import click

from wsi_aug.options import params_options, work_option
from wsi_aug.stages.extract import ExtractParams

ANNOTATION_SUFFIXES = {".geojson", ".json", ".xml", ".annotations"}  # read.ANNOTATION_SUFFIXES
_SHARED = ("backend", "slide_mpp", "labels", "objects", "mask_value", "mask_channel")


def _check_stores(work: Path) -> None:
    """`info --check`: every store read in full; one line each; exit 2 if any is damaged."""
    from wsi_aug.store import verify, work_stores

    bad = 0
    click.echo("\ncheck:")
    for path in work_stores(work) if work.is_dir() else []:
        problem = verify(path)
        bad += problem is not None
        click.echo(f"  {path.relative_to(work)}: {problem or 'ok'}")
    if bad:
        raise SystemExit(2)


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@work_option
@click.option(
    "--as-annotation",
    is_flag=True,
    help="Read every PATH as an annotation file "
    "(for mask images, which would otherwise be read as slides).",
)
@click.option(
    "--check",
    is_flag=True,
    help="With no PATHS: verify every store of the work folder fully (every chunk present and "
    "readable); exit 2 if one is damaged.",
)
@params_options(ExtractParams, only=_SHARED)
def info(
    paths: tuple[Path, ...],
    work: Path,
    as_annotation: bool,
    check: bool,
    backend: str,
    slide_mpp: float | None,
    labels: tuple[str, ...],
    objects: tuple[str, ...],
    mask_value: int | None,
    mask_channel: int | None,
) -> None:
    """Describe slides (vendor, backend, levels, mpp, objective, associated images) and
    annotation files (the format found, objects per class; what was repaired, dropped or
    skipped); with no PATHS, the stage stores of the work folder."""
    from wsi_aug.errors import WsiAugError

    if not paths:
        from wsi_aug.stages.registry import stages
        from wsi_aug.store import describe_work

        click.echo(describe_work(work, [(s.name, s.store) for s in stages()]))
        if check:
            _check_stores(work)
        return

    failures = 0
    for path in paths:
        try:
            if as_annotation or path.suffix.lower() in ANNOTATION_SUFFIXES:
                from wsi_aug.annotations.read import read_annotations, summarise

                aset = read_annotations(
                    path,
                    objects=objects,
                    label=labels[0],
                    mask_value=mask_value,
                    mask_channel=mask_channel,
                )
                click.echo(summarise(aset))
            else:
                from wsi_aug.slides.info import format_slide_info, slide_info
                from wsi_aug.slides.open import open_slide

                with open_slide(path, backend=backend, slide_mpp=slide_mpp) as slide:
                    click.echo(format_slide_info(slide_info(slide)))
        except WsiAugError as exc:
            from wsi_aug.cli import one_line

            failures += 1
            click.echo(f"error: {one_line(str(exc))}", err=True)
        click.echo()
    if failures == len(paths):
        raise SystemExit(2)
