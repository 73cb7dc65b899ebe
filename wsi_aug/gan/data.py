"""Training data for the GAN: patches and structure maps from the stores, augmented, in pairs.

The GAN learns from the train split's positive (glomerulus-centred) patches. A condition x stacks
the glomerulus mask and the binary structure map (the mask alone with ``no_structure``); both x and
the image y are mapped to [-1, 1] and given the SAME random flip / 90° rotation. The mode-seeking
loss needs two different conditions per pair: `PairSampler` pairs distinct patches, reshuffled
every epoch from (seed, epoch) alone, so a resumed run sees the same pairs; under
DistributedDataParallel a `DistributedSampler` gives each rank its share of the pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import zarr
from torch.utils.data import Dataset, DistributedSampler

from wsi_aug import store
from wsi_aug.errors import StageMissingError, WsiAugError

EXTRACT_BY = "wsi-aug extract SLIDES"
STRUCTURE_BY = "wsi-aug structure"


def open_inputs(work: Path) -> tuple[zarr.Group, zarr.Group]:
    """Open the complete patches and structure stores of a work folder, checking they match."""
    wd = store.WorkDir(Path(work))
    patches = store.open_stage(wd.patches, stage="extract", made_by=EXTRACT_BY)
    structure = store.open_stage(wd.structure, stage="structure", made_by=STRUCTURE_BY)
    n_p, n_s = patches["images"].shape[0], structure["maps"].shape[0]
    made_from = (store.read_meta(wd.structure) or {}).get("inputs", {}).get("patches")
    if n_p != n_s or (made_from is not None and made_from != store.stage_fingerprint(wd.patches)):
        raise StageMissingError(
            f"{wd.structure}: made from other patches than {wd.patches} ({n_s} maps, {n_p} "
            f"patches); rebuild it with `{STRUCTURE_BY}`"
        )
    return patches, structure


def input_fingerprints(work: Path) -> dict[str, str]:
    """The fingerprints of the patches and structure stores, for the cache keys of later stages."""
    wd = store.WorkDir(Path(work))
    return {
        "patches": store.stage_fingerprint(wd.patches),
        "structure": store.stage_fingerprint(wd.structure),
    }


@dataclass
class GanData:
    """Patches held in memory as uint8: images (N,S,S,3), masks and maps (N,S,S) in {0,1}."""

    images: np.ndarray
    masks: np.ndarray
    maps: np.ndarray
    rows: np.ndarray  # the rows of these patches in patches.zarr

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def size(self) -> int:
        return int(self.masks.shape[-1])


def select_rows(work: Path, split: str = "train", positive: bool = True) -> np.ndarray:
    """Rows of patches.zarr in `split` (and positive, if asked)."""
    patches, _ = open_inputs(work)
    table = store.read_table(patches, "table")
    keep = np.asarray(table["split"]) == split
    if positive:
        keep &= np.asarray(table["positive"]).astype(bool)
    return np.flatnonzero(keep)


def load_gan_data(
    work: Path, split: str = "train", positive: bool = True, limit: int | None = None
) -> GanData:
    """Load the patches of a split (positive ones by default) with their masks and maps."""
    patches, structure = open_inputs(work)
    rows = select_rows(work, split, positive)
    if limit is not None:
        rows = rows[:limit]
    if len(rows) == 0:
        size = int(patches["masks"].shape[-1])
        empty = np.zeros((0, size, size), np.uint8)
        return GanData(np.zeros((0, size, size, 3), np.uint8), empty, empty.copy(), rows)
    sel = (rows,)
    return GanData(
        images=np.asarray(patches["images"].get_orthogonal_selection(sel), np.uint8),
        masks=(np.asarray(patches["masks"].get_orthogonal_selection(sel)) > 0).astype(np.uint8),
        maps=(np.asarray(structure["maps"].get_orthogonal_selection(sel)) > 0).astype(np.uint8),
        rows=rows,
    )


def condition_array(mask: np.ndarray, structure: np.ndarray, no_structure: bool) -> np.ndarray:
    """Float32 condition (C,S,S) in [-1,1] from {0,1} mask and structure map(s) (..., S, S)."""
    parts = [mask] if no_structure else [mask, structure]
    x = np.stack([np.asarray(p, np.float32) for p in parts], axis=-3)
    return x * 2.0 - 1.0


def image_array(image: np.ndarray) -> np.ndarray:
    """Float32 (3,S,S) in [-1,1] from uint8 (S,S,3)."""
    return np.moveaxis(np.asarray(image, np.float32), -1, -3) / 127.5 - 1.0


def to_uint8_image(y: torch.Tensor) -> np.ndarray:
    """uint8 (N,S,S,3) from generator output (N,3,S,S) in [-1,1]."""
    y = ((y.detach().float().clamp(-1, 1) + 1.0) * 127.5).round()
    return y.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def flip_rotate(rng: np.random.Generator, *arrays: np.ndarray) -> list[np.ndarray]:
    """The same random horizontal flip and 90° rotation applied to channel-first arrays."""
    k = int(rng.integers(4))
    flip = bool(rng.random() < 0.5)
    out = []
    for a in arrays:
        if flip:
            a = a[..., ::-1]
        out.append(np.ascontiguousarray(np.rot90(a, k, axes=(-2, -1))))
    return out


class GanDataset(Dataset):
    """(condition, image) float32 tensors in [-1,1]; `sample` adds the joint flip/rotation."""

    def __init__(self, data: GanData, no_structure: bool = False) -> None:
        self.data = data
        self.no_structure = no_structure

    def __len__(self) -> int:
        return len(self.data)

    def arrays(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """The un-augmented (x, y) of item i as float32 arrays (C,S,S) and (3,S,S)."""
        d = self.data
        return (condition_array(d.masks[i], d.maps[i], self.no_structure), image_array(d.images[i]))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.arrays(i)
        return torch.from_numpy(x), torch.from_numpy(y)

    def sample(self, i: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Item i with the same random flip/90° rotation on x and y."""
        x, y = flip_rotate(rng, *self.arrays(i))
        return x, y


class PairSampler:
    """Pairs of two DIFFERENT patches for the mode-seeking loss, reshuffled each epoch.

    An epoch pairs every patch once (ceil(N/2) pairs; with odd N the last patch is paired with a
    random other one). The order depends only on (seed, epoch), so resuming needs no sampler state.
    """

    def __init__(self, n: int, seed: int = 0) -> None:
        if n < 2:
            raise WsiAugError(
                f"too few patches to form pairs ({n} positive train patch(es); need at least 2): "
                "extract more glomeruli with `wsi-aug extract` or move patches to the train split"
            )
        self.n = n
        self.seed = seed

    def __len__(self) -> int:
        return (self.n + 1) // 2

    def epoch_pairs(self, epoch: int) -> np.ndarray:
        """(ceil(N/2), 2) distinct index pairs of an epoch."""
        rng = np.random.default_rng([self.seed, epoch, 0x5A1])
        perm = rng.permutation(self.n)
        if self.n % 2:
            other = int(rng.integers(self.n - 1))
            other += other >= perm[-1]  # any index but the last one
            perm = np.append(perm, other)
        return perm.reshape(-1, 2)

    def epoch_steps(
        self, epoch: int, pairs_per_step: int = 1, rank: int = 0, world_size: int = 1
    ) -> list[np.ndarray]:
        """This rank's steps of an epoch, each a (pairs_per_step, 2) array; short tails dropped."""
        pairs = self.epoch_pairs(epoch)
        if world_size > 1:
            sampler = DistributedSampler(
                range(len(pairs)),
                num_replicas=world_size,
                rank=rank,
                shuffle=False,
                drop_last=True,
            )
            pairs = pairs[list(sampler)]
        n_steps = len(pairs) // pairs_per_step
        if n_steps == 0:
            raise WsiAugError(
                f"too few patches to form pairs: {self.n} patches give {len(self)} pairs, fewer "
                f"than --pairs-per-step {pairs_per_step} x {world_size} process(es); lower "
                "--pairs-per-step or extract more glomeruli"
            )
        return [pairs[i * pairs_per_step : (i + 1) * pairs_per_step] for i in range(n_steps)]


def make_batch(
    dataset: GanDataset, pairs: np.ndarray, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch of a step: [first of each pair..., second of each pair...], each augmented."""
    order = np.concatenate([pairs[:, 0], pairs[:, 1]])
    xs, ys = zip(*(dataset.sample(int(i), rng) for i in order))
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))
