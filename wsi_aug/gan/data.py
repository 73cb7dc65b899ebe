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

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from wsi_aug.errors import WsiAugError
from wsi_aug.imaging import dihedral


@dataclass
class GanData:
    """Patches held in memory as uint8: images (N,S,S,3), masks and maps (N,S,S) in {0,1}."""

    images: np.ndarray
    masks: np.ndarray
    maps: np.ndarray
    rows: np.ndarray  # the rows of these patches in extract.zarr

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def size(self) -> int:
        return int(self.masks.shape[-1])

    def subset(self, keep: np.ndarray) -> GanData:
        """The patches `keep` (a boolean array or row positions) selects, in their order."""
        return GanData(self.images[keep], self.masks[keep], self.maps[keep], self.rows[keep])


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
    k = int(rng.integers(4))  # drawn before the flip, as ever: resumed runs see the same draws
    flip = bool(rng.random() < 0.5)
    return [dihedral(a, flip, k) for a in arrays]


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
            # torch types the data as a Dataset; DistributedSampler uses only its len()
            sampler: DistributedSampler[int] = DistributedSampler(
                range(len(pairs)),  # type: ignore[arg-type]
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
