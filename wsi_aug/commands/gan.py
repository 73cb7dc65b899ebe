"""`wsi-aug train-gan` and `wsi-aug synthesize`: parse options, call the library, report.

The library is imported inside the command bodies so that ``wsi-aug --help`` stays fast.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from wsi_aug.options import (
    device_option,
    force_option,
    run_stage_message,
    seed_option,
    work_option,
)


def _show_library_log() -> None:
    """Print the library's info lines (resume, fast-path notes) as plain lines on stderr."""
    logger = logging.getLogger("wsi_aug")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


@click.command("train-gan")
@work_option
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Passes over the positive train patches.",
)
@click.option(
    "--pairs-per-step",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Pairs of different conditions per step (batch = 2 x this; the paper: 1).",
)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    default=2e-4,
    show_default=True,
    help="Adam learning rate of G and D.",
)
@click.option(
    "--l1-weight",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Weight λ of the L1 term.",
)
@click.option(
    "--ms-weight",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Weight μ of the mode-seeking term (0 disables it).",
)
@click.option(
    "--d-conditional",
    is_flag=True,
    help="Ablation: D also sees the condition (Pix2Pix) instead of the image alone.",
)
@click.option(
    "--no-structure",
    is_flag=True,
    help="Ablation: condition on the mask alone, without the structure map.",
)
@click.option(
    "--disc",
    type=click.Choice(["paper", "patch"]),
    default="paper",
    show_default=True,
    help="Discriminator: the paper's, or the Pix2Pix 70x70 PatchGAN.",
)
@click.option(
    "--ngf",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Generator width (first layer's channels).",
)
@click.option(
    "--ndf",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Discriminator width (first layer's channels).",
)
@seed_option
@device_option
@click.option(
    "--fast/--no-fast",
    default=None,
    help="Capture the training step as one CUDA graph (default: on with CUDA; ignored on the CPU).",
)
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Write a checkpoint every this many epochs (and at the end).",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue an interrupted run, or a finished one when more epochs are asked.",
)
@force_option
@click.option(
    "--max-steps",
    type=click.IntRange(min=1),
    default=None,
    help="Stop after this many steps in total (for trials and benchmarks).",
)
def train_gan(
    work: Path,
    epochs: int,
    pairs_per_step: int,
    lr: float,
    l1_weight: float,
    ms_weight: float,
    d_conditional: bool,
    no_structure: bool,
    disc: str,
    ngf: int,
    ndf: int,
    seed: int,
    device: str,
    fast: bool | None,
    checkpoint_every: int,
    resume: bool,
    force: bool,
    max_steps: int | None,
) -> None:
    """Train the mode-seeking Pix2Pix GAN on the positive train patches (writes gan.zarr).

    Under `torchrun --nproc-per-node N -m wsi_aug train-gan ...` it trains with
    DistributedDataParallel; rank 0 writes the store.
    """
    from wsi_aug.gan.train import train_gan as run

    _show_library_log()
    result = run(
        work,
        epochs=epochs,
        pairs_per_step=pairs_per_step,
        lr=lr,
        l1_weight=l1_weight,
        ms_weight=ms_weight,
        d_conditional=d_conditional,
        no_structure=no_structure,
        disc=disc,
        ngf=ngf,
        ndf=ndf,
        seed=seed,
        device=device,
        checkpoint_every=checkpoint_every,
        fast=fast,
        resume=resume,
        force=force,
        max_steps=max_steps,
    )
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        run_stage_message("train-gan", result)


@click.command("synthesize")
@work_option
@click.option(
    "--n",
    "n",
    type=click.IntRange(min=1),
    required=True,
    help="Number of synthetic patches to generate.",
)
@click.option(
    "--source",
    type=click.Choice(["augment", "real"]),
    default="augment",
    show_default=True,
    help="Conditions: augment (new, jointly deformed masks and structure maps) or "
    "real (the train conditions, cycling).",
)
@seed_option
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Patches generated per batch.",
)
@device_option
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Generator checkpoint (default: the latest of gan.zarr).",
)
@click.option(
    "--export-png",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Also write DIR/images/000000.png and DIR/masks/000000.png (0/255).",
)
@click.option(
    "--dropout",
    is_flag=True,
    help="Keep the generator's dropout on, as Pix2Pix does at test time: one condition gives "
    "several images (still deterministic for --seed and --batch-size).",
)
@force_option
def synthesize(
    work: Path,
    n: int,
    source: str,
    seed: int,
    batch_size: int,
    device: str,
    checkpoint: Path | None,
    export_png: Path | None,
    dropout: bool,
    force: bool,
) -> None:
    """Generate synthetic patches with the trained generator (writes synthetic.zarr)."""
    from wsi_aug.synthesize import synthesize as run

    _show_library_log()
    result = run(
        work,
        n=n,
        source=source,
        seed=seed,
        batch_size=batch_size,
        device=device,
        checkpoint=checkpoint,
        export_png=export_png,
        dropout=dropout,
        force=force,
    )
    run_stage_message("synthesize", result)
    if export_png is not None:
        click.echo(f"synthesize: PNGs in {export_png}")
