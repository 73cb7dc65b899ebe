"""Phantom slides: OpenSlide reads them as pyramids at the asked pixel size, they are reproducible,
their glomeruli are valid, disjoint and look unlike the stroma, and the GeoJSON is QuPath 0.4's."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import openslide
import pytest
import shapely
import tifffile
from scipy import ndimage as ndi
from shapely.geometry import Polygon, box, shape
from skimage.color import rgb2gray
from skimage.draw import polygon as draw_polygon
from skimage.filters import threshold_otsu

from wsi_aug.phantom import (
    _render,
    make_phantom_dataset,
    make_phantom_slide,
    write_qupath_geojson,
)

SIZE = 1536


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Polygon]]:
    """One 1536 x 1536 phantom at 0.5 µm/px and its glomeruli."""
    path = tmp_path_factory.mktemp("phantom") / "slide.tif"
    return path, make_phantom_slide(path, seed=11, width=SIZE, height=SIZE)


@pytest.fixture(scope="module")
def level0(slide: tuple[Path, list[Polygon]]) -> np.ndarray:
    """The whole level 0 as OpenSlide reads it (RGB uint8)."""
    with openslide.OpenSlide(slide[0]) as osr:
        return np.asarray(osr.read_region((0, 0), 0, osr.dimensions).convert("RGB"))


def _mask(poly: Polygon, shape: tuple[int, int]) -> np.ndarray:
    xy = np.asarray(poly.exterior.coords)
    m = np.zeros(shape, bool)
    rr, cc = draw_polygon(xy[:, 1], xy[:, 0], shape)
    m[rr, cc] = True
    return m


def test_openslide_reads_a_pyramid_at_the_given_mpp(slide: tuple[Path, list[Polygon]]) -> None:
    path, _ = slide
    assert openslide.OpenSlide.detect_format(path) == "generic-tiff"
    with openslide.OpenSlide(path) as osr:
        assert osr.level_count == 3  # 1536 -> 768 -> 384 (under 512)
        assert osr.dimensions == (SIZE, SIZE)
        assert osr.level_dimensions[1] == (SIZE // 2, SIZE // 2)
        assert osr.level_downsamples[-1] == pytest.approx(4.0)
        assert float(osr.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(0.5)
        assert float(osr.properties[openslide.PROPERTY_NAME_MPP_Y]) == pytest.approx(0.5)


def test_other_mpp_and_tile_size(tmp_path: Path) -> None:
    path = tmp_path / "fine.tif"
    polys = make_phantom_slide(path, seed=2, width=1100, height=700, mpp=0.25, tile=128)
    with openslide.OpenSlide(path) as osr:
        assert osr.level_count == 2  # 700 -> 350
        assert osr.dimensions == (1100, 700)
        assert float(osr.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(0.25)
        assert osr.properties["openslide.level[0].tile-width"] == "128"
    assert all(box(0, 0, 1100, 700).contains(p) for p in polys)


def test_region_read_matches_rendering_and_tifffile(
    slide: tuple[Path, list[Polygon]], level0: np.ndarray
) -> None:
    path, _ = slide
    rendered, _ = _render(seed=11, width=SIZE, height=SIZE, mpp=0.5, n_glomeruli=None)
    with tifffile.TiffFile(path) as tif:
        assert len(tif.series[0].levels) == 3
        decoded = tif.pages[0].asarray()
    # Same JPEG tiles, two decoders: practically equal; against the unencoded image: close.
    assert np.abs(decoded.astype(int) - level0).mean() < 1.0
    diff = np.abs(rendered.astype(int) - level0)
    assert diff.mean() < 4.0
    with openslide.OpenSlide(path) as osr:
        region = np.asarray(osr.read_region((700, 300), 0, (200, 150)).convert("RGB"))
        assert np.array_equal(region, level0[300:450, 700:900])
        thumb = np.asarray(osr.read_region((0, 0), 1, (SIZE // 2, SIZE // 2)).convert("RGB"))
    box_mean = level0.reshape(SIZE // 2, 2, SIZE // 2, 2, 3).mean((1, 3))
    assert np.abs(thumb - box_mean).mean() < 4.0


def test_polygons_valid_disjoint_inside(slide: tuple[Path, list[Polygon]]) -> None:
    _, polys = slide
    assert len(polys) >= 2
    frame = box(0, 0, SIZE, SIZE)
    for i, p in enumerate(polys):
        assert isinstance(p, Polygon) and p.is_valid and frame.contains(p)
        diameter_um = 2 * np.sqrt(p.area / np.pi) * 0.5
        assert 90 < diameter_um < 270
        for q in polys[i + 1 :]:
            assert not p.intersects(q)


def test_glomeruli_differ_from_their_surroundings(
    slide: tuple[Path, list[Polygon]], level0: np.ndarray
) -> None:
    _, polys = slide
    img = level0.astype(float)
    gray = rgb2gray(level0)
    for p in polys:
        inside = _mask(p, gray.shape)
        ring = ndi.binary_dilation(inside, iterations=40) & ~ndi.binary_dilation(
            inside, iterations=10
        )
        assert np.linalg.norm(img[inside].mean(0) - img[ring].mean(0)) > 12  # 20+ over 12 seeds
        assert gray[inside].std() > 1.15 * gray[ring].std()  # busier texture
        assert gray[inside].mean() < gray[ring].mean() - 0.01  # darker: nuclei and loops


def test_white_glass_around_tissue_for_otsu(
    slide: tuple[Path, list[Polygon]], level0: np.ndarray
) -> None:
    _, polys = slide
    thumb = rgb2gray(level0.reshape(SIZE // 16, 16, SIZE // 16, 16, 3).mean((1, 3)) / 255)
    white = thumb > 225 / 255
    assert 0.15 < white.mean() < 0.8
    tissue = ndi.binary_fill_holes(thumb < threshold_otsu(thumb))
    assert 0.2 < tissue.mean() < 0.85
    for p in polys:
        c = p.centroid
        assert tissue[int(c.y) // 16, int(c.x) // 16]


def test_explicit_glomerulus_count_and_errors(tmp_path: Path) -> None:
    polys = make_phantom_slide(tmp_path / "a.tif", seed=4, width=1024, height=1024, n_glomeruli=5)
    assert len(polys) == 5
    assert shapely.union_all(polys).area == pytest.approx(sum(p.area for p in polys))  # disjoint
    with pytest.raises(ValueError, match="cannot fit"):
        make_phantom_slide(tmp_path / "b.tif", seed=4, width=600, height=600, n_glomeruli=40)
    with pytest.raises(ValueError, match="tile"):
        make_phantom_slide(tmp_path / "c.tif", seed=4, width=600, height=600, tile=100)


def test_geojson_has_the_qupath_fields(tmp_path: Path, slide: tuple[Path, list[Polygon]]) -> None:
    _, polys = slide
    path = tmp_path / "g.geojson"
    write_qupath_geojson(path, polys, seed=3)
    doc = json.loads(path.read_text())
    assert doc["type"] == "FeatureCollection"
    assert len(doc["features"]) == len(polys)
    ids = set()
    for feature, poly in zip(doc["features"], polys, strict=True):
        assert feature["type"] == "Feature"
        ids.add(str(uuid.UUID(feature["id"])))
        assert feature["geometry"]["type"] == "Polygon"
        ring = feature["geometry"]["coordinates"][0]
        assert ring[0] == ring[-1]
        assert shape(feature["geometry"]).equals_exact(poly, 1e-9)
        props = feature["properties"]
        assert props["objectType"] == "annotation"
        assert props["classification"]["name"] == "Glomerulus"
        color = props["classification"]["color"]
        assert len(color) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in color)
    assert len(ids) == len(polys)
    again = tmp_path / "h.geojson"
    write_qupath_geojson(again, polys, seed=3)
    assert again.read_bytes() == path.read_bytes()


def test_dataset_is_deterministic_per_seed(tmp_path: Path) -> None:
    kw = {"slides": 2, "width": 1024, "height": 768}
    first = make_phantom_dataset(tmp_path / "a", seed=5, **kw)
    second = make_phantom_dataset(tmp_path / "b", seed=5, **kw)
    other = make_phantom_dataset(tmp_path / "c", seed=6, slides=1, width=1024, height=768)
    assert [(t.name, g.name) for t, g in first] == [
        ("phantom-000.tif", "phantom-000.geojson"),
        ("phantom-001.tif", "phantom-001.geojson"),
    ]
    for (t1, g1), (t2, g2) in zip(first, second, strict=True):
        assert t1.read_bytes() == t2.read_bytes()
        assert g1.read_bytes() == g2.read_bytes()
    assert first[0][0].read_bytes() != first[1][0].read_bytes()  # each slide its own seed
    assert other[0][0].read_bytes() != first[0][0].read_bytes()
    assert other[0][1].read_bytes() != first[0][1].read_bytes()
    with openslide.OpenSlide(first[1][0]) as osr:
        assert osr.level_count == 2
