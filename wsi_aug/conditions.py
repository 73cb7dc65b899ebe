"""Where the conditions of synthetic patches come from: the real train conditions, or new ones.

A condition is a glomerulus mask and a binary structure map of one patch. Sources:

``real``
    The train split's positive conditions as they are, cycling through them in order.
``augment``
    For each sample, a random train condition whose mask and structure map get JOINTLY the same
    random flip, 90° rotation, smooth elastic deformation and small scaling, then are re-binarised,
    so every condition is new (and still a plausible glomerulus with its surroundings).
``learned``
    Drawn from the condition model of ``wsi-aug train-conditions`` (`wsi_aug.condgen`): each
    sample from its own seed, with no real condition behind it (``source_index`` -1).
A mix (``learned:0.5,augment:0.5``)
    Each sample's source drawn with those weights from its own generator, then made by that
    source exactly as it would make that sample alone.

Every sample's transform is drawn from its own generator, seeded from (run seed, sample index), so a
sample does not depend on the batch size and its `Condition.transform` string and `seed` say how to
make it again. The deformation is applied to whole batches with `grid_sample` (on the GPU when
synthesis runs there).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from wsi_aug.condgen.mix import SOURCES, canonical_source, parse_mix
from wsi_aug.errors import WsiAugError
from wsi_aug.imaging import dihedral, identity_grid, pixels_to_grid, upsample_displacement

__all__ = ["SOURCES", "canonical_source", "make_source", "parse_mix", "sample_seed"]

_COARSE = 32  # resolution of the random displacement field before its upsampling


@dataclass(frozen=True)
class Conditions:
    """A batch of conditions: masks and structure maps (B,S,S) uint8 {0,1}, and their provenance."""

    masks: np.ndarray
    structure: np.ndarray
    source_index: np.ndarray  # rows in patches.zarr
    transform: list[str]
    seed: np.ndarray  # the generator seed of each sample's transform
    source: list[str] = field(default_factory=list)  # each sample's source (empty: the run's)


def sample_seed(seed: int, i: int) -> int:
    """The seed of sample i's own generator (63 bits, from the run seed and the index)."""
    state = np.random.SeedSequence([seed, i]).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(1))


class ConditionSource(abc.ABC):
    """Base class: conditions drawn from the given masks and maps, indexed by sample number."""

    name = "base"

    def __init__(
        self, masks: np.ndarray, maps: np.ndarray, rows: np.ndarray, seed: int = 0
    ) -> None:
        if len(masks) == 0 or len(masks) != len(maps) or len(masks) != len(rows):
            raise WsiAugError("condition source: need equally many masks, maps and rows (>= 1)")
        self.masks = masks
        self.maps = maps
        self.rows = np.asarray(rows)
        self.seed = seed

    @property
    def size(self) -> int:
        return int(self.masks.shape[-1])

    def batch(self, start: int, count: int, device: torch.device | str = "cpu") -> Conditions:
        """The conditions of samples start .. start+count-1."""
        return self.take(np.arange(start, start + count), device)

    @abc.abstractmethod
    def take(self, indices: np.ndarray, device: torch.device | str = "cpu") -> Conditions:
        """The conditions of the given sample numbers (each as it would be made alone)."""


class RealConditions(ConditionSource):
    """The train conditions as they are, cycling."""

    name = "real"

    def take(self, indices: np.ndarray, device: torch.device | str = "cpu") -> Conditions:
        idx = np.asarray(indices, np.int64) % len(self.masks)
        count = len(idx)
        return Conditions(
            masks=self.masks[idx].copy(),
            structure=self.maps[idx].copy(),
            source_index=self.rows[idx].astype(np.int64),
            transform=["identity"] * count,
            seed=np.full(count, self.seed, np.int64),
            source=[self.name] * count,
        )


class AugmentedConditions(ConditionSource):
    """New conditions: flip, 90° rotation, elastic deformation and scaling, applied jointly.

    ``alpha``: the largest displacement as a fraction of the size; ``sigma``: the smoothness of
    the displacement field (Gaussian sigma, fraction of the size); ``scale``: the zoom factor range.
    """

    name = "augment"

    def __init__(
        self,
        masks: np.ndarray,
        maps: np.ndarray,
        rows: np.ndarray,
        seed: int = 0,
        *,
        alpha: tuple[float, float] = (0.02, 0.06),
        sigma: tuple[float, float] = (0.04, 0.10),
        scale: tuple[float, float] = (0.9, 1.1),
    ) -> None:
        super().__init__(masks, maps, rows, seed)
        self.alpha = alpha
        self.sigma = sigma
        self.scale = scale

    def _plan(self, i: int) -> tuple[int, bool, int, float, float, float, np.ndarray, int]:
        """Sample i's random choices: source, flip, rotation, alpha, sigma, scale, coarse field."""
        s = sample_seed(self.seed, i)
        rng = np.random.default_rng(s)
        j = int(rng.integers(len(self.masks)))
        flip = bool(rng.random() < 0.5)
        k = int(rng.integers(4))
        size = self.size
        alpha = float(rng.uniform(*self.alpha)) * size
        sigma = float(rng.uniform(*self.sigma)) * size
        scale = float(rng.uniform(*self.scale))
        coarse = min(size, _COARSE)
        field = rng.uniform(-1.0, 1.0, (2, coarse, coarse))
        field = np.stack([gaussian_filter(f, sigma * coarse / size, mode="reflect") for f in field])
        field *= alpha / max(float(np.abs(field).max()), 1e-8)  # largest displacement = alpha px
        return j, flip, k, alpha, sigma, scale, field.astype(np.float32), s

    def take(self, indices: np.ndarray, device: torch.device | str = "cpu") -> Conditions:
        plans = [self._plan(int(i)) for i in indices]
        count = len(plans)
        size = self.size
        src = np.empty((count, 2, size, size), np.float32)
        transforms = []
        for b, (j, flip, k, alpha, sigma, scale, _, _) in enumerate(plans):
            pair = np.stack([self.masks[j], self.maps[j]]).astype(np.float32)
            src[b] = dihedral(pair, flip, k)
            steps = (["flipx"] if flip else []) + ([f"rot90x{k}"] if k else [])
            steps += [f"elastic(a={alpha:.2f},s={sigma:.2f})", f"scale={scale:.3f}"]
            transforms.append(",".join(steps))
        dev = torch.device(device)
        fields = torch.from_numpy(np.stack([p[6] for p in plans])).to(dev)
        # pixels -> grid_sample's [-1, 1] coordinates
        disp = upsample_displacement(fields, (size, size), scale=pixels_to_grid(size))
        inv_scale = torch.tensor([1.0 / p[5] for p in plans], device=dev).view(-1, 1, 1, 1)
        grid = identity_grid(size, size, dev) * inv_scale + disp
        warped = F.grid_sample(
            torch.from_numpy(src).to(dev),
            grid,
            mode="bilinear",
            padding_mode="reflection",
            align_corners=True,
        )
        binary = (warped >= 0.5).to(torch.uint8).cpu().numpy()
        return Conditions(
            masks=binary[:, 0],
            structure=binary[:, 1],
            source_index=self.rows[[p[0] for p in plans]].astype(np.int64),
            transform=transforms,
            seed=np.array([p[7] for p in plans], np.int64),
            source=[self.name] * count,
        )


class LearnedConditions(ConditionSource):
    """Conditions drawn from a trained condition model, sample i from ``sample_seed(seed, i)``.

    `draw(seeds)` returns (masks, maps) (B, S, S) uint8 (a `wsi_aug.condgen.sample.
    ConditionModel`); `fingerprint` names the model in each sample's transform.
    """

    name = "learned"

    def __init__(
        self,
        draw: Callable[[Sequence[int]], tuple[np.ndarray, np.ndarray]],
        size: int,
        seed: int = 0,
        *,
        fingerprint: str = "",
        steps: int = 50,
    ) -> None:
        self.draw = draw
        self._size = size
        self.seed = seed
        self.fingerprint = fingerprint
        self.steps = steps

    @property
    def size(self) -> int:
        return self._size

    def take(self, indices: np.ndarray, device: torch.device | str = "cpu") -> Conditions:
        seeds = [sample_seed(self.seed, int(i)) for i in indices]
        masks, maps = self.draw(seeds)
        count = len(seeds)
        return Conditions(
            masks=masks,
            structure=maps,
            source_index=np.full(count, -1, np.int64),
            transform=[f"ddim(steps={self.steps},model={self.fingerprint})"] * count,
            seed=np.array(seeds, np.int64),
            source=[self.name] * count,
        )


class MixedConditions(ConditionSource):
    """Each sample from one of several sources, chosen with the given weights per sample seed."""

    name = "mix"

    def __init__(self, parts: Sequence[tuple[ConditionSource, float]], seed: int = 0) -> None:
        if not parts:
            raise WsiAugError("condition source: an empty mix")
        self.parts = [s for s, _ in parts]
        w = np.array([float(w) for _, w in parts])
        self.cum = np.cumsum(w / w.sum())
        self.seed = seed

    @property
    def size(self) -> int:
        return self.parts[0].size

    def choice(self, i: int) -> int:
        """The source of sample i: from its own generator (another stream than its transform)."""
        u = np.random.default_rng([self.seed, i, 1]).random()
        return min(int(np.searchsorted(self.cum, u, side="right")), len(self.parts) - 1)

    def take(self, indices: np.ndarray, device: torch.device | str = "cpu") -> Conditions:
        idx = np.asarray(indices, np.int64)
        which = np.array([self.choice(int(i)) for i in idx], np.int64)
        size = self.size
        masks = np.zeros((len(idx), size, size), np.uint8)
        maps = np.zeros_like(masks)
        rows = np.zeros(len(idx), np.int64)
        seeds = np.zeros(len(idx), np.int64)
        transform, source = [""] * len(idx), [""] * len(idx)
        for k, part in enumerate(self.parts):
            at = np.flatnonzero(which == k)
            if not len(at):
                continue
            c = part.take(idx[at], device)
            masks[at], maps[at], rows[at], seeds[at] = c.masks, c.structure, c.source_index, c.seed
            for j, a in enumerate(at):
                transform[a], source[a] = c.transform[j], c.source[j]
        return Conditions(masks, maps, rows, transform, seeds, source)


def make_source(
    name: str,
    masks: np.ndarray,
    maps: np.ndarray,
    rows: np.ndarray,
    seed: int = 0,
    *,
    learned: LearnedConditions | None = None,
) -> ConditionSource:
    """The condition source `name`: ``real``, ``augment``, ``learned`` or a mix of them.

    ``learned`` (alone or in a mix) needs the `learned` source, made from the trained model.
    """
    try:
        parts = parse_mix(name)
    except ValueError as exc:
        raise WsiAugError(f"--source {name}: {exc}") from None

    def one(n: str) -> ConditionSource:
        if n == "real":
            return RealConditions(masks, maps, rows, seed)
        if n == "augment":
            return AugmentedConditions(masks, maps, rows, seed)
        if learned is None:
            raise WsiAugError(
                f"--source {name}: the learned source needs a trained condition model; run "
                "`wsi-aug train-conditions` first"
            )
        return learned

    if len(parts) == 1:
        return one(parts[0][0])
    return MixedConditions([(one(n), w) for n, w in parts], seed)
