"""Training and applying the segmentation U-Net.

Adam (lr 1e-4) on pixel-wise cross-entropy; after every epoch the model is scored on the real
validation patches (pooled Dice) and the best epoch's weights are the ones returned, so a
synthetic-heavy training set is still selected on real data. All randomness (weights, order of
samples, augmentation) comes from the ``seed`` through local generators.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from wsi_aug.device import resolve_device
from wsi_aug.metrics import dice
from wsi_aug.seg.augment import DEFAULT, AugmentConfig, AugmentName, augment_batch, augment_config
from wsi_aug.seg.unet import UNet, center_crop, normalize, to_input, to_unit

Sampler = Callable[[np.random.Generator], Sequence[int]]


@dataclass
class TrainHistory:
    """Per-epoch training loss and validation Dice, and which epoch's weights were kept."""

    train_loss: list[float] = field(default_factory=list)
    val_dice: list[float] = field(default_factory=list)
    best_epoch: int = 0  # 1-based; the last epoch when there is no validation set
    best_val_dice: float = float("nan")
    seconds: float = 0.0


def _device(device: torch.device | str | None) -> torch.device:
    return device if isinstance(device, torch.device) else resolve_device(device or "auto")


def _augment(augment: bool | AugmentName | AugmentConfig) -> AugmentConfig | None:
    """The augmentation `train_unet` applies: True colour, False none, a preset name, a config."""
    if isinstance(augment, AugmentConfig):
        return augment
    if isinstance(augment, bool):
        return DEFAULT if augment else None
    return augment_config(augment)


def epoch_indices(n: int, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """``n_samples`` indices into ``n`` items: whole shuffled passes, then a partial one."""
    reps = math.ceil(n_samples / n)
    return np.concatenate([rng.permutation(n) for _ in range(reps)])[:n_samples]


def train_unet(
    train_images: np.ndarray,
    train_masks: np.ndarray,
    val_images: np.ndarray,
    val_masks: np.ndarray,
    *,
    epochs: int,
    batch_size: int = 8,
    lr: float = 1e-4,
    width: float = 1.0,
    depth: int = 5,
    batch_norm: bool = False,
    padding: str = "same",
    augment: bool | AugmentName | AugmentConfig = True,
    seed: int = 0,
    device: torch.device | str = "auto",
    samples_per_epoch: int | None = None,
    sampler: Sampler | None = None,
    progress: bool = True,
    desc: str = "U-Net",
    precision: str = "fp32",
) -> tuple[UNet, TrainHistory]:
    """Train a U-Net on uint8 (N, H, W, 3) images and {0, 1} (N, H, W) masks.

    Each epoch visits ``samples_per_epoch`` samples (default: every training patch once), chosen
    by ``sampler(rng)`` when given (eval-seg uses it to mix real and synthetic patches). Returns
    the model holding the weights of the epoch with the best validation Dice, and the history.
    ``augment``: True is the colour preset (`wsi_aug.seg.augment.DEFAULT`), False none, a preset
    name (`augment_config`) or a configuration. ``precision`` "bf16": the forward pass under
    bf16 autocast (CPU or CUDA; weights, loss and optimiser stay fp32), about 1.5-2x faster on
    CPUs with AVX-512 BF16 or AMX; validation and prediction stay fp32.
    """
    if epochs < 1:
        raise ValueError("epochs must be at least 1")
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32 or bf16, not {precision!r}")
    if len(train_images) == 0:
        raise ValueError("no training patches")
    dev = _device(device)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    model = UNet(width=width, depth=depth, batch_norm=batch_norm, padding=padding, generator=gen)
    model.to(dev)
    size = min(train_images.shape[1], train_images.shape[2])
    if model.output_size(size) <= 0:
        raise ValueError(
            f"{size}-px patches are too small for a depth-{depth} valid U-Net; use padding 'same'"
        )
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    cfg = _augment(augment)
    n_samples = samples_per_epoch or len(train_images)
    history = TrainHistory()
    best_state: dict[str, torch.Tensor] | None = None
    start = time.perf_counter()

    from tqdm.auto import tqdm

    bar = tqdm(range(1, epochs + 1), desc=desc, unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        order = (
            np.asarray(sampler(rng), dtype=np.int64)
            if sampler is not None
            else epoch_indices(len(train_images), n_samples, rng)
        )
        losses = []
        for k in range(0, len(order), batch_size):
            idx = order[k : k + batch_size]
            x = to_unit(train_images[idx], dev)
            y = torch.from_numpy(np.ascontiguousarray(train_masks[idx])).to(dev)
            if cfg is not None:
                x, y = augment_batch(x, y, rng, cfg)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                logits = model(normalize(x))
            y = center_crop(y, logits.shape[-2:]).long()
            loss = F.cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        history.train_loss.append(float(np.mean(losses)))
        if len(val_images):
            pred = predict(model, val_images, batch_size=batch_size, device=dev)
            score = dice(pred, crop_masks(val_masks, pred.shape[1:]))
            history.val_dice.append(score)
            if best_state is None or score > history.best_val_dice:
                history.best_val_dice, history.best_epoch = score, epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            bar.set_postfix(loss=f"{history.train_loss[-1]:.3f}", val_dice=f"{score:.3f}")
        else:
            history.best_epoch = epoch
            bar.set_postfix(loss=f"{history.train_loss[-1]:.3f}")
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    history.seconds = time.perf_counter() - start
    return model, history


def crop_masks(masks: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """Centre-crop (N, H, W) masks to a prediction's (h, w), as the valid U-Net's output sits."""
    h, w = masks.shape[1:3]
    top, left = (h - size[0]) // 2, (w - size[1]) // 2
    return masks[:, top : top + size[0], left : left + size[1]]


def _batched(
    model: UNet,
    images: np.ndarray,
    batch_size: int,
    device: torch.device | str | None,
    fn: Callable[[torch.Tensor], torch.Tensor],
) -> list[np.ndarray]:
    """`fn` of the model's input over `images` in batches, in eval mode, as numpy arrays."""
    dev = next(model.parameters()).device if device is None else _device(device)
    model.to(dev).eval()
    return [
        fn(to_input(np.asarray(images[k : k + batch_size]), dev)).cpu().numpy()
        for k in range(0, len(images), batch_size)
    ]


@torch.inference_mode()
def predict(
    model: UNet,
    images: np.ndarray,
    batch_size: int = 8,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Binary masks (N, h, w) uint8 for uint8 (N, H, W, 3) images; h, w = model.output_size."""
    out = _batched(model, images, batch_size, device, lambda x: model(x).argmax(1).to(torch.uint8))
    if not out:
        h = model.output_size(images.shape[1])
        w = model.output_size(images.shape[2])
        return np.zeros((0, h, w), np.uint8)
    return np.concatenate(out)


@torch.inference_mode()
def encoder_features(
    model: UNet,
    images: np.ndarray,
    batch_size: int = 8,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Globally average-pooled bottleneck features (N, C) of uint8 images, for Fréchet distances."""
    out = _batched(
        model, images, batch_size, device, lambda x: model.bottleneck_features(x).double()
    )
    return np.concatenate(out) if out else np.zeros((0, 0))
