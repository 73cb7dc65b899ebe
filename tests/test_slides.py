"""Slide reading: the real slides and tiles, made-up TIFF/PNG files, resampling, and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageOps

from wsi_aug.errors import SlideError
from wsi_aug.slides import (
    SLIDE_SUFFIXES,
    Slide,
    format_slide_info,
    open_slide,
    slide_info,
)
from wsi_aug.slides import base as slides_base

CMU = "slides/CMU-1-Small-Region.svs"
NDPI = "slides/hamamatsu-fluorescence-DAPI.ndpi"


def _block_mean(img: np.ndarray, n: int) -> np.ndarray:
    h, w = img.shape[0] // n * n, img.shape[1] // n * n
    return img[:h, :w].astype(np.float64).reshape(h // n, n, w // n, n, 3).mean(axis=(1, 3))


def _one_line_error(exc: pytest.ExceptionInfo[SlideError], name: str) -> str:
    text = str(exc.value)
    assert name in text and "\n" not in text
    return text


def _reference(img: np.ndarray, box: tuple[float, float, float, float], out: int) -> np.ndarray:
    """Direct (slow, float64) area averaging / linear interpolation of img padded with white."""

    def weights(start: float, step: float, n_in: int) -> np.ndarray:
        m = np.zeros((out, n_in))
        for i in range(out):
            if step > 1:
                a, b = start + i * step, start + (i + 1) * step
                for k in range(int(np.floor(a)), int(np.ceil(b))):
                    m[i, k] += (min(k + 1, b) - max(k, a)) / step
            else:
                p = start + (i + 0.5) * step - 0.5
                k = int(np.floor(p))
                m[i, k] += 1 - (p - k)
                m[i, k + 1] += p - k
        return m

    pad = 32
    padded = np.pad(img.astype(np.float64), ((pad, pad), (pad, pad), (0, 0)), constant_values=255)
    x, y, w, h = box
    wx = weights(x + pad, w / out, padded.shape[1])
    wy = weights(y + pad, h / out, padded.shape[0])
    return np.einsum("ij,jkc,lk->ilc", wy, padded, wx)


@pytest.fixture(scope="module")
def pattern_png(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A 96 x 80 random RGB PNG and its pixels."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("png") / "pattern.png"
    Image.fromarray(img).save(path)
    return path, img


def _pyramid_tiff(path: Path, img: np.ndarray, mpp: float) -> list[np.ndarray]:
    """A tiled 3-level pyramid in the main IFD chain (OpenSlide's generic TIFF), in cm units."""
    levels = [img, _block_mean(img, 2).round().astype(np.uint8)]
    levels.append(_block_mean(levels[1], 2).round().astype(np.uint8))
    res = 1e4 / mpp  # pixels per centimetre
    with tifffile.TiffWriter(path) as tw:
        for i, lvl in enumerate(levels):
            tw.write(
                lvl, tile=(64, 64), photometric="rgb", compression="zlib",
                subfiletype=1 if i else 0, resolution=(res / 2**i, res / 2**i),
                resolutionunit="CENTIMETER", metadata=None,
            )  # fmt: skip
    return levels


# ---- the real slides -------------------------------------------------------------------------


def test_aperio_metadata(shared_data: Path) -> None:
    with open_slide(shared_data / CMU) as slide:
        assert slide.backend == "openslide"
        assert slide.vendor == "aperio"
        assert slide.dimensions == (2220, 2967)
        assert slide.level_count == 1 and slide.level_downsamples == (1.0,)
        assert slide.mpp == pytest.approx((0.499, 0.499))
        assert slide.objective_power == 20
        assert set(slide.associated_image_names) == {"label", "macro", "thumbnail"}
        label = slide.associated_image("label")
        assert label.shape == (463, 387, 3) and label.dtype == np.uint8
        assert slide.properties["openslide.vendor"] == "aperio"
        with pytest.raises(SlideError, match="no associated image 'nope'"):
            slide.associated_image("nope")
        info = slide_info(slide)
        assert info["associated_images"]["macro"] == [1280, 431]
        text = format_slide_info(info)
        assert "aperio" in text and "0.499" in text and "label" in text and "20x" in text


@pytest.mark.parametrize("target", [1.0, 2.0])
def test_aperio_read_at_mpp_matches_block_means(shared_data: Path, target: float) -> None:
    with open_slide(shared_data / CMU) as slide:
        x0, y0 = 1000, 1500  # tissue
        f = target / slide.mpp[0]  # 2.004 or 4.008 level-0 pixels per output pixel
        n = round(f)
        # the true pixel size: close to n x n block means (which drift by f - n px per pixel)
        got = slide.read_at_mpp((x0, y0, 32 * f, 32 * f), target, (32, 32))
        assert got.shape == (32, 32, 3) and got.dtype == np.uint8
        ref = _block_mean(slide.read_region((x0, y0), 0, (32 * n, 32 * n)), n)
        assert np.abs(got - ref).mean() < 3
        # a footprint of exactly n x n level-0 pixels per output pixel: the block means exactly
        out = 96
        exact = slide.read_at_mpp((x0, y0, n * out, n * out), target, (out, out))
        ref = _block_mean(slide.read_region((x0, y0), 0, (n * out, n * out)), n)
        assert np.abs(exact - ref).max() <= 0.5 + 1e-9


def test_aperio_edge_is_white_and_flagged(shared_data: Path) -> None:
    with open_slide(shared_data / CMU) as slide:
        patch, crosses = slide.read_centered(20, 20, 64, 1.0)
        assert crosses and patch.shape == (64, 64, 3)
        assert (patch[:8, :8] == 255).all()  # 32 µm beyond the top-left corner
        inside, crosses = slide.read_centered(1100, 1500, 64, 1.0)
        assert not crosses and inside.shape == (64, 64, 3)
        assert (inside < 250).any()  # tissue, not padding
        w, h = slide.dimensions
        region = slide.read_region((w - 10, h - 10), 0, (20, 20))
        assert (region[10:, :] == 255).all() and (region[:, 10:] == 255).all()


def test_hamamatsu_levels_and_coarse_reads(shared_data: Path) -> None:
    with open_slide(shared_data / NDPI) as slide:
        assert slide.vendor == "hamamatsu" and slide.level_count == 7
        mpp = slide.mpp[0]
        assert slide.best_level_for_mpp(mpp * 16 * 1.5) == 4
        assert slide.best_level_for_mpp(mpp * 16) == 4  # equal within the tolerance
        assert slide.best_level_for_mpp(mpp * 0.5) == 0
        assert slide.best_level_for_mpp(1e6) == 6
        box = (500.0, 700.3, 2000.0, 1500.0)
        img = slide.read_at_mpp(box, 8.0, (61, 47))
        assert img.shape == (47, 61, 3) and img.dtype == np.uint8
        thumb = slide.thumbnail(100)
        assert max(thumb.shape[:2]) == 100


def test_real_tile_as_image_slide(shared_data: Path) -> None:
    path = sorted((shared_data / "aidpath-pas-tiles" / "images").glob("*.png"))[0]
    with open_slide(path) as slide:
        assert slide.backend == "image" and slide.mpp_or_none is None
        with pytest.raises(SlideError, match="--slide-mpp") as exc:
            _ = slide.mpp
        _one_line_error(exc, path.name)
        with pytest.raises(SlideError, match="--slide-mpp"):
            slide.read_at_mpp((0, 0, 100, 100), 1.0, (50, 50))
    with open_slide(path, slide_mpp=0.5) as slide:
        assert slide.dimensions == (1024, 1024) and slide.mpp == (0.5, 0.5)
        patch, crosses = slide.read_centered(512, 512, 128, 1.0)
        assert patch.shape == (128, 128, 3) and not crosses
        assert slide_info(slide)["mpp_source"] == "--slide-mpp"


def test_truncated_real_slide(shared_data: Path, tmp_path: Path) -> None:
    data = (shared_data / CMU).read_bytes()
    for frac in (0.5, 0.99):
        bad = tmp_path / f"cut-{frac}.svs"
        bad.write_bytes(data[: int(len(data) * frac)])
        for backend in (None, "openslide", "tifffile"):
            with pytest.raises(SlideError, match="truncated") as exc:
                open_slide(bad, backend=backend)
            _one_line_error(exc, bad.name)


# ---- made-up files ---------------------------------------------------------------------------


def test_pyramid_tiff_same_pixels_in_both_backends(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    path = tmp_path / "pyramid.tif"
    levels = _pyramid_tiff(path, img, mpp=0.25)
    with open_slide(path, "openslide") as a, open_slide(path, "tifffile") as b:
        assert a.backend == "openslide" and b.backend == "tifffile"
        assert a.level_dimensions == b.level_dimensions == ((400, 300), (200, 150), (100, 75))
        assert a.mpp == pytest.approx((0.25, 0.25)) and b.mpp == pytest.approx((0.25, 0.25))
        for i, lvl in enumerate(levels):
            h, w = lvl.shape[:2]
            np.testing.assert_array_equal(a.read_region((0, 0), i, (w, h)), lvl)
            np.testing.assert_array_equal(b.read_region((0, 0), i, (w, h)), lvl)
        box = (33.3, 41.7, 180.0, 150.0)
        assert a.best_level_for_mpp(0.5) == b.best_level_for_mpp(0.5) == 1
        ra, rb = a.read_at_mpp(box, 0.6, (70, 60)), b.read_at_mpp(box, 0.6, (70, 60))
        assert np.abs(ra.astype(int) - rb).max() <= 1  # float rounding of the two layouts
    with open_slide(path) as auto:
        assert auto.backend == "openslide"


def test_plain_tiff_refused_by_openslide_read_by_tifffile(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (120, 90, 3), dtype=np.uint8)
    path = tmp_path / "plain.tif"
    dpi = 25400 / 0.5  # 0.5 µm per pixel, in inch units
    tifffile.imwrite(path, img, photometric="rgb", resolution=(dpi, dpi), resolutionunit="INCH")
    with pytest.raises(SlideError, match="--backend") as exc:
        open_slide(path, backend="openslide")
    _one_line_error(exc, path.name)
    with open_slide(path) as slide:
        assert slide.backend == "tifffile" and slide.level_count == 1
        assert slide.mpp == pytest.approx((0.5, 0.5))
        np.testing.assert_array_equal(slide.read_region((0, 0), 0, (90, 120)), img)
        np.testing.assert_array_equal(slide.read_region((10, 20), 0, (30, 40)), img[20:60, 10:40])
    grey = tmp_path / "grey16.tif"
    tifffile.imwrite(grey, np.full((20, 30), 65535, np.uint16))
    with open_slide(grey, slide_mpp=1.0) as slide:
        assert slide.mpp_or_none == (1.0, 1.0)
        assert (slide.read_region((0, 0), 0, (30, 20)) == 255).all()


def test_ome_tiff_pyramid_goes_to_tifffile(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (256, 320, 3), dtype=np.uint8)
    path = tmp_path / "slide.ome.tif"
    with tifffile.TiffWriter(path) as tw:
        tw.write(
            img, tile=(64, 64), photometric="rgb", subifds=1,
            metadata={"axes": "YXS", "PhysicalSizeX": 0.3, "PhysicalSizeY": 0.3},
        )  # fmt: skip
        tw.write(img[::2, ::2], tile=(64, 64), photometric="rgb", subfiletype=1)
    with open_slide(path) as slide:
        assert slide.backend == "tifffile" and slide.vendor == "ome"
        assert slide.level_dimensions == ((320, 256), (160, 128))
        assert slide.mpp == pytest.approx((0.3, 0.3))
        np.testing.assert_array_equal(slide.read_region((0, 0), 1, (160, 128)), img[::2, ::2])


def test_rgba_png_on_white_and_grey_png(tmp_path: Path) -> None:
    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, :4, 3] = 0  # transparent
    rgba[:, 4:8, 3] = 128  # half
    rgba[:, 8:, 3] = 255  # opaque
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, "RGBA").save(path)
    with open_slide(path, slide_mpp=1.0) as slide:
        img = slide.read_region((0, 0), 0, (12, 10))
    assert (img[:, :4] == 255).all()
    np.testing.assert_allclose(img[0, 5], [200 * 128 / 255 + 127 * 255 / 255] + [127] * 2, atol=1)
    assert (img[:, 8:] == [200, 0, 0]).all()
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((5, 6), 77, np.uint8), "L").save(grey)
    with open_slide(grey, slide_mpp=1.0) as slide:
        assert (slide.read_region((0, 0), 0, (6, 5)) == 77).all()


# ---- resampling ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "box",
    [
        (8.0, 4.0, 40.0, 40.0),  # exact 2x at an integral offset
        (7.3, 3.6, 41.1, 41.1),  # 2.06x at a sub-pixel offset
        (-5.5, 60.25, 61.0, 33.0),  # crossing two edges, unequal axes
        (20.4, 10.7, 10.0, 10.0),  # 0.5x: upsampling (linear)
        (3.0, 2.0, 20.0, 20.0),  # 1x: a crop
        (2.5, 2.5, 20.0, 20.0),  # 1x at half a pixel
    ],
)
def test_resampling_matches_direct_computation(
    pattern_png: tuple[Path, np.ndarray], box: tuple[float, float, float, float]
) -> None:
    path, img = pattern_png
    with open_slide(path, slide_mpp=1.0) as slide:
        got = slide.read_at_mpp(box, 1.0, (20, 20))
    assert got.shape == (20, 20, 3)
    assert np.abs(got - _reference(img, box, 20)).max() <= 0.5 + 1e-6


def test_bgra_paths_match_rgb_paths(tmp_path: Path) -> None:
    """OpenSlide's premultiplied BGRA (packed integer block means, float resampling) gives the
    same pixels as the RGB path of tifffile for the same file."""
    rng = np.random.default_rng(4)
    img = rng.integers(0, 256, (200, 240, 3), dtype=np.uint8)
    path = tmp_path / "p.tif"
    _pyramid_tiff(path, img, mpp=0.5)
    with open_slide(path, "openslide") as a, open_slide(path, "tifffile") as b:
        for box, size in [((10, 20, 96, 64), (24, 16)), ((10.5, 20.2, 97, 65), (24, 16))]:
            ra, rb = a.read_at_mpp(box, 0.5, size), b.read_at_mpp(box, 0.5, size)
            assert np.abs(ra.astype(int) - rb).max() <= 1


def test_banded_reads_equal_whole_reads(
    pattern_png: tuple[Path, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = pattern_png
    with open_slide(path, slide_mpp=1.0) as slide:
        whole = slide.thumbnail(37)
        box = (1.3, 2.7, 90.0, 70.0)
        ref = slide.read_at_mpp(box, 1.0, (45, 35))
        monkeypatch.setattr(slides_base, "_BAND_PIXELS", 500)
        np.testing.assert_array_equal(slide.thumbnail(37), whole)
        np.testing.assert_array_equal(slide.read_at_mpp(box, 1.0, (45, 35)), ref)
    assert whole.shape == (31, 37, 3)


def test_results_do_not_share_scratch_memory(pattern_png: tuple[Path, np.ndarray]) -> None:
    path, _ = pattern_png
    with open_slide(path, slide_mpp=1.0) as slide:
        first = slide.read_at_mpp((0.5, 0.5, 40, 40), 2.0, (20, 20))
        kept = first.copy()
        slide.read_at_mpp((40.5, 30.5, 40, 40), 2.0, (20, 20))
        np.testing.assert_array_equal(first, kept)


# ---- bad input -------------------------------------------------------------------------------


def test_bad_input_is_one_line_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(SlideError, match="no such file") as exc:
        open_slide(tmp_path / "missing.svs")
    _one_line_error(exc, "missing.svs")
    fake = tmp_path / "notes.svs"
    fake.write_text("not a slide\n" * 20)
    for backend in (None, "openslide", "tifffile", "image"):
        with pytest.raises(SlideError) as exc:
            open_slide(fake, backend=backend)
        _one_line_error(exc, "notes.svs")
    rng = np.random.default_rng(5)
    good = tmp_path / "good.tif"
    _pyramid_tiff(good, rng.integers(0, 256, (256, 256, 3), dtype=np.uint8), mpp=0.5)
    data = good.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(SlideError, match="truncated") as exc:
        open_slide(cut)
    _one_line_error(exc, "cut.tif")
    png = tmp_path / "cut.png"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(png)
    png.write_bytes(png.read_bytes()[:300])
    with pytest.raises(SlideError, match="truncated") as exc:
        open_slide(png, slide_mpp=1.0)
    _one_line_error(exc, "cut.png")
    with pytest.raises(SlideError, match="folder"):
        open_slide(tmp_path)
    with pytest.raises(SlideError, match="--slide-mpp must be a positive number"):
        open_slide(good, slide_mpp=-1.0)


def test_closed_slide_and_suffixes(pattern_png: tuple[Path, np.ndarray]) -> None:
    path, _ = pattern_png
    slide = open_slide(path, slide_mpp=1.0)
    assert isinstance(slide, Slide)
    slide.close()
    with pytest.raises(SlideError, match="closed"):
        slide.read_region((0, 0), 0, (4, 4))
    assert {".svs", ".ndpi", ".mrxs", ".tif", ".tiff", ".png", ".jpg"} <= SLIDE_SUFFIXES


# ---- reads at the level's own pixel size -----------------------------------------------------


def test_integer_crop_fast_path_equals_the_general_path(
    tmp_path: Path, pattern_png: tuple[Path, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """At one level pixel per output pixel on the pixel grid, the read is a plain crop; the
    resampler gives the very same pixels (here with the fast path switched off)."""
    rng = np.random.default_rng(6)
    tif = tmp_path / "p.tif"
    _pyramid_tiff(tif, rng.integers(0, 256, (200, 240, 3), dtype=np.uint8), mpp=0.5)
    boxes = [(10, 20, 64, 48), (-7, -3, 40, 40), (220, 180, 40, 30), (0, 0, 240, 200)]
    # (slide, target mpp, level-0 pixels per level pixel at that mpp)
    cases = [
        (open_slide(tif, "openslide"), 0.5, 1.0),
        (open_slide(tif, "tifffile"), 0.5, 1.0),
        (open_slide(tif, "openslide"), 1.0, 2.0),  # level 1 (BGRA raw)
        (open_slide(tif, "tifffile"), 1.0, 2.0),
        (open_slide(pattern_png[0], slide_mpp=1.0), 1.0, 1.0),
    ]

    def read_all() -> list[np.ndarray]:
        return [
            slide.read_at_mpp((x * ds, y * ds, w * ds, h * ds), mpp, (w, h))
            for slide, mpp, ds in cases
            for x, y, w, h in boxes
        ]

    assert all(slides_base._as_crop(b, (b[2], b[3])) for b in boxes)
    fast = read_all()
    monkeypatch.setattr(slides_base, "_as_crop", lambda box, size: None)
    general = read_all()
    for f, g in zip(fast, general, strict=True):
        assert f.dtype == g.dtype == np.uint8
        np.testing.assert_array_equal(f, g)
    for slide, _, _ in cases:
        slide.close()
    monkeypatch.undo()
    path, img = pattern_png  # a crop of the PNG is its pixels, white beyond the edge
    with open_slide(path, slide_mpp=1.0) as slide:
        crop = slide.read_at_mpp((5, 7, 30, 20), 1.0, (30, 20))
        np.testing.assert_array_equal(crop, img[7:27, 5:35])
        edge = slide.read_at_mpp((-4, 70, 20, 20), 1.0, (20, 20))
        assert (edge[:, :4] == 255).all() and (edge[10:] == 255).all()
        np.testing.assert_array_equal(edge[:10, 4:], img[70:80, 0:16])


def test_fractional_boxes_are_not_crops() -> None:
    assert slides_base._as_crop((3.0, 4.0, 20.0, 20.0), (20, 20)) == (3, 4, 20, 20)
    assert slides_base._as_crop((3.0 + 1e-8, 4.0, 20.0, 20.0), (20, 20)) == (3, 4, 20, 20)
    assert slides_base._as_crop((3.5, 4.0, 20.0, 20.0), (20, 20)) is None  # interpolated
    assert slides_base._as_crop((3.0, 4.0, 20.0 + 1e-6, 20.0), (20, 20)) is None
    assert slides_base._as_crop((3.0, 4.0, 40.0, 40.0), (20, 20)) is None  # a 2x average


def test_pixel_aligned_only_at_the_level_pixel_size(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    tif = tmp_path / "p.tif"
    levels = _pyramid_tiff(tif, rng.integers(0, 256, (200, 240, 3), dtype=np.uint8), mpp=0.5)
    with open_slide(tif, "tifffile") as slide:
        box = (10.3, 20.7, 32.0, 32.0)
        assert slide.pixel_aligned(box, 0.5) == (10.0, 21.0, 32.0, 32.0)  # level 0: 0.5 µm/px
        assert slide.pixel_aligned((10.3, 20.7, 64.0, 64.0), 1.0) == (10.0, 20.0, 64.0, 64.0)
        assert slide.pixel_aligned(box, 0.7) == box  # resampled: sub-pixel offsets kept
        assert slide.pixel_aligned(box, 0.5 * (1 + 1e-6)) == box
        near = slide.pixel_aligned((10.3, 20.7, 32.0 * (1 + 1e-12), 32.0), 0.5)
        assert near == (10.0, 21.0, 32.0, 32.0)  # a size within SAME_MPP of whole pixels
        x0, y0, w, h = slide.pixel_aligned((51.1, 29.9, 64.0, 64.0), 1.0)
        got = slide.read_at_mpp((x0, y0, w, h), 1.0, (32, 32))
        np.testing.assert_array_equal(got, levels[1][15 : 15 + 32, 26 : 26 + 32])


def test_plain_image_modes_and_exif_orientation(tmp_path: Path) -> None:
    """Opaque images are cropped, then converted: the same pixels as converting the whole."""
    rng = np.random.default_rng(8)
    rgb = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    for mode in ("RGB", "L", "P", "CMYK", "1"):
        img = Image.fromarray(rgb).convert(mode)
        path = tmp_path / f"m-{mode}.{'tif' if mode == 'CMYK' else 'png'}"
        img.save(path)
        want = np.asarray(Image.open(path).convert("RGB"))
        with open_slide(path, backend="image", slide_mpp=1.0) as slide:
            np.testing.assert_array_equal(slide.read_region((0, 0), 0, (40, 30)), want)
            np.testing.assert_array_equal(slide.read_region((5, 3), 0, (10, 12)), want[3:15, 5:15])
    # a JPEG whose EXIF says "rotate 90° clockwise to display" reads as displayed
    path = tmp_path / "rot.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rgb).save(path, exif=exif.tobytes(), quality=95)
    with open_slide(path, slide_mpp=1.0) as slide:
        assert slide.dimensions == (30, 40)
        with Image.open(path) as img:
            shown = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
        np.testing.assert_array_equal(slide.read_region((0, 0), 0, (30, 40)), shown)


def test_plain_images_load_no_slide_library(tmp_path: Path) -> None:
    """Opening a JPEG imports neither OpenSlide nor tifffile (nor zarr through it): start-up."""
    import subprocess
    import sys

    rng = np.random.default_rng(1)
    path = tmp_path / "tile.jpg"
    Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(path)
    code = (
        "import sys\n"
        "import wsi_aug.extract, wsi_aug.slides\n"
        "from wsi_aug.slides import open_slide\n"
        f"with open_slide({str(path)!r}, slide_mpp=1.0) as s:\n"
        "    assert s.backend == 'image' and s.read_at_mpp((0, 0, 8, 8), 1.0, (8, 8)).shape\n"
        "print(sorted(m for m in ('openslide', 'tifffile', 'zarr') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_plain_image_holds_its_decoded_pixels(pattern_png: tuple[Path, np.ndarray]) -> None:
    path, img = pattern_png
    with open_slide(path, slide_mpp=1.0) as slide:
        assert slide.held_bytes() == img.shape[0] * img.shape[1] * 4  # Pillow stores RGB as RGBX
        np.testing.assert_array_equal(slide.read_region((0, 0), 0, (96, 80)), img)
    assert slide.held_bytes() == 0


@pytest.mark.parametrize("kind", ["baseline", "progressive", "grey", "cmyk", "trailing"])
def test_jpeg_pixels_are_pillows(tmp_path: Path, kind: str) -> None:
    """However a JPEG is decoded (libjpeg-turbo via imagecodecs, or Pillow), the pixels are
    Pillow's."""
    from wsi_aug.slides import image_backend

    rng = np.random.default_rng(9)
    base = rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)
    rgb = np.asarray(Image.fromarray(base).resize((203, 157), Image.Resampling.BICUBIC))
    img = Image.fromarray(rgb)
    path = tmp_path / f"{kind}.jpg"
    if kind == "grey":
        img = img.convert("L")
    elif kind == "cmyk":
        img = img.convert("CMYK")
    img.save(path, quality=85, progressive=kind == "progressive")
    if kind == "trailing":
        path.write_bytes(path.read_bytes() + b"\x00" * 7)  # bytes after the end of the image
    with Image.open(path) as im:
        want = np.asarray(im.convert("RGB"))
        fast = image_backend._decode_jpeg(im, path) is not None
    assert fast == (kind in ("baseline", "progressive"))
    with open_slide(path, slide_mpp=1.0) as slide:
        assert slide.held_bytes() == (
            want.nbytes if fast else 203 * 157 * (1 if kind == "grey" else 4)
        )
        np.testing.assert_array_equal(slide.read_region((0, 0), 0, (203, 157)), want)
        np.testing.assert_array_equal(
            slide.read_region((-5, 150), 0, (20, 20))[:7, 5:], want[150:, :15]
        )


def test_closed_jpeg_buffers_are_reused_without_changing_earlier_reads(tmp_path: Path) -> None:
    """A closed JPEG slide's pixel buffer decodes the next JPEG of its size (no fresh pages);
    what was read from the first slide is a copy and stays as it was."""
    from wsi_aug.slides import image_backend

    rng = np.random.default_rng(11)
    paths = []
    for k in range(2):
        base = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        rgb = np.asarray(Image.fromarray(base).resize((120, 90), Image.Resampling.BICUBIC))
        paths.append(tmp_path / f"t{k}.jpg")
        Image.fromarray(rgb).save(paths[-1], quality=90)
    wants = []
    for p in paths:
        with Image.open(p) as im:
            wants.append(np.asarray(im.convert("RGB")))
    slide = open_slide(paths[0], slide_mpp=1.0)
    first = slide._pixels  # type: ignore[attr-defined]
    read = slide.read_region((0, 0), 0, (120, 90))
    slide.close()
    with open_slide(paths[1], slide_mpp=1.0) as other:
        assert other._pixels is first  # type: ignore[attr-defined]
        np.testing.assert_array_equal(other.read_region((0, 0), 0, (120, 90)), wants[1])
    np.testing.assert_array_equal(read, wants[0])
    pool = image_backend._BufferPool(max_bytes=2 * first.nbytes)
    bufs = [np.empty(first.shape, np.uint8) for _ in range(3)]
    for b in bufs:
        pool.give(b)
    assert pool.take(first.shape) is bufs[1]  # the oldest was dropped to stay under max_bytes
    assert pool.take((5, 5, 3)).shape == (5, 5, 3)  # no kept buffer fits: a new one


def test_truncated_jpeg_is_reported(tmp_path: Path) -> None:
    rng = np.random.default_rng(10)
    path = tmp_path / "cut.jpg"
    Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(path, quality=90)
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(SlideError, match="truncated") as exc:
        open_slide(path, slide_mpp=1.0)
    _one_line_error(exc, "cut.jpg")
