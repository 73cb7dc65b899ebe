"""The stage contract: one Params per stage drives the CLI, the pipeline files and the cache key."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from wsi_aug.errors import WsiAugError
from wsi_aug.stages import registry
from wsi_aug.stages.base import field_extra

REPO = Path(__file__).resolve().parent.parent


def _commands() -> dict[str, click.Command]:
    from wsi_aug.cli import cli

    ctx = click.Context(cli)
    out = {}
    for name in registry.NAMES:
        cmd = cli.get_command(ctx, name)
        assert cmd is not None, name
        out[name] = cmd
    return out


def test_registry_names_are_unique_and_match_modules():
    stages = registry.stages()
    assert [s.name for s in stages] == list(registry.NAMES)
    for s in stages:
        assert s.params.stage == s.name


@pytest.mark.parametrize("name", registry.NAMES)
def test_every_cli_default_equals_its_params_default(name):
    stage = registry.get(name)
    cmd = _commands()[name]
    params = {p.name: p for p in cmd.params}
    for field, info in stage.params.model_fields.items():
        if field_extra(info).get("cli") is False:
            assert field not in params
            continue
        assert field in params, f"{name}: --{field} missing from the CLI"
        opt = params[field]
        if isinstance(opt, click.Argument):
            assert field_extra(info).get("argument"), f"{name}: {field} is not an argument"
            continue
        if info.is_required():
            assert opt.required, f"{name}: {field} is required in Params but not on the CLI"
            continue
        default = opt.default
        expected = info.default
        if isinstance(expected, tuple) and isinstance(default, tuple):
            default = tuple(default)
        if isinstance(opt, click.Option) and opt.is_flag and expected is False:
            assert default is False
            continue
        assert default == expected or (default == () and expected == ()), (
            f"{name} {field}: CLI default {default!r}, Params default {expected!r}"
        )
        if isinstance(opt, click.Option) and info.description:
            assert opt.help and info.description in opt.help
    extra = set(params) - set(stage.params.model_fields) - {"work", "force"}
    assert not extra, f"{name}: CLI options without a Params field: {extra}"


@pytest.mark.parametrize("path", sorted((REPO / "pipelines").glob("*.*ml")), ids=lambda p: p.name)
def test_shipped_pipelines_validate_against_params(path, tmp_path):
    from wsi_aug.pipeline import load_pipeline, pipeline_params

    config = load_pipeline(path)
    params = pipeline_params(config, tmp_path)
    assert params
    for name, p in params.items():
        assert set(config[name]) <= set(type(p).model_fields), name


def test_demo_pipeline_validates(tmp_path):
    from importlib.resources import files

    from wsi_aug.pipeline import load_pipeline, pipeline_params

    path = Path(str(files("wsi_aug.resources").joinpath("demo.toml")))
    assert set(pipeline_params(load_pipeline(path), tmp_path)) == set(registry.NAMES)


@pytest.mark.parametrize(
    ("table", "pattern"),
    [
        (
            '[structure]\nmethod = "Otsu"\n',
            r"\[structure\]: method \(--method\) = 'Otsu': .*'otsu' or 'fixed'",
        ),
        ("[structure]\nmin_size = \"4\"\n", r"\[structure\].*min_size.*expected a number"),
        (
            "[train-gan]\nepochs = 0\n",
            r"\[train-gan\]: epochs \(--epochs\) = 0: .*greater than or equal to 1",
        ),
        ("[train-gan]\nbetas = [0.5]\n", r"\[train-gan\].*betas"),
        ("[extract]\nsplit = \"0.6,0.2,0.2\"\n", r"\[extract\].*split.*expected a number"),
        ("[eval-seg]\nsynthetic_ratios = [0, 1.5]\n", r"\[eval-seg\].*ratio must be in \[0, 1\]"),
        ("[synthesize]\nseed = 1\n", r"\[synthesize\]: n \(--n\) is required"),
        ("[eval-gan]\nunet_epoch = 3\n", r"\[eval-gan\].*unknown key\(s\) unet_epoch.*unet_epochs"),
        ("[structure]\nmethod = \"fixed\"\n", r"\[structure\].*needs --threshold"),
    ],
)
def test_pipeline_type_errors_are_one_line(table, pattern, tmp_path):
    from wsi_aug.pipeline import run_pipeline

    path = tmp_path / "p.toml"
    path.write_text(table)
    with pytest.raises(WsiAugError, match=pattern) as exc:
        run_pipeline(path, work=tmp_path / "w", progress=False)
    assert "\n" not in str(exc.value)


def test_pipeline_type_error_via_cli_has_no_traceback(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "p.toml"
    path.write_text('[structure]\nmethod = "Otsu"\n')
    out = subprocess.run(
        [sys.executable, "-m", "wsi_aug", "run", str(path), "--work", str(tmp_path / "w")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "method" in out.stderr


def test_params_key_leaves_out_how_to_run():
    from wsi_aug.stages.train_gan import TrainGanParams

    a = TrainGanParams.parse({"epochs": 3, "device": "cpu", "checkpoint_every": 1})
    b = TrainGanParams.parse({"epochs": 3, "device": "cuda", "checkpoint_every": 5})
    assert a.key_dict() == b.key_dict()
    assert a.key_dict() != TrainGanParams.parse({"epochs": 4}).key_dict()


def test_cli_options_parse_into_params(tmp_path):
    from wsi_aug.options import _flatten_lists
    from wsi_aug.stages.eval_seg import EvalSegParams

    cmd = _commands()["eval-seg"]
    ctx = cmd.make_context(
        "eval-seg", ["--synthetic-ratio", "0,0.5", "--synthetic-ratio", "1", "--augment", "none"]
    )
    values = {k: v for k, v in ctx.params.items() if k not in ("work", "force")}
    p = EvalSegParams.parse(_flatten_lists(EvalSegParams, values))
    assert p.synthetic_ratios == (0.0, 0.5, 1.0)
    assert p.augment == "none"


def test_stores_hold_only_zarr(tiny_work, tmp_path):
    """Every .zarr a stage writes opens with zarr and holds nothing but zarr files."""
    import shutil

    from wsi_aug.stages.structure import structure

    work = tmp_path / "w"
    shutil.copytree(tiny_work.patches, work / "extract.zarr")
    structure(work, progress=False)
    assert (work / "structure" / "grid.png").is_file()
    assert_only_zarr(work)


def assert_only_zarr(work: Path) -> None:
    """No foreign file in any .zarr under `work`, and zarr lists each without warnings."""
    import warnings

    import zarr

    stores = [p for p in work.rglob("*.zarr") if p.is_dir() and not p.name.startswith(".")]
    assert stores
    for s in stores:
        for f in s.rglob("*"):
            if f.is_file():
                rel = f.relative_to(s).parts
                assert f.name == "zarr.json" or "c" in rel, f"foreign file in {s}: {f}"
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            g = zarr.open_group(s, mode="r")
            list(g.members(max_depth=None))


def test_old_layout_is_reported_not_misread(tiny_work, tmp_path):
    import shutil

    from wsi_aug.stages.structure import structure
    from wsi_aug.store import describe_work

    work = tmp_path / "old"
    shutil.copytree(tiny_work.patches, work / "patches.zarr")
    with pytest.raises(WsiAugError, match=r"old layout.*--force"):
        structure(work, progress=False)
    assert "old layout" in describe_work(work)


def test_each_store_name_is_spelled_in_one_module():
    """A store's array names and table columns appear as strings only in its stage module."""
    ext, syn = "wsi_aug/stages/extract.py", "wsi_aug/stages/synthesize.py"
    owners = {
        "images": {ext, syn},  # both stores hold images and masks, each module its own
        "masks": {ext, syn},
        "table": {ext},
        "object_id": {ext, "wsi_aug/annotations/geojson.py"},  # also QuPath's own property
        "padded": {ext},
        "positive": {ext},
        "maps": {"wsi_aug/stages/structure.py"},
        "provenance": {syn},
        "source_index": {syn},
        "per_seed": {"wsi_aug/stages/eval_seg.py"},
    }
    src = {p: p.read_text() for p in (REPO / "wsi_aug").rglob("*.py")}
    for word, allowed in owners.items():
        where = {
            str(p.relative_to(REPO))
            for p, text in src.items()
            if re.search(rf"""["']{re.escape(word)}["']""", text)
        }
        assert where <= allowed, f"store name {word!r} spelled in {sorted(where - allowed)}"


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_whole_pipeline_writes_only_zarr_and_reruns_cached(phantom_slides, tmp_path, capsys):
    """Every stage once through `wsi-aug run`: only zarr in each store, then all cached."""
    from wsi_aug.cli import main

    cfg = tmp_path / "p.toml"
    cfg.write_text(
        f'work = "{tmp_path / "w"}"\n'
        f'[extract]\ninputs = ["{phantom_slides}"]\nsize = 32\nmpp = 4.0\nnegatives = 1\n'
        "split = [0.34, 0.33, 0.33]\n"
        "[structure]\nmin_size = 2\n"
        '[train-gan]\nepochs = 1\nngf = 4\nndf = 4\ndevice = "cpu"\n'
        '[synthesize]\nn = 8\nbatch_size = 4\ndevice = "cpu"\n'
        '[eval-seg]\nsynthetic_ratios = [0.0, 0.5]\nseeds = 1\nepochs = 1\nwidth = 0.0625\n'
        'device = "cpu"\n'
        '[eval-gan]\nunet_epochs = 1\nunet_width = 0.0625\nn_pairs = 10\ndevice = "cpu"\n'
    )
    main(["run", str(cfg)])
    first = capsys.readouterr().out
    for name in ("extract", "structure", "train-gan", "synthesize", "eval-seg", "eval-gan"):
        assert f"{name}: " in first, name
    assert first.count("[built]") == 6
    assert "train-gan/samples/epoch-0001.png" in first  # the figure people look at is listed
    assert_only_zarr(tmp_path / "w")
    main(["run", str(cfg)])
    assert capsys.readouterr().out.count("[cached") == 6


def test_library_warnings_reach_the_cli_log(capsys):
    import logging
    import warnings

    from wsi_aug.options import show_library_log

    logging.captureWarnings(False)  # pytest swaps warnings.showwarning per test: capture anew
    show_library_log()
    try:
        warnings.warn("a library warning", UserWarning, stacklevel=1)
        logging.getLogger("wsi_aug.stages.extract").info("a library info line")
    finally:
        logging.captureWarnings(False)
    err = capsys.readouterr().err
    assert "a library warning" in err and "a library info line" in err
