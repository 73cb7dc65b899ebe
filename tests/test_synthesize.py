"""Synthesis from a tiny trained generator: the store, determinism, caching, conditions, errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from PIL import Image

from wsi_aug import store
from wsi_aug.cli import main
from wsi_aug.conditions import make_source
from wsi_aug.errors import CheckpointError, StageMissingError, WsiAugError
from wsi_aug.gan.checkpoints import latest_checkpoint, save_checkpoint
from wsi_aug.gan.models import GanConfig, build_generator
from wsi_aug.stages.structure import PairedStores
from wsi_aug.stages.synthesize import Provenance, SyntheticStore, synthesize
from wsi_aug.stages.train_gan import train_gan
from wsi_aug.store import WorkDir


def load_train_conditions(work: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The conditions synthesis draws from: the train split's positive masks and maps."""
    t = PairedStores(work).load("train", positive=True)
    return t.masks, t.maps, t.rows

FAST = dict(device="cpu", progress=False, batch_size=4)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def gan_work(tiny_work: WorkDir, tmp_path_factory: pytest.TempPathFactory) -> WorkDir:
    """A copy of the tiny work folder with a tiny GAN trained for one epoch."""
    wd = WorkDir(tmp_path_factory.mktemp("gan-work") / "w")
    shutil.copytree(tiny_work.root, wd.root)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_gan(wd.root, epochs=1, ngf=4, ndf=4, device="cpu", progress=False)
    finally:
        torch.set_num_threads(before)
    return wd


def _arrays(path: Path) -> dict[str, np.ndarray]:
    images, masks, structure = SyntheticStore.open(path.parent).read_all()
    return {"images": images, "masks": masks, "structure": structure}


def test_synthesize_writes_n_samples_deterministically(gan_work: WorkDir) -> None:
    result = synthesize(gan_work.root, n=6, seed=1, **FAST)
    assert not result.cached and result.path == gan_work.synthetic
    first = _arrays(result.path)
    assert first["images"].shape == (6, 64, 64, 3) and first["images"].dtype == np.uint8
    for key in ("masks", "structure"):
        assert first[key].shape == (6, 64, 64) and first[key].dtype == np.uint8
        assert set(np.unique(first[key])) <= {0, 1}
    assert first["masks"].any(axis=(1, 2)).all()  # every condition holds a glomerulus
    group = zarr.open_group(result.path, mode="r")
    assert group.attrs["size"] == 64
    table = SyntheticStore.open(gan_work.root).provenance
    assert Provenance.columns() == ("source_index", "source", "transform", "seed", "checkpoint")
    assert len(table.source_index) == 6 and (table.source == "augment").all()
    assert all("elastic(" in t and "scale=" in t for t in table.transform)
    ckpt = latest_checkpoint(gan_work.gan_files / "checkpoints")
    assert (table.checkpoint == store.fingerprint_file(ckpt)).all()
    train_rows = set(load_train_conditions(gan_work.root)[2].tolist())
    assert set(table.source_index.tolist()) <= train_rows

    assert synthesize(gan_work.root, n=6, seed=1, **FAST).cached  # the cache
    again = synthesize(gan_work.root, n=6, seed=1, force=True, **FAST)
    assert not again.cached
    second = _arrays(again.path)
    assert all(np.array_equal(first[k], second[k]) for k in first)  # same seed, same arrays
    other = _arrays(synthesize(gan_work.root, n=6, seed=2, **FAST).path)
    assert not np.array_equal(first["masks"], other["masks"])


def test_real_source_cycles_the_train_conditions(gan_work: WorkDir, tmp_path: Path) -> None:
    masks, maps, rows = load_train_conditions(gan_work.root)
    n = len(rows) + 2
    out = tmp_path / "png"
    result = synthesize(gan_work.root, n=n, source="real", export_png=out, **FAST)
    arrays = _arrays(result.path)
    table = SyntheticStore.open(result.path.parent).provenance
    assert table.source_index.tolist() == [*rows.tolist(), *rows[:2].tolist()]
    assert (table.transform == "identity").all()
    assert np.array_equal(arrays["masks"][: len(rows)], masks)
    assert np.array_equal(arrays["structure"][len(rows):], maps[:2])
    assert sorted(p.name for p in (out / "images").iterdir())[:2] == ["000000.png", "000001.png"]
    assert len(list((out / "masks").iterdir())) == n
    png = np.asarray(Image.open(out / "masks" / "000000.png"))
    assert set(np.unique(png)) <= {0, 255} and np.array_equal(png > 0, masks[0] > 0)
    img = np.asarray(Image.open(out / "images" / "000001.png"))
    assert np.array_equal(img, arrays["images"][1])


def test_dropout_gives_one_condition_several_images(gan_work: WorkDir) -> None:
    rows = load_train_conditions(gan_work.root)[2]
    k = len(rows)
    plain = _arrays(synthesize(gan_work.root, n=2 * k, source="real", **FAST).path)["images"]
    assert np.array_equal(plain[:k], plain[k:])  # eval mode: one condition, one image
    noisy = _arrays(
        synthesize(gan_work.root, n=2 * k, source="real", dropout=True, **FAST).path
    )["images"]
    assert not np.array_equal(noisy[:k], noisy[k:])  # the same conditions, other dropout masks
    assert zarr.open_group(gan_work.synthetic, mode="r").attrs["dropout"] is True
    again = synthesize(gan_work.root, n=2 * k, source="real", dropout=True, force=True, **FAST)
    assert np.array_equal(_arrays(again.path)["images"], noisy)  # deterministic for a seed
    other = synthesize(gan_work.root, n=2 * k, source="real", dropout=True, seed=5, **FAST)
    assert not np.array_equal(_arrays(other.path)["images"], noisy)


def test_augmented_conditions_are_new(gan_work: WorkDir) -> None:
    masks, maps, rows = load_train_conditions(gan_work.root)
    batch = make_source("augment", masks, maps, rows, seed=0).batch(0, 8)
    for i in range(8):
        j = int(np.flatnonzero(rows == batch.source_index[i])[0])
        variants = [np.rot90(m, k) for m in (masks[j], masks[j][:, ::-1]) for k in range(4)]
        assert not any(np.array_equal(batch.masks[i], v) for v in variants)
        overlap = (batch.masks[i] & variants[0]).sum() + sum(
            (batch.masks[i] & v).sum() for v in variants[1:])
        assert overlap > 0  # still a deformed version of a real glomerulus
    again = make_source("augment", masks, maps, rows, seed=0).batch(5, 3)
    assert np.array_equal(again.masks, batch.masks[5:8])  # independent of the batching


def test_corrupt_and_foreign_checkpoints_are_checkpoint_errors(
    gan_work: WorkDir, tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01 not a checkpoint " * 10)
    with pytest.raises(CheckpointError, match=r"garbage\.safetensors: corrupt"):
        synthesize(gan_work.root, n=2, checkpoint=garbage, **FAST)
    real = latest_checkpoint(gan_work.gan_files / "checkpoints")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(real.read_bytes()[: real.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"truncated\.safetensors"):
        synthesize(gan_work.root, n=2, checkpoint=truncated, **FAST)
    other = GanConfig(size=64, ngf=8, ndf=4)
    foreign = save_checkpoint(tmp_path / "other" / "wide.safetensors", config=other,
                              generator=build_generator(other))
    with pytest.raises(CheckpointError, match=r"another architecture.*ngf=8 vs 4.*train-gan"):
        synthesize(gan_work.root, n=2, checkpoint=foreign, **FAST)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        synthesize(gan_work.root, n=2, checkpoint=tmp_path / "missing.safetensors", **FAST)


def test_missing_gan_store_names_train_gan(tiny_work: WorkDir, tmp_path: Path) -> None:
    with pytest.raises(StageMissingError, match="wsi-aug train-gan"):
        synthesize(tiny_work.root, n=2, **FAST)
    with pytest.raises(WsiAugError, match="source"):
        synthesize(tiny_work.root, n=2, source="nonsense", **FAST)


def test_cli_synthesize(gan_work: WorkDir, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["synthesize", "--work", str(gan_work.root), "--n", "3", "--seed", "7",
            "--device", "cpu", "--batch-size", "2", "--export-png", str(tmp_path / "png")]
    main(args)
    out = capsys.readouterr().out
    assert "synthesize:" in out and "[built]" in out
    assert len(list((tmp_path / "png" / "images").iterdir())) == 3
    main(args)
    assert "cached" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["synthesize", "--work", str(tmp_path / "nothing"), "--n", "2"])
    assert exc.value.code == 2
    assert "wsi-aug train-gan" in capsys.readouterr().err
