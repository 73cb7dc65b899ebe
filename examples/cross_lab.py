"""Train on one lab, test on another: HuBMAP tiles (train/val) against AIDPATH tiles (test).

The real data of ../shared/data (see its README): 110 HuBMAP PAS tiles with 455 glomeruli in
LabelMe files (pixel size not recorded; about 1 µm/px, estimated from the glomerulus size) and
16 AIDPATH PAS tiles with mask PNGs (about 0.5 µm/px, Aperio ScanScope CS). A manifest CSV gives
each tile its own pixel size and split: every HuBMAP tile is train or val (by tile: the tiles come
from a handful of slides, so this is not a split by patient), every AIDPATH tile test. Those are
small-data experiments: about 455 and 20 glomeruli. Cite HuBMAP and AIDPATH (Bueno et al. 2020)
wherever results on them are shown.

    python examples/cross_lab.py --data ../shared/data --work wsi-aug-work/cross-lab
    python examples/cross_lab.py --within-hubmap ...   # test on held-out HuBMAP tiles instead

The models are reduced to fit a CPU (128-pixel patches at 2 µm/px, ngf 16, U-Net width 0.25);
on a GPU pass --size 256 --mpp 1.0 --ngf 64 for the paper's settings.
Figures measured with it: benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np


def write_manifest(data: Path, out: Path, *, within_hubmap: bool, seed: int) -> Path:
    """A manifest: HuBMAP tiles train/val (and test when within_hubmap), AIDPATH tiles test."""
    rng = np.random.default_rng(seed)
    hub = sorted((data / "hubmap-pas-tiles").glob("*.jpg"), key=lambda p: int(p.stem))
    order = rng.permutation(len(hub))
    n_val = round(0.15 * len(hub))
    n_test = round(0.25 * len(hub)) if within_hubmap else 0
    split = {}
    for rank, i in enumerate(order):
        split[hub[i]] = "val" if rank < n_val else "test" if rank < n_val + n_test else "train"
    rows = ["slide,annotation,patient,split,mpp"]
    for p in hub:
        rows.append(
            f"{p.resolve()},{p.with_suffix('.json').resolve()},hubmap-{p.stem},{split[p]},1.0"
        )
    if not within_hubmap:
        aid = data / "aidpath-pas-tiles"
        for p in sorted((aid / "images").glob("*.png")):
            rows.append(
                f"{p.resolve()},{(aid / 'masks' / p.name).resolve()},aidpath-{p.stem},test,0.5"
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(rows) + "\n")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--data", type=Path, default=Path(os.environ.get("WSI_AUG_DATA", "../shared/data"))
    )
    ap.add_argument("--work", type=Path, default=Path("wsi-aug-work/cross-lab"))
    ap.add_argument("--within-hubmap", action="store_true")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--mpp", type=float, default=2.0)
    ap.add_argument("--ngf", type=int, default=16)
    ap.add_argument("--gan-epochs", type=int, default=30)
    ap.add_argument("--ms-weight", type=float, default=10.0)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--unet-epochs", type=int, default=8)
    ap.add_argument(
        "--samples-per-epoch",
        type=int,
        default=None,
        help="U-Net samples per epoch (default: the real train patches kept)",
    )
    ap.add_argument("--unet-width", type=float, default=0.25)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--real-fraction", type=float, nargs="*", default=[1.0, 0.25])
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    from wsi_aug.stages.eval_gan import eval_gan
    from wsi_aug.stages.eval_seg import eval_seg
    from wsi_aug.stages.extract import extract
    from wsi_aug.stages.structure import structure
    from wsi_aug.stages.synthesize import synthesize
    from wsi_aug.stages.train_gan import train_gan

    manifest = write_manifest(
        args.data, args.work / "manifest.csv", within_hubmap=args.within_hubmap, seed=0
    )
    res = extract(
        args.work,
        manifest=manifest,
        size=args.size,
        mpp=args.mpp,
        negatives=2,
        mask_channel=0,
        seed=0,
    )
    print("\n".join(res.summary.lines()[-5:]))
    structure(args.work, min_size=4)
    train_gan(
        args.work,
        epochs=args.gan_epochs,
        ngf=args.ngf,
        ndf=args.ngf,
        ms_weight=args.ms_weight,
        device=args.device,
        checkpoint_every=10,
    )
    synthesize(args.work, n=args.n, device=args.device)
    for f in args.real_fraction:
        r = eval_seg(
            args.work,
            synthetic_ratios=[0.0, 0.5],
            real_fraction=f,
            seeds=args.seeds,
            epochs=args.unet_epochs,
            samples_per_epoch=args.samples_per_epoch,
            width=args.unet_width,
            device=args.device,
        )
        print(f"\nreal fraction {f}:\n{r.markdown.read_text()}")
    g = eval_gan(
        args.work,
        unet_epochs=args.unet_epochs,
        unet_width=args.unet_width,
        unet_samples_per_epoch=args.samples_per_epoch,
        device=args.device,
    )
    print(f"\neval-gan:\n{g.markdown.read_text()}")


if __name__ == "__main__":
    main()
