"""The stage cache: hits, misses, forced rebuilds and interrupted writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import zarr

from wsi_aug import store
from wsi_aug.errors import StageMissingError


def _build(path, params, inputs=None, value=1):
    with store.build(path, stage="demo", params=params, inputs=inputs or {}) as g:
        store.create_stack(g, "x", (2, 3))[:] = value
    return path


def test_build_marks_complete_and_records_everything(tmp_path):
    p = _build(tmp_path / "a.zarr", {"k": 1}, {"f": "sha256:0"})
    meta = store.read_meta(p)
    assert meta["complete"] is True
    assert meta["params"] == {"k": 1}
    assert meta["inputs"] == {"f": "sha256:0"}
    assert meta["stage"] == "demo"
    assert meta["version"]
    assert store.is_complete(p, store.stage_key("demo", {"k": 1}, {"f": "sha256:0"}))
    assert not any(q.name.startswith(".") for q in tmp_path.iterdir())  # no temp left


def test_cache_hit_miss_and_force(tmp_path):
    p = _build(tmp_path / "a.zarr", {"k": 1})
    assert store.cached_result(p, stage="demo", params={"k": 1}, inputs={}).cached
    assert store.cached_result(p, stage="demo", params={"k": 2}, inputs={}) is None
    assert store.cached_result(p, stage="demo", params={"k": 1}, inputs={"f": "x"}) is None
    assert store.cached_result(p, stage="demo", params={"k": 1}, inputs={}, force=True) is None


def test_rebuild_replaces_and_changes_fingerprint(tmp_path):
    p = _build(tmp_path / "a.zarr", {"k": 1}, value=1)
    fp1 = store.stage_fingerprint(p)
    _build(p, {"k": 1}, value=7)
    assert zarr.open_group(p, mode="r")["x"][0, 0] == 7
    assert store.stage_fingerprint(p) != fp1


def test_exception_leaves_old_store_and_no_temp(tmp_path):
    p = _build(tmp_path / "a.zarr", {"k": 1}, value=1)
    with pytest.raises(RuntimeError):
        with store.build(p, stage="demo", params={"k": 2}, inputs={}) as g:
            store.create_stack(g, "x", (2, 3))[:] = 5
            raise RuntimeError("boom")
    assert store.is_complete(p, store.stage_key("demo", {"k": 1}, {}))
    assert zarr.open_group(p, mode="r")["x"][0, 0] == 1
    assert [q.name for q in tmp_path.iterdir()] == ["a.zarr"]


def test_killed_process_never_leaves_a_complete_store(tmp_path):
    """A process killed mid-write leaves nothing that reads as complete."""
    target = tmp_path / "k.zarr"
    code = textwrap.dedent(f"""
        import time
        from wsi_aug import store
        with store.build({str(target)!r}, stage="demo", params={{}}, inputs={{}}) as g:
            store.create_stack(g, "x", (2, 3))[:] = 1
            print("writing", flush=True)
            time.sleep(30)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not store.is_complete(target)
    assert not target.exists()
    partial = [q for q in tmp_path.iterdir() if q.name.startswith(".k.zarr.tmp")]
    assert partial and not store.is_complete(partial[0])


def test_open_stage_errors_name_the_command(tmp_path):
    with pytest.raises(StageMissingError, match="wsi-aug extract"):
        store.open_stage(tmp_path / "none.zarr", stage="extract", made_by="wsi-aug extract SLIDES")
    g = zarr.open_group(tmp_path / "half.zarr", mode="w")
    g.attrs[store.ATTR] = {"stage": "extract", "complete": False}
    with pytest.raises(StageMissingError, match="incomplete"):
        store.open_stage(tmp_path / "half.zarr", stage="extract", made_by="wsi-aug extract")


def test_resumable_build_keeps_partial_on_error(tmp_path):
    p = tmp_path / "r.zarr"
    with pytest.raises(KeyboardInterrupt):
        with store.build(p, stage="t", params={"a": 1}, inputs={}, resumable=True) as g:
            g.attrs["progress"] = 3
            raise KeyboardInterrupt
    partial = store.partial_path(p, store.stage_key("t", {"a": 1}, {}))
    assert partial.is_dir() and not p.exists()
    with store.build(p, stage="t", params={"a": 1}, inputs={}, resumable=True) as g:
        assert g.attrs["progress"] == 3
    assert store.is_complete(p) and not partial.exists()


def test_tables_round_trip(tmp_path):
    with store.build(tmp_path / "t.zarr", stage="t", params={}, inputs={}) as g:
        store.write_table(
            g, "table", {"s": ["a", "bb"], "f": np.array([1.5, 2.0]), "b": np.array([True, False])}
        )
    t = store.read_table(zarr.open_group(tmp_path / "t.zarr", mode="r"), "table")
    assert list(t) == ["s", "f", "b"]
    assert t["s"].tolist() == ["a", "bb"] and t["f"].tolist() == [1.5, 2.0]
    assert t["b"].dtype == bool


def test_fingerprint_file_sees_content(tmp_path):
    a = tmp_path / "a.bin"
    a.write_bytes(b"x" * 100)
    f1 = store.fingerprint_file(a)
    a.write_bytes(b"x" * 99 + b"y")
    assert store.fingerprint_file(a) != f1


def test_stack_writer_writes_whole_chunks_in_order(tmp_path):
    g = zarr.open_group(tmp_path / "s.zarr", mode="w")
    arr = store.create_stack(g, "x", (23, 2), dtype="int32", items_per_chunk=4)
    w = store.StackWriter(arr)
    data = np.arange(46, dtype=np.int32).reshape(23, 2)
    for lo, hi in [(0, 3), (3, 3), (3, 12), (12, 13), (13, 23)]:
        w.append(data[lo:hi])
    w.close()
    assert w.at == 23 and np.array_equal(arr[:], data)


def test_stack_writer_grows_an_empty_stack(tmp_path):
    g = zarr.open_group(tmp_path / "s.zarr", mode="w")
    arr = store.create_stack(g, "x", (0, 2), dtype="int32", items_per_chunk=4)
    assert arr.shape == (0, 2) and arr.chunks == (4, 2)
    w = store.StackWriter(arr)
    data = np.arange(22, dtype=np.int32).reshape(11, 2)
    for lo, hi in [(0, 5), (5, 6), (6, 11)]:
        w.append(data[lo:hi])
    assert arr.shape[0] == 8  # only whole chunks so far
    w.close()
    reread = zarr.open_group(tmp_path / "s.zarr", mode="r")["x"]
    assert reread.shape == (11, 2) and np.array_equal(reread[:], data)


def test_stack_writer_flushes_and_resumes_mid_chunk(tmp_path):
    g = zarr.open_group(tmp_path / "s.zarr", mode="w")
    arr = store.create_stack(g, "x", (0, 2), dtype="int32", items_per_chunk=4)
    data = np.arange(30, dtype=np.int32).reshape(15, 2)
    w = store.StackWriter(arr)
    w.append(data[:6])
    w.flush()  # the partial second chunk is on disk now
    assert arr.shape[0] == 6 and np.array_equal(arr[:], data[:6])
    arr.resize((6, 2))
    resumed = store.StackWriter(zarr.open_group(tmp_path / "s.zarr", mode="a")["x"], start=6)
    resumed.append(data[6:11])
    resumed.close()
    assert np.array_equal(zarr.open_group(tmp_path / "s.zarr", mode="r")["x"][:], data[:11])
