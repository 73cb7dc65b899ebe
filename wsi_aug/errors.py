"""Errors a user can act on.

Every `WsiAugError` is shown by the CLI as one line (no traceback) and should name the file at fault
and the fix, e.g. ``slide.tif: no pixel size in the metadata; give it with --slide-mpp``.
"""

from __future__ import annotations


class WsiAugError(Exception):
    """A problem with the user's input or setup, reported as one line."""


class SlideError(WsiAugError):
    """A slide cannot be opened or read."""


class AnnotationError(WsiAugError):
    """An annotation file cannot be parsed or holds nothing usable."""


class StageMissingError(WsiAugError):
    """An upstream stage store is missing or incomplete."""


class CheckpointError(WsiAugError):
    """A checkpoint is corrupt or of another architecture."""
