"""One-shot GPU check of GAN training: eager fp32 vs. the CUDA-graph fast path, and synthesis speed.

Trains the full-size paper model (256 px, ngf = ndf = 64) from the same initial weights on the same
pre-drawn batches three ways: eager fp32, eager bf16 (autocast + channels_last) and the fast path
(bf16, whole step captured as one CUDA graph). It checks that

* the fast path computes the same steps as eager bf16 (losses of the first steps agree within bf16
  tolerance: the graph replays the same kernels with the same dropout stream), and
* every run's losses agree in trend with eager fp32 (L1 falls; late-window means close),

and prints iterations/s of each (fast / eager fp32 is the figure), plus synthesis images/s at
batch 64 (generator alone, and with the `augment` condition source). A JSON file and a markdown
table line carry the card's name. Exit status 1 when a check fails.

    python benchmarks/gpu_gan.py --work WORK --out $OUT/gpu_gan.json   # patches of HuBMAP tiles
    python benchmarks/gpu_gan.py --out $OUT/gpu_gan.json                # made-up 256 px patches
    python benchmarks/gpu_gan.py --tiny                                 # CPU smoke run (64 px)
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from wsi_aug.conditions import make_source  # noqa: E402
from wsi_aug.device import resolve_device  # noqa: E402
from wsi_aug.gan.data import GanDataset, PairSampler, condition_array, make_batch  # noqa: E402
from wsi_aug.gan.models import GanConfig, build_generator, count_parameters  # noqa: E402
from wsi_aug.gan.step import GanStep  # noqa: E402
from wsi_aug.stages.structure import PairedStores  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_work(size: int, n: int) -> Path:
    """A made-up work folder (the test factory's disc 'glomeruli') when no --work is given."""
    from tests.factories import make_tiny_work

    root = Path(tempfile.mkdtemp(prefix="gpu-gan-work-"))
    return make_tiny_work(root, n=n, size=size).root


def draw_batches(work: Path, cfg: GanConfig, steps: int, seed: int) -> list[tuple[Any, Any]]:
    """The batches every run sees, drawn once (augmentation stays out of the timing)."""
    data = PairedStores(work).load("train", positive=True)
    dataset = GanDataset(data, cfg.no_structure)
    sampler = PairSampler(len(data), seed)
    rng = np.random.default_rng(seed)
    batches: list[tuple[Any, Any]] = []
    epoch = 0
    while len(batches) < steps:
        for pairs in sampler.epoch_steps(epoch, cfg.pairs_per_step):
            batches.append(make_batch(dataset, pairs, rng))
            if len(batches) == steps:
                break
        epoch += 1
    return batches


def run(
    cfg: GanConfig,
    device: torch.device,
    batches: list[tuple[Any, Any]],
    *,
    amp: bool,
    fast: bool,
    warmup: int,
    seed: int,
) -> tuple[dict[str, Any], GanStep]:
    """Train on `batches`; losses per step and it/s over the steps after `warmup`."""
    trainer = GanStep(cfg, device=device, seed=seed, amp=amp, fast=fast)
    if device.type == "cuda":
        batches = [(x.pin_memory(), y.pin_memory()) for x, y in batches]
    out = []
    t0 = None
    for i, (x, y) in enumerate(batches):
        if i == warmup:
            _sync(device)
            t0 = time.perf_counter()
        out.append(trainer.train_step(x, y))
    _sync(device)
    elapsed = time.perf_counter() - (t0 if t0 is not None else time.perf_counter())
    losses = torch.stack(out).float().cpu().numpy()
    timed = len(batches) - warmup
    return {
        "amp": trainer.amp,
        "fast": trainer.fast,
        "graph_captured": trainer.graph_captured,
        "it_per_s": timed / elapsed if elapsed > 0 else float("nan"),
        "losses": losses.tolist(),
    }, trainer


def trend(losses: np.ndarray) -> dict[str, float]:
    """Window means of L1 (column 2) and D loss (column 0): first and last quarter."""
    q = max(1, len(losses) // 4)
    return {
        "l1_first": float(losses[:q, 2].mean()),
        "l1_last": float(losses[-q:, 2].mean()),
        "d_first": float(losses[:q, 0].mean()),
        "d_last": float(losses[-q:, 0].mean()),
    }


def synthesis_speed(
    trainer: GanStep, work: Path, device: torch.device, batch: int, batches: int
) -> dict[str, float]:
    """Images/s of the generator at `batch` (eval, bf16 on CUDA), alone and with conditions."""
    train = PairedStores(work).load("train", positive=True)
    source = make_source("augment", train.masks, train.maps, train.rows, 0)
    g = trainer.G.eval()
    conds = source.batch(0, batch, device=device)
    x = torch.from_numpy(condition_array(conds.masks, conds.structure, trainer.cfg.no_structure))
    x = x.to(device)
    cuda = device.type == "cuda"
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    ctx = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else torch.no_grad
    with torch.no_grad(), ctx():
        for _ in range(2):
            g(x)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(batches):
            g(x)
        _sync(device)
        gen = batches * batch / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for b in range(batches):
            c = source.batch(b * batch, batch, device=device)
            xb = torch.from_numpy(condition_array(c.masks, c.structure, trainer.cfg.no_structure))
            g(xb.to(device)).float().cpu()
        _sync(device)
        full = batches * batch / (time.perf_counter() - t0)
    return {"generator_img_per_s": gen, "with_conditions_img_per_s": full}


def stage_check(work: Path, device: torch.device) -> dict[str, Any]:
    """The stages end to end on `device` with a narrow model (ngf = ndf = 8).

    train-gan (default path: the CUDA graph on CUDA) stopped after 6 steps, resumed to 12 across
    an epoch end, then synthesize 64 patches: catches capture, checkpoint and resume problems.
    """
    import shutil

    from wsi_aug.gan.checkpoints import load_checkpoint
    from wsi_aug.stages.synthesize import SyntheticStore, synthesize
    from wsi_aug.stages.train_gan import GanStore, TrainGanParams, run_training
    from wsi_aug.store import WorkDir

    src, wd = WorkDir(Path(work)), WorkDir(Path(tempfile.mkdtemp(prefix="gpu-gan-stage-")) / "w")
    copy = wd.root
    shutil.copytree(src.patches, wd.patches)
    shutil.copytree(src.structure, wd.structure)
    params = TrainGanParams(
        epochs=2, ngf=8, ndf=8, seed=0, device=str(device), checkpoint_every=1, fast=None
    )
    t0 = time.perf_counter()
    _, first = run_training(copy, TrainGanParams.build(params, max_steps=6), progress=False)
    resumed = TrainGanParams.build(params, max_steps=12, resume=True)
    _, second = run_training(copy, resumed, progress=False)
    ck = load_checkpoint(GanStore.open(copy).latest())
    synthesize(copy, n=64, device=str(device), progress=False)
    images = SyntheticStore.open(copy).images[:]
    out = {
        "seconds": time.perf_counter() - t0,
        "fast": bool(first and first.fast),
        "graph_captured": bool(second and second.graph_captured),
        "resumed_step": ck.step,
        "synth_images": int(images.shape[0]),
        "synth_std": float(images.std()),
    }
    shutil.rmtree(copy.parent, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--work",
        type=Path,
        default=None,
        help="work folder with extract.zarr + structure.zarr (default: made-up data)",
    )
    ap.add_argument("--steps", type=int, default=None, help="steps per run (200; tiny: 30)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed first steps (20; tiny: 5)")
    ap.add_argument("--tiny", action="store_true", help="64 px, ngf = ndf = 8: a CPU smoke run")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--synth-batch", type=int, default=64)
    ap.add_argument("--synth-batches", type=int, default=None, help="timed batches (20; tiny: 2)")
    ap.add_argument("--out", type=Path, default=None, help="JSON result file (+ .md beside it)")
    ap.add_argument(
        "--no-stage-check",
        action="store_true",
        help="skip the end-to-end train/resume/synthesize check",
    )
    args = ap.parse_args(argv)

    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as train-gan does
    tiny = args.tiny
    steps = args.steps or (30 if tiny else 200)
    warmup = args.warmup if args.warmup is not None else (5 if tiny else 20)
    synth_batches = args.synth_batches or (2 if tiny else 20)
    work = args.work or make_work(64 if tiny else 256, 40)
    size = PairedStores(work).patches.size
    cfg = GanConfig(size=size, ngf=8 if tiny else 64, ndf=8 if tiny else 64)
    cuda = device.type == "cuda"
    card = torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu"
    n_params = count_parameters(build_generator(cfg))
    print(
        f"device: {card}; torch {torch.__version__}; size {size}; G {n_params:,} params; "
        f"{steps} steps per run ({warmup} untimed)",
        flush=True,
    )

    batches = draw_batches(work, cfg, steps, args.seed)
    runs: dict[str, dict[str, Any]] = {}
    runs["eager_fp32"], _ = run(
        cfg, device, batches, amp=False, fast=False, warmup=warmup, seed=args.seed
    )
    if cuda:
        runs["eager_bf16"], _ = run(
            cfg, device, batches, amp=True, fast=False, warmup=warmup, seed=args.seed
        )
    runs["fast"], fast_trainer = run(
        cfg, device, batches, amp=True, fast=True, warmup=warmup, seed=args.seed
    )
    if not cuda:
        print("note: on the CPU the fast path is ignored: 'fast' runs eagerly in fp32")

    checks: dict[str, bool] = {}
    base = np.asarray(runs["eager_fp32"]["losses"])
    for name, r in runs.items():
        losses = np.asarray(r["losses"])
        r["trend"] = trend(losses)
        r["finite"] = bool(np.isfinite(losses).all())
        checks[f"{name}_finite"] = r["finite"]
        checks[f"{name}_l1_falls"] = r["trend"]["l1_last"] < r["trend"]["l1_first"]
        if name != "eager_fp32":
            rel = abs(r["trend"]["l1_last"] - trend(base)["l1_last"]) / trend(base)["l1_last"]
            r["l1_last_rel_diff_vs_fp32"] = rel
            checks[f"{name}_l1_agrees_with_fp32"] = rel < 0.2
    if cuda:
        ref = np.asarray(runs["eager_bf16"]["losses"])[:5]
        got = np.asarray(runs["fast"]["losses"])[:5]
        diff = float(np.max(np.abs(ref - got) / (np.abs(ref) + 1e-3)))
        runs["fast"]["first5_max_rel_diff_vs_eager_bf16"] = diff
        checks["fast_matches_eager_bf16_first_steps"] = diff < 0.05
        checks["fast_graph_captured"] = bool(runs["fast"]["graph_captured"])
    synth = synthesis_speed(fast_trainer, work, device, args.synth_batch, synth_batches)
    stages: dict[str, Any] = {}
    if not args.no_stage_check:
        try:
            stages = stage_check(work, device)
        except Exception as exc:  # the training figures above still get reported
            stages = {"error": f"{type(exc).__name__}: {exc}"}
    if "error" in stages:
        print(f"stages: FAILED {stages['error']}", flush=True)
        checks["stages_ran"] = False
    elif stages:
        print(f"stages: {stages}", flush=True)
        checks["stages_resume_to_step_12"] = stages["resumed_step"] == 12
        checks["stages_synthesized_64"] = stages["synth_images"] == 64 and stages["synth_std"] > 0
        if cuda:
            checks["stages_graph_captured"] = stages["graph_captured"]

    ratio = runs["fast"]["it_per_s"] / runs["eager_fp32"]["it_per_s"]
    for name, r in runs.items():
        t = r["trend"]
        print(
            f"{name:11s} {r['it_per_s']:8.2f} it/s  L1 {t['l1_first']:.3f} -> {t['l1_last']:.3f}"
            f"  D {t['d_first']:.3f} -> {t['d_last']:.3f}",
            flush=True,
        )
    print(
        f"fast / eager fp32: {ratio:.2f}x; synthesis at batch {args.synth_batch}: "
        f"{synth['generator_img_per_s']:.1f} img/s (generator), "
        f"{synth['with_conditions_img_per_s']:.1f} img/s (with augment conditions)"
    )
    failed = [k for k, ok in checks.items() if not ok]
    print("checks:", "all passed" if not failed else "FAILED " + ", ".join(failed))

    result = {
        "card": card,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "size": size,
        "ngf": cfg.ngf,
        "ndf": cfg.ndf,
        "steps": steps,
        "warmup": warmup,
        "work": str(args.work) if args.work else "made-up (tests.factories)",
        "it_per_s": {k: r["it_per_s"] for k, r in runs.items()},
        "fast_over_eager_fp32": ratio,
        "synthesis": synth,
        "stages": stages,
        "checks": checks,
        "runs": runs,
    }
    md = (
        f"| {card} | torch {torch.__version__} | {size}px ngf={cfg.ngf} | "
        + " | ".join(f"{k} {r['it_per_s']:.2f} it/s" for k, r in runs.items())
        + f" | fast/fp32 {ratio:.2f}x | synth {synth['generator_img_per_s']:.1f} img/s @"
        f"{args.synth_batch} | {'ok' if not failed else 'FAILED'} |"
    )
    print(md)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
        args.out.with_suffix(".md").write_text(md + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
