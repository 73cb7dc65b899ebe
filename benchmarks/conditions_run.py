"""Train the condition model for a time budget on a work folder, then measure its conditions.

    python benchmarks/conditions_run.py --work WORK --minutes 30 --out results/conditions

needs WORK/extract.zarr and WORK/structure.zarr (``wsi-aug extract`` / ``wsi-aug structure``).
It measures the training rate on WORK's own conditions (a short probe), picks ``--steps`` to fill
``--minutes`` (or takes ``--steps``), runs ``wsi-aug train-conditions`` and ``wsi-aug
eval-conditions`` in WORK (cached stages, as the CLI would) and copies into OUT:
``conditions.md``, ``conditions.csv``, ``samples.png``, the last training grid, ``losses.csv`` and
``run.json`` (steps, rate, minutes, options).

    python benchmarks/conditions_run.py --speed-only --sizes 64,128

measures steps/s of the default model on made-up discs at each size and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch


def probe(masks: np.ndarray, maps: np.ndarray, args: argparse.Namespace, steps: int) -> float:
    """Steps per second of `steps` training steps (the first 3 not counted)."""
    from wsi_aug.condgen.model import CondGenConfig, auto_patch
    from wsi_aug.condgen.train import train
    from wsi_aug.device import resolve_device

    size = masks.shape[-1]
    cfg = CondGenConfig(size=size, base=args.base, patch=args.patch or auto_patch(size))
    dev = resolve_device(args.device)
    opts = dict(batch_size=args.batch_size, device=dev, sample_every=10**9, checkpoint_every=10**9)
    train(cfg, masks, maps, None, steps=3, **opts)  # warm-up
    t0 = time.perf_counter()
    train(cfg, masks, maps, None, steps=steps, **opts)
    return steps / (time.perf_counter() - t0)


def discs(n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    r = rng.uniform(0.15, 0.35, (n, 1, 1)) * size
    masks = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < r**2).astype(np.uint8)
    return masks, (rng.random((n, size, size)) < 0.1).astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--work", type=Path)
    ap.add_argument("--out", type=Path, default=Path("results/conditions"))
    ap.add_argument("--minutes", type=float, default=30.0, help="training time budget")
    ap.add_argument("--steps", type=int, default=None, help="train this many steps instead")
    ap.add_argument("--base", type=int, default=32)
    ap.add_argument("--patch", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=256, help="conditions drawn for the measures")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--speed-only", action="store_true")
    ap.add_argument("--sizes", default="64,128")
    ap.add_argument("--probe-steps", type=int, default=10)
    args = ap.parse_args()

    if args.speed_only:
        for size in (int(s) for s in args.sizes.split(",")):
            rate = probe(*discs(64, size), args, args.probe_steps)
            print(f"{size} px, base {args.base}, batch {args.batch_size}: {rate:.2f} steps/s")
        return
    if args.work is None:
        ap.error("--work is required (or --speed-only)")

    from wsi_aug.stages.eval_conditions import ConditionEvalStore, eval_conditions
    from wsi_aug.stages.structure import PairedStores
    from wsi_aug.stages.train_conditions import ConditionStore, train_conditions

    data = PairedStores(args.work).load("train", positive=True)
    rate = probe(data.masks, data.maps, args, args.probe_steps)
    # about a tenth of the budget goes to sample grids, checkpoints and the DDIM samples
    steps = args.steps or max(10, int(args.minutes * 60 * rate * 0.9))
    print(f"{len(data)} train conditions, {data.size} px: {rate:.2f} steps/s -> {steps} steps")
    every = max(1, steps // 6)
    opts = dict(steps=steps, batch_size=args.batch_size, base=args.base, patch=args.patch)
    t0 = time.perf_counter()
    trained = train_conditions(
        args.work,
        seed=args.seed,
        device=args.device,
        sample_every=every,
        checkpoint_every=every,
        **opts,
    )
    minutes = (time.perf_counter() - t0) / 60
    t1 = time.perf_counter()
    evaluated = eval_conditions(args.work, n=args.n, seed=args.seed, device=args.device)
    eval_minutes = (time.perf_counter() - t1) / 60
    args.out.mkdir(parents=True, exist_ok=True)
    for p in evaluated.outputs:
        shutil.copy2(p, args.out / p.name)
    cs = ConditionStore.open(args.work)
    if cs.sample_grids():
        shutil.copy2(cs.sample_grids()[-1], args.out / "training-samples.png")
    shutil.copy2(cs.losses, args.out / "losses.csv")
    facts = {
        **opts,
        "size": data.size,
        "train_conditions": len(data),
        "probe_steps_per_s": round(rate, 3),
        "train_minutes": round(minutes, 2),
        "train_cached": trained.cached,
        "eval_minutes": round(eval_minutes, 2),
        "n": args.n,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "passed": ConditionEvalStore.open(args.work).group.attrs.get("passed"),
    }
    (args.out / "run.json").write_text(json.dumps(facts, indent=2) + "\n")
    print(evaluated.text)
    print(f"results in {args.out}")


if __name__ == "__main__":
    main()
