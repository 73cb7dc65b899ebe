"""Synthetic patches from the trained generator: the `synthetic` stage (``<work>/synthetic.zarr``).

Conditions come from `wsi_aug.conditions` (``augment``: new, jointly deformed masks and structure
maps; ``real``: the train conditions). The generator runs batched in eval mode (bf16 autocast and
channels_last on CUDA); on the CPU the same seed gives identical arrays. ``dropout=True`` keeps
the decoder's dropout active, as Pix2Pix does at test time, so that one condition gives several
images (its masks come from a generator seeded by ``seed``). The store holds ``images``
(N,S,S,3) uint8, ``masks`` and ``structure`` (N,S,S) uint8 {0,1}, and a ``provenance`` table
(source_index, source, transform, seed, checkpoint) saying how each sample was made.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from wsi_aug import store
from wsi_aug.conditions import SOURCES, load_train_conditions, make_source
from wsi_aug.device import resolve_device
from wsi_aug.errors import CheckpointError, StageMissingError, WsiAugError
from wsi_aug.gan.checkpoints import latest_checkpoint, load_generator
from wsi_aug.gan.data import condition_array, input_fingerprints, open_inputs, to_uint8_image
from wsi_aug.gan.models import (
    GanConfig,
    GeneratorDropout,
    derived_seed,
    set_dropout_generator,
)

STAGE = "synthetic"
GAN_BY = "wsi-aug train-gan"


def resolve_checkpoint(work: Path, checkpoint: Path | None = None) -> tuple[Path, GanConfig]:
    """The checkpoint to generate with (default: the gan store's latest) and the store's config."""
    wd = store.WorkDir(Path(work))
    gan = store.open_stage(wd.gan, stage="gan", made_by=GAN_BY)
    try:
        cfg = GanConfig.from_dict(dict(gan.attrs["config"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise StageMissingError(
            f"{wd.gan}: no usable GAN config in its attributes ({exc}); "
            f"rebuild it with `{GAN_BY} --force`"
        ) from exc
    if checkpoint is None:
        found = latest_checkpoint(wd.gan / "checkpoints")
        if found is None:
            raise StageMissingError(
                f"{wd.gan}: holds no checkpoint; rebuild it with `{GAN_BY} --force`"
            )
        return found, cfg
    path = Path(checkpoint)
    if not path.is_file():
        raise CheckpointError(
            f"{path}: no such checkpoint file; pass an existing --checkpoint "
            f"(default: the latest of {wd.gan})"
        )
    return path, cfg


def synthesize(
    work: Path,
    *,
    n: int,
    source: str = "augment",
    seed: int = 0,
    batch_size: int = 64,
    device: str = "auto",
    checkpoint: Path | None = None,
    export_png: Path | None = None,
    dropout: bool = False,
    force: bool = False,
    progress: bool = True,
) -> store.StageResult:
    """Generate `n` synthetic patches with their conditions; writes ``<work>/synthetic.zarr``.

    Cached on the gan store, the checkpoint file and the patches/structure stores, and on
    (n, source, seed). ``export_png`` also writes ``DIR/images/000000.png`` and
    ``DIR/masks/000000.png`` (mask as 0/255) for other tools. ``dropout`` keeps dropout on
    (Pix2Pix's test-time noise); the images then also depend on ``batch_size``, which joins the
    cache key.
    """
    if n < 1 or batch_size < 1:
        raise WsiAugError("--n and --batch-size must be at least 1")
    if seed < 0:
        raise WsiAugError(f"--seed {seed}: must be 0 or more")
    if source not in SOURCES:
        raise WsiAugError(f"--source {source}: unknown; use one of {', '.join(SOURCES)}")
    work = Path(work)
    wd = store.WorkDir(work)
    ckpt, cfg = resolve_checkpoint(work, checkpoint)
    patches, _ = open_inputs(work)
    size = int(patches["masks"].shape[-1])
    inputs = {
        "gan": store.stage_fingerprint(wd.gan),
        "checkpoint": store.fingerprint_file(ckpt),
        **input_fingerprints(work),
    }
    params: dict[str, Any] = {"n": n, "source": source, "seed": seed}
    if dropout:  # only then: stores made without it keep their keys
        params.update(dropout=True, batch_size=batch_size)
    cached = store.cached_result(
        wd.synthetic, stage=STAGE, params=params, inputs=inputs, force=force
    )
    if cached is not None:
        if export_png is not None:
            export_pngs(cached.path, export_png, progress=progress)
        return cached
    dev = resolve_device(device)
    generator, _ = load_generator(ckpt, expected=cfg, device=dev)
    if cfg.size != size:
        raise CheckpointError(
            f"{ckpt}: made for {cfg.size} px patches, {wd.patches} holds {size} "
            f"px; retrain with `{GAN_BY}` or pass the matching --checkpoint"
        )
    if dropout:
        layers = [m for m in generator.modules() if isinstance(m, GeneratorDropout)]
        if not layers:
            raise WsiAugError(
                f"{ckpt}: this generator has no dropout layers (its config sets dropout = 0); "
                "synthesize without --dropout"
            )
        for m in layers:
            m.train()  # batch norm stays in eval mode: running statistics
        noise = torch.Generator(device=dev)
        noise.manual_seed(derived_seed(seed, 3))
        set_dropout_generator(generator, noise)
    masks, maps, rows = load_train_conditions(work)
    conditions = make_source(source, masks, maps, rows, seed)
    cuda = dev.type == "cuda"
    if cuda:
        generator = generator.to(memory_format=torch.channels_last)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()
    provenance: dict[str, list[Any]] = {
        "source_index": [],
        "source": [],
        "transform": [],
        "seed": [],
        "checkpoint": [],
    }
    with store.build(wd.synthetic, stage=STAGE, params=params, inputs=inputs) as group:
        images = store.create_stack(group, "images", (n, size, size, 3))
        out_masks = store.create_stack(group, "masks", (n, size, size))
        out_structure = store.create_stack(group, "structure", (n, size, size))
        with tqdm(total=n, unit="img", desc="synthesize", disable=not progress) as bar:
            for start in range(0, n, batch_size):
                count = min(batch_size, n - start)
                batch = conditions.batch(start, count, device=dev)
                x = torch.from_numpy(
                    condition_array(batch.masks, batch.structure, cfg.no_structure)
                ).to(dev)
                if cuda:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.no_grad(), autocast:
                    y = generator(x)
                images[start : start + count] = to_uint8_image(y)
                out_masks[start : start + count] = batch.masks
                out_structure[start : start + count] = batch.structure
                provenance["source_index"] += batch.source_index.tolist()
                provenance["source"] += [source] * count
                provenance["transform"] += batch.transform
                provenance["seed"] += batch.seed.tolist()
                provenance["checkpoint"] += [inputs["checkpoint"]] * count
                bar.update(count)
        store.write_table(
            group,
            "provenance",
            {
                "source_index": np.asarray(provenance["source_index"], np.int64),
                "source": provenance["source"],
                "transform": provenance["transform"],
                "seed": np.asarray(provenance["seed"], np.int64),
                "checkpoint": provenance["checkpoint"],
            },
        )
        group.attrs.update(
            {
                "size": size,
                "n": n,
                "source": source,
                "seed": seed,
                "dropout": bool(dropout),
                "checkpoint": str(ckpt),
                "config": cfg.to_dict(),
            }
        )
    result = store.StageResult(wd.synthetic, False, store.read_meta(wd.synthetic) or {})
    if export_png is not None:
        export_pngs(result.path, export_png, progress=progress)
    return result


def export_pngs(synthetic: Path, out: Path, *, progress: bool = False, chunk: int = 256) -> Path:
    """Write ``out/images/NNNNNN.png`` (RGB) and ``out/masks/NNNNNN.png`` (0/255) from a store."""
    from PIL import Image

    group = store.open_stage(synthetic, stage=STAGE, made_by="wsi-aug synthesize")
    images, masks = group["images"], group["masks"]
    n = images.shape[0]
    width = max(6, len(str(n - 1)))
    (Path(out) / "images").mkdir(parents=True, exist_ok=True)
    (Path(out) / "masks").mkdir(parents=True, exist_ok=True)
    with tqdm(total=n, unit="png", desc="export", disable=not progress) as bar:
        for start in range(0, n, chunk):
            imgs, ms = images[start : start + chunk], masks[start : start + chunk]
            for k in range(len(imgs)):
                name = f"{start + k:0{width}d}.png"
                Image.fromarray(np.asarray(imgs[k], np.uint8)).save(Path(out) / "images" / name)
                Image.fromarray((np.asarray(ms[k]) > 0).astype(np.uint8) * 255).save(
                    Path(out) / "masks" / name
                )
            bar.update(len(imgs))
    return Path(out)
