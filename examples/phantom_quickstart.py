"""The whole pipeline from Python on phantom slides, tiny enough for a laptop CPU (10-15 minutes).

python examples/phantom_quickstart.py [WORK]

Each stage is a function of `wsi_aug.stages` taking the work folder and its parameters (as
keywords, or a `Params` object); a rerun with the same parameters is cached and does nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

from wsi_aug.slides import open_slide
from wsi_aug.stages.eval_gan import eval_gan
from wsi_aug.stages.eval_seg import eval_seg
from wsi_aug.stages.extract import extract
from wsi_aug.stages.phantom import phantom
from wsi_aug.stages.structure import structure
from wsi_aug.stages.synthesize import synthesize
from wsi_aug.stages.train_gan import train_gan

work = Path(sys.argv[1] if len(sys.argv) > 1 else "wsi-aug-work/quickstart")
slides = phantom(work, out=work / "slides", slides=4, seed=1, width=3072, height=2304).outputs

with open_slide(slides[0]) as slide:  # any slide reads the same way
    print(slide.vendor, slide.level_dimensions, slide.mpp)
    patch = slide.read_at_mpp((1000.0, 800.0, 512.0, 512.0), 2.0, (128, 128))
    print("a 128 px window at 2 µm/px:", patch.shape, patch.dtype)

extract(work, inputs=[work / "slides"], size=128, mpp=2.0, negatives=6, split=(0.5, 0.25, 0.25))
structure(work, min_size=4)  # also writes WORK/structure/grid.png
train_gan(work, epochs=30, ngf=16, ndf=16)  # WORK/train-gan/: checkpoints, samples, losses.csv
synthesize(work, n=200)
seg = eval_seg(
    work, synthetic_ratios=[0.0, 0.5], seeds=2, epochs=10, width=0.25, samples_per_epoch=128
)
print(seg.markdown.read_text())  # also results.csv and dice.png beside it
gan = eval_gan(work, unet_epochs=10, unet_width=0.25, unet_samples_per_epoch=128)
print(gan.markdown.read_text())  # and grid.png beside it
