"""PNG figures people look at: image grids (and, in the evaluation stages, plots)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

FRAME = "#808080"  # the grey frame drawn around every image of a grid


def _as_rgb(img: np.ndarray) -> np.ndarray:
    """uint8 RGB from an RGB image, a {0,1} or {0,255} mask, or a float image in [0, 1]."""
    a = np.asarray(img)
    if a.dtype != np.uint8:
        a = np.clip(a * 255.0 if a.max() <= 1.0 else a, 0, 255).astype(np.uint8)
    elif a.ndim == 2 and a.max() <= 1:
        a = a * np.uint8(255)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    return a


def save_grid(
    rows: Sequence[Sequence[np.ndarray]],
    path: str | Path,
    *,
    column_titles: Sequence[str] | None = None,
    row_titles: Sequence[str] | None = None,
    title: str | None = None,
    cell_inches: float = 1.6,
) -> Path:
    """Save a grid of images (rows of equal length) as a PNG with optional titles.

    Masks ({0, 1} uint8) and float images are shown as grey; RGB uint8 as is. Each image gets a
    thin grey frame, so that white (a slide's edge padding, an empty mask) keeps its outline.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows = len(rows)
    n_cols = max(len(r) for r in rows) if rows else 0
    if n_rows == 0 or n_cols == 0:
        raise ValueError("save_grid: nothing to draw")
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(cell_inches * n_cols, cell_inches * n_rows + (0.4 if title else 0)),
        squeeze=False,
    )
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():  # a grey frame: white padding and empty maps
                spine.set_visible(j < len(row))  # do not blend into the white page
                spine.set_edgecolor(FRAME)
                spine.set_linewidth(0.8)
            if j < len(row):
                ax.imshow(_as_rgb(row[j]), interpolation="nearest")
            if i == 0 and column_titles and j < len(column_titles):
                ax.set_title(column_titles[j], fontsize=8)
            if j == 0 and row_titles and i < len(row_titles):
                ax.set_ylabel(row_titles[i], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
