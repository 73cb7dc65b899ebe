"""Structure maps: a binary map of the stained structures of each patch, the GAN's second input.

The paper thresholds the real patch so that the generator is told where nuclei, membranes and
capillary walls are, not only where the glomerulus is. Here the map is built from one "stain"
channel in which higher means more structure (inverted grey, HSV saturation, or the hematoxylin
channel of a colour deconvolution), thresholded per patch by Otsu (default) or at a fixed level,
optionally with small objects removed.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from wsi_aug.imaging import is_flat, otsu_threshold

Channel = Literal["grey", "saturation", "hematoxylin"]
Method = Literal["otsu", "fixed"]
CHANNELS: tuple[str, ...] = ("grey", "saturation", "hematoxylin")
METHODS: tuple[str, ...] = ("otsu", "fixed")


def stain_channel(image: np.ndarray, channel: str = "grey") -> np.ndarray:
    """A float32 (H, W) map in [0, 1] where higher means more stain (more structure)."""
    rgb = np.asarray(image)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {rgb.shape}")
    f = rgb.astype(np.float32) / 255.0
    if channel == "grey":
        grey = f @ np.array([0.2125, 0.7154, 0.0721], np.float32)
        return 1.0 - grey
    if channel == "saturation":
        mx = f.max(axis=-1)
        mn = f.min(axis=-1)
        return np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0.0).astype(np.float32)
    if channel == "hematoxylin":
        from skimage.color import rgb2hed

        h = rgb2hed(rgb)[..., 0].astype(np.float32)
        # rgb2hed's hematoxylin of 8-bit RGB lies within about [-0.7, 0.3] ... rescale to [0, 1]
        lo, hi = -0.7, 0.3
        return np.clip((h - lo) / (hi - lo), 0.0, 1.0)
    raise ValueError(f"unknown structure channel {channel!r}; choose one of {', '.join(CHANNELS)}")


def background_mask(
    image: np.ndarray, level: float = 0.9, max_saturation: float = 0.08
) -> np.ndarray:
    """Near-white, unsaturated pixels: glass, or the white padding of edge windows."""
    f = np.asarray(image, np.float32) / 255.0
    mx, mn = f.max(-1), f.min(-1)
    return (mn > level) & ((mx - mn) <= max_saturation * np.maximum(mx, 1e-6))


def structure_map(
    image: np.ndarray,
    *,
    method: str = "otsu",
    channel: str = "grey",
    threshold: float | None = None,
    min_size: int = 0,
    ignore_background: bool = True,
) -> np.ndarray:
    """Binary structure map (H, W) uint8 in {0, 1} of an RGB patch.

    `method="otsu"` picks the threshold per patch; `method="fixed"` uses `threshold` (in [0, 1] on
    the stain channel). With `ignore_background` (default), near-white pixels (glass, and the white
    padding of windows that cross a slide's edge) are left out of the Otsu threshold and of the
    map, so that the threshold separates stained structures within tissue rather than tissue from
    glass. Objects smaller than `min_size` pixels are removed. A flat patch gives an empty map.
    """
    s = stain_channel(image, channel)
    tissue = ~background_mask(image) if ignore_background else np.ones(s.shape, bool)
    if method == "otsu":
        values = s[tissue]
        if values.size < 16 or is_flat(values, 1e-6):
            return np.zeros(s.shape, np.uint8)
        t = otsu_threshold(values)
    elif method == "fixed":
        if threshold is None:
            raise ValueError("method 'fixed' needs a threshold in [0, 1] (--threshold)")
        t = float(threshold)
    else:
        raise ValueError(f"unknown structure method {method!r}; choose otsu or fixed")
    return remove_small_structures((s > t) & tissue, min_size).astype(np.uint8)


def remove_small_structures(binary: np.ndarray, min_size: int) -> np.ndarray:
    """`binary` (bool) without its objects of fewer than `min_size` pixels (0 or 1: all kept).

    The one rule for real maps here and for generated ones (`wsi_aug.condgen.postprocess`).
    """
    out = np.asarray(binary, bool)
    if min_size <= 1:
        return out
    from skimage.morphology import remove_small_objects

    if _new_skimage():
        return np.asarray(remove_small_objects(out, max_size=min_size - 1))
    return np.asarray(remove_small_objects(out, min_size=min_size))


def _new_skimage() -> bool:
    """scikit-image 0.26 renamed remove_small_objects' `min_size` to `max_size`."""
    import inspect

    from skimage.morphology import remove_small_objects

    return "max_size" in inspect.signature(remove_small_objects).parameters
