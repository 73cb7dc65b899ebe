"""What a newcomer trips on: leftovers of killed runs, fallbacks, summaries that accumulate."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.test_eval_seg import copy_work, make_fake_synthetic
from wsi_aug.stages.structure import structure
from wsi_aug.store import WorkDir, describe_work, stale_temporaries


def test_stale_temporaries_are_removed_by_the_next_run(tiny_work: WorkDir, tmp_path: Path) -> None:
    work = WorkDir(tmp_path / "w")
    work.root.mkdir()
    shutil.copytree(tiny_work.patches, work.patches)
    dead = work.root / ".structure.zarr.tmp-999999999-deadbeef"  # no such process
    legacy = work.root / ".structure.zarr.tmp-1a2b3c4d"  # older versions: no PID
    live = work.root / f".structure.zarr.tmp-{os.getpid()}-cafecafe"  # this process: in use
    for p in (dead, legacy, live):
        (p / "maps").mkdir(parents=True)
    assert stale_temporaries(work.structure) == sorted([dead, legacy])
    info = describe_work(work.root)
    assert "leftovers of killed runs" in info and dead.name in info and live.name not in info
    structure(work.root, progress=False)
    assert not dead.exists() and not legacy.exists()
    assert live.exists()  # owned by a live process: never touched


def test_latest_checkpoint_falls_back_to_the_newest(tmp_path: Path) -> None:
    from wsi_aug.gan.checkpoints import latest_checkpoint

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    assert latest_checkpoint(folder) is None
    for i, name in enumerate(("epoch-0001", "epoch-0002", "step-00000007")):
        p = folder / f"{name}.safetensors"
        p.write_bytes(b"x")
        os.utime(p, ns=(10**18 + i, 10**18 + i))
    assert latest_checkpoint(folder) == folder / "step-00000007.safetensors"
    (folder / "latest").write_text("epoch-0002.safetensors")
    assert latest_checkpoint(folder) == folder / "epoch-0002.safetensors"
    (folder / "latest").write_text("gone.safetensors")  # names a deleted file
    assert latest_checkpoint(folder) == folder / "step-00000007.safetensors"


@pytest.fixture(scope="module")
def seg_work2(tiny_work: WorkDir, tmp_path_factory: pytest.TempPathFactory) -> WorkDir:
    work = copy_work(tiny_work, tmp_path_factory.mktemp("eval-seg-all") / "work")
    make_fake_synthetic(work)
    return work


@pytest.mark.slow
def test_eval_seg_summary_keeps_every_cached_configuration(seg_work2: WorkDir) -> None:
    from wsi_aug.stages.eval_seg import eval_seg

    tiny = {"epochs": 1, "width": 1 / 16, "device": "cpu", "progress": False, "seeds": 1}
    eval_seg(seg_work2.root, synthetic_ratios=[0.0, 1.0], real_fraction=1.0, **tiny)
    second = eval_seg(seg_work2.root, synthetic_ratios=[0.0], real_fraction=0.5, **tiny)
    assert len(second.rows) == 1  # results.md: this call's configurations
    assert second.all_markdown is not None
    text = second.all_markdown.read_text()
    # augmentation and stain normalisation are always shown: every ratio row is compared with
    # the real-only row of the same augmentation
    assert "every cached configuration (3), by augment, stain_normalize, real_fraction" in text
    header, *body = [line for line in text.splitlines() if line.startswith("| ")]
    col = [c.strip() for c in header.split("|")].index("real_fraction")
    body = [line for line in body if not set(line) <= set("|- :")]  # not the separator row
    assert [line.split("|")[col].strip() for line in body] == ["0.5", "1", "1"]
    assert "±" not in text  # one seed: no spread to show
    all_csv = (seg_work2.eval_seg / "all.csv").read_text()
    assert all_csv.startswith("augment,stain_normalize,real_fraction,")


def test_broken_links_in_a_slide_folder_are_reported(tmp_path: Path, caplog) -> None:
    import logging

    from wsi_aug.annotations.pairing import find_slides

    (tmp_path / "a.tif").write_bytes(b"x")
    (tmp_path / "b.svs").symlink_to(tmp_path / "gone.svs")
    with caplog.at_level(logging.WARNING, logger="wsi_aug"):
        found = find_slides([tmp_path])
    assert found == [tmp_path / "a.tif"]
    assert "b.svs: a broken link" in caplog.text and "gone.svs" in caplog.text


def test_grid_images_have_a_frame(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from wsi_aug.figures import save_grid

    white = np.full((32, 32, 3), 255, np.uint8)  # like a patch of white edge padding
    rgb = np.asarray(Image.open(save_grid([[white]], tmp_path / "g.png")).convert("RGB"))
    grey = (np.abs(rgb.astype(int) - 128) < 24).all(-1)
    assert grey.any(axis=0).sum() > 20 and grey.any(axis=1).sum() > 20  # a frame on both axes


def test_info_says_how_to_continue_an_interrupted_run(tmp_path: Path) -> None:
    (tmp_path / ".extract.zarr.partial-0123456789ab").mkdir()
    info = describe_work(tmp_path)
    assert "rerun the stage with the same options to continue" in info
    assert "--resume" not in info


def test_a_store_missing_chunks_is_refused_and_info_check_finds_it(
    tiny_work: WorkDir, tmp_path: Path, capsys
) -> None:
    from wsi_aug.cli import main
    from wsi_aug.errors import StageMissingError
    from wsi_aug.stages.extract import PatchStore
    from wsi_aug.store import is_complete, verify

    work = WorkDir(tmp_path / "w")
    work.root.mkdir()
    shutil.copytree(tiny_work.patches, work.patches)
    assert verify(work.patches) is None
    main(["info", "--work", str(work.root), "--check"])
    assert "extract.zarr: ok" in capsys.readouterr().out
    chunk = sorted((work.patches / "images" / "c").rglob("*"))[-1]
    chunk.unlink()  # a chunk deleted after completion: zarr alone would read zeros
    with pytest.raises(StageMissingError, match=r"extract\.zarr is damaged: 1 chunk\(s\) missing "
                       r"from images; rebuild it with `wsi-aug extract SLIDES --force`"):
        PatchStore.open(work.root)
    with pytest.raises(StageMissingError, match="damaged"):
        structure(work.root, progress=False)
    assert not is_complete(work.patches)  # so rerunning extract rebuilds instead of 'cached'
    with pytest.raises(SystemExit) as exc:
        main(["info", "--work", str(work.root), "--check"])
    assert exc.value.code == 2
    assert "extract.zarr: 1 chunk(s) missing from images" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("err", "fix"),
    [
        (PermissionError(13, "Permission denied", "/w/structure.zarr"), "check its permissions"),
        (OSError(28, "No space left on device", "/w/structure.zarr"), "the disk is full"),
        (OSError(30, "Read-only file system", "/w"), "the disk is read-only"),
    ],
)
def test_an_unwritable_work_folder_is_one_line(tiny_work, tmp_path, monkeypatch, capsys, err, fix):
    """Root ignores permissions, so the failure is injected where a stage first writes."""
    from wsi_aug import store
    from wsi_aug.cli import main

    work = tmp_path / "w"
    shutil.copytree(tiny_work.patches, work / "extract.zarr")

    real = store.zarr.open_group

    def refuse(path, *args, mode="a", **kwargs):
        if mode == "r":
            return real(path, *args, mode=mode, **kwargs)
        raise err  # the first write of the stage's store

    monkeypatch.setattr(store.zarr, "open_group", refuse)
    with pytest.raises(SystemExit) as exc:
        main(["structure", "--work", str(work)])
    assert exc.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and err.filename in lines[0] and fix in lines[0]


def test_non_utf8_file_names_are_extracted(phantom_slides: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    src = os.fsencode(tmp_path / "src")
    os.mkdir(src)
    for suffix in (b".tif", b".geojson"):
        shutil.copy(os.fsencode(phantom_slides / "phantom-000") + suffix, src + b"/s\xffx" + suffix)
    out = subprocess.run(
        [sys.executable, "-m", "wsi_aug", "extract", src, "--work", str(tmp_path / "w"),
         "--size", "32", "--mpp", "4"],
        capture_output=True,
    )
    assert out.returncode == 0, out.stderr[-500:]
    assert b"Traceback" not in out.stderr
    from wsi_aug.stages.extract import PatchStore

    assert PatchStore.open(tmp_path / "w").table.slide.tolist()[0] == "s\\xffx.tif"


def test_an_error_naming_a_file_with_a_line_break_stays_one_line(tmp_path: Path, capsys) -> None:
    from wsi_aug.cli import main

    odd = tmp_path / "two\nlines.svs"
    with pytest.raises(SystemExit):
        main(["info", str(odd)])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "two\\nlines.svs" in err[0]
