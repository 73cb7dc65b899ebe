"""The CLI surface: help, info, phantom, structure and run, and one-line user errors."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from wsi_aug.cli import COMMANDS, main


def test_help_lists_every_command_quickly():
    t = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "wsi_aug", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert time.perf_counter() - t < 5
    for name in COMMANDS:
        assert name in out
    # --help must not import the heavy libraries
    code = (
        "import sys, click; from wsi_aug.cli import cli; ctx = click.Context(cli); "
        "[cli.get_command(ctx, n) for n in cli.list_commands(ctx)]; "
        "print('torch' in sys.modules, 'zarr' in sys.modules)"
    )
    assert subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split() == ["False", "False"]


def test_the_command_stops_openblas_spinning_unless_the_user_chose():
    """`wsi_aug.cli` sets OPENBLAS_THREAD_TIMEOUT before anything imports numpy (the package
    itself imports nothing), and keeps a value already set."""
    code = (
        "import os, sys; import wsi_aug; assert 'numpy' not in sys.modules; "
        "import wsi_aug.cli; print(os.environ['OPENBLAS_THREAD_TIMEOUT'])"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "4"
    env["OPENBLAS_THREAD_TIMEOUT"] = "20"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "20"


def test_info_on_slides_and_annotations(phantom_slides, capsys):
    main(
        [
            "info",
            str(phantom_slides / "phantom-000.tif"),
            str(phantom_slides / "phantom-000.geojson"),
        ]
    )
    out = capsys.readouterr().out
    assert "0.5" in out and "levels" in out and "Glomerulus" in out


def test_info_on_missing_file_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["info", str(tmp_path / "nope.svs")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.svs" in err[0]


def test_phantom_command_writes_pairs(tmp_path, capsys):
    main(["phantom", str(tmp_path), "--slides", "1", "--width", "768", "--height", "768"])
    assert (tmp_path / "phantom-000.tif").is_file()
    assert (tmp_path / "phantom-000.geojson").is_file()


def test_structure_command_and_its_errors(tiny_work, tmp_path, capsys):
    import shutil

    work = tmp_path / "w"
    shutil.copytree(tiny_work.patches, work / "extract.zarr")
    with pytest.raises(SystemExit) as exc:
        main(["structure", "--work", str(work), "--method", "fixed"])
    assert exc.value.code == 2 and "--threshold" in capsys.readouterr().err
    main(["structure", "--work", str(work), "--channel", "hematoxylin", "--min-size", "3"])
    assert "built" in capsys.readouterr().out
    main(["structure", "--work", str(work), "--channel", "hematoxylin", "--min-size", "3"])
    assert "cached" in capsys.readouterr().out
    assert (work / "structure" / "grid.png").is_file()


def test_structure_without_patches_names_extract(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["structure", "--work", str(tmp_path)])
    assert "wsi-aug extract" in capsys.readouterr().err


def test_run_command_on_a_pipeline_file(phantom_slides, tmp_path, capsys):
    cfg = tmp_path / "p.toml"
    cfg.write_text(
        f'work = "{tmp_path / "w"}"\n[extract]\ninputs = ["{phantom_slides}"]\nsize = 32\n'
        'mpp = 4.0\n[structure]\nmethod = "otsu"\n'
    )
    main(["run", str(cfg)])
    out = capsys.readouterr().out
    assert "extract: " in out and "structure: " in out and "[built]" in out
    main(["run", str(cfg)])
    assert out.count("[built]") == 2
    assert capsys.readouterr().out.count("[cached") == 2


def test_info_without_paths_describes_the_work_folder(tiny_work, capsys):
    main(["info", "--work", str(tiny_work.root)])
    out = capsys.readouterr().out
    assert "extract.zarr: stage extract, complete" in out
    assert "images (16, 64, 64, 3) uint8" in out and "structure.zarr" in out


def test_phantom_defaults_to_the_work_folder(tmp_path):
    main(["phantom", "--work", str(tmp_path), "--slides", "1", "--width", "512", "--height", "512"])
    assert (tmp_path / "slides" / "phantom-000.tif").is_file()
