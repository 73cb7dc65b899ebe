"""Synthetic PAS-like kidney slides with glomerulus annotations ("phantoms").

The demo and the tests that must always run need slides without shipping real data. A phantom is
a pyramidal, tiled, JPEG-compressed TIFF that OpenSlide opens with its generic-tiff driver (levels
as successive pages, pixel size in X/YResolution), plus the glomerulus outlines as a QuPath 0.4
GeoJSON. The look is a cartoon of a PAS-stained cortex section: an irregular tissue blob on white
glass, pink stroma, packed tubules (pale cytoplasm, a ring of nuclei, a white lumen, a magenta
basement membrane) and glomeruli (a tangle of magenta capillary loops with nuclei, a white
Bowman's space and a thin capsule).

Colours come from a Beer-Lambert mix of two stains: each pixel holds an amount of PAS (magenta)
and of haematoxylin (nuclei), and the RGB is ``glass * exp(-(amounts @ optical densities))``.
Sizes are set in micrometres and turned into pixels with the slide's ``mpp``.

Every random choice comes from ``np.random.default_rng`` streams derived from the seed, so the
same seed gives the same bytes.
"""

from __future__ import annotations

import json
import math
import uuid
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from shapely.geometry import Polygon

# Colour of clean glass and of one unit of each stain on it (RGB, 0-255).
_GLASS = (243.0, 241.0, 245.0)
_PAS_RGB = (178.0, 62.0, 150.0)
_HEM_RGB = (70.0, 52.0, 128.0)

# PAS amounts of the tissue parts (scaled per slide by a random stain strength).
_STROMA = 0.38
_CYTO_PROXIMAL = 0.56
_CYTO_DISTAL = 0.44
_BASEMENT = 1.05
_BRUSH = 0.70
_LUMEN = 0.08
_CAPSULE = 1.10
_BOWMAN = 0.05

# Part labels of the occupancy map: which nuclei survive where.
_OCC_STROMA, _OCC_TUBULE, _OCC_GLOM = 0, 1, 2

_TISSUE_CELL = 16  # px per cell of the coarse tissue field
_MIN_PYRAMID_SIDE = 512


@dataclass(frozen=True)
class _Glomerulus:
    """One glomerulus: centre and mean outer radius (level-0 px) and its outline harmonics."""

    cx: float
    cy: float
    radius: float
    orders: tuple[int, ...]
    amplitudes: tuple[float, ...]
    phases: tuple[float, ...]

    @property
    def bound(self) -> float:
        """A radius the outline never exceeds."""
        return self.radius * (1.0 + sum(abs(a) for a in self.amplitudes))

    def radius_at(self, theta: np.ndarray) -> np.ndarray:
        """Outer radius (px) at the angles `theta`."""
        r = np.ones_like(theta)
        for k, a, p in zip(self.orders, self.amplitudes, self.phases):
            r += a * np.cos(k * theta + p)
        return self.radius * r

    def polygon(self, n: int = 96) -> Polygon:
        """The outline as a star-shaped polygon, coordinates rounded to 0.01 px."""
        theta = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
        r = self.radius_at(theta)
        xs = np.round(self.cx + r * np.cos(theta), 2)
        ys = np.round(self.cy + r * np.sin(theta), 2)
        return Polygon(np.stack([xs, ys], axis=1))


def make_phantom_slide(
    path: Path,
    *,
    seed: int,
    width: int = 4096,
    height: int = 3072,
    mpp: float = 0.5,
    n_glomeruli: int | None = None,
    tile: int = 256,
    quality: int = 90,
) -> list[Polygon]:
    """Write a synthetic PAS-like kidney slide to `path` and return its glomerulus outlines.

    The file is a tiled, JPEG-compressed TIFF whose pages are the pyramid levels (each half the
    size of the one before, down to a smaller side under 512 px), with the pixel size `mpp`
    (µm/px) in X/YResolution, so OpenSlide's generic-tiff driver reads it as a pyramid with
    ``openslide.mpp-x == mpp``. `n_glomeruli` defaults to about 8 per mm² of tissue (as many as
    fit); an explicit count that does not fit raises ValueError. The image is drawn whole in
    memory (about 40 bytes per pixel), which suits demo and test sizes, not 100k-px slides.
    Polygons are in level-0 pixels (pixel (i, j) covers [i, i+1) x [j, j+1)), valid, disjoint
    and inside the slide.
    """
    if width < 64 or height < 64:
        raise ValueError(f"phantom slide must be at least 64x64 px, not {width}x{height}")
    if mpp <= 0:
        raise ValueError(f"mpp must be positive, not {mpp}")
    if tile <= 0 or tile % 16:
        raise ValueError(f"tile must be a positive multiple of 16 (a TIFF rule), not {tile}")
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, not {quality}")
    rgb, glomeruli = _render(
        seed=seed, width=width, height=height, mpp=mpp, n_glomeruli=n_glomeruli
    )
    _write_pyramid(Path(path), rgb, mpp=mpp, tile=tile, quality=quality)
    return [g.polygon() for g in glomeruli]


def write_qupath_geojson(
    path: Path, polygons: Iterable[Polygon], *, label: str = "Glomerulus", seed: int = 0
) -> None:
    """Write `polygons` as a QuPath 0.4 GeoJSON FeatureCollection of annotations of class `label`.

    Feature ids are version-4 UUID strings drawn from `seed`, so the file is reproducible.
    """
    rng = np.random.default_rng(seed)
    color = _label_color(label)
    features = []
    for poly in polygons:
        if not isinstance(poly, Polygon):
            raise TypeError(f"expected a shapely Polygon, got {type(poly).__name__}")
        rings = [poly.exterior, *poly.interiors]
        coords = [[[_num(x), _num(y)] for x, y in ring.coords] for ring in rings]
        features.append(
            {
                "type": "Feature",
                "id": str(uuid.UUID(bytes=rng.bytes(16), version=4)),
                "geometry": {"type": "Polygon", "coordinates": coords},
                "properties": {
                    "objectType": "annotation",
                    "classification": {"name": label, "color": color},
                },
            }
        )
    text = json.dumps({"type": "FeatureCollection", "features": features}, indent=2)
    Path(path).write_text(text + "\n", encoding="utf-8")


def make_phantom_dataset(
    out: Path,
    *,
    slides: int = 4,
    seed: int = 0,
    width: int = 4096,
    height: int = 3072,
    mpp: float = 0.5,
) -> list[tuple[Path, Path]]:
    """Write `slides` phantoms ``phantom-000.tif`` + ``phantom-000.geojson``, ... into `out`.

    Slide i's seed is derived from (`seed`, i), so a slide does not change when `slides` does.
    Returns the (slide, geojson) pairs.
    """
    if slides < 1:
        raise ValueError(f"slides must be at least 1, not {slides}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pairs = []
    for i, child in enumerate(np.random.SeedSequence(seed).spawn(slides)):
        slide_seed = int(child.generate_state(1)[0])
        tif = out / f"phantom-{i:03d}.tif"
        geo = out / f"phantom-{i:03d}.geojson"
        polygons = make_phantom_slide(tif, seed=slide_seed, width=width, height=height, mpp=mpp)
        write_qupath_geojson(geo, polygons, seed=slide_seed)
        pairs.append((tif, geo))
    return pairs


# ----------------------------------------------------------------------------------------------
# Rendering


def _render(
    *, seed: int, width: int, height: int, mpp: float, n_glomeruli: int | None
) -> tuple[np.ndarray, list[_Glomerulus]]:
    """Draw the slide: an (height, width, 3) uint8 RGB image and its glomeruli."""
    streams = np.random.SeedSequence(seed).spawn(7)
    rng_tissue, rng_glom, rng_tex, rng_tub, rng_gdraw, rng_stroma, rng_stain = (
        np.random.default_rng(s) for s in streams
    )
    um = 1.0 / mpp  # px per µm
    shape = (height, width)

    coarse, threshold = _tissue_field(rng_tissue, shape)
    tissue = _upsample(coarse, _TISSUE_CELL, shape) > threshold
    glomeruli = _place_glomeruli(rng_glom, coarse > threshold, shape, um=um, n=n_glomeruli, mpp=mpp)

    # Stain strength and hue vary a little from slide to slide, as between real stainings.
    strength = rng_stain.uniform(0.85, 1.15)
    od_pas = _od(_PAS_RGB) * rng_stain.uniform(0.93, 1.07, 3).astype(np.float32)
    od_hem = _od(_HEM_RGB) * rng_stain.uniform(0.93, 1.07, 3).astype(np.float32)

    # Stroma: PAS amount with cloudy variation.
    cloud = _smooth_noise(rng_tex, shape, max(4, round(25 * um)))
    pas = (_STROMA * (1.0 + 0.22 * cloud)).astype(np.float32)
    occ = np.zeros(shape, np.uint8)
    points: list[np.ndarray] = []  # rows of (x, y, weight, part)

    points.append(_draw_tubules(rng_tub, pas, occ, tissue, glomeruli, um=um))
    for g in glomeruli:
        points.append(_draw_glomerulus(rng_gdraw, pas, occ, tissue, g, um=um))
    points.append(_stroma_nuclei(rng_stroma, shape, tissue, um=um))

    hem = _nuclei(np.concatenate(points), occ, tissue, shape, um=um)
    grain = _smooth_noise(rng_tex, shape, 2)
    return _compose(pas, hem, tissue, grain, strength, od_pas, od_hem, rng_tex), glomeruli


def _tissue_field(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, float]:
    """A coarse smooth field (one value per 16 px) and the threshold that makes it a tissue blob.

    The field is a centred elliptic dome plus smooth noise; the threshold is the quantile that
    leaves 45-70 % of the slide as tissue, so Otsu on a thumbnail has white glass to find.
    """
    h, w = (math.ceil(s / _TISSUE_CELL) + 2 for s in shape)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = h * rng.uniform(0.42, 0.58), w * rng.uniform(0.42, 0.58)
    dome = 1.0 - np.hypot((yy - cy) / (0.5 * h), (xx - cx) / (0.5 * w))
    noise = ndi.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), max(h, w) / 10)
    noise /= noise.std() + 1e-6
    fine = ndi.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), max(h, w) / 40)
    fine /= fine.std() + 1e-6
    field = dome + 0.25 * noise + 0.04 * fine
    threshold = float(np.quantile(field, 1.0 - rng.uniform(0.45, 0.70)))
    # Keep only the biggest piece: one section, not crumbs.
    labels, n = ndi.label(field > threshold)
    if n > 1:
        sizes = ndi.sum_labels(np.ones_like(field), labels, index=np.arange(1, n + 1))
        keep = labels == 1 + int(np.argmax(sizes))
        field = np.where(keep | (field <= threshold), field, threshold - 1e-3).astype(np.float32)
    return field.astype(np.float32), threshold


def _place_glomeruli(
    rng: np.random.Generator,
    coarse_tissue: np.ndarray,
    shape: tuple[int, int],
    *,
    um: float,
    n: int | None,
    mpp: float,
) -> list[_Glomerulus]:
    """Glomeruli that do not overlap, lie inside the slide and, where possible, inside tissue.

    Tries whole-in-tissue first, then centre-in-tissue, then anywhere on the slide. An explicit
    `n` that cannot be fitted raises ValueError; the default (about 8 per mm² of tissue) takes
    what fits, so tiny slides may have none.
    """
    height, width = shape
    explicit = n is not None
    if n is None:
        tissue_mm2 = coarse_tissue.sum() * (_TISSUE_CELL * mpp / 1000) ** 2
        n = max(1, round(8 * tissue_mm2))
    gap = 12 * um
    placed: list[_Glomerulus] = []
    ring = np.linspace(0, 2 * np.pi, 12, endpoint=False)

    def in_tissue(x: np.ndarray, y: np.ndarray) -> bool:
        i = np.clip((y / _TISSUE_CELL).astype(int), 0, coarse_tissue.shape[0] - 1)
        j = np.clip((x / _TISSUE_CELL).astype(int), 0, coarse_tissue.shape[1] - 1)
        return bool(coarse_tissue[i, j].all())

    for strictness in (2, 1, 0):
        for _ in range(3000):
            if len(placed) == n:
                return placed
            diameter_um = float(np.clip(rng.normal(165, 35), 100, 250))
            orders = (2, 3, 4, 5)
            amps = tuple(float(rng.uniform(0, 0.05) / math.sqrt(k - 1)) for k in orders)
            phases = tuple(float(p) for p in rng.uniform(0, 2 * np.pi, len(orders)))
            radius = diameter_um / 2 * um
            bound = radius * (1 + sum(amps))
            lo, hi = bound + 2, (width - bound - 2, height - bound - 2)
            if hi[0] <= lo or hi[1] <= lo:
                continue  # too big for this slide; try a smaller one
            cx, cy = rng.uniform(lo, hi[0]), rng.uniform(lo, hi[1])
            if any(math.hypot(cx - g.cx, cy - g.cy) < bound + g.bound + gap for g in placed):
                continue
            if strictness == 2 and not in_tissue(
                np.append(cx + 0.9 * bound * np.cos(ring), cx),
                np.append(cy + 0.9 * bound * np.sin(ring), cy),
            ):
                continue
            if strictness == 1 and not in_tissue(np.array([cx]), np.array([cy])):
                continue
            placed.append(_Glomerulus(cx, cy, radius, orders, amps, phases))
    if explicit and len(placed) < n:
        raise ValueError(
            f"cannot fit {n} non-overlapping glomeruli on a {width}x{height} px slide at "
            f"{mpp} µm/px; ask for fewer or a bigger slide"
        )
    return placed


def _draw_tubules(
    rng: np.random.Generator,
    pas: np.ndarray,
    occ: np.ndarray,
    tissue: np.ndarray,
    glomeruli: list[_Glomerulus],
    *,
    um: float,
) -> np.ndarray:
    """Paint packed elliptical tubules into `pas` and `occ`; return their nuclei as points.

    Centres sit on a jittered grid; later tubules overlap earlier ones, which reads as packing.
    Proximal tubules (about 60 %) have a brush border and denser cytoplasm, distal ones a wider,
    cleaner lumen and more, smaller cells.
    """
    height, width = pas.shape
    spacing = 52 * um
    ys = np.arange(spacing / 2, height, spacing)
    xs = np.arange(spacing / 2, width, spacing)
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    gx = gx.ravel() + rng.uniform(-0.3, 0.3, gx.size) * spacing
    gy = gy.ravel() + rng.uniform(-0.3, 0.3, gy.size) * spacing
    order = rng.permutation(gx.size)
    membrane = 1.6 * um
    brush = 2.2 * um
    pts: list[np.ndarray] = []
    for cx, cy in zip(gx[order], gy[order]):
        a = rng.uniform(0.56, 0.74) * spacing
        b = a * rng.uniform(0.6, 0.95)
        angle = rng.uniform(0, np.pi)
        proximal = rng.random() < 0.6
        lumen = rng.uniform(0.22, 0.45) if proximal else rng.uniform(0.35, 0.6)
        squeeze = rng.uniform(0.35, 1.0) if proximal else rng.uniform(0.7, 1.0)
        wobble = rng.uniform(-0.07, 0.07, 2)
        wob_phase = rng.uniform(0, 2 * np.pi, 2)
        cyto = (_CYTO_PROXIMAL if proximal else _CYTO_DISTAL) * rng.uniform(0.85, 1.15)
        n_nuc_spacing = rng.uniform(8.5, 11.0) if proximal else rng.uniform(6.5, 8.5)
        ix, iy = int(cx), int(cy)
        if not (0 <= ix < width and 0 <= iy < height) or not tissue[iy, ix]:
            continue
        if any(math.hypot(cx - g.cx, cy - g.cy) < 0.85 * g.bound for g in glomeruli):
            continue
        r = a * 1.2 + 2
        x0, x1 = max(0, int(cx - r)), min(width, int(cx + r) + 1)
        y0, y1 = max(0, int(cy - r)), min(height, int(cy + r) + 1)
        dx = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cx)[None, :]
        dy = (np.arange(y0, y1, dtype=np.float32) + 0.5 - cy)[:, None]
        c, s = math.cos(angle), math.sin(angle)
        u = dx * c + dy * s
        v = dy * c - dx * s
        theta = np.arctan2(v / b, u / a)
        shape_r = (
            1
            + wobble[0] * np.cos(2 * theta + wob_phase[0])
            + wobble[1] * np.cos(3 * theta + wob_phase[1])
        )
        rho = np.hypot(u / a, v / b) / shape_r
        rho_lumen = np.hypot(u / a, v / (b * squeeze)) / shape_r  # proximal lumens: often slits
        inside = rho < 1.0
        mean_r = math.sqrt(a * b)
        val = np.full(rho.shape, cyto, np.float32)
        val[rho > 1.0 - membrane / mean_r] = _BASEMENT
        if proximal:
            val[(rho_lumen >= lumen) & (rho_lumen < lumen + brush / mean_r)] = _BRUSH
        val[rho_lumen < lumen] = _LUMEN
        win = (slice(y0, y1), slice(x0, x1))
        pas[win] = np.where(inside, val, pas[win])
        occ[win][inside] = _OCC_TUBULE

        # Nuclei in the middle of the epithelium, about evenly spaced around the ring.
        rn = lumen + (1 - lumen) * 0.5
        perimeter = 2 * np.pi * rn * mean_r
        k = max(3, round(perimeter / (n_nuc_spacing * um)))
        phi = (np.arange(k) + rng.uniform(-0.3, 0.3, k)) * (2 * np.pi / k) + rng.uniform(0, 6.3)
        rr = rn + rng.uniform(-0.1, 0.1, k) * (1 - lumen)
        pu, pv = rr * a * np.cos(phi), rr * b * np.sin(phi)
        px, py = cx + pu * c - pv * s, cy + pu * s + pv * c
        w = rng.uniform(0.8, 1.3, k) * (1.0 if proximal else 0.85)
        pts.append(np.stack([px, py, w, np.full(k, _OCC_TUBULE)], axis=1))
    return np.concatenate(pts) if pts else np.zeros((0, 4))


def _draw_glomerulus(
    rng: np.random.Generator,
    pas: np.ndarray,
    occ: np.ndarray,
    tissue: np.ndarray,
    g: _Glomerulus,
    *,
    um: float,
) -> np.ndarray:
    """Paint one glomerulus into `pas` and `occ`; return its nuclei as points.

    The glomerulus and its rim become tissue, so the tissue edge never cuts one.

    From outside in: a thin rim of stroma, the capsule line, Bowman's space (a crescent, wider on
    one side) and the tuft: capillary loops drawn as the zero-crossings of band-limited noise,
    with open capillary lumens and denser mesangial areas.
    """
    height, width = pas.shape
    win = _window(g, (height, width), 1.12)
    ys, xs = win
    dx = (np.arange(xs.start, xs.stop, dtype=np.float32) + 0.5 - g.cx)[None, :]
    dy = (np.arange(ys.start, ys.stop, dtype=np.float32) + 0.5 - g.cy)[:, None]
    theta = np.arctan2(dy, dx)
    dist = np.hypot(dx, dy)
    rout = g.radius_at(theta)
    rho = dist / rout

    capsule = rng.uniform(2.0, 3.5) * um
    gap_min, gap_max = rng.uniform(2, 6) * um, rng.uniform(7, 20) * um
    gap_dir = rng.uniform(0, 2 * np.pi)
    gap = gap_min + (gap_max - gap_min) * (0.5 + 0.5 * np.cos(theta - gap_dir)) ** 2
    lobes = np.ones_like(theta)
    for k in (5, 6, 7, 9):
        lobes += rng.uniform(0, 0.035) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    r_tuft = (rout - capsule - gap) * lobes

    rim = rho < 1.0 + 8 * um / g.radius
    inside = rho < 1.0
    tuft = dist < r_tuft

    # Capillary loops: lines where smooth noise crosses zero; lumens where it is high.
    noise = ndi.gaussian_filter(rng.standard_normal(dist.shape).astype(np.float32), 1.9 * um)
    noise /= noise.std() + 1e-6
    loops = np.exp(-((noise / 0.45) ** 2))
    lumen = np.clip((noise - 0.9) * 2.5, 0, 1)
    mesangium = np.clip((-noise - 0.8) * 2.0, 0, 1)
    tuft_val = 0.45 + 0.8 * loops - 0.4 * lumen + 0.2 * mesangium

    val = np.full(dist.shape, _STROMA, np.float32)
    val[inside] = _BOWMAN
    val[inside & (dist > rout - capsule)] = _CAPSULE
    val = np.where(tuft, tuft_val, val)
    pas[win] = np.where(rim, val, pas[win])
    occ[win][rim] = _OCC_STROMA
    occ[win][inside] = _OCC_GLOM
    tissue[win] |= rim

    # Nuclei: dense in the tuft (more in mesangial areas), flat ones along the capsule.
    area = float(tuft.sum())
    k = round(area / (rng.uniform(80, 105) * um * um))
    weights = (tuft * (1.0 + 1.5 * mesangium) * (1.0 - lumen)).ravel().astype(np.float64)
    pts = []
    if k > 0 and weights.sum() > 0:
        flat = rng.choice(weights.size, size=k, replace=False, p=weights / weights.sum())
        py, px = np.divmod(flat, dist.shape[1])
        px = px + xs.start + rng.uniform(0, 1, k)
        py = py + ys.start + rng.uniform(0, 1, k)
        pts.append(np.stack([px, py, rng.uniform(0.8, 1.25, k), np.full(k, _OCC_GLOM)], axis=1))
    kp = round(2 * np.pi * g.radius / (rng.uniform(25, 40) * um))
    phi = rng.uniform(0, 2 * np.pi, kp)
    rp = g.radius_at(phi) - capsule - 1.5 * um
    pts.append(
        np.stack(
            [
                g.cx + rp * np.cos(phi),
                g.cy + rp * np.sin(phi),
                rng.uniform(0.55, 0.75, kp),
                np.full(kp, _OCC_GLOM),
            ],
            axis=1,
        )
    )
    return np.concatenate(pts)


def _stroma_nuclei(
    rng: np.random.Generator, shape: tuple[int, int], tissue: np.ndarray, *, um: float
) -> np.ndarray:
    """Sparse spindle-shaped interstitial nuclei (three points in a row each) as points."""
    height, width = shape
    k = round(height * width / (45 * um) ** 2)
    x = rng.uniform(0, width, k)
    y = rng.uniform(0, height, k)
    keep = tissue[y.astype(int), x.astype(int)]
    x, y = x[keep], y[keep]
    angle = rng.uniform(0, np.pi, x.size)
    step = 2.2 * um
    w = rng.uniform(0.55, 0.8, x.size)
    rows = [
        np.stack([x + t * step * np.cos(angle), y + t * step * np.sin(angle), w], axis=1)
        for t in (-1, 0, 1)
    ]
    pts = np.concatenate(rows)
    return np.concatenate([pts, np.full((len(pts), 1), _OCC_STROMA)], axis=1)


def _nuclei(
    points: np.ndarray,
    occ: np.ndarray,
    tissue: np.ndarray,
    shape: tuple[int, int],
    *,
    um: float,
) -> np.ndarray:
    """Haematoxylin amount: each point becomes a round dark nucleus of ~7 µm.

    Points whose part no longer owns their pixel (a tubule painted over by a later tubule or a
    glomerulus) are dropped. Impulses are blurred and passed through a soft threshold, so close
    points merge into one irregular nucleus, as crowded nuclei do.
    """
    height, width = shape
    x = points[:, 0].astype(int)
    y = points[:, 1].astype(int)
    ok = (x >= 0) & (x < width) & (y >= 0) & (y < height)
    points, x, y = points[ok], x[ok], y[ok]
    ok = (occ[y, x] == points[:, 3]) & tissue[y, x]
    imp = np.zeros(shape, np.float32)
    np.add.at(imp, (y[ok], x[ok]), points[ok, 2].astype(np.float32))
    sigma = 2.2 * um
    blur = ndi.gaussian_filter(imp, sigma, truncate=3.0)
    blur *= 2 * np.pi * sigma * sigma  # a weight-1 point peaks at 1
    return np.clip((blur - 0.35) * 3.0, 0.0, 1.0) ** 0.7 * 1.05


def _compose(
    pas: np.ndarray,
    hem: np.ndarray,
    tissue: np.ndarray,
    grain: np.ndarray,
    strength: float,
    od_pas: np.ndarray,
    od_hem: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Mix the stain amounts into RGB (Beer-Lambert over glass), band by band to save memory."""
    height, width = pas.shape
    glass = np.asarray(_GLASS, np.float32)
    out = np.empty((height, width, 3), np.uint8)
    band = 256
    for y0 in range(0, height, band):
        sl = slice(y0, min(height, y0 + band))
        t = tissue[sl]
        g = grain[sl]
        p = pas[sl] * (1.0 + 0.2 * g) * strength * t
        h = hem[sl] * (1.0 + 0.15 * g) * t
        od = p[..., None] * od_pas + h[..., None] * od_hem
        rgb = glass * np.exp(-od)
        rgb += rng.normal(0, 1.5, p.shape).astype(np.float32)[..., None]
        out[sl] = np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
    return out


# ----------------------------------------------------------------------------------------------
# Helpers


def _window(g: _Glomerulus, shape: tuple[int, int], scale: float) -> tuple[slice, slice]:
    """The (rows, cols) slices of a square around `g` of half-side `scale` x its bound."""
    height, width = shape
    r = g.bound * scale + 2
    return (
        slice(max(0, int(g.cy - r)), min(height, int(g.cy + r) + 1)),
        slice(max(0, int(g.cx - r)), min(width, int(g.cx + r) + 1)),
    )


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: int) -> np.ndarray:
    """Unit-variance noise smooth over about `scale` px: coarse white noise, bilinearly upsampled.

    Upsampling a coarse grid is several times faster than filtering a full-size one.
    """
    h, w = (s // scale + 2 for s in shape)
    coarse = rng.standard_normal((h, w)).astype(np.float32)
    if scale > 2:
        coarse = ndi.gaussian_filter(coarse, 0.7)
    coarse /= coarse.std() + 1e-6
    return _upsample(coarse, scale, shape)


def _upsample(coarse: np.ndarray, factor: int, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of `coarse` by an integer `factor`, cropped to `shape`."""
    fine = ndi.zoom(coarse, factor, order=1, grid_mode=False)
    return fine[: shape[0], : shape[1]]


def _od(rgb: tuple[float, float, float]) -> np.ndarray:
    """Optical density of a colour seen on white light."""
    return -np.log(np.asarray(rgb, np.float32) / 255.0)


def _label_color(label: str) -> list[int]:
    """A stable display colour for a class name (QuPath stores one per class)."""
    if label.lower() == "glomerulus":
        return [0, 150, 50]
    h = zlib.crc32(label.encode("utf-8"))
    return [64 + (h & 0x7F), 64 + ((h >> 8) & 0x7F), 64 + ((h >> 16) & 0x7F)]


def _num(v: float) -> float | int:
    """A coordinate as JSON prefers it: an int when whole, else a float."""
    return int(v) if float(v).is_integer() else float(v)


def _pyramid(rgb: np.ndarray) -> list[np.ndarray]:
    """Level 0 and its 2x box-filtered reductions until the smaller side is under 512 px."""
    levels = [rgb]
    while min(levels[-1].shape[:2]) >= _MIN_PYRAMID_SIDE:
        x = levels[-1]
        h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
        s = x[:h, :w].astype(np.uint16)
        s = s[0::2, 0::2] + s[1::2, 0::2] + s[0::2, 1::2] + s[1::2, 1::2]
        levels.append(((s + 2) // 4).astype(np.uint8))
    return levels


def _write_pyramid(path: Path, rgb: np.ndarray, *, mpp: float, tile: int, quality: int) -> None:
    """Write `rgb` and its reductions as successive tiled JPEG pages of one TIFF.

    OpenSlide's generic-tiff driver takes successive pages as levels (it ignores SubIFDs).
    Given RGB input with ``photometric="rgb"``, tifffile stores standard YCbCr 4:2:0 JPEG tiles
    (passing ``"ycbcr"`` would mislabel the RGB data). The resolution is given in pixels per
    centimetre, which OpenSlide turns into openslide.mpp-x/y.
    """
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    levels = _pyramid(rgb)
    bigtiff = rgb.nbytes > 2**31
    with tifffile.TiffWriter(path, bigtiff=bigtiff) as tif:
        for i, level in enumerate(levels):
            px_per_cm = 1e4 / (mpp * rgb.shape[1] / level.shape[1])
            tif.write(
                level,
                tile=(tile, tile),
                photometric="rgb",
                compression="jpeg",
                compressionargs={"level": quality},
                resolution=(px_per_cm, px_per_cm),
                resolutionunit="CENTIMETER",
                subfiletype=1 if i else 0,
                metadata=None,
                software="wsi-aug phantom",
            )
