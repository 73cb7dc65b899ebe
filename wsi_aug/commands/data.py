"""Commands that read slides and make the patch stores: info, phantom, extract, structure."""

from __future__ import annotations

from pathlib import Path

import click

from wsi_aug.options import (
    annotation_options,
    force_option,
    run_stage_message,
    seed_option,
    slide_options,
    work_option,
    workers_option,
)

ANNOTATION_SUFFIXES = {".geojson", ".json", ".xml"}


def _floats(text: str, n: int, name: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != n:
        raise click.BadParameter(
            f"give {n} comma-separated numbers, e.g. 0.6,0.2,0.2", param_hint=name
        )
    return values


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@work_option
@click.option(
    "--as-annotation",
    is_flag=True,
    help="Read every PATH as an annotation file "
    "(for mask images, which would otherwise be read as slides).",
)
@slide_options
@annotation_options
def info(
    paths: tuple[Path, ...],
    work: Path,
    as_annotation: bool,
    backend: str,
    slide_mpp: float | None,
    labels: tuple[str, ...],
    objects: tuple[str, ...],
    mask_value: int | None,
    mask_channel: int | None,
) -> None:
    """Describe slides (vendor, backend, levels, mpp, objective, associated images) and
    annotation files (objects per class; what was repaired, dropped or skipped); with no PATHS,
    the stage stores of the work folder."""
    from wsi_aug.errors import WsiAugError

    if not paths:
        from wsi_aug.store import describe_work

        click.echo(describe_work(work))
        return

    failures = 0
    for path in paths:
        try:
            if as_annotation or path.suffix.lower() in ANNOTATION_SUFFIXES:
                from wsi_aug.annotations.read import read_annotations, summarise

                aset = read_annotations(
                    path,
                    objects=objects or ("annotation",),
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
            failures += 1
            click.echo(f"error: {exc}", err=True)
        click.echo()
    if failures == len(paths):
        raise SystemExit(2)


@click.command()
@click.argument("out", required=False, type=click.Path(file_okay=False, path_type=Path))
@work_option
@click.option("--slides", "n_slides", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--width", type=click.IntRange(min=256), default=4096, show_default=True)
@click.option("--height", type=click.IntRange(min=256), default=3072, show_default=True)
@click.option("--mpp", type=float, default=0.5, show_default=True, help="Pixel size written.")
@seed_option
def phantom(
    out: Path | None, work: Path, n_slides: int, width: int, height: int, mpp: float, seed: int
) -> None:
    """Write synthetic PAS-like kidney slides (pyramidal JPEG TIFF) with GeoJSON glomeruli
    into OUT (default: WORK/slides)."""
    from wsi_aug.phantom import make_phantom_dataset

    out = out or work / "slides"
    pairs = make_phantom_dataset(
        out, slides=n_slides, seed=seed, width=width, height=height, mpp=mpp
    )
    for slide, ann in pairs:
        click.echo(f"{slide}  {ann.name}")


@click.command()
@click.argument("inputs", nargs=-1, type=click.Path(path_type=Path))
@work_option
@click.option(
    "--annotations",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of annotation files named like the slides (default: beside them).",
)
@click.option(
    "--manifest",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CSV with columns slide, annotation[, patient, split] instead of INPUTS.",
)
@click.option("--recursive", is_flag=True, help="Look for slides in sub-folders too.")
@click.option(
    "--size",
    type=click.IntRange(min=16),
    default=256,
    show_default=True,
    help="Patch side in pixels.",
)
@click.option(
    "--mpp",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Target resolution of the patches, micrometres per pixel.",
)
@click.option(
    "--negatives",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Random tissue windows without glomeruli per slide (for segmentation).",
)
@click.option(
    "--split",
    "split_text",
    default="0.6,0.2,0.2",
    show_default=True,
    help="Train,val,test fractions of patients (or slides where none is given).",
)
@click.option(
    "--min-area",
    type=click.FloatRange(min=0),
    default=500.0,
    show_default=True,
    help="Objects under this area (square micrometres) get no patch of their own.",
)
@seed_option
@workers_option
@click.option(
    "--scheduler",
    default=None,
    help="Address of a Dask scheduler to send the per-slide tasks to (wsi-aug[dask]).",
)
@slide_options
@annotation_options
@force_option
def extract(
    inputs: tuple[Path, ...],
    work: Path,
    annotations: Path | None,
    manifest: Path | None,
    recursive: bool,
    size: int,
    mpp: float,
    negatives: int,
    split_text: str,
    min_area: float,
    seed: int,
    workers: int,
    scheduler: str | None,
    backend: str,
    slide_mpp: float | None,
    labels: tuple[str, ...],
    objects: tuple[str, ...],
    mask_value: int | None,
    mask_channel: int | None,
    force: bool,
) -> None:
    """Extract glomerulus-centred patches (and masks) from slides into WORK/patches.zarr.

    INPUTS are slide files or folders; each slide pairs with an annotation file of the same
    name (QuPath GeoJSON, ASAP or ImageScope XML, LabelMe JSON, or a mask image).
    """
    from wsi_aug.extract import ExtractParams
    from wsi_aug.extract import extract as run

    if not inputs and manifest is None:
        raise click.UsageError("give slide files or folders, or --manifest CSV")
    params = ExtractParams(
        size=size,
        mpp=mpp,
        labels=tuple(labels),
        negatives=negatives,
        split=_floats(split_text, 3, "--split"),
        seed=seed,
        min_area=min_area,
        objects=tuple(objects) or ("annotation",),
        mask_value=mask_value,
        mask_channel=mask_channel,
        backend=None if backend == "auto" else backend,
        slide_mpp=slide_mpp,
    )
    result = run(
        inputs,
        work,
        params=params,
        annotations=annotations,
        manifest=manifest,
        recursive=recursive,
        workers=workers,
        scheduler=scheduler,
        force=force,
        report=click.echo,
    )
    run_stage_message("extract", result)


@click.command()
@work_option
@click.option(
    "--method",
    type=click.Choice(["otsu", "fixed"]),
    default="otsu",
    show_default=True,
    help="Threshold per patch by Otsu, or at a fixed level.",
)
@click.option(
    "--channel",
    type=click.Choice(["grey", "saturation", "hematoxylin"]),
    default="grey",
    show_default=True,
    help="Stain channel thresholded.",
)
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1),
    default=None,
    help="Level for --method fixed, 0 to 1 on the channel (higher = more stain).",
)
@click.option(
    "--min-size",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Remove structures smaller than this many pixels.",
)
@click.option(
    "--keep-background",
    is_flag=True,
    help="Threshold over the whole patch, glass and white padding included (default: tissue only).",
)
@force_option
def structure(
    work: Path,
    method: str,
    channel: str,
    threshold: float | None,
    min_size: int,
    keep_background: bool,
    force: bool,
) -> None:
    """Make a binary structure map per patch into WORK/structure.zarr (and a PNG grid)."""
    from wsi_aug.store import WorkDir
    from wsi_aug.structure import build_structure

    result = build_structure(
        work,
        method=method,
        channel=channel,
        threshold=threshold,
        min_size=min_size,
        ignore_background=not keep_background,
        force=force,
    )
    run_stage_message("structure", result)
    grid = WorkDir(work).figures / "structure-grid.png"
    if grid.exists():
        click.echo(f"grid: {grid}")
