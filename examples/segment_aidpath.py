"""From patches to slides: train-seg on HuBMAP tiles, then segment the AIDPATH tiles as slides.

The real data of ../shared/data (see its README): 110 HuBMAP PAS tiles (LabelMe polygons, about
1 µm/px, estimated) train and select the U-Net (`wsi-aug train-seg`, the manifest of
examples/cross_lab.py, HuBMAP tiles only); the 16 AIDPATH PAS tiles (1024 px, about 0.5 µm/px,
red-channel mask PNGs) are then segmented whole with `wsi-aug segment`, each as a slide, and
scored against their masks: object precision/recall/F1 at IoU >= 0.5 and pooled Dice, in
WORK/segment/scores.md. A cross-lab test on about 20 glomeruli: say so, and cite HuBMAP and
AIDPATH (Bueno et al. 2020) wherever the figures are shown.

    python examples/segment_aidpath.py --data ../shared/data --work wsi-aug-work/segment-aidpath
    python examples/segment_aidpath.py --epochs 2 --width 0.0625   # a quick smoke run (CPU)

Defaults fit a CPU (128-px patches at 2 µm/px, width 0.25); on a GPU try --size 256 --mpp 1.0
--width 1.0 --epochs 50.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--data", type=Path, default=Path(os.environ.get("WSI_AUG_DATA", "../shared/data"))
    )
    ap.add_argument("--work", type=Path, default=Path("wsi-aug-work/segment-aidpath"))
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--mpp", type=float, default=2.0)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--samples-per-epoch", type=int, default=None)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--precision", default="fp32", help="fp32, or bf16 (faster on recent CPUs)")
    ap.add_argument("--min-object-area", type=float, default=1000.0)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    from cross_lab import write_manifest

    from wsi_aug.stages.extract import extract
    from wsi_aug.stages.segment import segment
    from wsi_aug.stages.train_seg import train_seg

    # HuBMAP only (train/val; no test rows): within_hubmap=False adds AIDPATH as test, so drop it.
    manifest = write_manifest(args.data, args.work / "manifest.csv", within_hubmap=False, seed=0)
    lines = [ln for ln in manifest.read_text().splitlines() if ",aidpath-" not in ln]
    manifest.write_text("\n".join(lines) + "\n")
    extract(args.work, manifest=manifest, size=args.size, mpp=args.mpp, negatives=2, seed=0)
    model = train_seg(
        args.work,
        epochs=args.epochs,
        width=args.width,
        samples_per_epoch=args.samples_per_epoch,
        lr=args.lr,
        precision=args.precision,
        device=args.device,
        report=print,
    )
    print(f"train-seg: {model.path} ({model.text})")
    aid = args.data / "aidpath-pas-tiles"
    res = segment(
        args.work,
        inputs=(aid / "images",),
        annotations=aid / "masks",
        slide_mpp=0.5,
        tissue="all",  # the tiles are tissue throughout
        min_object_area=args.min_object_area,
        overlay=True,
        device=args.device,
        report=print,
    )
    print(res.text)
    scores = args.work / "segment" / "scores.md"
    if scores.is_file():
        print(scores.read_text())


if __name__ == "__main__":
    main()
