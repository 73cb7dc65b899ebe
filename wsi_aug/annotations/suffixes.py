"""File name suffixes of annotation inputs, in a module that imports nothing heavy.

Pairing slides with annotation files (`pairing`) and reading masks (`masks`) share them; keeping
them apart from `masks` lets pairing run before shapely and PIL are imported.
"""

from __future__ import annotations

MASK_SUFFIXES = frozenset({".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"})
"""Image files read as label or binary masks (lossy ones get a warning in `masks`)."""
