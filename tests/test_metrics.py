"""Segmentation and image-set metrics against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsi_aug import metrics as M


def square(size: int, top: int, left: int, side: int) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    m[top : top + side, left : left + side] = 1
    return m


def test_both_empty_scores_one() -> None:
    e = np.zeros((2, 8, 8), np.uint8)
    assert M.dice(e, e) == 1.0
    assert M.iou(e, e) == 1.0
    assert M.mean_dice(e, e) == 1.0
    s = M.object_scores(e, e)
    assert (s.tp, s.fp, s.fn) == (0, 0, 0)
    assert s.precision == s.recall == s.f1 == 1.0


def test_perfect_and_disjoint() -> None:
    a = square(10, 1, 1, 3)
    b = square(10, 6, 6, 3)
    assert M.dice(a, a) == M.iou(a, a) == 1.0
    assert M.object_scores(a, a).f1 == 1.0
    assert M.dice(a, b) == M.iou(a, b) == 0.0
    s = M.object_scores(a, b)
    assert (s.tp, s.fp, s.fn) == (0, 1, 1)
    assert s.precision == s.recall == s.f1 == 0.0


def test_partial_overlap() -> None:
    t = square(8, 0, 0, 2)  # 4 px
    p = square(8, 0, 1, 2)  # 4 px, 2 shared
    assert M.dice(p, t) == pytest.approx(2 * 2 / 8)
    assert M.iou(p, t) == pytest.approx(2 / 6)
    # IoU 1/3 < 0.5: the objects do not match.
    assert (M.object_scores(p, t).tp, M.object_scores(p, t).fp) == (0, 1)


def test_two_objects_one_missed() -> None:
    a = square(12, 1, 1, 3)
    b = square(12, 7, 7, 3)
    target = a | b
    pred = a
    assert M.dice(pred, target) == pytest.approx(2 * 9 / (9 + 18))
    assert M.iou(pred, target) == pytest.approx(0.5)
    s = M.object_scores(pred, target)
    assert (s.tp, s.fp, s.fn) == (1, 0, 1)
    assert s.precision == 1.0
    assert s.recall == 0.5
    assert s.f1 == pytest.approx(2 / 3)


def test_one_prediction_covering_two_objects_matches_none() -> None:
    target = square(12, 2, 2, 3) | square(12, 2, 7, 3)
    pred = square(12, 1, 1, 10)  # IoU 9/100 with each
    s = M.object_scores(pred, target)
    assert (s.tp, s.fp, s.fn) == (0, 1, 2)


def test_matching_is_one_to_one() -> None:
    target = square(12, 2, 2, 4)
    pred = np.zeros_like(target)
    pred[2:6, 2:4] = 1  # left half: IoU 0.5
    pred[2:6, 5:6] = 1  # a separate sliver (not 8-connected to the first)
    s = M.object_scores(pred, target)
    assert (s.tp, s.fp, s.fn) == (1, 1, 0)


def test_mean_dice_differs_from_pooled() -> None:
    a = square(8, 0, 0, 2)
    b = square(8, 4, 4, 4)
    e = np.zeros_like(a)
    pred = np.stack([e, a, a])
    target = np.stack([e, a, b])
    assert list(M.dice_per_patch(pred, target)) == [1.0, 1.0, 0.0]
    assert M.mean_dice(pred, target) == pytest.approx(2 / 3)
    assert M.dice(pred, target) == pytest.approx(2 * 4 / (8 + 4 + 16))
    assert M.segmentation_metrics(pred, target)["obj_f1"] == pytest.approx(2 * 1 / (2 + 1 + 1))


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError):
        M.dice(np.zeros((4, 4)), np.zeros((4, 5)))


def test_clean_mask_removes_small_keeps_large_and_fills_holes() -> None:
    m = square(16, 1, 1, 5)  # 25 px with a 1-px hole: 24 px
    m[3, 3] = 0
    m[12, 12] = 1  # a 1-px fragment
    m[10:12, 14:16] = 1  # a 4-px fragment
    out = M.clean_mask(m, 5)
    assert out.dtype == bool and out.shape == m.shape
    assert out[3, 3]  # the hole is filled
    np.testing.assert_array_equal(out, square(16, 1, 1, 5).astype(bool))
    # Components are 8-connected, as in match_objects: a diagonal pair is one 2-px object.
    d = np.zeros((6, 6), np.uint8)
    d[1, 1] = d[2, 2] = 1
    assert M.clean_mask(d, 2).sum() == 2 and M.clean_mask(d, 3).sum() == 0
    # min_area 0 keeps every component (and still fills holes).
    expected = m != 0
    expected[3, 3] = True
    np.testing.assert_array_equal(M.clean_mask(m, 0), expected)


def test_clean_mask_per_patch_min_area() -> None:
    m = np.stack([square(12, 0, 0, 3), square(12, 0, 0, 3), square(12, 0, 0, 4)])  # 9, 9, 16
    out = M.clean_mask(m, [10, 9, 10.5])
    assert [int(p.sum()) for p in out] == [0, 9, 16]
    np.testing.assert_array_equal(M.clean_mask(m, 10), M.clean_mask(m, [10, 10, 10]))
    with pytest.raises(ValueError, match="one per patch"):
        M.clean_mask(m, [1, 2])
    with pytest.raises(ValueError, match=">= 0"):
        M.clean_mask(m, -1)


def test_object_min_area_ignores_fragments_but_not_pixel_scores() -> None:
    target = np.stack([square(32, 4, 4, 12), square(32, 16, 16, 10)])
    pred = target.copy()
    pred[0, 2, 28] = pred[0, 28, 2] = pred[0, 29, 29] = 1  # fragments, 1-4 px each
    pred[1, 2:4, 2:4] = 1
    pred[1, 8, 8] = 1
    pred[0, 8, 8] = 0  # a hole in a detected object
    raw = M.segmentation_metrics(pred, target)
    assert raw["obj_f1"] < 0.6 and M.object_scores(pred, target).fp == 5
    clean = M.segmentation_metrics(pred, target, min_area=20)
    assert clean["obj_precision"] == clean["obj_recall"] == clean["obj_f1"] == 1.0
    for key in ("dice", "mean_dice", "iou"):  # pixel scores stay on the raw prediction
        assert clean[key] == raw[key] < 1.0
    per_patch = M.object_scores(pred, target, min_area=[20, 0])  # patch 1 scored as given
    assert (per_patch.tp, per_patch.fp, per_patch.fn) == (2, 2, 0)


def test_object_min_area_drops_ground_truth_slivers() -> None:
    target = square(32, 10, 10, 10)
    target[0:2, 28:32] = 1  # an 8-px sliver of a glomerulus cut by the patch border
    pred = square(32, 10, 10, 10)
    s = M.object_scores(pred, target)
    assert (s.tp, s.fp, s.fn) == (1, 0, 1)
    s = M.object_scores(pred, target, min_area=20)
    assert (s.tp, s.fp, s.fn) == (1, 0, 0) and s.recall == 1.0


def test_ms_ssim() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, 64, 64, 3)).astype(np.uint8)
    assert np.allclose(M.ms_ssim(a, a), 1.0)
    noisy = np.clip(a + rng.normal(0, 40, a.shape), 0, 255)
    other = rng.integers(0, 256, a.shape)
    s_noisy, s_other = M.ms_ssim(a, noisy), M.ms_ssim(a, other)
    assert np.all(s_noisy < 1) and np.all(s_other < s_noisy)
    const = np.full((2, 32, 32, 3), 128, np.uint8)
    assert np.allclose(M.ms_ssim(const, const), 1.0)


def test_ms_ssim_single_scale_matches_skimage() -> None:
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (1, 48, 48, 3)).astype(np.float64)
    b = np.clip(a + rng.normal(0, 25, a.shape), 0, 255)
    ref = structural_similarity(
        a[0], b[0], channel_axis=-1, data_range=255, gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False,
    )
    assert M.ms_ssim(a, b, scales=1)[0] == pytest.approx(ref, abs=1e-4)


def test_random_pairs_respect_groups() -> None:
    rng = np.random.default_rng(0)
    groups = np.array([0, 0, 1, 1, 2, 2])
    pairs = M.random_pairs(6, 100, rng, groups)
    assert len(pairs) == 12  # 15 pairs minus the 3 within a group
    assert np.all(groups[pairs[:, 0]] != groups[pairs[:, 1]])
    big = M.random_pairs(1000, 50, rng)
    assert len(big) == 50 and np.all(big[:, 0] < big[:, 1])


def test_diversity_of_identical_images_is_zero() -> None:
    img = np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3)).astype(np.uint8)
    d = M.diversity(np.repeat(img, 5, axis=0), n_pairs=10, rng=np.random.default_rng(0))
    assert d["l1"] == 0.0 and d["ms_ssim_div"] == pytest.approx(0.0, abs=1e-9)


def test_wasserstein_and_colour_distance() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(50, 150, 10_000)
    assert M.wasserstein_1d_hist(a, a + 20, 0, 255) == pytest.approx(20, abs=1.5)
    imgs = rng.integers(0, 256, (4, 16, 16, 3)).astype(np.uint8)
    same = M.colour_distance(imgs, imgs, rng=rng)
    shifted = M.colour_distance(imgs, np.clip(imgs.astype(int) - 40, 0, 255).astype(np.uint8),
                                rng=rng)
    assert same["rgb_emd"] == pytest.approx(0, abs=1e-9)
    assert shifted["rgb_emd"] > 20 and shifted["he_emd"] > same["he_emd"]


def test_frechet_distance() -> None:
    rng = np.random.default_rng(0)
    f = rng.normal(size=(200, 4))
    assert M.frechet_distance(f, f) == pytest.approx(0, abs=1e-6)
    assert M.frechet_distance(f, f + 1.0) == pytest.approx(4.0, rel=1e-6)  # |mean shift|^2
    # more dimensions than samples: still finite
    g = rng.normal(size=(5, 16))
    assert np.isfinite(M.frechet_distance(g, g + 0.1))


def _textured_pair(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    a = np.clip(128 + gaussian_filter(rng.normal(size=(n, size, size, 3)), (0, 2, 2, 0)) * 300,
                0, 255)
    b = np.clip(a + rng.normal(0, 20, a.shape) + np.array([10.0, -5.0, 0.0]), 0, 255)
    return a.astype(np.float32), b.astype(np.float32)


def test_ms_ssim_follows_pytorch_msssim() -> None:
    import pytorch_msssim

    a, b = _textured_pair(3, 192)
    ref = pytorch_msssim.ms_ssim(
        torch.from_numpy(a).permute(0, 3, 1, 2), torch.from_numpy(b).permute(0, 3, 1, 2),
        data_range=255, size_average=False,
    ).double().numpy()
    assert np.allclose(M.ms_ssim(a, b), ref, atol=1e-9)  # the library itself at 161 px and up
    own = M.ms_ssim(a, b, scales=5)  # this module's code path, same convention
    assert np.allclose(own, ref, atol=2e-5)


def test_ms_ssim_on_small_patches_uses_fewer_scales() -> None:
    assert [M.ms_ssim_scales(s) for s in (256, 161, 160, 128, 64, 32, 16)] == [5, 5, 4, 4, 3, 2, 1]
    a, b = _textured_pair(2, 128)
    s = M.ms_ssim(a, b)
    assert np.allclose(s, M.ms_ssim(a, b, scales=4)) and np.all((s > 0.5) & (s < 1))
    assert np.allclose(M.ms_ssim(a, a), 1.0)
    assert np.all(M.ms_ssim(a, a[::-1].copy()) < s)  # different images score lower


def _old_wasserstein(a: np.ndarray, b: np.ndarray, lo: float, hi: float, bins: int = 256) -> float:
    """The hand-written area between cumulative histograms used before scipy (a copy)."""
    edges = np.linspace(lo, hi, bins + 1)
    ha = np.histogram(np.clip(a, lo, hi), edges)[0].astype(np.float64)
    hb = np.histogram(np.clip(b, lo, hi), edges)[0].astype(np.float64)
    cdf = np.cumsum(ha / ha.sum()) - np.cumsum(hb / hb.sum())
    return float(np.abs(cdf).sum() * (hi - lo) / bins)


def test_wasserstein_agrees_with_the_cumulative_histogram_formula() -> None:
    rng = np.random.default_rng(3)
    for _ in range(5):
        a = rng.integers(0, 256, 4000)
        b = np.clip(rng.normal(rng.uniform(60, 200), 30, 3000), 0, 255)
        got = M.wasserstein_1d_hist(a, b, 0, 255)
        assert got == pytest.approx(_old_wasserstein(a, b, 0, 255), rel=1e-12, abs=1e-12)
    h = rng.normal(0.1, 0.02, 2000)
    assert M.wasserstein_1d_hist(h, h + 0.01, 0.0, 0.2, bins=64) == pytest.approx(
        _old_wasserstein(h, h + 0.01, 0.0, 0.2, bins=64), rel=1e-12
    )
    assert np.isnan(M.wasserstein_1d_hist(np.zeros(0), a, 0, 255))


def test_frechet_reports_a_large_imaginary_part() -> None:
    import warnings

    rng = np.random.default_rng(0)
    f, g = rng.normal(size=(200, 4)), rng.normal(size=(150, 4)) + 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error", M.FrechetWarning)  # ordinary features: no warning
        d = M.frechet_distance(f, g)
        small = M.frechet_moments(f.mean(0), np.cov(f.T), g.mean(0), np.cov(g.T))
    assert small.distance == d and small.imaginary < 1e-6
    # A "covariance" that is not positive semi-definite: S_a S_b has a negative eigenvalue, so
    # its square root is imaginary there; the distance is reported with a warning.
    mu = np.zeros(3)
    with pytest.warns(M.FrechetWarning, match="imaginary"):
        bad = M.frechet_moments(mu, np.eye(3), mu, np.diag([1.0, 1.0, -1.0]))
    assert bad.imaginary > M.FRECHET_IMAGINARY_TOLERANCE and np.isfinite(bad.distance)
