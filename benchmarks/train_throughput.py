"""Training throughput of the project's loops against a bare PyTorch loop (issue #9, section 6).

Measured side by side in one process, on the same tensors, in one run:

* **U-Net** (eval-seg / train-seg): `wsi_aug.seg.train.train_unet` with augmentation off and no
  validation set, against a bare loop (Adam, cross-entropy, the same `UNet`) over tensors that
  were converted once; then `train_unet` with each augmentation preset, to show what it costs.
* **GAN** (train-gan): `wsi_aug.gan.loop.run_epochs` (the shipped loop: pair sampler, flips and
  rotations, loss log kept in memory) against a bare loop of `GanStep.optimize` on batches
  made once.

Each figure is samples (U-Net) or steps (GAN) per second after a warm-up, best of --repeats.
Prints a Markdown table and writes it with a JSON copy to --out::

    python benchmarks/train_throughput.py --out /tmp/throughput            # CPU, ~5 min
    python benchmarks/train_throughput.py --size 64 --width 0.125 --out ...
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def fake_patches(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 RGB patches with a disc each (the mask): stand-ins with the real shapes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((n, size, size), np.uint8)
    images = rng.integers(150, 240, (n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        cy, cx = rng.uniform(0.3, 0.7, 2) * size
        r = rng.uniform(0.15, 0.3) * size
        m = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        masks[i] = m
        images[i][m] = (images[i][m] * 0.6).astype(np.uint8)
    return images, masks


def unet_bare(images: np.ndarray, masks: np.ndarray, width: float, batch: int, seed: int
              ) -> Callable[[], tuple[int, float]]:
    """A bare training loop of the same U-Net on tensors converted once."""
    import torch
    import torch.nn.functional as F

    from wsi_aug.seg.unet import UNet, normalize, to_unit

    model = UNet(width=width, generator=torch.Generator().manual_seed(seed))
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x_all = normalize(to_unit(images, torch.device("cpu")))
    y_all = torch.from_numpy(masks).long()
    n = len(images)

    def run() -> tuple[int, float]:
        model.train()
        t = time.perf_counter()
        for k in range(0, n, batch):
            logits = model(x_all[k : k + batch])
            loss = F.cross_entropy(logits, y_all[k : k + batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return n, time.perf_counter() - t

    run()  # warm-up
    return run


def unet_project(images: np.ndarray, masks: np.ndarray, width: float, batch: int, seed: int,
                 augment: Any, precision: str = "fp32") -> Callable[[], tuple[int, float]]:
    """The project's `train_unet` for one epoch (no validation set), as eval-seg calls it."""
    from wsi_aug.seg.train import train_unet

    empty_x = np.zeros((0, *images.shape[1:]), np.uint8)
    empty_y = np.zeros((0, *masks.shape[1:]), np.uint8)

    def run() -> tuple[int, float]:
        t = time.perf_counter()
        train_unet(images, masks, empty_x, empty_y, epochs=1, batch_size=batch, width=width,
                   augment=augment, seed=seed, device="cpu", progress=False,
                   precision=precision)
        return len(images), time.perf_counter() - t

    run()
    return run


def gan_parts(n: int, size: int, ngf: int, upsample: str, seed: int) -> tuple[Any, Any, Any]:
    """A GanStep, its dataset and pair sampler on fake patches."""
    from wsi_aug.gan.data import GanData, GanDataset, PairSampler
    from wsi_aug.gan.models import GanConfig
    from wsi_aug.gan.step import GanStep

    images, masks = fake_patches(n, size, seed)
    maps = (images.mean(-1) < 180).astype(np.uint8)
    data = GanData(images, masks, maps, np.arange(n))
    cfg = GanConfig(size=size, ngf=ngf, ndf=ngf, upsample=upsample)
    return GanStep(cfg, device="cpu", seed=seed), GanDataset(data), PairSampler(n, seed)


def gan_bare(n: int, size: int, ngf: int, upsample: str, steps: int, seed: int
             ) -> Callable[[], tuple[int, float]]:
    """`GanStep.optimize` on batches made once: the networks, losses and optimisers alone."""
    from wsi_aug.gan.data import make_batch

    step, dataset, sampler = gan_parts(n, size, ngf, upsample, seed)
    batches = [make_batch(dataset, p, step.np_rng) for p in sampler.epoch_steps(0)[:steps]]
    step.G.train()
    step.D.train()

    def run() -> tuple[int, float]:
        t = time.perf_counter()
        for x, y in batches:
            out = step.optimize(x, y)
        float(out[0])
        return len(batches), time.perf_counter() - t

    run()
    return run


def gan_project(n: int, size: int, ngf: int, upsample: str, steps: int, seed: int
                ) -> Callable[[], tuple[int, float]]:
    """The shipped loop (`run_epochs`): sampler, flips/rotations, loss bookkeeping."""
    from wsi_aug.gan.data import GanData
    from wsi_aug.gan.loop import run_epochs

    step, dataset, sampler = gan_parts(n, size, ngf, upsample, seed)
    val = GanData(*(a[:0] for a in (dataset.data.images, dataset.data.masks,
                                     dataset.data.maps, dataset.data.rows)))

    def run() -> tuple[int, float]:
        t = time.perf_counter()
        first = step.step
        run_epochs(step, dataset, sampler, val, None, epochs=10**6, max_steps=first + steps,
                   checkpoint_every=10**6, progress=False)
        return step.step - first, time.perf_counter() - t

    run()
    return run


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--width", type=float, default=0.25, help="U-Net width multiplier")
    ap.add_argument("--batch", type=int, default=8, help="U-Net batch size")
    ap.add_argument("--n", type=int, default=64, help="U-Net patches per timed epoch")
    ap.add_argument("--ngf", type=int, default=16)
    ap.add_argument("--gan-steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--augment", default="none,geometric,colour,stain")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    import torch

    threads = torch.get_num_threads()
    images, masks = fake_patches(args.n, args.size)
    rows: list[dict[str, Any]] = []

    def add(kind: str, what: str, rate: float, base: float, unit: str) -> None:
        rows.append({"model": kind, "loop": what, "rate": round(rate, 2), "unit": unit,
                     "ratio": round(rate / base, 3)})
        print(f"{kind:6s} {what:34s} {rate:8.2f} {unit}  ratio {rate / base:.3f}", flush=True)

    runners: list[tuple[str, str, str, str, Callable[[], tuple[int, float]]]] = [
        ("U-Net", "bare PyTorch loop", "unet", "samples/s",
         unet_bare(images, masks, args.width, args.batch, 0))
    ]
    for aug in args.augment.split(","):
        runners.append(("U-Net", f"train_unet, augment {aug}", "unet", "samples/s",
                        unet_project(images, masks, args.width, args.batch, 0,
                                     False if aug == "none" else aug)))
    for aug in ("none", "stain"):  # eval-seg --precision bf16 (the CPU's AVX-512 BF16 / AMX)
        runners.append(("U-Net", f"train_unet, augment {aug}, bf16", "unet", "samples/s",
                        unet_project(images, masks, args.width, args.batch, 0,
                                     False if aug == "none" else aug, "bf16")))
    for up in ("transposed", "resize"):
        n = 2 * args.gan_steps
        runners.append(("GAN", f"bare GanStep.optimize ({up})", f"gan-{up}", "steps/s",
                        gan_bare(n, args.size, args.ngf, up, args.gan_steps, 0)))
        runners.append(("GAN", f"run_epochs ({up})", f"gan-{up}", "steps/s",
                        gan_project(n, args.size, args.ngf, up, args.gan_steps, 0)))
    # Interleaved: every loop is timed once per round, so load from other processes falls on
    # all of them alike; the best round of each counts.
    best: dict[str, float] = {}
    for _ in range(args.repeats):
        for _kind, what, _group, _unit, fn in runners:
            items, seconds = fn()
            best[what] = max(best.get(what, 0.0), items / seconds)
    bases = {group: best[what] for _k, what, group, _u, _f in runners if "bare" in what}
    for kind, what, group, unit, _fn in runners:
        add(kind, what, best[what], bases[group], unit)
    head = (f"{args.size} px, U-Net width {args.width:g} batch {args.batch}, GAN ngf {args.ngf} "
            f"batch 2 (one pair), {threads} torch threads, best of {args.repeats}")
    table = [f"Training throughput: {head}", "", "| model | loop | rate | unit | ratio |",
             "| --- | --- | --- | --- | --- |"]
    table += [f"| {r['model']} | {r['loop']} | {r['rate']} | {r['unit']} | {r['ratio']} |"
              for r in rows]
    print("\n".join(table))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "throughput.md").write_text("\n".join(table) + "\n")
        (args.out / "throughput.json").write_text(json.dumps({"setup": head, "rows": rows}))
    return rows


if __name__ == "__main__":
    main()
