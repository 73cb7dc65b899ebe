"""Structure maps: channels, thresholds, background handling, and the stage."""

from __future__ import annotations

import numpy as np
import pytest

from wsi_aug.structure import background_mask, stain_channel, structure_map


def _patch(padded: bool = True) -> np.ndarray:
    """Pink tissue with dark nuclei; the right half white padding when `padded`."""
    rng = np.random.default_rng(0)
    img = np.empty((64, 64, 3), np.float32)
    img[:] = (225, 150, 190)
    img += rng.normal(0, 4, img.shape)
    yy, xx = np.mgrid[:64, :64]
    for cy, cx in rng.uniform(4, 60, (12, 2)):
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < 6] = (80, 50, 130)
    if padded:
        img[:, 32:] = 255
    return np.clip(img, 0, 255).astype(np.uint8)


def test_otsu_finds_nuclei_not_the_tissue_edge():
    img = _patch()
    m = structure_map(img)
    nuclei = img.mean(-1) < 120
    assert m[:, 32:].sum() == 0  # padding is never structure
    left = np.s_[:, :32]
    assert m[left][nuclei[left]].mean() > 0.9  # nuclei in the tissue half are found
    assert m[left][~nuclei[left]].mean() < 0.1  # stroma is not
    # thresholding over everything separates tissue from padding instead
    naive = structure_map(img, ignore_background=False)
    assert naive[left][~nuclei[left]].mean() > 0.9


@pytest.mark.parametrize("channel", ["grey", "saturation", "hematoxylin"])
def test_channels_rank_nuclei_above_stroma(channel):
    img = _patch(padded=False)
    s = stain_channel(img, channel)
    nuclei = img.mean(-1) < 120
    assert s[nuclei].mean() > s[~nuclei].mean()
    assert s.min() >= 0.0 and s.max() <= 1.0


def test_fixed_threshold_min_size_and_flat_patches():
    img = _patch(padded=False)
    assert structure_map(img, method="fixed", threshold=0.99).sum() == 0
    assert structure_map(img, method="fixed", threshold=0.0).mean() > 0.9
    few = structure_map(img, min_size=1000)
    assert few.sum() == 0
    assert structure_map(np.full((16, 16, 3), 200, np.uint8)).sum() == 0
    with pytest.raises(ValueError, match="threshold"):
        structure_map(img, method="fixed")


def test_background_mask_is_white_and_unsaturated():
    img = _patch()
    bg = background_mask(img)
    assert bg[:, 32:].all() and not bg[:, :32].any()
