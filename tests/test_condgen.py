"""The learned condition generator: training, sampling, post-processing, quality measures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from wsi_aug.condgen import checkpoints, stats
from wsi_aug.condgen.mix import canonical_source, parse_mix
from wsi_aug.condgen.model import CondGenConfig, build_model, make_ema
from wsi_aug.condgen.postprocess import (
    clean_mask,
    draw_padding,
    shift_field,
    shift_reflect,
    to_conditions,
)
from wsi_aug.condgen.sample import ConditionModel
from wsi_aug.condgen.train import conditions_tensor, train
from wsi_aug.errors import CheckpointError, WsiAugError
from wsi_aug.structure import remove_small_structures

pytestmark = pytest.mark.usefixtures("one_thread")

S = 32
TINY = CondGenConfig(size=S, base=8, patch=1)


def discs(n: int, seed: int, size: int = S) -> tuple[np.ndarray, np.ndarray]:
    """`n` centred discs of random radius with random dots as structure maps."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    c = (size - 1) / 2
    masks = np.stack(
        [
            (yy - c - rng.uniform(-1, 1)) ** 2 + (xx - c - rng.uniform(-1, 1)) ** 2
            < (rng.uniform(0.15, 0.35) * size) ** 2
            for _ in range(n)
        ]
    ).astype(np.uint8)
    maps = (rng.random((n, size, size)) < rng.uniform(0.05, 0.2, (n, 1, 1))).astype(np.uint8)
    return masks, maps


def _train_tiny(cfg: CondGenConfig, out: Path, checkpoint_every: int) -> tuple[Path, list[float]]:
    """80 steps of `cfg` on 24 discs in one torch thread: its last checkpoint and its losses."""
    masks, maps = discs(24, 0)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        r = train(
            cfg,
            masks,
            maps,
            out,
            steps=80,
            batch_size=8,
            lr=3e-3,
            seed=0,
            sample_every=80,
            checkpoint_every=checkpoint_every,
            sample_steps=4,
        )
    finally:
        torch.set_num_threads(before)
    assert r.checkpoint is not None
    return r.checkpoint, r.losses


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[float]]:
    return _train_tiny(TINY, tmp_path_factory.mktemp("condgen"), checkpoint_every=40)


def test_a_tiny_model_trains_and_its_loss_falls(trained: tuple[Path, list[float]]) -> None:
    ckpt, losses = trained
    assert len(losses) == 80
    assert np.mean(losses[-15:]) < 0.85 * np.mean(losses[:15])
    out = ckpt.parent.parent
    assert (out / "losses.csv").read_text().splitlines()[0] == "step,loss,lr,it/s"
    assert len((out / "losses.csv").read_text().splitlines()) == 81
    assert sorted(p.name for p in (out / "samples").glob("*.png")) == ["step-00000080.png"]
    assert (ckpt.parent / "latest").read_text().strip() == ckpt.name


def test_resumed_training_continues_exactly(tmp_path: Path) -> None:
    masks, maps = discs(8, 1)
    opts = dict(steps=6, batch_size=4, seed=3, sample_every=100, checkpoint_every=3)
    whole = train(TINY, masks, maps, tmp_path / "a", **opts)
    half = tmp_path / "a" / "checkpoints" / "step-00000003.safetensors"
    resumed = train(TINY, masks, maps, tmp_path / "b", resume_from=half, **opts)
    assert resumed.losses == whole.losses[3:]
    a, b = checkpoints.load(whole.checkpoint), checkpoints.load(resumed.checkpoint)  # type: ignore[arg-type]
    assert all(torch.equal(a.ema[k], b.ema[k]) for k in a.ema)


def test_sampling_is_deterministic_binary_and_batch_independent(
    trained: tuple[Path, list[float]],
) -> None:
    model = ConditionModel(trained[0], steps=4)
    masks, maps = model(list(range(6)), batch_size=6)
    assert masks.shape == maps.shape == (6, S, S) and masks.dtype == maps.dtype == np.uint8
    assert set(np.unique(masks)) <= {0, 1} and set(np.unique(maps)) <= {0, 1}
    again = model(list(range(6)), batch_size=4)
    assert np.array_equal(again[0], masks) and np.array_equal(again[1], maps)
    other = model([10, 11], batch_size=2)
    assert not np.array_equal(other[1], maps[:2])


def test_clean_mask_keeps_the_centre_and_border_components_and_fills_holes() -> None:
    m = np.zeros((20, 20), bool)
    m[6:14, 6:14] = True
    m[9:11, 9:11] = False  # a hole
    m[1:3, 1:3] = True  # a speck inside: dropped
    m[0:3, 17:20] = True  # cut by the border: kept
    out = clean_mask(m)
    assert out[10, 10] == 1 and out[1, 1] == 0 and out[0, 19] == 1
    assert out.sum() == 64 + 9


def test_centring_moves_the_main_component_to_the_centre_and_both_channels_with_it() -> None:
    x = -np.ones((1, 2, S, S), np.float32)
    x[0, 0, 8:18, 10:20] = 1.0  # an off-centre square glomerulus, centroid (12.5, 14.5)
    x[0, 1, 9, 11] = 1.0  # a structure pixel inside it
    m, s = to_conditions(x, centre=True)
    ys, xs = np.nonzero(m[0])
    assert abs(ys.mean() - (S - 1) / 2) <= 0.5 and abs(xs.mean() - (S - 1) / 2) <= 0.5
    assert m[0].sum() == 100  # moved, not cut
    dy, dx = int(np.rint((S - 1) / 2 - 12.5)), int(np.rint((S - 1) / 2 - 14.5))
    assert s[0, 9 + dy, 11 + dx] == 1 and s[0].sum() == 1
    m0, _ = to_conditions(x, centre=False)
    assert m0[0, 8:18, 10:20].all()  # without centring, where it was


def test_subpixel_centring_centres_the_continuous_shape_whole_pixel_does_not() -> None:
    """Extraction centres a real glomerulus's polygon; sub-pixel centring finds the centroid of a
    sample's continuous shape (a soft disc a few px off, as the model draws them) to a few
    hundredths of a pixel and moves it there, where whole-pixel shifts leave up to half a pixel."""
    from wsi_aug.condgen.postprocess import centre_offset, shape_offset

    size = 64
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[:size, :size]
    c = (size - 1) / 2
    x = np.empty((30, 2, size, size), np.float32)
    true = []
    for i in range(30):
        cy, cx = c + rng.uniform(-4, 4, 2)
        r = rng.uniform(10, 18)
        x[i, 0] = np.clip((r**2 - (yy - cy) ** 2 - (xx - cx) ** 2) / r**2, -1, 1)  # a soft disc
        x[i, 1] = np.where((yy - cy) ** 2 + (xx - cx) ** 2 < 4, 1.0, -1.0)  # a dot at its centre
        true.append((c - cy, c - cx))
    found = [shape_offset(x[i, 0].astype(np.float64), x[i, 0] > 0) for i in range(30)]
    assert np.abs(np.array(found) - np.array(true)).max() < 0.05
    off = {}
    for sub in (True, False):
        m, s = to_conditions(x, centre=True, subpixel=sub)
        off[sub] = np.array([np.hypot(*centre_offset(mi)) for mi in m])
        # the structure moved with the mask (to the nearest pixel): the dot is at the centre
        assert all(si[int(c) : int(c) + 2, int(c) : int(c) + 2].all() for si in s)
    assert np.median(off[True]) < 0.1 and off[True].max() < 0.3
    assert np.median(off[False]) > 0.25


def test_shift_field_is_shift_reflect_for_whole_pixels() -> None:
    a = np.random.default_rng(0).normal(size=(9, 7))
    for dy, dx in [(2, 0), (0, -3), (1, 1), (-4, 2)]:
        np.testing.assert_allclose(shift_field(a, dy, dx), shift_reflect(a, dy, dx))
    half = shift_field(a, 0, 0.5)
    np.testing.assert_allclose(half[:, 1:], (a[:, 1:] + a[:, :-1]) / 2)  # interpolated


def test_mask_sigma_smooths_a_frayed_outline_into_one_solid_blob() -> None:
    """Noise on the outline (specks, a ragged edge) thresholds into extra components and a low
    solidity; blurring the mask channel first leaves one solid blob of about the same area."""
    from skimage.measure import regionprops

    rng = np.random.default_rng(6)
    yy, xx = np.mgrid[:S, :S]
    c = (S - 1) / 2
    field = np.clip((64 - (yy - c) ** 2 - (xx - c) ** 2) / 64, -1, 1)
    x = np.stack([field + rng.normal(0, 0.6, (S, S)), -np.ones((S, S))])[None].astype(np.float32)
    raw, _ = to_conditions(x, centre=False)
    smooth, _ = to_conditions(x, centre=False, mask_sigma=1.5)
    solidity = [regionprops(m.astype(np.uint8))[0].solidity for m in (raw[0], smooth[0])]
    assert solidity[0] < 0.6 and solidity[1] > 0.9
    assert ndimage.label(raw[0])[1] > 1 and ndimage.label(smooth[0])[1] == 1
    assert abs(int(smooth[0].sum()) - np.pi * 64) < 0.25 * np.pi * 64


def test_mask_opening_cuts_a_stalk_and_keeps_the_blob_and_centring_sees_the_cut() -> None:
    """A disc with a 3-px stalk to the border: opening with radius 3 removes the stalk (one
    solid component, no border contact) and the centred mask is the disc's; radius 0 keeps it."""
    from skimage.measure import regionprops

    n = 64
    yy, xx = np.mgrid[:n, :n]
    c = (n - 1) / 2
    disc = (yy - c) ** 2 + (xx - c) ** 2 <= 12**2
    stalk = (np.abs(xx - c) <= 1) & (yy > c)
    field = np.where(disc | stalk, 1.0, -1.0)
    x = np.stack([field, -np.ones((n, n))])[None].astype(np.float32)
    kept, _ = to_conditions(x, centre=True)
    opened, _ = to_conditions(x, centre=True, mask_open=3)
    assert kept[0][-1].any() and not opened[0][-1].any()  # the stalk reached the border
    props = [regionprops(m.astype(np.uint8))[0] for m in (kept[0], opened[0])]
    assert props[1].solidity > props[0].solidity and props[1].solidity > 0.95
    cy, cx = props[1].centroid
    assert abs(cy - c) < 0.5 and abs(cx - c) < 0.5  # centred on the disc, not disc + stalk
    assert abs(int(opened[0].sum()) - int(disc.sum())) < 0.05 * disc.sum()


def test_structure_sigma_removes_single_pixel_grain_and_keeps_blobs() -> None:
    rng = np.random.default_rng(3)
    n = 64
    s = -np.ones((n, n))
    s[10:30, 10:30] = 1.0  # a blob
    speck = rng.random((n, n)) < 0.03
    speck[5:35, 5:35] = False
    s[speck] = 1.0  # isolated single pixels
    x = np.stack([-np.ones((n, n)), s])[None].astype(np.float32)
    _, raw = to_conditions(x)
    _, blurred = to_conditions(x, structure_sigma=1.0)
    assert ndimage.label(raw[0])[1] > 20 and ndimage.label(blurred[0])[1] == 1
    assert blurred[0][12:28, 12:28].all()


def test_padding_insets_measure_white_border_bands_only() -> None:
    """Bands of pure white at the border count; a white row inside the patch, a nearly white
    band, and an all-white patch do not."""
    from wsi_aug.imaging import padding_insets

    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 250, (4, 32, 32, 3), dtype=np.uint8)
    imgs[0, :5] = 255  # top band of 5
    imgs[0, :, -3:] = 255  # and right band of 3
    imgs[1, 10] = 255  # a white row inside: no band
    imgs[1, -4:] = 254  # nearly white at the bottom: no band
    imgs[2, -7:] = 255  # bottom band of 7
    imgs[3] = 255  # all white: says nothing
    assert padding_insets(imgs).tolist() == [[5, 0, 0, 3], [0, 0, 0, 0], [0, 7, 0, 0], [0, 0, 0, 0]]
    assert padding_insets(np.zeros((0, 8, 8, 3), np.uint8)).shape == (0, 4)


def test_a_tile_edge_band_cuts_the_sample_and_centring_centres_the_cut_shape() -> None:
    """A disc that reaches into a bottom band of 20 px: both channels are empty in the band,
    the mask is cut straight along it, and the cut mask's centroid is at the centre (as
    extraction centres a glomerulus cut by a tile's edge), so the disc moved down; a band the
    disc never reaches changes nothing; zeros insets are no band."""
    n = 64
    yy, xx = np.mgrid[:n, :n]
    c = (n - 1) / 2
    disc = np.where((yy - c) ** 2 + (xx - c) ** 2 <= 18**2, 1.0, -1.0)
    x = np.stack([disc, np.ones((n, n))])[None].astype(np.float32)
    plain_m, plain_s = to_conditions(x, centre=True)
    m, s = to_conditions(x, centre=True, padding=np.array([[0, 20, 0, 0]]))
    assert not m[0, -20:].any() and not s[0, -20:].any() and s[0, :-20].all()
    assert m[0, -21].sum() > 10  # cut straight along the band's edge
    cy, cx = ndimage.center_of_mass(m[0])
    assert abs(cy - c) < 0.3 and abs(cx - c) < 0.3
    assert m[0].sum() < plain_m[0].sum()  # part of the disc is cut away
    top = int(np.argmax(m[0].any(axis=1)))
    assert top > int(np.argmax(plain_m[0].any(axis=1)))  # moved towards the band
    far, _ = to_conditions(x, centre=True, padding=np.array([[0, 0, 5, 0]]))
    assert (far[0] == plain_m[0]).all()
    none, none_s = to_conditions(x, centre=True, padding=np.zeros((1, 4), np.int64))
    assert (none[0] == plain_m[0]).all() and (none_s[0] == plain_s[0]).all()
    with pytest.raises(ValueError, match="rows for"):
        to_conditions(x, padding=np.zeros((2, 4), np.int64))


def test_a_deep_band_settles_too() -> None:
    """A band that hides most of the disc (the cut centroid follows a shift by about half of
    it, so plain steps would need many rounds): the band is kept and the cut shape centred."""
    n = 64
    yy, xx = np.mgrid[:n, :n]
    c = (n - 1) / 2
    disc = np.where((yy - c) ** 2 + (xx - c) ** 2 <= 20**2, 1.0, -1.0)
    x = np.stack([disc, np.ones((n, n))])[None].astype(np.float32)
    m, s = to_conditions(x, centre=True, padding=np.array([[0, 0, 26, 0]]))
    assert not s[0, :, :26].any() and s[0, :, 26:].all()  # the band was applied
    cy, cx = ndimage.center_of_mass(m[0])
    assert abs(cy - c) < 0.3 and abs(cx - c) < 0.3
    assert m[0, :, 26].sum() > 20  # cut straight along the band's edge


def test_a_band_that_would_empty_the_mask_is_not_applied() -> None:
    n = 32
    x = -np.ones((1, 2, n, n), np.float32)
    x[0, 0, 14:18, 14:18] = 1.0
    x[0, 1] = 1.0
    m, s = to_conditions(x, centre=True, padding=np.array([[n - 1, 0, 0, 0]]))
    assert m[0].sum() == 16 and s[0].all()


def test_padding_draws_depend_on_each_samples_seed_only() -> None:
    pool = np.array([[0, 0, 0, 0]] * 6 + [[0, 12, 0, 0], [7, 0, 0, 9]])
    seeds = list(range(400))
    drawn = draw_padding(pool, seeds)
    assert drawn.shape == (400, 4)
    assert (drawn == draw_padding(pool, seeds)).all()
    assert (drawn[100:110] == draw_padding(pool, seeds[100:110])).all()  # batch-independent
    assert 0.15 < np.mean(drawn.any(axis=1)) < 0.35  # a quarter of the pool has a band
    assert {tuple(r) for r in drawn} <= {tuple(r) for r in pool}
    assert draw_padding(np.zeros((0, 4)), [1, 2]).tolist() == [[0] * 4, [0] * 4]


def test_shifted_in_pixels_mirror_the_edge() -> None:
    a = np.arange(25).reshape(5, 5)
    assert shift_reflect(a, 0, 2)[0].tolist() == [1, 0, 0, 1, 2]
    assert shift_reflect(a, -2, 0)[:, 0].tolist() == [10, 15, 20, 20, 15]
    assert (shift_reflect(a, 0, 0) == a).all()


def test_small_structures_are_removed_as_the_structure_stage_removes_them() -> None:
    a = np.zeros((S, S), np.uint8)
    a[2, 2] = 1  # one pixel
    a[10:12, 10:12] = 1  # four pixels
    a[20:25, 20:25] = 1  # 25 pixels
    out = remove_small_structures(a, 5)
    assert out[2, 2] == 0 and not out[10:12, 10:12].any() and out[20:25, 20:25].all()
    assert (remove_small_structures(a, 0) == a).all()


def test_smoothed_targets_keep_the_shapes_under_the_threshold() -> None:
    masks, maps = discs(4, seed=3)
    hard = conditions_tensor(masks, maps)
    soft = conditions_tensor(masks, maps, smooth=1.0)
    assert set(np.unique(hard)) <= {-1.0, 1.0}
    assert len(np.unique(soft)) > 2 and soft.min() >= -1 and soft.max() <= 1
    agree = ((soft[:, 0] > 0) == (hard[:, 0] > 0)).mean()
    assert agree > 0.98  # the masks are the same shapes, edges aside


def test_shape_statistics_real_vs_real_near_floor_and_vs_blank_far() -> None:
    a, b = discs(150, 10, 48), discs(150, 11, 48)
    fa, fb = stats.features(*a), stats.features(*b)
    assert np.nanmax(stats.ks_distances(fa, fb)) < 0.25
    blank = (np.zeros_like(b[0]), np.zeros_like(b[1]))
    far = stats.ks_distances(fa, stats.features(*blank))
    assert far[stats.FEATURES.index("mask_area")] == 1.0
    za, zb = stats.standardise(fa, fb)
    dens, cov = stats.density_coverage(za, zb)
    assert cov > 0.8 and 0.6 < dens < 1.5
    rows = stats.compare(blank, a, b)
    coverage = next(r for r in rows if r.measure == "coverage")
    assert coverage.generated < 0.1 and not coverage.passed
    text = stats.markdown(rows)
    assert "| KS mask_area | 1 |" in text and "FAIL" in text


def test_memorisation_flags_copies_of_training_conditions() -> None:
    train_set = discs(20, 2)
    copies = (np.rot90(train_set[0][:5], 1, (1, 2)), np.rot90(train_set[1][:5], 1, (1, 2)))
    assert np.allclose(stats.nearest_iou(copies, train_set), 1.0)
    fresh = discs(5, 3)
    assert (stats.nearest_iou(fresh, train_set) < 0.95).all()
    rows = stats.compare(copies, train_set, fresh)
    share = next(r for r in rows if r.measure.startswith("share above"))
    assert share.generated == 1.0 and share.real == 0.0 and not share.passed


def test_mix_specs_parse_and_bad_ones_are_one_line_errors() -> None:
    assert parse_mix("augment") == [("augment", 1.0)]
    assert parse_mix(" learned:0.5, augment:0.5 ") == [("learned", 0.5), ("augment", 0.5)]
    assert canonical_source("learned:0.50,real:1") == "learned:0.5,real:1"
    for bad, match in [
        ("warp", "not a condition source"),
        ("learned:-1,augment:1", "positive number"),
        ("learned:x,augment:1", "positive number"),
        ("augment:1,augment:2", "twice"),
        ("learned:1", "single source takes no weight"),
        ("", "empty"),
    ]:
        with pytest.raises(ValueError, match=match):
            parse_mix(bad)
    from wsi_aug.stages.synthesize import SynthesizeParams

    with pytest.raises(WsiAugError, match=r"source \(--source\) = 'warp'.*not a condition") as e:
        SynthesizeParams.parse({"n": 2, "source": "warp"})
    assert "\n" not in str(e.value)
    plain = SynthesizeParams.parse({"n": 2})
    assert plain.key_dict() == {"n": 2, "source": "augment", "seed": 0}  # the old key
    mixed = SynthesizeParams.parse({"n": 2, "source": "learned:0.5,augment:0.5"})
    assert mixed.uses_learned and mixed.key_dict()["condition_steps"] == 50


def test_mixed_source_draws_each_sample_as_its_source_alone() -> None:
    from wsi_aug.conditions import LearnedConditions, make_source

    masks, maps = discs(6, 4)
    rows = np.arange(6)

    def blank(seeds: object) -> tuple[np.ndarray, np.ndarray]:
        n = len(seeds)  # type: ignore[arg-type]
        return np.ones((n, S, S), np.uint8), np.zeros((n, S, S), np.uint8)

    learned = LearnedConditions(blank, S, seed=1, fingerprint="sha256:abc", steps=4)
    mix = make_source("learned:0.5,augment:0.5", masks, maps, rows, 1, learned=learned)
    c = mix.batch(0, 40)
    assert 5 < c.source.count("learned") < 35
    aug = make_source("augment", masks, maps, rows, 1).batch(0, 40)
    for i, s in enumerate(c.source):
        if s == "learned":
            assert c.source_index[i] == -1 and c.transform[i] == "ddim(steps=4,model=sha256:abc)"
            assert c.masks[i].all()
        else:
            assert np.array_equal(c.masks[i], aug.masks[i]) and c.seed[i] == aug.seed[i]
    part = mix.batch(7, 5)
    assert part.source == c.source[7:12] and np.array_equal(part.masks, c.masks[7:12])
    with pytest.raises(WsiAugError, match="train-conditions"):
        make_source("learned", masks, maps, rows, 1)


def test_corrupt_and_mismatched_checkpoints_are_one_line_errors(
    trained: tuple[Path, list[float]], tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a checkpoint" * 8)
    with pytest.raises(CheckpointError, match=r"garbage\.safetensors: corrupt.*train-conditions"):
        ConditionModel(garbage)
    real = trained[0]
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(real.read_bytes()[: real.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"cut\.safetensors") as e:
        ConditionModel(cut)
    assert "\n" not in str(e.value)
    wide = CondGenConfig(size=S, base=16, patch=1)
    model = build_model(wide)
    other = checkpoints.save(
        tmp_path / "wide.safetensors", config=wide, model=model, ema=make_ema(model, 0.9), step=1
    )
    with pytest.raises(CheckpointError, match=r"wide\.safetensors.*another architecture.*base=16"):
        train(TINY, *discs(4, 0), None, steps=2, resume_from=other)


def test_reflect_padding_is_recorded_and_checked_and_old_configs_read_as_zeros(
    tmp_path: Path,
) -> None:
    """The padding mode changes what the weights compute, so a checkpoint records it; a config
    saved before the field existed reads as zero padding, and resuming across modes is refused."""
    from typing import get_args

    from wsi_aug.condgen.unet import PaddingMode
    from wsi_aug.stages.train_conditions import TrainConditionsParams

    # the stage spells the modes out (its module must not import torch): they must agree
    option = TrainConditionsParams.model_fields["padding"].annotation
    assert get_args(option) == get_args(PaddingMode)
    assert CondGenConfig.from_dict({"size": S, "base": 8, "patch": 1}).padding == "zeros"
    with pytest.raises(ValueError, match="padding 'circle'"):
        CondGenConfig(size=S, padding="circle")  # type: ignore[arg-type]
    refl = CondGenConfig(size=S, base=8, patch=1, padding="reflect")
    model = build_model(refl)
    assert all(
        m.padding_mode == "reflect"
        for m in model.modules()
        if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)
    )
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # the output conv starts at zero: give every weight a value
        for w in model.parameters():
            w.add_(0.1 * torch.randn(w.shape, generator=g))
    x, t = torch.rand(1, 2, S, S, generator=g), torch.full((1,), 0.5)
    zeros = build_model(TINY)
    zeros.load_state_dict(model.state_dict())
    assert not torch.allclose(model(x, t), zeros(x, t))  # same weights, another function
    path = checkpoints.save(
        tmp_path / "refl.safetensors", config=refl, model=model, ema=make_ema(model, 0.9), step=1
    )
    assert ConditionModel(path).config.padding == "reflect"
    with pytest.raises(CheckpointError, match=r"padding=reflect vs zeros expected"):
        train(TINY, *discs(4, 0), None, steps=2, resume_from=path)


def test_cosine_schedule_warms_up_then_decays_to_zero_and_the_stage_spells_the_same_modes() -> None:
    from typing import get_args

    from wsi_aug.condgen.train import LR_SCHEDULES, WARMUP, _lr
    from wsi_aug.stages.train_conditions import TrainConditionsParams

    option = TrainConditionsParams.model_fields["lr_schedule"].annotation
    assert get_args(option) == LR_SCHEDULES
    steps = 1000
    const = [_lr(1.0, s, steps, "constant") for s in range(steps)]
    cos = [_lr(1.0, s, steps, "cosine") for s in range(steps)]
    assert cos[:WARMUP] == const[:WARMUP] and const[-1] == 1.0
    assert cos[WARMUP] == pytest.approx(1.0) and cos[-1] < 1e-4
    assert all(a >= b for a, b in zip(cos[WARMUP:], cos[WARMUP + 1 :]))  # falls monotonically
    mid = WARMUP + (steps - WARMUP) // 2
    assert cos[mid] == pytest.approx(0.5, abs=0.01)


def _resaved(ck: checkpoints.CondCheckpoint, path: Path, **config: object) -> Path:
    """`ck`'s EMA weights saved again at `path` with some configuration fields changed."""
    import dataclasses

    net = build_model(ck.config)
    net.load_state_dict(ck.ema)
    return checkpoints.save(
        path,
        config=dataclasses.replace(ck.config, **config),  # type: ignore[arg-type]
        model=net,
        ema=make_ema(net, 0.9),
        step=1,
    )


def test_a_checkpoints_samples_get_its_configs_mask_blur_and_old_configs_the_default(
    trained: tuple[Path, list[float]], tmp_path: Path
) -> None:
    """The mask blur is part of the model's configuration: a checkpoint saved with it is sampled
    with it, one saved before the field existed gets the default, and the stage's default is the
    model's (one value, not two that can drift)."""

    from wsi_aug.condgen.sample import draw_raw
    from wsi_aug.conditions import sample_seed
    from wsi_aug.stages.train_conditions import TrainConditionsParams

    default = CondGenConfig().mask_sigma
    assert TrainConditionsParams().mask_sigma == default > 0
    assert CondGenConfig.from_dict({"size": S, "base": 8, "patch": 1}).mask_sigma == default
    with pytest.raises(ValueError, match="mask_sigma -1"):
        CondGenConfig(size=S, mask_sigma=-1)
    ck = checkpoints.load(trained[0])
    seeds = [sample_seed(0, i) for i in range(4)]
    model = ConditionModel(trained[0], steps=4)
    raw = draw_raw(model.model, seeds, S, steps=4)
    drawn = {}
    for sigma in (0.0, 3.0):
        path = _resaved(ck, tmp_path / f"s{sigma:g}.safetensors", mask_sigma=sigma)
        drawn[sigma] = ConditionModel(path, steps=4)(seeds)
        want = to_conditions(raw, min_size=ck.config.min_size, centre=True, mask_sigma=sigma)
        assert all(np.array_equal(a, b) for a, b in zip(drawn[sigma], want))
    assert not np.array_equal(drawn[0.0][0], drawn[3.0][0])


def test_a_checkpoint_with_tile_edges_gives_its_samples_the_pools_bands(
    trained: tuple[Path, list[float]], tmp_path: Path
) -> None:
    """`tile_edges` is part of the model's configuration (old configs get the default): with a
    pool of train bands, a sample gets exactly `to_conditions` with the band its seed draws;
    without the flag or without a pool, none; the stage's default is the model's."""

    from wsi_aug.condgen.sample import draw_raw
    from wsi_aug.conditions import sample_seed
    from wsi_aug.stages.train_conditions import TrainConditionsParams

    assert TrainConditionsParams().tile_edges == CondGenConfig().tile_edges
    assert CondGenConfig.from_dict({"size": S}).tile_edges == CondGenConfig().tile_edges
    ck = checkpoints.load(trained[0])
    seeds = [sample_seed(0, i) for i in range(6)]
    pool = np.array([[0, 0, 0, 0], [0, 9, 0, 0], [6, 0, 0, 7]])
    bands = draw_padding(pool, seeds)
    assert bands.any(axis=1).sum() >= 2
    raw = draw_raw(ConditionModel(trained[0], steps=4).model, seeds, S, steps=4)
    post = {"min_size": ck.config.min_size, "centre": True, "mask_sigma": ck.config.mask_sigma}
    for flag in (True, False):
        path = _resaved(ck, tmp_path / f"t{flag}.safetensors", tile_edges=flag)
        got = ConditionModel(path, steps=4, padding_pool=pool)(seeds)
        want = to_conditions(raw, padding=bands if flag else None, **post)
        assert all(np.array_equal(a, b) for a, b in zip(got, want))
        plain = ConditionModel(path, steps=4)(seeds)
        assert all(np.array_equal(a, b) for a, b in zip(plain, to_conditions(raw, **post)))
    banded = to_conditions(raw, padding=bands, **post)[1]
    for (top, bottom, left, right), smap in zip(bands, banded):
        assert not smap[:top].any() and not smap[S - bottom :].any()
        assert not smap[:, :left].any() and not smap[:, S - right :].any()


@pytest.fixture(scope="module")
def area_trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny area-conditioned model on discs of radius 0.15-0.35 of the patch."""
    cfg = CondGenConfig(size=S, base=8, patch=1, area_condition=True)
    return _train_tiny(cfg, tmp_path_factory.mktemp("condgen-area"), checkpoint_every=80)[0]


def test_an_area_conditioned_model_draws_larger_glomeruli_when_asked_for_larger_areas(
    area_trained: Path,
) -> None:
    """The checkpoint keeps the training areas; the same noise asked for a larger area gives a
    larger mask (after a few steps already), and the samples' areas come from that pool."""
    from wsi_aug.condgen.model import mask_areas
    from wsi_aug.condgen.sample import draw, draw_areas

    ck = checkpoints.load(area_trained)
    assert ck.config.area_condition and ck.areas is not None
    np.testing.assert_array_equal(ck.areas.numpy(), mask_areas(discs(24, 0)[0]))
    model = ConditionModel(area_trained, steps=6)
    seeds = list(range(12))
    post = model.config.postprocessing()
    small, _ = draw(model.model, seeds, S, steps=6, area_pool=np.array([0.08]), **post)
    large, _ = draw(model.model, seeds, S, steps=6, area_pool=np.array([0.38]), **post)
    a, b = mask_areas(small), mask_areas(large)
    assert (b > a).mean() >= 0.9 and b.mean() > a.mean() + 0.01
    # the stage's sampler draws each sample's area from the checkpoint's pool by its seed
    asked = draw_areas(ck.areas.numpy(), seeds)
    assert set(asked.tolist()) <= set(ck.areas.numpy().tolist())
    np.testing.assert_array_equal(asked[3:5], draw_areas(ck.areas.numpy(), seeds[3:5]))
    m1, s1 = model(seeds)
    m2, s2 = draw(model.model, seeds, S, steps=6, area_pool=ck.areas.numpy(), **post)
    assert np.array_equal(m1, m2) and np.array_equal(s1, s2)
    with pytest.raises(ValueError, match="area-conditioned"):
        draw(model.model, seeds, S, steps=2)
    with pytest.raises(ValueError, match="area-conditioned"):
        model.model(torch.zeros(1, 2, S, S), torch.full((1,), 0.5))


def test_an_area_conditioned_checkpoint_without_its_areas_is_a_one_line_error(
    area_trained: Path, tmp_path: Path
) -> None:
    ck = checkpoints.load(area_trained)
    bare = _resaved(ck, tmp_path / "bare.safetensors")  # saved without the areas tensor
    with pytest.raises(CheckpointError, match=r"bare\.safetensors: corrupt.*training areas") as e:
        ConditionModel(bare)
    assert "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match=r"area_condition=True vs False expected"):
        train(TINY, *discs(4, 0), None, steps=2, resume_from=area_trained)
    # an unconditioned model's weights are those of before the option (no extra layer)
    assert not any(k.startswith("area.") for k in build_model(TINY).state_dict())
