"""The train-conditions and eval-conditions stages, and synthesize --source learned."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from wsi_aug import store
from wsi_aug.errors import CheckpointError, StageMissingError, WsiAugError
from wsi_aug.stages.eval_conditions import ConditionEvalStore, eval_conditions
from wsi_aug.stages.synthesize import SyntheticStore, synthesize
from wsi_aug.stages.train_conditions import ConditionStore, train_conditions
from wsi_aug.stages.train_gan import train_gan
from wsi_aug.store import WorkDir

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(steps=4, batch_size=4, base=8, sample_every=4, checkpoint_every=2, sample_steps=2)
FAST = dict(device="cpu", progress=False, batch_size=4)


@pytest.fixture(scope="module")
def cond_work(tiny_work: WorkDir, tmp_path_factory: pytest.TempPathFactory) -> WorkDir:
    """A copy of the tiny work folder with a tiny GAN and a tiny condition model."""
    wd = WorkDir(tmp_path_factory.mktemp("cond-work") / "w")
    shutil.copytree(tiny_work.root, wd.root)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_gan(wd.root, epochs=1, ngf=4, ndf=4, device="cpu", progress=False)
        train_conditions(wd.root, device="cpu", progress=False, **TINY)
    finally:
        torch.set_num_threads(before)
    return wd


def test_train_conditions_writes_store_checkpoints_samples_and_caches(cond_work: WorkDir) -> None:
    cs = ConditionStore.open(cond_work.root)
    assert cs.path == cond_work.root / "train-conditions.zarr"
    assert cs.files == cond_work.root / "train-conditions" and cs.size == 64
    assert cs.latest().name == "step-00000004.safetensors"
    assert [p.name for p in cs.sample_grids()] == ["step-00000004.png"]
    assert cs.losses.read_text().startswith("step,loss,lr,it/s")
    assert cs.meta["params"]["patch"] == 2 and cs.group.attrs["steps"] == 4
    assert not list(cs.path.rglob("*.safetensors"))  # nothing but zarr inside the store
    again = train_conditions(cond_work.root, device="cpu", progress=False, **TINY)
    assert again.cached


def test_synthesize_learned_writes_provenance(cond_work: WorkDir) -> None:
    cs = ConditionStore.open(cond_work.root)
    fp = store.fingerprint_file(cs.latest())
    result = synthesize(cond_work.root, n=5, source="learned", condition_steps=2, seed=3, **FAST)
    synth = SyntheticStore.open(cond_work.root)
    table = synth.provenance
    assert (table.source == "learned").all() and (table.source_index == -1).all()
    assert all(t == f"ddim(steps=2,model={fp})" for t in table.transform)
    assert len(set(table.seed.tolist())) == 5
    assert result.meta["inputs"]["condition_checkpoint"] == fp
    assert result.meta["inputs"]["conditions"] == cs.fingerprint()
    _, masks, structure = synth.read_all()
    assert masks.shape == (5, 64, 64) and set(np.unique(structure)) <= {0, 1}
    again = synthesize(
        cond_work.root,
        n=5,
        source="learned",
        condition_steps=2,
        seed=3,
        force=True,
        device="cpu",
        progress=False,
        batch_size=2,
    )
    assert np.array_equal(SyntheticStore.open(again.path.parent).read_all()[1], masks)
    mixed = synthesize(
        cond_work.root, n=12, source="learned:0.5,augment:0.5", condition_steps=2, **FAST
    )
    kinds = set(SyntheticStore.open(mixed.path.parent).provenance.source.tolist())
    assert kinds == {"learned", "augment"}
    plain = synthesize(cond_work.root, n=2, **FAST)  # augment: the condition store is no input
    assert "conditions" not in plain.meta["inputs"]


def test_eval_conditions_writes_tables_and_grid(cond_work: WorkDir) -> None:
    result = eval_conditions(cond_work.root, n=6, sample_steps=2, **FAST)
    files = cond_work.root / "eval-conditions"
    assert [p.name for p in result.outputs] == ["conditions.md", "conditions.csv", "samples.png"]
    assert all(p.is_file() for p in result.outputs)
    md = (files / "conditions.md").read_text()
    assert "| KS mask_area |" in md and "coverage" in md and "augment" in md
    table = ConditionEvalStore.open(cond_work.root).results
    assert set(table["set"].tolist()) == {"learned", "augment"}
    assert eval_conditions(cond_work.root, n=6, sample_steps=2, **FAST).cached


def test_learned_conditions_get_the_train_splits_tile_edge_bands(
    cond_work: WorkDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """synthesize and eval-conditions hand the condition model the tile-edge bands of the train
    split's positive patches (the pool its samples' bands are drawn from), no other split's."""
    from wsi_aug.condgen import sample
    from wsi_aug.stages.extract import PatchStore

    patches = PatchStore.open(cond_work.root)
    want = patches.padding_insets(patches.select("train", positive=True))
    other = patches.padding_insets(patches.select("val", positive=True))
    seen: list[np.ndarray] = []
    real_init = sample.ConditionModel.__init__

    def spy(self: sample.ConditionModel, *args: object, **kw: object) -> None:
        seen.append(np.asarray(kw.get("padding_pool")))
        real_init(self, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(sample.ConditionModel, "__init__", spy)
    synthesize(cond_work.root, n=2, source="learned", condition_steps=2, force=True, **FAST)
    eval_conditions(cond_work.root, n=4, sample_steps=2, force=True, **FAST)
    assert want.any() and len(seen) == 2 and all(np.array_equal(s, want) for s in seen)
    assert len(want) != len(other) or not np.array_equal(want, other)


def test_bad_condition_checkpoints_are_one_line_errors(cond_work: WorkDir, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00 not a checkpoint " * 10)
    with pytest.raises(CheckpointError, match=r"garbage\.safetensors: corrupt") as e:
        synthesize(cond_work.root, n=2, source="learned", condition_checkpoint=garbage, **FAST)
    assert "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match=r"nothing\.safetensors: no such checkpoint"):
        synthesize(
            cond_work.root,
            n=2,
            source="learned",
            condition_checkpoint=tmp_path / "nothing.safetensors",
            **FAST,
        )


def test_learned_without_a_condition_model_names_the_command(
    tiny_work: WorkDir, tmp_path: Path
) -> None:
    wd = WorkDir(tmp_path / "w")
    shutil.copytree(tiny_work.root, wd.root)
    train_gan(wd.root, epochs=1, ngf=4, ndf=4, device="cpu", progress=False, max_steps=1)
    with pytest.raises(StageMissingError, match=r"wsi-aug train-conditions"):
        synthesize(wd.root, n=2, source="learned", **FAST)


def test_cli_help_shows_the_stages() -> None:
    from wsi_aug.cli import cli

    runner = CliRunner()
    top = runner.invoke(cli, ["--help"])
    assert "train-conditions" in top.output and "eval-conditions" in top.output
    out = runner.invoke(cli, ["train-conditions", "--help"])
    assert out.exit_code == 0 and "--steps" in out.output and "--checkpoint-every" in out.output
    bad = runner.invoke(cli, ["synthesize", "--n", "2", "--source", "learned:2,warp:1"])
    assert isinstance(bad.exception, WsiAugError)  # main() prints it as one line
    assert "not a condition source" in str(bad.exception) and "\n" not in str(bad.exception)


def test_an_interrupted_run_continues_from_its_latest_checkpoint(
    tiny_work: WorkDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wsi_aug.condgen.train as condtrain

    wd = WorkDir(tmp_path / "w")
    shutil.copytree(tiny_work.root, wd.root)
    opts = dict(TINY, steps=6, sample_every=100, device="cpu", progress=False)
    real_save = condtrain._save

    def crash_at_4(out: Path, cfg: object, model: object, ema: object, opt: object, step: int,
                   seed: int, areas: object = None) -> Path:
        if step == 4:
            raise KeyboardInterrupt
        return real_save(out, cfg, model, ema, opt, step, seed, areas)  # type: ignore[arg-type]

    monkeypatch.setattr(condtrain, "_save", crash_at_4)
    with pytest.raises(KeyboardInterrupt):
        train_conditions(wd.root, **opts)
    monkeypatch.setattr(condtrain, "_save", real_save)
    started: list[int] = []
    real_train = condtrain.train

    def spy(*args: object, **kwargs: object) -> object:
        ck = kwargs.get("resume_from")
        started.append(int(Path(str(ck)).stem.split("-")[1]) if ck else 0)
        return real_train(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(condtrain, "train", spy)
    done = train_conditions(wd.root, **opts)
    assert started == [2] and done.meta["complete"]
    cs = ConditionStore.open(wd.root)
    assert cs.group.attrs["steps"] == 6 and cs.latest().name == "step-00000006.safetensors"
    rows = cs.losses.read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [1, 2, 3, 4, 5, 6]


def test_training_on_uncut_conditions_leaves_out_the_patches_cut_by_a_tile_edge(
    tiny_work: WorkDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wsi_aug.condgen.train as condtrain
    from wsi_aug.stages.extract import PatchStore
    from wsi_aug.stages.structure import PairedStores

    wd = WorkDir(tmp_path / "w")
    shutil.copytree(tiny_work.root, wd.root)
    seen: list[np.ndarray] = []
    real_train = condtrain.train

    def spy(cfg: object, masks: np.ndarray, *args: object, **kwargs: object) -> object:
        seen.append(masks.copy())
        return real_train(cfg, masks, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(condtrain, "train", spy)
    opts = dict(TINY, steps=2, device="cpu", progress=False)
    everything = train_conditions(wd.root, **opts)
    uncut = train_conditions(wd.root, train_on="uncut", **opts)
    assert not uncut.cached  # the choice is part of the stage's key
    assert uncut.meta["params"]["train_on"] == "uncut"
    data = PairedStores(wd.root).load("train")
    cut = PatchStore.open(wd.root).padding_insets(data.rows).any(axis=1)
    assert cut.any() and not cut.all()
    assert np.array_equal(seen[0], data.masks)
    assert np.array_equal(seen[1], data.masks[~cut])
    assert ConditionStore.open(wd.root).group.attrs["train_conditions"] == int((~cut).sum())
    assert everything.meta["params"]["train_on"] == "all"

    def all_cut(self: PatchStore, rows: np.ndarray) -> np.ndarray:
        return np.ones((len(rows), 4), np.int64)

    monkeypatch.setattr(PatchStore, "padding_insets", all_cut)
    with pytest.raises(WsiAugError, match=r"extract\.zarr: every positive .*--train-on all"):
        train_conditions(wd.root, train_on="uncut", force=True, **opts)


def test_an_area_conditioned_model_through_the_stages(tiny_work: WorkDir, tmp_path: Path) -> None:
    """--area-condition is part of the key and the config; synthesize and eval-conditions draw
    from the checkpoint's own training areas (nothing else to pass)."""
    from wsi_aug.condgen.checkpoints import load
    from wsi_aug.condgen.model import mask_areas
    from wsi_aug.stages.structure import PairedStores

    wd = WorkDir(tmp_path / "w")
    shutil.copytree(tiny_work.root, wd.root)
    opts = dict(TINY, steps=2, device="cpu", progress=False)
    plain = train_conditions(wd.root, **opts)
    assert plain.meta["params"]["area_condition"] is False
    made = train_conditions(wd.root, area_condition=True, **opts)
    assert not made.cached and made.meta["params"]["area_condition"] is True
    cs = ConditionStore.open(wd.root)
    assert cs.group.attrs["config"]["area_condition"] is True
    ck = load(cs.latest())
    train_masks = PairedStores(wd.root).load("train", positive=True).masks
    np.testing.assert_array_equal(ck.areas.numpy(), mask_areas(train_masks))  # type: ignore[union-attr]
    train_gan(wd.root, epochs=1, ngf=4, ndf=4, device="cpu", progress=False)
    synthesize(wd.root, n=3, source="learned", condition_steps=2, seed=1, **FAST)
    _, masks, _ = SyntheticStore.open(wd.root).read_all()
    assert masks.shape == (3, 64, 64)
    eval_conditions(wd.root, n=4, sample_steps=2, **FAST)
    assert "learned" in set(ConditionEvalStore.open(wd.root).results["set"].tolist())
