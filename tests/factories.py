"""Small stage stores made directly through the store API, so later stages test in isolation."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wsi_aug import store
from wsi_aug.stages.extract import PatchTable, write_patch_store
from wsi_aug.stages.structure import StructureStore
from wsi_aug.store import WorkDir


def _disc(size: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return ((xx - cx) ** 2 + (yy - cy) ** 2 <= r * r).astype(np.uint8)


def make_tiny_work(
    root: Path, n: int = 16, size: int = 64, seed: int = 0, tile_edges: bool = True
) -> WorkDir:
    """A work folder with an `extract.zarr` and a `structure.zarr` of `n` disc-shaped 'glomeruli'.

    Splits: 60 % train, 20 % val, 20 % test (by a fake slide per patch); one in four patches is a
    negative (empty mask). Images are pink with a darker disc and random dark dots (nuclei). With
    `tile_edges`, one patch in eight crosses its slide's top edge (white band, the mask cut there);
    without, the stores are those the pinned GAN weights were recorded on.
    """
    rng = np.random.default_rng(seed)
    work = WorkDir(Path(root))
    images = np.zeros((n, size, size, 3), np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    maps = np.zeros((n, size, size), np.uint8)
    positive = np.zeros(n, bool)
    for i in range(n):
        img = np.empty((size, size, 3), np.float32)
        img[:] = (235, 170, 200)
        img += rng.normal(0, 6, img.shape)
        if i % 4 != 3:
            r = rng.uniform(0.2, 0.35) * size
            m = _disc(size, size / 2 + rng.uniform(-3, 3), size / 2 + rng.uniform(-3, 3), r)
            img[m.astype(bool)] = (190, 110, 170)
            masks[i] = m
            positive[i] = True
        for _ in range(int(rng.integers(5, 15))):
            d = _disc(size, *rng.uniform(0, size, 2), rng.uniform(1.5, 3)).astype(bool)
            img[d] = (90, 60, 140)
        images[i] = np.clip(img, 0, 255).astype(np.uint8)
        if tile_edges and i % 8 == 1:  # crosses the slide's top edge: white band, mask cut there
            images[i, : 4 + i % 5] = 255
            masks[i, : 4 + i % 5] = 0
        maps[i] = (images[i].mean(-1) < 150).astype(np.uint8)
    splits = np.array(["train", "train", "train", "val", "test"])[np.arange(n) % 5]
    table = PatchTable(
        slide=np.array([f"slide{i % 5}" for i in range(n)]),
        patient=np.array([f"patient{i % 5}" for i in range(n)]),
        object_id=np.array([f"obj{i}" for i in range(n)]),
        label=np.array(["glomerulus" if p else "" for p in positive]),
        cx=rng.uniform(0, 1000, n),
        cy=rng.uniform(0, 1000, n),
        mpp=np.full(n, 1.0),
        split=splits,
        padded=(np.arange(n) % 8 == 1) & tile_edges,
        positive=positive,
    )
    params = {"size": size, "mpp": 1.0, "seed": seed, "factory": True}
    write_patch_store(work.root, images, masks, table, params=params)
    inputs = {"patches": store.stage_fingerprint(work.patches)}
    with store.build(
        work.structure, stage="structure", params={"method": "factory"}, inputs=inputs
    ) as g:
        StructureStore.write_maps(g, n, size)[:] = maps
    return work
