"""The evaluation commands: eval-seg (does synthetic data help a U-Net?) and eval-gan."""

from __future__ import annotations

from pathlib import Path

import click

from wsi_aug.options import device_option, force_option, seed_option, work_option


@click.command()
@work_option
@click.option(
    "--synthetic-ratio",
    "synthetic_ratios",
    multiple=True,
    default=("0.5",),
    show_default=True,
    help="Fraction of synthetic training samples (0 real only, 1 synthetic only); repeat it or "
    "give a comma list (0,0.5,1) for a sweep.",
)
@click.option(
    "--real-fraction",
    type=click.FloatRange(0, 1, min_open=True),
    default=1.0,
    show_default=True,
    help="Keep only this fraction of the real training patches (chosen with the seed).",
)
@click.option(
    "--seeds",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="U-Nets per ratio (seeds --seed, --seed+1, ...); mean and std are reported.",
)
@seed_option
@click.option("--epochs", type=click.IntRange(min=1), default=50, show_default=True)
@click.option(
    "--samples-per-epoch",
    type=click.IntRange(min=1),
    default=None,
    help="Training samples per epoch (default: the number of real training patches).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-4, show_default=True)
@click.option(
    "--width",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Filter multiplier: 64 x width filters at the top level.",
)
@click.option("--batch-norm", is_flag=True, help="Add batch normalisation after each convolution.")
@click.option(
    "--padding",
    type=click.Choice(["same", "valid"]),
    default="same",
    show_default=True,
    help="'valid' is the unpadded U-Net: smaller output, targets centre-cropped.",
)
@click.option("--no-augment", is_flag=True, help="Train without data augmentation.")
@click.option(
    "--min-object-area",
    type=click.FloatRange(min=0),
    default=1000.0,
    show_default=True,
    help="Object precision/recall/F1 count only components of at least this area in µm² "
    "(holes filled), in prediction and ground truth; Dice is on the raw output. 0 disables "
    "the clean-up.",
)
@device_option
@force_option
def eval_seg(
    work: Path,
    synthetic_ratios: tuple[str, ...],
    real_fraction: float,
    seeds: int,
    seed: int,
    epochs: int,
    samples_per_epoch: int | None,
    batch_size: int,
    lr: float,
    width: float,
    batch_norm: bool,
    padding: str,
    no_augment: bool,
    min_object_area: float,
    device: str,
    force: bool,
) -> None:
    """Train U-Nets on real + synthetic patches and score them on the real test split."""
    from wsi_aug.eval_seg import eval_seg as run
    from wsi_aug.eval_seg import parse_ratios

    result = run(
        work,
        synthetic_ratios=parse_ratios(synthetic_ratios),
        real_fraction=real_fraction,
        seeds=seeds,
        seed=seed,
        epochs=epochs,
        samples_per_epoch=samples_per_epoch,
        batch_size=batch_size,
        lr=lr,
        width=width,
        batch_norm=batch_norm,
        padding=padding,
        augment=not no_augment,
        min_object_area=min_object_area,
        device=device,
        force=force,
    )
    state = "cached" if result.cached else "built"
    click.echo(f"eval-seg: {result.markdown} and {result.plot} [{state}]\n")
    click.echo(result.table, nl=False)


@click.command()
@work_option
@click.option(
    "--unet-epochs",
    type=click.IntRange(min=1),
    default=30,
    show_default=True,
    help="Epochs of the real-trained U-Net used for mask consistency and features.",
)
@click.option(
    "--unet-width",
    type=click.FloatRange(min=0, min_open=True),
    default=0.25,
    show_default=True,
    help="That U-Net's filter multiplier (64 x width at the top).",
)
@click.option(
    "--unet-samples-per-epoch",
    type=click.IntRange(min=1),
    default=None,
    help="That U-Net's training samples per epoch (default: the real train set).",
)
@click.option(
    "--n-pairs",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="Image pairs per set for the diversity measures.",
)
@click.option(
    "--max-images",
    type=click.IntRange(min=2),
    default=1000,
    show_default=True,
    help="At most this many images of each set are compared.",
)
@seed_option
@device_option
@force_option
def eval_gan(
    work: Path,
    unet_epochs: int,
    unet_width: float,
    unet_samples_per_epoch: int | None,
    n_pairs: int,
    max_images: int,
    seed: int,
    device: str,
    force: bool,
) -> None:
    """Measure the synthetic set against the real patches: diversity, structure, masks, colour."""
    from wsi_aug.eval_gan import eval_gan as run

    result = run(
        work,
        n_pairs=n_pairs,
        seed=seed,
        device=device,
        unet_epochs=unet_epochs,
        unet_width=unet_width,
        unet_samples_per_epoch=unet_samples_per_epoch,
        max_images=max_images,
        force=force,
    )
    state = "cached" if result.cached else "built"
    click.echo(f"eval-gan: {result.markdown} and {result.grid} [{state}]\n")
    click.echo(result.table, nl=False)
