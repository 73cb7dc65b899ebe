"""Stage `structure`: a binary structure map per patch, the GAN's second input.

Reads ``extract.zarr``; writes ``structure.zarr`` (``maps`` (N, S, S) uint8 in {0, 1}, rows
aligned with the patches) and ``structure/grid.png`` (image / mask / structure map).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import model_validator

from wsi_aug.stages.base import Stage, StageParams, StageResult, StageStore, param

if TYPE_CHECKING:
    import zarr

    from wsi_aug.gan.data import GanData

NAME = "structure"
MADE_BY = "wsi-aug structure"
_MAPS = "maps"
_OPTIONS = "map_options"  # attribute: the structure_map keyword arguments used


class StructureParams(StageParams):
    """How structure maps are thresholded."""

    stage = NAME

    method: Literal["otsu", "fixed"] = param(
        "otsu", "Threshold per patch by Otsu, or at a fixed level (--threshold)."
    )
    channel: Literal["grey", "saturation", "hematoxylin"] = param(
        "grey", "Stain channel thresholded (higher = more stain)."
    )
    threshold: float | None = param(
        None,
        "Level for --method fixed, 0 to 1 on the channel (higher = more stain).",
        ge=0,
        le=1,
    )
    min_size: int = param(0, "Remove structures smaller than this many pixels.", ge=0)
    keep_background: bool = param(
        False,
        "Threshold over the whole patch, glass and white padding included (default: tissue only).",
    )
    grid_rows: int = param(8, "Patches shown in structure/grid.png.", ge=1, cli=False)

    @model_validator(mode="after")
    def _fixed_needs_threshold(self) -> StructureParams:
        if self.method == "fixed" and self.threshold is None:
            raise ValueError("--method fixed needs --threshold T (0 to 1 on the channel)")
        return self

    def key_dict(self) -> dict[str, Any]:
        """The threshold counts only for the fixed method."""
        d = super().key_dict()
        if self.method != "fixed":
            d["threshold"] = None
        return d


class StructureStore(StageStore):
    """A complete ``structure.zarr``, read-only."""

    NAME = NAME
    MADE_BY = MADE_BY

    @property
    def maps(self) -> zarr.Array[Any]:
        """(N, S, S) uint8 structure maps in {0, 1}, rows aligned with the patch store."""
        arr: zarr.Array[Any] = self.array(_MAPS)
        return arr

    @property
    def map_options(self) -> dict[str, Any]:
        """The `structure_map` keyword arguments the maps were made with ({} if unknown)."""
        recorded = self.group.attrs.get(_OPTIONS)
        return dict(recorded) if isinstance(recorded, dict) else {}

    def read(self, rows: np.ndarray) -> np.ndarray:
        """The maps of the given rows (in that order)."""
        from wsi_aug import store

        return store.read_rows(self.maps, rows)

    @staticmethod
    def write_maps(group: zarr.Group, n: int, size: int) -> zarr.Array[Any]:
        """Create the (empty) maps array of a store being built."""
        from wsi_aug import store

        return store.create_stack(group, _MAPS, (n, size, size))


class PairedStores:
    """The patch and structure stores of a work folder, checked to belong together."""

    def __init__(self, work: str | Path) -> None:
        from wsi_aug.errors import StageMissingError
        from wsi_aug.stages.extract import PatchStore

        self.patches = PatchStore.open(work)
        self.structure = StructureStore.open(work)
        n_p, n_s = len(self.patches), int(self.structure.maps.shape[0])
        made_from = self.structure.meta.get("inputs", {}).get("patches")
        if n_p != n_s or (made_from is not None and made_from != self.patches.fingerprint()):
            raise StageMissingError(
                f"{self.structure.path}: made from other patches than {self.patches.path} "
                f"({n_s} maps, {n_p} patches); rebuild it with `{MADE_BY}`"
            )

    def fingerprints(self) -> dict[str, str]:
        """Both stores' fingerprints, for the cache keys of the stages that read them."""
        return {"patches": self.patches.fingerprint(), "structure": self.structure.fingerprint()}

    def load(
        self, split: str = "train", positive: bool | None = True, limit: int | None = None
    ) -> GanData:
        """The patches of a split (positive ones by default) with their masks and maps."""
        from wsi_aug.gan.data import GanData

        rows = self.patches.select(split, positive)
        if limit is not None:
            rows = rows[:limit]
        images, masks = self.patches.read(rows)
        maps = self.structure.read(rows)
        return GanData(
            images=np.asarray(images, np.uint8),
            masks=(masks > 0).astype(np.uint8),
            maps=(maps > 0).astype(np.uint8),
            rows=rows,
        )


def structure(
    work: str | Path,
    params: StructureParams | None = None,
    *,
    force: bool = False,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
    **overrides: Any,
) -> StageResult:
    """Stage: a structure map for every patch of ``extract.zarr`` into ``structure.zarr``."""
    from tqdm import tqdm

    from wsi_aug import store
    from wsi_aug.stages.extract import PatchStore
    from wsi_aug.structure import structure_map

    p = StructureParams.build(params, **overrides)
    wd = store.WorkDir(Path(work))
    wd.check_layout(force)
    patches = PatchStore.open(work)
    inputs = {"patches": patches.fingerprint()}
    key = p.key_dict()
    grid = wd.files(NAME) / "grid.png"
    hit = store.cached_result(wd.structure, stage=NAME, params=key, inputs=inputs, force=force)
    if hit is not None:
        return StageResult(hit.path, True, hit.meta, outputs=(grid,) if grid.exists() else ())
    n, size = len(patches), patches.size
    options = {
        "method": p.method,
        "channel": p.channel,
        "threshold": p.threshold if p.method == "fixed" else None,
        "min_size": p.min_size,
        "ignore_background": not p.keep_background,
    }
    with store.build_stage(
        wd.structure, stage=NAME, params=key, inputs=inputs, files=wd.files(NAME)
    ) as b:
        maps = StructureStore.write_maps(b.group, n, size)
        bar = tqdm(total=n, desc="structure maps", unit="patch", disable=not progress)
        block = 64
        for start in range(0, n, block):
            chunk = store.read_rows(patches.images, np.arange(start, min(start + block, n)))
            maps[start : start + len(chunk)] = np.stack(
                [structure_map(im, **options) for im in chunk]  # type: ignore[arg-type]
            )
            bar.update(len(chunk))
        bar.close()
        b.group.attrs.update({"size": size, _OPTIONS: options})
        if n and b.files is not None:
            save_structure_grid(patches, maps, b.files / "grid.png", rows=p.grid_rows)
    meta = store.read_meta(wd.structure) or {}
    return StageResult(wd.structure, False, meta, outputs=(grid,) if n else ())


def save_structure_grid(patches: Any, maps: Any, path: Path, rows: int = 8) -> Path:
    """PNG grid of image / mask / structure map for a few patches, glomeruli first."""
    from wsi_aug.figures import save_grid

    table = patches.table
    order = np.argsort(~table.positive.astype(bool), kind="stable")[:rows]
    images, masks = patches.read(order)
    cells = [[images[k], masks[k], maps[int(i)]] for k, i in enumerate(order)]
    return save_grid(
        cells,
        path,
        column_titles=["image", "glomerulus mask", "structure map"],
        row_titles=[f"{table.slide[i]}:{table.object_id[i]}"[:24] for i in order],
    )


STAGE = Stage(
    name=NAME,
    params=StructureParams,
    run=structure,
    help="Make a binary structure map per patch into WORK/structure.zarr (and a PNG grid).",
    store="structure.zarr",
    inputs=("extract",),
)
