"""The pipeline runner: stages in order, cached stages skipped, changed parameters rebuilt."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsi_aug.errors import WsiAugError
from wsi_aug.pipeline import load_pipeline, run_pipeline

REPO = Path(__file__).resolve().parent.parent


def _config(slides: Path, min_size: int = 0) -> dict:
    return {
        "extract": {"inputs": [str(slides)], "size": 32, "mpp": 4.0, "negatives": 1},
        "structure": {"method": "otsu", "min_size": min_size},
    }


@pytest.mark.slow
def test_runner_skips_cached_and_reruns_changed_stage(phantom_slides, tmp_path):
    first = run_pipeline(_config(phantom_slides), work=tmp_path, progress=False)
    assert [(r.name, r.cached) for r in first] == [("extract", False), ("structure", False)]
    again = run_pipeline(_config(phantom_slides), work=tmp_path, progress=False)
    assert [r.cached for r in again] == [True, True]
    changed = run_pipeline(_config(phantom_slides, min_size=5), work=tmp_path, progress=False)
    assert [(r.name, r.cached) for r in changed] == [("extract", True), ("structure", False)]
    forced = run_pipeline(
        _config(phantom_slides), work=tmp_path, force=True, progress=False, only=("extract",)
    )
    assert [(r.name, r.cached) for r in forced] == [("extract", False)]
    after = run_pipeline(_config(phantom_slides), work=tmp_path, progress=False)
    assert [r.cached for r in after] == [True, False]  # its input was rebuilt


def test_unknown_key_and_stage_are_user_errors(phantom_slides, tmp_path):
    cfg = _config(phantom_slides)
    cfg["structure"]["colour"] = "red"
    with pytest.raises(WsiAugError, match=r"\[structure\].*colour"):
        run_pipeline(cfg, work=tmp_path, progress=False)
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nepochs = 1\n")
    with pytest.raises(WsiAugError, match="unknown stage"):
        load_pipeline(bad)
    bad.write_text("[extract\n")
    with pytest.raises(WsiAugError, match="cannot parse"):
        load_pipeline(bad)


def test_yaml_pipeline_files_read_like_toml(phantom_slides, tmp_path):
    cfg = tmp_path / "p.yaml"
    cfg.write_text(
        f"work: {tmp_path / 'w'}\nextract:\n  inputs: [{phantom_slides}]\n  size: 32\n  mpp: 4.0\n"
    )
    config = load_pipeline(cfg)
    assert config["extract"]["size"] == 32
    runs = run_pipeline(config, progress=False)
    assert [(r.name, r.cached) for r in runs] == [("extract", False)]
    assert (tmp_path / "w" / "extract.zarr").is_dir()
