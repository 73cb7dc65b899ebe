"""The segmentation U-Net: shapes, size, augmentation, training and checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from wsi_aug.errors import CheckpointError
from wsi_aug.seg.augment import DEFAULT, AugmentConfig, augment_batch, augment_pair
from wsi_aug.seg.train import predict, train_unet
from wsi_aug.seg.unet import UNet, count_parameters, load_unet, save_unet

TINY = 1 / 16  # 4 filters at the top level


def test_same_padding_keeps_the_size() -> None:
    m = UNet(width=TINY)
    assert m(torch.zeros(2, 3, 64, 64)).shape == (2, 2, 64, 64)
    assert m(torch.zeros(1, 3, 50, 70)).shape == (1, 2, 50, 70)  # padded to 16s inside


def test_valid_padding_shrinks_the_output() -> None:
    m = UNet(width=TINY, padding="valid")
    assert m.output_size(572) == 388  # Ronneberger et al.'s sizes
    assert m(torch.zeros(1, 3, 188, 188)).shape == (1, 2, 4, 4)
    assert m.output_size(188) == 4
    with pytest.raises(ValueError, match="too small"):
        m(torch.zeros(1, 3, 64, 64))


def test_parameter_count_of_the_classic_unet() -> None:
    with torch.device("meta"):
        full = UNet(width=1.0)
        with_bn = UNet(width=1.0, batch_norm=True)
    assert count_parameters(full) == 31_031_810  # 64..1024 filters, 3 in, 2 out
    assert count_parameters(with_bn) != count_parameters(full)
    assert any(isinstance(x, torch.nn.BatchNorm2d) for x in with_bn.modules())
    assert not any(isinstance(x, torch.nn.BatchNorm2d) for x in full.modules())


def test_init_is_reproducible_from_a_local_generator() -> None:
    a = UNet(width=TINY, generator=torch.Generator().manual_seed(3))
    b = UNet(width=TINY, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def _colour_pair(size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A blue image with red blobs, and the mask of the red pixels."""
    yy, xx = np.mgrid[:size, :size]
    mask = (((xx - 20) ** 2 + (yy - 18) ** 2 < 120) | ((xx > 40) & (yy > 36))).astype(np.uint8)
    img = np.zeros((size, size, 3), np.uint8)
    img[...] = (40, 60, 200)
    img[mask == 1] = (220, 50, 40)
    return img, mask


@pytest.mark.parametrize("config", [DEFAULT.geometry_only(), DEFAULT], ids=["geometry", "all"])
def test_augmentation_keeps_masks_binary_and_aligned(config: AugmentConfig) -> None:
    img, mask = _colour_pair()
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, m = augment_pair(img, mask, rng, config)
        assert a.shape == img.shape and a.dtype == np.uint8
        assert m.shape == mask.shape and set(np.unique(m)) <= {0, 1}
        from_colour = (a[..., 0].astype(int) > a[..., 2]).astype(np.uint8)
        assert (from_colour == m).mean() > 0.97  # only interpolated edge pixels may disagree


def test_flips_and_rotations_are_exact() -> None:
    img, mask = _colour_pair()
    cfg = AugmentConfig(p_affine=0, p_elastic=0).geometry_only()
    rng = np.random.default_rng(1)
    for _ in range(8):
        a, m = augment_pair(img, mask, rng, cfg)
        masks = [np.rot90(f, j) for f in (mask, mask[:, ::-1]) for j in range(4)]
        images = [np.rot90(f, j) for f in (img, img[:, ::-1]) for j in range(4)]
        assert any(np.array_equal(m, x) for x in masks)
        assert any(np.array_equal(a, x) for x in images)


def test_augmentation_depends_only_on_the_generator() -> None:
    x = torch.rand(4, 3, 32, 32)
    y = (torch.rand(4, 32, 32) > 0.5).to(torch.uint8)
    a1, m1 = augment_batch(x, y, np.random.default_rng(5))
    a2, m2 = augment_batch(x, y, np.random.default_rng(5))
    a3, _ = augment_batch(x, y, np.random.default_rng(6))
    assert torch.equal(a1, a2) and torch.equal(m1, m2)
    assert not torch.equal(a1, a3)


def _toy_data(n: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        cx, cy = rng.uniform(8, size - 8, 2)
        masks[i] = (xx - cx) ** 2 + (yy - cy) ** 2 < 30
    images = np.where(masks[..., None] == 1, 200, 60) + rng.integers(0, 20, (n, size, size, 3))
    return images.astype(np.uint8), masks


def test_train_unet_and_predict() -> None:
    x, y = _toy_data(12)
    kw = dict(epochs=3, batch_size=4, lr=1e-3, width=TINY, seed=0, device="cpu", progress=False)
    model, hist = train_unet(x[:8], y[:8], x[8:], y[8:], **kw)
    assert len(hist.train_loss) == len(hist.val_dice) == 3
    assert 1 <= hist.best_epoch <= 3 and hist.best_val_dice == max(hist.val_dice)
    pred = predict(model, x[8:], batch_size=2)
    assert pred.shape == (4, 32, 32) and pred.dtype == np.uint8 and set(np.unique(pred)) <= {0, 1}
    _, again = train_unet(x[:8], y[:8], x[8:], y[8:], **kw)
    assert again.train_loss == hist.train_loss  # the seed fixes everything


def test_bf16_training_runs_in_bf16_and_stays_out_of_fp32_keys() -> None:
    from wsi_aug.stages.eval_seg import EvalSegParams, config_params

    x, y = _toy_data(8)
    kw = dict(epochs=2, batch_size=4, lr=1e-3, width=TINY, seed=0, device="cpu", progress=False)
    _, fp32 = train_unet(x[:6], y[:6], x[6:], y[6:], **kw)
    model, bf16 = train_unet(x[:6], y[:6], x[6:], y[6:], precision="bf16", **kw)
    assert all(np.isfinite(bf16.train_loss)) and bf16.train_loss != fp32.train_loss
    assert next(model.parameters()).dtype == torch.float32  # weights stay fp32
    with pytest.raises(ValueError, match="precision"):
        train_unet(x[:6], y[:6], x[6:], y[6:], precision="fp16", **kw)
    assert "precision" not in config_params(EvalSegParams(), 0.5)  # old cache keys hold
    assert config_params(EvalSegParams(precision="bf16"), 0.5)["precision"] == "bf16"
    assert "precision" not in EvalSegParams().key_dict()


def test_train_valid_padding_crops_the_target() -> None:
    x, y = _toy_data(6, size=64)
    model, _ = train_unet(
        x[:4], y[:4], x[4:], y[4:], epochs=1, batch_size=2, width=TINY, depth=3,
        padding="valid", seed=0, device="cpu", progress=False, augment=False,
    )
    out = model.output_size(64)
    assert 0 < out < 64
    assert predict(model, x[4:]).shape == (2, out, out)
    with pytest.raises(ValueError, match="too small"):
        train_unet(x[:4], y[:4], x[4:], y[4:], epochs=1, width=TINY, padding="valid",
                   device="cpu", progress=False)


def test_checkpoint_roundtrip(tmp_path: Path) -> None:
    m = UNet(width=TINY, batch_norm=True, generator=torch.Generator().manual_seed(0)).eval()
    path = save_unet(m, tmp_path / "unet.safetensors")
    back = load_unet(path)
    assert back.config == m.config
    x = torch.rand(1, 3, 32, 32)
    assert torch.allclose(m(x), back.eval()(x))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"bad\.safetensors"):
        load_unet(bad)
