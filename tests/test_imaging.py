"""Shared image helpers: Otsu, the 8 dihedral symmetries, displacement fields, and that the
condition and U-Net augmentations that now use them give the same results as before."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wsi_aug import imaging as im
from wsi_aug.conditions import AugmentedConditions
from wsi_aug.seg import augment as A


def _digest(*arrays: np.ndarray | torch.Tensor) -> str:
    h = hashlib.sha256()
    for a in arrays:
        v = a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
        h.update(str(v.dtype).encode() + str(v.shape).encode())
        h.update(np.ascontiguousarray(v).tobytes())
    return h.hexdigest()[:16]


# --- Otsu ---------------------------------------------------------------------------------------


def test_otsu_matches_skimage_on_a_bimodal_array() -> None:
    from skimage.filters import threshold_otsu

    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0.2, 0.05, 3000), rng.normal(0.7, 0.08, 2000)])
    t = im.otsu_threshold(values.reshape(50, 100))
    assert isinstance(t, float) and t == float(threshold_otsu(values))
    assert 0.35 < t < 0.55
    assert im.otsu_threshold(values.astype(np.float32)) == float(
        threshold_otsu(values.astype(np.float32))
    )


def test_flat_arrays() -> None:
    assert im.is_flat(np.full((4, 4), 0.3)) and im.is_flat(np.zeros(0))
    assert not im.is_flat(np.array([0.0, 1e-9]))
    assert im.is_flat(np.array([0.0, 1e-9]), 1e-6) and not im.is_flat(np.array([0.0, 1e-3]), 1e-6)
    flat = np.full(10, 0.25)
    t = im.otsu_threshold(flat)  # the value itself: nothing lies strictly above or below it
    assert t == 0.25 and not (flat > t).any() and not (flat < t).any()
    with pytest.raises(ValueError):
        im.otsu_threshold(np.zeros(0))


# --- dihedral symmetries ------------------------------------------------------------------------


def _asymmetric(shape: tuple[int, ...] = (5, 5)) -> np.ndarray:
    return np.arange(math.prod(shape)).reshape(shape) ** 2 % 17


def test_dihedral_all_gives_8_distinct_images_and_the_group_closes() -> None:
    a = _asymmetric()
    images = im.dihedral_all(a)
    assert len(images) == 8 and np.array_equal(images[0], a)
    keys = {x.tobytes() for x in images}
    assert len(keys) == 8
    for x in images:  # composing any two symmetries gives one of the 8
        for flip, k in im.DIHEDRAL:
            assert im.dihedral(x, flip, k).tobytes() in keys
    for x in images:  # every one has an inverse
        assert any(np.array_equal(im.dihedral(x, f, k), a) for f, k in im.DIHEDRAL)


def test_dihedral_is_flip_then_rotation_on_the_last_two_axes() -> None:
    a = _asymmetric((2, 3, 4, 4))
    for flip, k in im.DIHEDRAL:
        old = np.rot90(a[..., ::-1] if flip else a, k, axes=(-2, -1))  # the old formula
        out = im.dihedral(a, flip, k)
        assert np.array_equal(out, old) and out.flags.c_contiguous
    hw_last = np.moveaxis(a, 1, -1)  # (2, 4, 4, 3): rotate axes (1, 2)
    out = im.dihedral(hw_last, True, 1, axes=(1, 2))
    assert np.array_equal(np.moveaxis(out, -1, 1), im.dihedral(a, True, 1))


def test_dihedral_matrix_reproduces_dihedral_through_grid_sample() -> None:
    a = _asymmetric((7, 7)).astype(np.float32)
    n = a.shape[0]
    c = torch.arange(n, dtype=torch.float64) - (n - 1) / 2
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    pts = torch.stack([xx, yy], dim=-1)  # (H, W, 2) pixel offsets from the centre
    for flip, k in im.DIHEDRAL:
        m = torch.as_tensor(im.dihedral_matrix(flip, k))
        grid = (torch.einsum("ij,hwj->hwi", m, pts) / (n / 2)).float()[None]
        out = F.grid_sample(
            torch.from_numpy(a)[None, None], grid, mode="nearest", align_corners=False
        )[0, 0].numpy()
        assert np.array_equal(out, im.dihedral(a, flip, k)), (flip, k)
        assert not np.signbit(im.dihedral_matrix(flip, k)[im.dihedral_matrix(flip, k) == 0]).any()


# --- displacement fields ------------------------------------------------------------------------


def test_upsample_displacement_matches_the_old_formulas() -> None:
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(3, 2, 9, 9, generator=g) * 4 - 2
    size = 40
    # conditions.py before: bilinear, then pixels -> grid units, channels 0/1 as x/y
    disp = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=True)
    disp = disp * (2.0 / (size - 1))
    new = im.upsample_displacement(coarse, (size, size), scale=im.pixels_to_grid(size))
    assert torch.equal(new[..., 0], disp[:, 0]) and torch.equal(new[..., 1], disp[:, 1])
    # seg/augment.py before: bicubic, no scaling, permuted to (N, H, W, 2)
    old = F.interpolate(coarse, size=(24, 40), mode="bicubic", align_corners=True)
    new = im.upsample_displacement(coarse, (24, 40), mode="bicubic")
    assert torch.equal(new, old.permute(0, 2, 3, 1))
    # the old identity grid of conditions.py
    lin = torch.linspace(-1.0, 1.0, size)
    gy, gx = torch.meshgrid(lin, lin, indexing="ij")
    ident = im.identity_grid(size, size)
    assert torch.equal(ident[..., 0], gx) and torch.equal(ident[..., 1], gy)
    rect = im.identity_grid(3, 5)
    assert rect.shape == (3, 5, 2) and torch.equal(rect[0, :, 0], torch.linspace(-1, 1, 5))
    assert im.pixels_to_grid(size, align_corners=False) == 2.0 / size


# --- the augmentations are unchanged ------------------------------------------------------------


def _condition_inputs(
    n: int = 5, size: int = 48, seed: int = 3
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        cx, cy, r = rng.uniform(size * 0.3, size * 0.7, 3)
        masks[i] = (xx - cx) ** 2 / 1.5 + (yy - cy) ** 2 < r * r
    maps = (rng.random((n, size, size)) < 0.3).astype(np.uint8)
    return masks, maps, np.arange(100, 100 + n)


# Recorded by running these very inputs through the code BEFORE it used wsi_aug.imaging
# (conditions.py and seg/augment.py as of the refactor), so they check that the refactor changed
# no output: masks and maps are binary, U-Net images are compared as uint8 (as augment_pair
# returns them), so the hashes do not depend on float rounding of one machine's kernels.
CONDITION_HASHES = {48: "c0721098e16e5bb3", 20: "3c501e21cfa5b5d2"}
# One value per key; where two x86-64 AVX-512 VMs round a quantised pixel differently with the
# same code (921013a), both are recorded: a change to the augmentation gives neither.
AUGMENT_HASHES: dict[tuple[int, int, str], set[str]] = {
    (32, 32, "default"): {"350e1417ec9ec1ab"},
    (32, 32, "all"): {"b7a1bf3ff3f5c4b8"},
    (24, 40, "default"): {"5f45d84600a6ad96", "02e997b24269902d"},
    (24, 40, "all"): {"75c13e42d60bc609"},
}


@pytest.mark.parametrize("size", sorted(CONDITION_HASHES))
def test_augmented_conditions_are_as_before(size: int) -> None:
    masks, maps, rows = _condition_inputs(size=size)
    c = AugmentedConditions(masks, maps, rows, seed=11).batch(2, 7)
    got = _digest(c.masks, c.structure, c.source_index, c.seed, np.array(c.transform))
    assert got == CONDITION_HASHES[size]


@pytest.mark.parametrize("key", sorted(AUGMENT_HASHES))
def test_augment_batch_is_as_before(key: tuple[int, int, str]) -> None:
    h, w, name = key
    cfg = A.DEFAULT if name == "default" else A.AugmentConfig(
        p_affine=1.0, p_elastic=1.0, p_blur=1.0, p_noise=1.0
    )
    g = torch.Generator().manual_seed(4)
    x = torch.rand(6, 3, h, w, generator=g)
    y = (torch.rand(6, h, w, generator=g) > 0.5).to(torch.uint8)
    a, m = A.augment_batch(x, y, np.random.default_rng(9), cfg)
    quantised = (a * 255.0).round().clamp(0, 255).to(torch.uint8)
    assert _digest(quantised, m) in AUGMENT_HASHES[key]


def _old_geometry_matrices(
    n: int, h: int, w: int, rng: np.random.Generator, cfg: A.AugmentConfig
) -> np.ndarray:
    """seg/augment.py's `_geometry_matrices` before it used `dihedral_matrix` (a copy)."""
    mats = np.tile(np.eye(3), (n, 1, 1))
    square = h == w
    for b in range(n):
        m = np.eye(3)
        if cfg.flip and rng.random() < 0.5:
            m = np.diag([-1.0, 1.0, 1.0]) @ m
        if cfg.flip and not square and rng.random() < 0.5:
            m = np.diag([1.0, -1.0, 1.0]) @ m
        if cfg.rot90 and square:
            k = int(rng.integers(4))
            c, s = round(math.cos(k * math.pi / 2)), round(math.sin(k * math.pi / 2))
            m = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ m
        if cfg.p_affine > 0 and rng.random() < cfg.p_affine:
            a = math.radians(rng.uniform(-cfg.rotation, cfg.rotation))
            z = rng.uniform(1 - cfg.zoom, 1 + cfg.zoom)
            tx, ty = rng.uniform(-cfg.shift, cfg.shift, 2) * (w, h)
            rot = np.array(
                [[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0, 0, 1.0]]
            )
            m = np.array([[1 / z, 0, tx], [0, 1 / z, ty], [0, 0, 1.0]]) @ rot @ m
        mats[b] = m
    return mats[:, :2, :]


@pytest.mark.parametrize("shape", [(16, 16), (12, 20)])
def test_geometry_matrices_are_bit_identical_to_the_old_code(shape: tuple[int, int]) -> None:
    h, w = shape
    for cfg in (A.DEFAULT, A.AugmentConfig(p_affine=0.0), A.AugmentConfig(flip=False)):
        r1, r2 = np.random.default_rng(2), np.random.default_rng(2)
        new = A._geometry_matrices(64, h, w, r1, cfg)
        old = _old_geometry_matrices(64, h, w, r2, cfg)
        assert new.tobytes() == old.tobytes()
        assert r1.random() == r2.random()  # the same number of draws
