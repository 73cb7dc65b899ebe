"""How far from the patch centre learned and held-out masks put their glomerulus, in pixels.

The KS distance of `eval-conditions`' centroid feature is scale-free: it reads a sub-pixel gap
as large. This prints the quantiles themselves for the held-out real conditions and for learned
ones drawn with and without centring (`--centre`), from WORK's latest condition checkpoint:

    python benchmarks/conditions_centroid.py --work WORK [--n 64]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from wsi_aug.condgen import stats
from wsi_aug.condgen.sample import ConditionModel
from wsi_aug.conditions import sample_seed
from wsi_aug.stages.structure import PairedStores
from wsi_aug.stages.train_conditions import ConditionStore

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--n", type=int, default=64, help="learned conditions drawn per setting")
    args = ap.parse_args()
    pairs = PairedStores(args.work)
    held = [pairs.load(s, positive=True) for s in ("val", "test")]
    masks = np.concatenate([h.masks for h in held])
    maps = np.concatenate([h.maps for h in held])
    j = stats.FEATURES.index("centroid_distance")
    size = masks.shape[-1]
    print("quantiles", QUANTILES, "of the main component's centroid distance, px")
    real = np.nanquantile(stats.features(masks, maps)[:, j], QUANTILES) * size
    print(f"held-out real ({len(masks)}):", np.round(real, 2))
    ckpt = Path(ConditionStore.open(args.work).latest())
    for centre in (True, False):
        model = ConditionModel(ckpt, "cpu", steps=50, centre=centre)
        lm, ls = model([sample_seed(0, i) for i in range(args.n)])
        q = np.nanquantile(stats.features(lm, ls)[:, j], QUANTILES) * size
        print(f"learned, centre={centre} ({args.n}):", np.round(q, 2))


if __name__ == "__main__":
    main()
