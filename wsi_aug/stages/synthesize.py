"""Stage `synthesize`: synthetic patches from the trained generator, into ``synthesize.zarr``.

The store holds ``images`` (N, S, S, 3) uint8, ``masks`` and ``structure`` (N, S, S) uint8 in
{0, 1}, and a ``provenance`` table saying how each sample was made (`Provenance`);
`SyntheticStore` reads it and no other module knows those names. Conditions come from
`wsi_aug.conditions` (``learned`` ones from the ``train-conditions`` model, `wsi_aug.condgen`); the
generator runs in `wsi_aug.gan.synth`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import field_validator

from wsi_aug.stages.base import Stage, StageParams, StageResult, StageStore, param

if TYPE_CHECKING:
    import zarr

NAME = "synthesize"
MADE_BY = "wsi-aug synthesize --n N"
_IMAGES, _MASKS, _STRUCTURE, _PROVENANCE = "images", "masks", "structure", "provenance"


class SynthesizeParams(StageParams):
    """How many synthetic patches, from which conditions and checkpoint."""

    stage = NAME

    n: int = param(..., "Number of synthetic patches to generate.", ge=1)
    source: str = param(
        "augment",
        "Conditions: augment (new, jointly deformed masks and structure maps), real (the "
        "train conditions, cycling), learned (drawn from the `wsi-aug train-conditions` model), "
        "or a mix with weights such as learned:0.5,augment:0.5.",
    )
    seed: int = param(0, "Random seed (conditions, and dropout noise with --dropout).", ge=0)
    batch_size: int = param(64, "Patches generated per batch.", ge=1)
    dropout: bool = param(
        False,
        "Keep the generator's dropout on, as Pix2Pix does at test time: one condition gives "
        "several images (still deterministic for --seed and --batch-size).",
    )
    checkpoint: Path | None = param(
        None, "Generator checkpoint (default: the latest of train-gan/checkpoints).", key=False
    )
    condition_steps: int = param(
        50, "DDIM steps per learned condition (only with --source learned or a mix).", ge=1
    )
    condition_checkpoint: Path | None = param(
        None,
        "Condition-model checkpoint for learned conditions (default: the latest of "
        "train-conditions/checkpoints).",
        key=False,
    )
    export_png: Path | None = param(
        None, "Also write DIR/images/000000.png and DIR/masks/000000.png (0/255).", key=False
    )
    device: str = param(
        "auto", "torch device: auto (CUDA when present, else CPU), cpu, cuda ...", key=False
    )

    @field_validator("source")
    @classmethod
    def _source_spec(cls, value: str) -> str:
        """A known source or a mix of them with positive weights, written canonically."""
        from wsi_aug.condgen.mix import canonical_source

        return canonical_source(value)

    @property
    def uses_learned(self) -> bool:
        """True when some conditions come from the trained condition model."""
        from wsi_aug.condgen.mix import parse_mix

        return any(name == "learned" for name, _ in parse_mix(self.source))

    def key_dict(self) -> dict[str, Any]:
        """Without dropout the batch size does not change the images: it stays out of the key.

        The DDIM step count counts only for learned conditions (other stores keep their key).
        """
        d = super().key_dict()
        if not self.dropout:
            d.pop("batch_size")
            d.pop("dropout")
        if not self.uses_learned:
            d.pop("condition_steps")
        return d


@dataclass(frozen=True)
class Provenance:
    """Per synthetic sample: the real condition it came from, the transform, seed, checkpoint."""

    source_index: np.ndarray = field(metadata={"dtype": np.int64})  # row in extract.zarr; -1: none
    source: np.ndarray  # str: augment / real / learned
    transform: np.ndarray  # str: the joint transform, or the condition model's fingerprint
    seed: np.ndarray = field(metadata={"dtype": np.int64})  # that transform's generator seed
    checkpoint: np.ndarray  # str: the generator checkpoint's fingerprint

    @classmethod
    def columns(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_lists(cls, cols: dict[str, list[Any]]) -> Provenance:
        kinds = {f.name: f.metadata.get("dtype", str) for f in fields(cls)}
        return cls(**{c: np.asarray(cols[c], dtype=kinds[c]) for c in cls.columns()})


class SyntheticStore(StageStore):
    """A complete ``synthesize.zarr``, read-only."""

    NAME = NAME
    MADE_BY = MADE_BY

    @property
    def images(self) -> zarr.Array[Any]:
        """(N, S, S, 3) uint8 synthetic patches."""
        arr: zarr.Array[Any] = self.array(_IMAGES)
        return arr

    @property
    def masks(self) -> zarr.Array[Any]:
        """(N, S, S) uint8 glomerulus masks in {0, 1}: the conditions' masks."""
        arr: zarr.Array[Any] = self.array(_MASKS)
        return arr

    @property
    def structure(self) -> zarr.Array[Any]:
        """(N, S, S) uint8 structure maps in {0, 1}: the conditions' maps."""
        arr: zarr.Array[Any] = self.array(_STRUCTURE)
        return arr

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    def read_all(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every image, mask and structure map, in memory."""
        from wsi_aug import store

        return (
            store.read_all(self.images),
            store.read_all(self.masks),
            store.read_all(self.structure),
        )

    @property
    def provenance(self) -> Provenance:
        from wsi_aug import store

        cols = store.read_table(self.group, _PROVENANCE)
        return Provenance(**{c: cols[c] for c in Provenance.columns()})


class SyntheticWriter:
    """Writes a ``synthesize.zarr`` being built: arrays of a known length, then provenance."""

    def __init__(self, group: zarr.Group, n: int, size: int) -> None:
        from wsi_aug import store

        self.group = group
        self.images = store.create_stack(group, _IMAGES, (n, size, size, 3))
        self.masks = store.create_stack(group, _MASKS, (n, size, size))
        self.structure = store.create_stack(group, _STRUCTURE, (n, size, size))
        self._prov: dict[str, list[Any]] = {c: [] for c in Provenance.columns()}

    def write(
        self,
        start: int,
        images: np.ndarray,
        masks: np.ndarray,
        structure: np.ndarray,
        provenance: dict[str, list[Any]],
    ) -> None:
        """Samples start .. start + len(images), with their provenance columns."""
        end = start + len(images)
        self.images[start:end] = images
        self.masks[start:end] = masks
        self.structure[start:end] = structure
        for c in Provenance.columns():
            self._prov[c] += list(provenance[c])

    def finish(self, attrs: dict[str, Any]) -> None:
        from wsi_aug import store

        store.write_table(self.group, _PROVENANCE, Provenance.from_lists(self._prov).__dict__)
        self.group.attrs.update(attrs)


def synthesize(
    work: str | Path,
    params: SynthesizeParams | None = None,
    *,
    force: bool = False,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
    **overrides: Any,
) -> StageResult:
    """Stage: generate ``n`` synthetic patches with their conditions into ``synthesize.zarr``.

    Cached on the GAN store, the checkpoint file and the patch/structure stores (with learned
    conditions also on the condition store and its checkpoint), and on (n, source, seed; batch
    size too with dropout).
    """
    from wsi_aug import store
    from wsi_aug.conditions import make_source
    from wsi_aug.device import resolve_device
    from wsi_aug.errors import CheckpointError, WsiAugError
    from wsi_aug.gan.synth import Generation
    from wsi_aug.stages.structure import PairedStores
    from wsi_aug.stages.train_gan import GanStore

    p = SynthesizeParams.build(params, **overrides)
    wd = store.WorkDir(Path(work))
    wd.check_layout(force)
    gan = GanStore.open(work)
    cfg = gan.config
    ckpt = _checkpoint(gan, p.checkpoint)
    pairs = PairedStores(work)
    inputs = {
        "gan": gan.fingerprint(),
        "checkpoint": store.fingerprint_file(ckpt),
        **pairs.fingerprints(),
    }
    learned_ckpt = None
    if p.uses_learned:
        from wsi_aug.stages.train_conditions import ConditionStore

        cond_store = ConditionStore.open(work)
        learned_ckpt = _checkpoint(cond_store, p.condition_checkpoint, "--condition-checkpoint")
        inputs["conditions"] = cond_store.fingerprint()
        inputs["condition_checkpoint"] = store.fingerprint_file(learned_ckpt)
    key = p.key_dict()
    cached = store.cached_result(wd.synthetic, stage=NAME, params=key, inputs=inputs, force=force)
    if cached is not None:
        made = (export_pngs(work, p.export_png, progress=progress),) if p.export_png else ()
        return StageResult(cached.path, True, cached.meta, outputs=made)
    size = pairs.patches.size
    if cfg.size != size:
        raise CheckpointError(
            f"{ckpt}: made for {cfg.size} px patches, {pairs.patches.path} holds {size} "
            f"px; retrain with `wsi-aug train-gan` or pass the matching --checkpoint"
        )
    train = pairs.load("train", positive=True)
    if len(train) == 0:
        raise WsiAugError(
            f"{pairs.patches.path}: no positive train patch to take conditions from; "
            "extract glomeruli with `wsi-aug extract`"
        )
    dev = resolve_device(p.device)
    gen = Generation(ckpt, cfg, dev, dropout_seed=p.seed if p.dropout else None)
    learned = None
    if learned_ckpt is not None:
        pool = pairs.patches.padding_insets(train.rows)
        learned = _learned_source(learned_ckpt, inputs["condition_checkpoint"], size, dev, p, pool)
    conditions = make_source(p.source, train.masks, train.maps, train.rows, p.seed, learned=learned)
    with store.build(wd.synthetic, stage=NAME, params=key, inputs=inputs) as group:
        writer = SyntheticWriter(group, p.n, size)
        _generate(writer, conditions, gen, p, inputs["checkpoint"], dev, progress)
        writer.finish(
            {
                "size": size,
                "n": p.n,
                "source": p.source,
                "seed": p.seed,
                "dropout": p.dropout,
                "checkpoint": str(ckpt),
                "config": cfg.to_dict(),
                **({"condition_checkpoint": str(learned_ckpt)} if learned_ckpt else {}),
            }
        )
    made = (export_pngs(work, p.export_png, progress=progress),) if p.export_png else ()
    return StageResult(wd.synthetic, False, store.read_meta(wd.synthetic) or {}, outputs=made)


def _checkpoint(model_store: Any, given: Path | None, option: str = "--checkpoint") -> Path:
    """The checkpoint to use: the given file (`option`), or the model store's latest."""
    from wsi_aug.errors import CheckpointError

    if given is None:
        return Path(model_store.latest())
    if not Path(given).is_file():
        raise CheckpointError(
            f"{given}: no such checkpoint file; pass an existing {option} "
            f"(default: the latest of {model_store.checkpoints})"
        )
    return Path(given)


def _learned_source(
    checkpoint: Path,
    fingerprint: str,
    size: int,
    device: Any,
    p: SynthesizeParams,
    padding_pool: Any = None,
) -> Any:
    """The learned condition source: the checkpoint's EMA model, checked against the patch size.

    `padding_pool`: the train patches' tile-edge bands, which the samples get where the
    model's config says ``tile_edges``.
    """
    from wsi_aug.condgen.sample import ConditionModel
    from wsi_aug.conditions import LearnedConditions
    from wsi_aug.errors import CheckpointError

    model = ConditionModel(checkpoint, device, steps=p.condition_steps, padding_pool=padding_pool)
    if model.size != size:
        raise CheckpointError(
            f"{checkpoint}: a condition model for {model.size} px patches, the patches are "
            f"{size} px; retrain with `wsi-aug train-conditions --force` or pass the matching "
            "--condition-checkpoint"
        )
    return LearnedConditions(
        lambda seeds: model(seeds, batch_size=p.batch_size),
        size,
        p.seed,
        fingerprint=fingerprint,
        steps=p.condition_steps,
    )


def _generate(
    writer: SyntheticWriter,
    conditions: Any,
    gen: Any,
    p: SynthesizeParams,
    checkpoint: str,
    device: Any,
    progress: bool,
) -> None:
    """Draw the conditions batch by batch, generate their images and write them."""
    from tqdm.auto import tqdm

    with tqdm(total=p.n, unit="img", desc="synthesize", disable=not progress) as bar:
        for start in range(0, p.n, p.batch_size):
            count = min(p.batch_size, p.n - start)
            batch = conditions.batch(start, count, device=device)
            writer.write(
                start,
                gen(batch.masks, batch.structure),
                batch.masks,
                batch.structure,
                {
                    "source_index": batch.source_index.tolist(),
                    "source": batch.source or [p.source] * count,
                    "transform": batch.transform,
                    "seed": batch.seed.tolist(),
                    "checkpoint": [checkpoint] * count,
                },
            )
            bar.update(count)


def export_pngs(work: str | Path, out: Path, *, progress: bool = False, chunk: int = 256) -> Path:
    """Write ``out/images/NNNNNN.png`` (RGB) and ``out/masks/NNNNNN.png`` (0/255) from a store.

    The pairs are written as `wsi-aug export --format png --what synthetic` writes them (same
    code), named by index; the export stage adds ``cases.csv`` and caching.
    """
    from tqdm.auto import tqdm

    from wsi_aug import store
    from wsi_aug.export import write_pair

    synth = SyntheticStore.open(work)
    images, masks = synth.images, synth.masks
    n = len(synth)
    width = max(6, len(str(n - 1)))
    with tqdm(total=n, unit="png", desc="export", disable=not progress) as bar:
        for start in range(0, n, chunk):
            rows = np.arange(start, min(start + chunk, n))
            imgs, ms = store.read_rows(images, rows), store.read_rows(masks, rows)
            for k in range(len(imgs)):
                write_pair(Path(out), f"{start + k:0{width}d}", imgs[k], ms[k], 255)
            bar.update(len(imgs))
    return Path(out)


STAGE = Stage(
    name=NAME,
    params=SynthesizeParams,
    run=synthesize,
    help="Generate synthetic patches with the trained generator (writes synthesize.zarr).",
    store="synthesize.zarr",
    inputs=("extract", "structure", "train-gan"),
)
