"""Stage `eval-seg`: does synthetic data help a segmentation U-Net on real slides?

Each synthetic ratio is one cached configuration: ``eval-seg/configs/<hash>.zarr`` (a
``per_seed`` table of metrics) with its ``results.md``, ``dice.png`` and ``per_seed.csv`` in
``eval-seg/configs/<hash>/``; a sweep that adds a ratio trains only the new one. The sweep's
summary, ``results.csv``, ``results.md``, ``results_per_seed.csv`` and ``dice.png``, goes to
``eval-seg/``. The training and scoring live in `wsi_aug.eval_seg`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import field_validator

from wsi_aug.stages.base import Stage, StageParams, StageResult, param

NAME = "eval-seg"
MADE_BY = "wsi-aug eval-seg"
_PER_SEED = "per_seed"


class SegTrainingParams(StageParams):
    """How one U-Net is trained: shared by eval-seg and train-seg, so each default lives once."""

    real_fraction: float = param(
        1.0,
        "Keep only this fraction of the real training patches (chosen with the seed).",
        gt=0,
        le=1,
    )
    seed: int = param(0, "The first seed.", ge=0)
    epochs: int = param(50, "Training epochs of each U-Net.", ge=1)
    samples_per_epoch: int | None = param(
        None, "Training samples per epoch (default: the number of real training patches).", ge=1
    )
    batch_size: int = param(8, "U-Net training batch size.", ge=1)
    lr: float = param(1e-4, "Adam learning rate of the U-Net.", gt=0)
    width: float = param(1.0, "Filter multiplier: 64 x width filters at the top level.", gt=0)
    batch_norm: bool = param(False, "Add batch normalisation after each convolution.")
    padding: Literal["same", "valid"] = param(
        "same", "'valid' is the unpadded U-Net: smaller output, targets centre-cropped."
    )
    # Classical baselines (issue #9): augmentation preset and stain normalisation.
    # Default stain, measured (benchmarks/RESULTS.md, section 4 of #9): on another lab's tiles it
    # raised the real-only U-Net's Dice from 0.34 to 0.58 and cost 0.02 within the training lab.
    augment: Literal["none", "geometric", "colour", "stain"] = param(
        "stain",
        "Training augmentation: none; geometric (flips, 90° rotations, affine, elastic); colour "
        "(geometric + brightness, contrast, hue, blur, noise); stain (colour + HED stain jitter, "
        "Tellez et al. 2019; the default: the strongest measured on another lab's slides). "
        "true/false in pipeline files mean colour/none.",
    )
    stain_sigma: float = param(
        0.05,
        "Strength of --augment stain: each H, E, D density becomes s * U(1-σ, 1+σ) + U(-σ, σ) "
        "(0.05 Tellez's HED-light, 0.2 HED-strong).",
        gt=0,
        le=1,
    )
    precision: Literal["fp32", "bf16"] = param(
        "fp32",
        "U-Net training arithmetic: fp32, or bf16 autocast for the forward pass (about 1.5-2x "
        "faster on CPUs with AVX-512 BF16/AMX and on recent GPUs; results differ slightly).",
    )
    device: str = param(
        "auto", "torch device: auto (CUDA when present, else CPU), cpu, cuda ...", key=False
    )

    def key_dict(self) -> dict[str, Any]:
        """fp32 stays out of the key, so stores made before the option existed stay valid."""
        d = super().key_dict()
        if d.get("precision") == "fp32":
            d.pop("precision")
        return d

    @field_validator("augment", mode="before")
    @classmethod
    def _old_augment(cls, v: Any) -> Any:
        """Pipeline files and work folders of before the presets said true/false."""
        if isinstance(v, bool):
            return "colour" if v else "none"
        return v


class EvalSegParams(SegTrainingParams):
    """The sweep (ratios, seeds), stain normalisation and the scoring; the training is
    `SegTrainingParams`'s."""

    stage = NAME

    synthetic_ratios: tuple[float, ...] = param(
        (0.5,),
        "Fraction of synthetic training samples (0 real only, 1 synthetic only); repeat it or "
        "give a comma list (0,0.5,1) for a sweep.",
        cli="--synthetic-ratio",
        min_length=1,
    )
    seeds: int = param(
        3, "U-Nets per ratio (seeds --seed, --seed+1, ...); mean and std are reported.", ge=1
    )
    stain_normalize: Literal["none", "macenko", "reinhard"] = param(
        "none",
        "Normalise the stain of every patch (train, val, test, synthetic) to one reference train "
        "patch (the one whose mean colour is closest to the train median) with torchstain.",
    )
    min_object_area: float = param(
        1000.0,
        "Object precision/recall/F1 count only components of at least this area in µm² (holes "
        "filled), in prediction and ground truth; Dice is on the raw output. 0 disables the "
        "clean-up.",
        ge=0,
        allow_inf_nan=False,
    )
    keep_models: bool = param(
        False,
        "Keep each configuration's best U-Net (of its seeds, by validation Dice) as "
        "eval-seg/<configuration>/model.safetensors, ready for `wsi-aug segment --model`.",
    )

    @field_validator("synthetic_ratios")
    @classmethod
    def _ratios(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        bad = [r for r in v if not 0.0 <= r <= 1.0]
        if bad:
            raise ValueError(f"each ratio must be in [0, 1], not {bad[0]:g}")
        return tuple(dict.fromkeys(float(r) for r in v))  # unique, in the order given


@dataclass(frozen=True)
class EvalSegResult:
    """The sweep's summary rows (one per ratio), per-seed rows, output files and stores."""

    rows: list[dict[str, Any]]
    per_seed: list[dict[str, Any]]
    table: str  # the Markdown table
    csv: Path
    markdown: Path
    plot: Path
    stores: list[StageResult]
    all_markdown: Path | None = None  # every cached configuration, this call's and earlier ones

    @property
    def cached(self) -> bool:
        return all(s.cached for s in self.stores)

    @property
    def path(self) -> Path:
        """The folder of the results people look at (``WORK/eval-seg``)."""
        return self.csv.parent

    @property
    def outputs(self) -> tuple[Path, ...]:
        extra = (self.all_markdown,) if self.all_markdown is not None else ()
        return (self.markdown, self.plot, *extra)

    @property
    def text(self) -> str:
        return self.table


def config_path(folder: Path, params: Mapping[str, Any]) -> Path:
    """``eval-seg/configs/<12-hex config hash>.zarr`` (the hash ignores input fingerprints, so a
    rebuilt upstream replaces that configuration's results rather than adding a folder)."""
    from wsi_aug import store

    h = store.fingerprint_value(dict(params)).removeprefix("sha256:")[:12]
    return folder / "configs" / f"{h}.zarr"


def read_per_seed(path: Path) -> list[dict[str, Any]]:
    """The per-seed rows of a complete configuration store."""
    from wsi_aug import store

    table = store.read_table(store.open_stage(path, stage=NAME, made_by=MADE_BY), _PER_SEED)
    n = len(next(iter(table.values())))
    return [{k: (v[i].item() if hasattr(v[i], "item") else v[i]) for k, v in table.items()}
            for i in range(n)]


def _check(patches: Any, splits: Mapping[str, Any], p: EvalSegParams) -> None:
    """The patch store can be scored and trained on as asked, or a one-line error."""
    from wsi_aug.errors import WsiAugError
    from wsi_aug.seg.unet import output_size

    if len(splits["test"]) == 0:
        raise WsiAugError(
            f"{patches.path}: no patches in the test split; re-run `wsi-aug extract` with "
            "--split so that some slides go to the test set"
        )
    if output_size(patches.size, 5, p.padding) <= 0:
        raise WsiAugError(
            f"{patches.path}: {patches.size}-px patches are too small for the valid-padding "
            "U-Net (it needs at least 188 px); use --padding same"
        )
    if len(splits["train"]) == 0 and min(p.synthetic_ratios) < 1.0:
        raise WsiAugError(
            f"{patches.path}: no patches in the train split; re-run `wsi-aug extract` with "
            "--split so that some slides go to the training set"
        )


def config_params(p: EvalSegParams, ratio: float) -> dict[str, Any]:
    """What defines one configuration (its cache key): the ratio and the shared settings."""
    d = p.key_dict()
    key = {
        "synthetic_ratio": float(ratio),
        "real_fraction": p.real_fraction,
        "seeds": list(range(p.seed, p.seed + p.seeds)),
        **{k: d[k] for k in ("epochs", "samples_per_epoch", "batch_size", "lr", "width")},
        "depth": 5,
        **{k: d[k] for k in ("batch_norm", "padding", "min_object_area")},
        "augment": augment_key(p.augment),
    }
    # Only where they matter, so that the keys of configurations cached before they existed hold.
    if p.augment == "stain":
        key["stain_sigma"] = p.stain_sigma
    if p.stain_normalize != "none":
        key["stain_normalize"] = p.stain_normalize
    if p.precision != "fp32":
        key["precision"] = p.precision
    if p.keep_models:  # a configuration without its models cannot be reused as one with them
        key["keep_models"] = True
    return key


def augment_key(name: str) -> bool | str:
    """The augmentation as a cache-key value: the presets that were the old bool stay a bool
    (colour True, none False) so their cached configurations stay valid; the others are names."""
    return {"colour": True, "none": False}.get(name, name)


def augment_name(value: Any) -> str:
    """The preset name of a cache-key value (`augment_key`'s inverse), for tables."""
    if isinstance(value, bool):
        return "colour" if value else "none"
    return str(value)


def _train_config(
    path: Path,
    cfg: dict[str, Any],
    inputs: dict[str, str],
    data: Any,
    p: EvalSegParams,
    min_area_px: Any,
    device: Any,
    progress: bool,
    mpp: float,
) -> None:
    """Train and score one configuration's seeds into its (resumable) store (``mpp``: the
    patches' pixel size, recorded with kept models)."""
    import json

    from wsi_aug import store
    from wsi_aug.eval_seg import run_seed, summary_row, write_csv, write_outputs
    from wsi_aug.seg.augment import augment_config

    ratio = cfg["synthetic_ratio"]
    aug = augment_config(p.augment, p.stain_sigma)
    train_kwargs = {
        **{k: cfg[k] for k in ("epochs", "batch_size", "lr", "width", "batch_norm", "padding")},
        "augment": aug if aug is not None else False,
        "precision": p.precision,
        "device": device,
    }
    # Patches the stain normaliser left as they were (too little tissue, a numerical failure).
    extra = {"stain_fallbacks": sum(data.stain_fallbacks.values())} if data.stain_fallbacks else {}
    with store.build_stage(
        path, stage=NAME, params=cfg, inputs=inputs, resumable=True, files=path.with_suffix("")
    ) as b:
        g = b.group
        assert b.files is not None
        files = b.files
        done = json.loads(str(g.attrs.get("seed_rows", "{}")))  # resumes an interrupted run
        for s in cfg["seeds"]:
            if str(s) not in done:
                keep = _keeper(files / f"seed-{s}.safetensors", mpp, p, inputs, ratio, s)
                done[str(s)] = run_seed(
                    data,
                    ratio=ratio,
                    seed=s,
                    real_fraction=p.real_fraction,
                    samples_per_epoch=p.samples_per_epoch,
                    min_area_px=min_area_px,
                    train_kwargs=train_kwargs,
                    progress=progress,
                    keep=keep if p.keep_models else None,
                ) | extra
                g.attrs["seed_rows"] = json.dumps(done)
        per_seed = [done[str(s)] for s in cfg["seeds"]]
        if p.keep_models:
            _keep_best(files, per_seed)
        store.write_table(g, _PER_SEED, {k: [r[k] for r in per_seed] for k in per_seed[0]})
        summary = summary_row(ratio, per_seed)
        g.attrs["summary"] = json.dumps(summary)  # JSON text: NaN-safe
        g.attrs["device"] = str(device)
        if data.stain_normalize != "none":
            g.attrs["stain_normalize"] = json.dumps({
                "method": data.stain_normalize,
                "reference_train_index": data.stain_reference,
                "fallbacks": data.stain_fallbacks,
            })
        write_outputs(files, [summary], f"eval-seg, synthetic ratio {ratio:g}")
        write_csv(per_seed, files / "per_seed.csv")


def _keeper(
    path: Path, mpp: float, p: EvalSegParams, inputs: dict[str, str], ratio: float, seed: int
) -> Callable[[Any, Any, dict[str, int]], None]:
    """Saves one seed's trained U-Net as a model `segment` can apply (--keep-models)."""

    def keep(model: Any, hist: Any, counts: dict[str, int]) -> None:
        from wsi_aug.seg.apply import save_model
        from wsi_aug.stages.train_seg import model_spec

        spec = model_spec(
            counts,
            mpp=mpp,
            params=p,
            threshold=0.5,
            val_dice=float(hist.best_val_dice),
            trained_on=dict(inputs),
            synthetic_ratio=ratio,
            seed=seed,
        )
        save_model(model, spec, path)

    return keep


def _keep_best(files: Path, per_seed: list[dict[str, Any]]) -> None:
    """Keep the seed with the best validation Dice as ``model.safetensors``; drop the others."""
    import math

    def score(r: dict[str, Any]) -> float:
        v = float(r["best_val_dice"])
        return v if not math.isnan(v) else -1.0

    best = max(per_seed, key=score)
    (files / f"seed-{best['seed']}.safetensors").replace(files / "model.safetensors")
    for r in per_seed:
        (files / f"seed-{r['seed']}.safetensors").unlink(missing_ok=True)


def eval_seg(
    work: str | Path,
    params: EvalSegParams | None = None,
    *,
    force: bool = False,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
    **overrides: Any,
) -> EvalSegResult:
    """Stage: train and score U-Nets for each synthetic ratio over ``seeds`` seeds.

    Returns the summary (mean and std over seeds of pooled Dice, mean per-patch Dice, IoU and
    object precision/recall/F1 on the real test split) and writes it to ``WORK/eval-seg/``.
    Configurations already computed come from the cache.
    """
    from wsi_aug import store
    from wsi_aug.device import resolve_device
    from wsi_aug.eval_seg import (
        SegData,
        min_area_pixels,
        summary_markdown,
        summary_row,
        write_csv,
        write_outputs,
    )
    from wsi_aug.stages.extract import PatchStore
    from wsi_aug.stages.synthesize import SyntheticStore

    p = EvalSegParams.build(params, **overrides)
    wd = store.WorkDir(Path(work))
    wd.check_layout(force)
    patches = PatchStore.open(work)
    splits = {s: patches.select(s) for s in ("train", "val", "test")}
    _check(patches, splits, p)
    min_area_px = min_area_pixels(p.min_object_area, patches.table.mpp[splits["test"]])
    synth = SyntheticStore.open(work) if max(p.synthetic_ratios) > 0 else None
    device = resolve_device(p.device)
    data: SegData | None = None
    rows, per_seed_all, results = [], [], []
    folder = wd.files(NAME)
    for ratio in p.synthetic_ratios:
        cfg = config_params(p, ratio)
        inputs = {"patches": patches.fingerprint()}
        if ratio > 0 and synth is not None:
            inputs["synthetic"] = synth.fingerprint()
        path = config_path(folder, cfg)
        res = store.cached_result(path, stage=NAME, params=cfg, inputs=inputs, force=force)
        if res is None:
            data = data or SegData.load(patches, splits, synth, p.stain_normalize)
            if report is not None and data.stain_fallbacks and any(data.stain_fallbacks.values()):
                report(f"{p.stain_normalize}: patches left unnormalised {data.stain_fallbacks}")
            import numpy as np

            mpp = float(np.median(patches.table.mpp))
            _train_config(path, cfg, inputs, data, p, min_area_px, device, progress, mpp)
            res = StageResult(path, False, store.read_meta(path) or {})
        per_seed = read_per_seed(path)
        results.append(res)
        per_seed_all += per_seed
        rows.append(summary_row(ratio, per_seed))
    stain = f" (σ {p.stain_sigma:g})" if p.augment == "stain" else ""
    title = (
        f"eval-seg: {p.seeds} seed(s), {p.epochs} epochs, width {p.width:g}, "
        f"real fraction {p.real_fraction:g}, objects >= {p.min_object_area:g} µm², "
        f"augment {p.augment}{stain}, stain normalisation {p.stain_normalize}"
    )
    out = write_outputs(folder, rows, title)
    write_csv(per_seed_all, folder / "results_per_seed.csv")
    return EvalSegResult(
        rows=rows,
        per_seed=per_seed_all,
        table=summary_markdown(rows),
        csv=out["csv"],
        markdown=out["markdown"],
        plot=out["plot"],
        stores=results,
        all_markdown=write_all_configurations(folder),
    )


def write_all_configurations(folder: Path) -> Path:
    """``all.csv`` and ``all.md``: every complete configuration cached in ``configs/``.

    ``results.*`` show the last call's configurations; a sweep run in several calls (other
    ratios, another real fraction) finds all of its rows here, each with the settings that set
    it apart.
    """
    from wsi_aug import store
    from wsi_aug.eval_seg import all_configurations, summary_markdown, write_csv

    entries = []
    for path in sorted((folder / "configs").glob("*.zarr")):
        meta = store.read_meta(path)
        if meta and meta.get("complete") and meta.get("stage") == NAME:
            entries.append((dict(meta.get("params") or {}), read_per_seed(path)))
    rows, varying = all_configurations(entries)
    write_csv(rows, folder / "all.csv")
    md = folder / "all.md"
    md.write_text(
        f"eval-seg: every cached configuration ({len(rows)}), by "
        f"{', '.join(varying) or 'synthetic ratio'}\n\n" + summary_markdown(rows, varying)
    )
    return md


STAGE = Stage(
    name=NAME,
    params=EvalSegParams,
    run=eval_seg,
    help="Train U-Nets on real + synthetic patches and score them on the real test split "
    "(writes eval-seg/).",
    store="eval-seg",
    inputs=("extract", "synthesize"),
    kind="files",
)
