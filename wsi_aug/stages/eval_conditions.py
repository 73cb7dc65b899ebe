"""Stage `eval-conditions`: how close learned conditions come to held-out real ones.

Draws ``n`` conditions from the ``train-conditions`` model and, as the baseline, ``n`` warped
train conditions (``synthesize --source augment``'s), and measures each against the held-out
(val and test) real conditions, with real train vs held-out beside every value
(`wsi_aug.condgen.stats`). Writes ``eval-conditions.zarr`` (the results table) and, beside it,
``eval-conditions/``: ``conditions.md``, ``conditions.csv`` and ``samples.png`` (learned, warped
and real conditions side by side).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from wsi_aug.stages.base import Stage, StageParams, StageResult, StageStore, param

NAME = "eval-conditions"
MADE_BY = "wsi-aug eval-conditions"
_RESULTS = "results"
_HELDOUT = {"val": ("val",), "test": ("test",), "both": ("val", "test")}


class EvalConditionsParams(StageParams):
    """How many conditions to draw and what to measure them against."""

    stage = NAME

    n: int = param(256, "Learned (and warped) conditions drawn and measured.", ge=2)
    heldout: Literal["both", "val", "test"] = param(
        "both", "Held-out real conditions: the val and test splits' positives, or one of them."
    )
    seed: int = param(0, "Seed of the drawn conditions (sample i from its own seed).", ge=0)
    sample_steps: int = param(50, "DDIM steps per learned condition.", ge=1)
    baseline: bool = param(True, "Also measure warped train conditions (--source augment).")
    batch_size: int = param(64, "Conditions drawn per batch.", ge=1, key=False)
    checkpoint: Path | None = param(
        None,
        "Condition-model checkpoint (default: the latest of train-conditions/checkpoints).",
        key=False,
    )
    device: str = param(
        "auto", "torch device: auto (CUDA when present, else CPU), cpu, cuda ...", key=False
    )
    grid_rows: int = param(8, "Conditions shown in eval-conditions/samples.png.", ge=1, cli=False)


class ConditionEvalStore(StageStore):
    """A complete ``eval-conditions.zarr``, read-only."""

    NAME = NAME
    MADE_BY = MADE_BY

    @property
    def results(self) -> dict[str, Any]:
        """The results table: columns set, measure, generated, real, target, passed."""
        from wsi_aug import store

        return store.read_table(self.group, _RESULTS)


def eval_conditions(
    work: str | Path,
    params: EvalConditionsParams | None = None,
    *,
    force: bool = False,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
    **overrides: Any,
) -> StageResult:
    """Stage: measure learned (and warped) conditions against held-out real ones (cached)."""
    import numpy as np

    from wsi_aug import store
    from wsi_aug.condgen import stats
    from wsi_aug.condgen.sample import ConditionModel
    from wsi_aug.conditions import make_source, sample_seed
    from wsi_aug.device import resolve_device
    from wsi_aug.errors import CheckpointError, WsiAugError
    from wsi_aug.stages.structure import PairedStores
    from wsi_aug.stages.train_conditions import ConditionStore

    p = EvalConditionsParams.build(params, **overrides)
    wd = store.WorkDir(Path(work))
    wd.check_layout(force)
    path, files = wd.store(NAME), wd.files(NAME)
    pairs = PairedStores(work)
    cond = ConditionStore.open(work)
    ckpt = p.checkpoint if p.checkpoint is not None else cond.latest()
    if not Path(ckpt).is_file():
        raise CheckpointError(
            f"{ckpt}: no such checkpoint file; pass an existing --checkpoint "
            f"(default: the latest of {cond.checkpoints})"
        )
    inputs = {
        **pairs.fingerprints(),
        "conditions": cond.fingerprint(),
        "condition_checkpoint": store.fingerprint_file(ckpt),
    }
    key = p.key_dict()
    outputs = tuple(files / n for n in ("conditions.md", "conditions.csv", "samples.png"))
    hit = store.cached_result(path, stage=NAME, params=key, inputs=inputs, force=force)
    if hit is not None:
        return StageResult(hit.path, True, hit.meta, outputs=outputs, text=_text(files))
    train = pairs.load("train", positive=True)
    held = [pairs.load(s, positive=True) for s in _HELDOUT[p.heldout]]
    held_masks = np.concatenate([h.masks for h in held])
    held_maps = np.concatenate([h.maps for h in held])
    if len(train) < 2 or len(held_masks) < 2:
        raise WsiAugError(
            f"{pairs.patches.path}: {len(train)} train and {len(held_masks)} held-out "
            f"({p.heldout}) glomeruli; need at least 2 of each to compare conditions"
        )
    model = ConditionModel(
        Path(ckpt),
        resolve_device(p.device),
        steps=p.sample_steps,
        padding_pool=pairs.patches.padding_insets(train.rows),
    )
    if model.size != pairs.patches.size:
        raise CheckpointError(
            f"{ckpt}: a condition model for {model.size} px patches, the patches are "
            f"{pairs.patches.size} px; retrain with `wsi-aug train-conditions --force`"
        )
    seeds = [sample_seed(p.seed, i) for i in range(p.n)]
    learned = _draw(model, seeds, p.batch_size, progress)
    real = (train.masks, train.maps)
    heldout = (held_masks, held_maps)
    tables = {"learned": stats.compare(learned, real, heldout)}
    sets = {"learned": learned}
    if p.baseline:
        warp = make_source("augment", train.masks, train.maps, train.rows, p.seed).batch(0, p.n)
        sets["augment"] = (warp.masks, warp.structure)
        tables["augment"] = stats.compare(sets["augment"], real, heldout)
    with store.build_stage(path, stage=NAME, params=key, inputs=inputs, files=files) as b:
        assert b.files is not None
        text = "\n".join(
            stats.markdown(rows, f"Condition quality: {name} vs held-out ({p.heldout})")
            for name, rows in tables.items()
        )
        (b.files / "conditions.md").write_text(_preamble(p, len(train), len(held_masks)) + text)
        stats.write_csv(tables, b.files / "conditions.csv")
        _grid(sets, heldout, b.files / "samples.png", p.grid_rows)
        cols: dict[str, list[Any]] = {
            c: [] for c in ("set", "measure", "generated", "real", "target", "passed")
        }
        for name, rows in tables.items():
            for r in rows:
                for c, v in zip(cols, (name, r.measure, r.generated, r.real, r.target, r.passed)):
                    cols[c].append(v)
        store.write_table(b.group, _RESULTS, cols)
        b.group.attrs.update(
            {
                "checkpoint": str(ckpt),
                "n": p.n,
                "train": len(train),
                "heldout": len(held_masks),
                "passed": {n: all(r.passed for r in rows) for n, rows in tables.items()},
            }
        )
    meta = store.read_meta(path) or {}
    return StageResult(path, False, meta, outputs=outputs, text=_text(files))


def _draw(model: Any, seeds: list[int], batch_size: int, progress: bool) -> tuple[Any, Any]:
    """The learned conditions of the given seeds, batch by batch with a progress bar."""
    import numpy as np
    from tqdm.auto import tqdm

    masks, maps = [], []
    with tqdm(total=len(seeds), unit="cond", desc="eval-conditions", disable=not progress) as bar:
        for start in range(0, len(seeds), batch_size):
            m, s = model(seeds[start : start + batch_size], batch_size=batch_size)
            masks.append(m)
            maps.append(s)
            bar.update(len(m))
    return np.concatenate(masks), np.concatenate(maps)


def _preamble(p: EvalConditionsParams, n_train: int, n_held: int) -> str:
    return (
        f"{p.n} conditions per set; {n_train} real train and {n_held} held-out ({p.heldout}) "
        "glomeruli. Targets: KS at most 1.5x the real-vs-real value per feature, coverage at "
        "least 0.9, no larger share of near-copies (IoU > 0.95 with a train condition over the "
        "8 symmetries) than the held-out real conditions show.\n\n"
    )


def _grid(sets: dict[str, Any], heldout: Any, path: Path, rows: int) -> None:
    """PNG: per row, a mask and structure map of each set, then a held-out real one."""
    from wsi_aug.figures import save_grid

    k = min(rows, len(heldout[0]), *(len(m) for m, _ in sets.values()))
    cells = []
    for i in range(k):
        row = []
        for m, s in sets.values():
            row += [m[i], s[i]]
        cells.append([*row, heldout[0][i], heldout[1][i]])
    titles = [f"{n} {w}" for n in sets for w in ("mask", "structure")]
    save_grid(cells, path, column_titles=[*titles, "real mask", "real structure"])


def _text(files: Path) -> str:
    md = files / "conditions.md"
    return md.read_text() if md.is_file() else ""


STAGE = Stage(
    name=NAME,
    params=EvalConditionsParams,
    run=eval_conditions,
    help="Measure conditions drawn from the train-conditions model (and warped ones) against "
    "held-out real conditions: shape KS distances, density/coverage, memorisation (writes "
    "eval-conditions.zarr and eval-conditions/).",
    store="eval-conditions.zarr",
    inputs=("extract", "structure", "train-conditions"),
)
