"""The stage cache: every stage writes one Zarr store whose attributes say how it was made.

A store's attributes hold, under the key ``wsi_aug``: the stage name, its parameters, the
fingerprints of its inputs (files, or upstream stores), the package version, a cache key derived
from those, and a completion mark written last. A stage is built in a hidden temporary folder beside
its final path and renamed into place only once complete, so a crash or Ctrl-C never leaves a store
that reads as complete. A rerun whose key matches a complete store does nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr

from wsi_aug import __version__
from wsi_aug.errors import StageMissingError
from wsi_aug.fingerprint import fingerprint_file as fingerprint_file  # re-exported
from wsi_aug.fingerprint import fingerprint_value as fingerprint_value
from wsi_aug.result import StageResult

log = logging.getLogger(__name__)

ATTR = "wsi_aug"


def stage_key(stage: str, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> str:
    """The cache key of a stage run: its name, parameters and input fingerprints."""
    return fingerprint_value({"stage": stage, "params": dict(params), "inputs": dict(inputs)})


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``wsi_aug`` attributes of a store, or None where there is no readable store."""
    p = Path(path)
    if not (p / "zarr.json").is_file():
        return None
    try:
        meta = zarr.open_group(p, mode="r").attrs.get(ATTR)
    except Exception:  # a half-written or foreign folder reads as absent
        return None
    return dict(meta) if isinstance(meta, Mapping) else None


def is_complete(path: str | os.PathLike[str], key: str | None = None) -> bool:
    """True when the store carries its completion mark (and, if given, the same cache key)."""
    meta = read_meta(path)
    if not meta or not meta.get("complete"):
        return False
    if key is not None and meta.get("key") != key:
        return False
    return files_match(Path(path), meta) and damage(path, meta) is None


def files_match(path: Path, meta: Mapping[str, Any]) -> bool:
    """True when a store's files folder (if it has one) belongs to this very build."""
    name = meta.get("files")
    if not name:
        return True
    mark = path.parent / str(name) / FILES_KEY
    try:
        return mark.read_text() == meta.get("key")
    except OSError:
        return False


def stage_fingerprint(path: str | os.PathLike[str]) -> str:
    """Fingerprint of a complete store, for the stages that read it (changes on every rebuild)."""
    meta = read_meta(path)
    if not meta or not meta.get("complete"):
        raise StageMissingError(f"{path}: store missing or incomplete")
    return fingerprint_value([meta.get("key"), meta.get("completed_ns", meta.get("completed_at"))])


def inventory(path: Path) -> dict[str, list[int]]:
    """Per array of a store (relative path): its number of chunk files and their total bytes.

    Recorded at completion; comparing it with the folder finds deleted, truncated or added
    chunks at the cost of a directory listing (zarr would silently read a missing chunk as the
    fill value).
    """
    out: dict[str, list[int]] = {}
    for meta_file in sorted(path.rglob("zarr.json")):
        node = meta_file.parent
        try:
            kind = json.loads(meta_file.read_text()).get("node_type")
        except (OSError, ValueError):
            continue
        if kind != "array":
            continue
        n = size = 0
        chunks = node / "c"
        if chunks.is_dir():
            for f in chunks.rglob("*"):
                if f.is_file():
                    n += 1
                    size += f.stat().st_size
        out[node.relative_to(path).as_posix()] = [n, size]
    return out


def damage(path: str | os.PathLike[str], meta: Mapping[str, Any]) -> str | None:
    """What is wrong with a complete store's chunks against its inventory, or None if intact."""
    recorded = meta.get("contents")
    if not isinstance(recorded, Mapping):
        return None  # made before inventories were recorded: nothing to compare
    now = inventory(Path(path))
    problems = []
    for name, (n, size) in recorded.items():
        got_n, got_size = now.get(name, [0, 0])
        if got_n < n:
            problems.append(f"{n - got_n} chunk(s) missing from {name}")
        elif got_n > n:
            problems.append(f"{got_n - n} unexpected chunk(s) in {name}")
        elif got_size != size:
            problems.append(f"chunks of {name} changed size")
    return "; ".join(problems) or None


def verify(path: str | os.PathLike[str]) -> str | None:
    """A full check of a store: its inventory, then every array read whole (decodes each chunk).

    Returns what is wrong, or None. For `wsi-aug info --check`.
    """
    meta = read_meta(path)
    if meta is None:
        return "not a wsi-aug store"
    if not meta.get("complete"):
        return "incomplete"
    problem = damage(path, meta)
    if problem:
        return problem
    group = zarr.open_group(Path(path), mode="r")
    for name, arr in group.arrays():
        try:
            arr[...]
        except Exception as exc:  # a chunk that does not decode
            return f"{name} does not read ({exc.__class__.__name__}: {exc})"
    for name, sub in group.groups():
        for col, arr in sub.arrays():
            try:
                arr[...]
            except Exception as exc:
                return f"{name}/{col} does not read ({exc.__class__.__name__}: {exc})"
    return None


def open_stage(path: str | os.PathLike[str], *, stage: str, made_by: str) -> zarr.Group:
    """Open a complete upstream store read-only, or fail naming the command that makes it.

    A store whose chunk files no longer match what it recorded at completion is refused.
    """
    meta = read_meta(path)
    if meta is None:
        raise StageMissingError(f"{path}: no {stage} store here; make it with `{made_by}`")
    if not meta.get("complete"):
        raise StageMissingError(
            f"{path}: the {stage} store is incomplete (interrupted?); rebuild it with `{made_by}`"
        )
    if meta.get("stage") != stage:
        raise StageMissingError(
            f"{path}: holds a {meta.get('stage')!r} store, not {stage!r}; make it with `{made_by}`"
        )
    problem = damage(path, meta)
    if problem:
        fix = f"rebuild it with `{made_by} --force`"
        raise StageMissingError(f"{path} is damaged: {problem}; {fix}")
    return zarr.open_group(Path(path), mode="r")


def cached_result(
    path: str | os.PathLike[str],
    *,
    stage: str,
    params: Mapping[str, Any],
    inputs: Mapping[str, Any],
    force: bool = False,
) -> StageResult | None:
    """A `StageResult` for a valid cached store, or None when the stage must run."""
    if force:
        return None
    key = stage_key(stage, params, inputs)
    if is_complete(path, key):
        return StageResult(Path(path), True, read_meta(path) or {})
    return None


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that readers see the old content or the new, never half of it."""
    tmp = path.with_name(f".{path.name}.tmp-{_owner()}")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _owner() -> str:
    """``PID-RANDOM``: names a temporary by the process that owns it, so others can tell stale."""
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def stale_temporaries(final: Path) -> list[Path]:
    """Hidden ``.NAME.tmp-PID-*`` / ``.NAME.old-PID-*`` leftovers of `final` whose process is gone.

    A stage killed mid-write leaves these behind; ones a live process owns are in use, and names
    without a PID (older versions) count as stale.
    """
    out = []
    for kind in ("tmp", "old"):
        for p in final.parent.glob(f".{final.name}.{kind}-*"):
            owner = p.name.split(f".{kind}-", 1)[1].split("-", 1)[0]
            if not (owner.isdigit() and _alive(int(owner))):
                out.append(p)
    return sorted(out)


def remove_stale(final: Path) -> list[Path]:
    """Remove `final`'s stale temporaries (see `stale_temporaries`); returns what went."""
    gone = stale_temporaries(final)
    for p in gone:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    if gone:
        log.info("%s: removed %d leftover(s) of an interrupted run", final, len(gone))
    return gone


def partial_path(path: str | os.PathLike[str], key: str) -> Path:
    """Where a resumable stage keeps its unfinished work (one folder per cache key)."""
    p = Path(path)
    return p.parent / f".{p.name}.partial-{key.removeprefix('sha256:')[:12]}"


@dataclass
class Building:
    """A store being built: its writable group, and the folder for its non-zarr files (or None)."""

    group: zarr.Group
    files: Path | None
    key: str


FILES_KEY = ".wsi-aug-key"  # in a stage's files folder: the cache key of the store it belongs to


def _files_tmp(final: Path, tmp: Path) -> Path:
    return tmp.parent / f"{tmp.name}.files"


@contextlib.contextmanager
def build_stage(
    path: str | os.PathLike[str],
    *,
    stage: str,
    params: Mapping[str, Any],
    inputs: Mapping[str, Any],
    resumable: bool = False,
    files: str | os.PathLike[str] | None = None,
) -> Iterator[Building]:
    """Build a stage store (and its folder of non-zarr files) atomically.

    Yields a writable group in a hidden temporary folder and, when `files` names the stage's
    folder of non-zarr files (checkpoints, PNG, CSV), a hidden temporary folder for those: zarr
    stores hold only zarr. When the body returns, the files folder is moved into place first,
    then the store's completion mark is written last and its folder renamed to `path`. When the
    body raises, a non-resumable build is removed; a resumable one (``resumable=True``) is kept
    for the next run with the same key to continue from.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    key = stage_key(stage, params, inputs)
    if resumable:
        tmp = partial_path(final, key)
        mode: Literal["a", "w"] = "a" if (tmp / "zarr.json").is_file() else "w"
    else:
        remove_stale(final)
        tmp = final.parent / f".{final.name}.tmp-{_owner()}"
        mode = "w"
    files_final = Path(files) if files is not None else None
    files_tmp = _files_tmp(final, tmp) if files_final is not None else None
    if files_tmp is not None:
        files_tmp.mkdir(parents=True, exist_ok=True)
    group = zarr.open_group(tmp, mode=mode)
    meta: dict[str, Any] = {
        "stage": stage,
        "params": json.loads(json.dumps(dict(params), default=str)),
        "inputs": json.loads(json.dumps(dict(inputs), default=str)),
        "version": __version__,
        "key": key,
        "complete": False,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if files_final is not None:
        meta["files"] = files_final.name
    group.attrs[ATTR] = meta
    try:
        yield Building(group, files_tmp, key)
    except BaseException:
        if not resumable:
            shutil.rmtree(tmp, ignore_errors=True)
            if files_tmp is not None:
                shutil.rmtree(files_tmp, ignore_errors=True)
        raise
    if files_tmp is not None and files_final is not None:
        (files_tmp / FILES_KEY).write_text(key)
        _replace_dir(files_tmp, files_final)
    meta["contents"] = inventory(tmp)  # what a complete store holds, checked on every open
    meta["complete"] = True
    meta["completed_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    meta["completed_ns"] = time.time_ns()
    group.attrs[ATTR] = meta  # the completion mark: written last
    _replace_dir(tmp, final)


def _replace_dir(src: Path, dst: Path) -> None:
    """Move folder `src` to `dst`, replacing what was there (never a mix of both)."""
    old = None
    if dst.exists():
        old = dst.parent / f".{dst.name}.old-{_owner()}"
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def build(
    path: str | os.PathLike[str],
    *,
    stage: str,
    params: Mapping[str, Any],
    inputs: Mapping[str, Any],
    resumable: bool = False,
) -> Iterator[zarr.Group]:
    """`build_stage` for a store with no files folder: yields just the group."""
    with build_stage(
        path, stage=stage, params=params, inputs=inputs, resumable=resumable
    ) as building:
        yield building.group


def write_table(group: zarr.Group, name: str, columns: Mapping[str, Any]) -> None:
    """Write a table as a group of equal-length 1-D arrays (strings as variable-length UTF-8)."""
    sub = group.require_group(name)
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise ValueError(f"table {name}: columns of different lengths {sorted(lengths)}")
    for col, values in columns.items():
        arr = np.asarray(values)
        if arr.dtype.kind in "UOST":
            data = np.asarray([printable(str(v)) for v in values], dtype=object)
            z = sub.create_array(col, shape=(len(data),), dtype=str, overwrite=True)
            if len(data):
                z[:] = data
        else:
            sub.create_array(col, data=arr, overwrite=True)
    sub.attrs["columns"] = list(columns)


def printable(text: str) -> str:
    """`text` as valid UTF-8: bytes of a non-UTF-8 file name (surrogate escapes) as ``\\xff``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def read_rows(array: Any, rows: np.ndarray | Sequence[int]) -> np.ndarray:
    """The given rows of an (N, ...) zarr array, in the order given (one sorted read)."""
    idx = np.asarray(rows, dtype=np.int64)
    if idx.size == 0:
        return np.zeros((0, *array.shape[1:]), array.dtype)
    order = np.argsort(idx, kind="stable")
    back = np.empty_like(order)
    back[order] = np.arange(len(order))
    return np.asarray(array.get_orthogonal_selection((idx[order],)))[back]


def read_all(array: Any) -> np.ndarray:
    """A whole zarr array as a numpy array."""
    return np.asarray(array[...])


def read_table(group: zarr.Group, name: str) -> dict[str, np.ndarray]:
    """Read a table written by `write_table`, columns in their written order."""
    sub = group[name]
    assert isinstance(sub, zarr.Group)
    written = sub.attrs.get("columns")
    if isinstance(written, list):
        order = [str(c) for c in written]
    else:
        order = sorted(k for k, _ in sub.arrays())
    out: dict[str, np.ndarray] = {}
    for col in order:
        values = read_all(sub[col])
        out[col] = np.array(values.tolist(), dtype=str) if values.dtype.kind in "OT" else values
    return out


def create_stack(
    group: zarr.Group,
    name: str,
    shape: tuple[int, ...],
    dtype: Any = "uint8",
    items_per_chunk: int = 1,
    compressors: Any = "auto",
) -> zarr.Array[Any]:
    """An (N, ...) array chunked along N only (compressed); for patch-like stacks.

    One item per chunk suits random access; more per chunk (with `StackWriter`) writes faster.
    N = 0 makes an empty array that a `StackWriter` grows as items arrive. `compressors` is
    zarr's (``"auto"``: zarr's default, Zstandard), e.g. ``(BloscCodec(cname="lz4", ...),)``.
    Chunks are written even when they hold only the fill value: checking that costs a full pass
    over every chunk (about as long as compressing it with LZ4), and patches are rarely empty.
    """
    n_chunk = max(1, min(items_per_chunk, shape[0])) if shape[0] else max(1, items_per_chunk)
    chunks = (n_chunk, *(max(1, c) for c in shape[1:]))
    return group.create_array(
        name,
        shape=shape,
        dtype=dtype,
        chunks=chunks,
        compressors=compressors,
        overwrite=True,
        config={"write_empty_chunks": True},
    )


class StackWriter:
    """Appends items to an (N, ...) array in whole chunks, so that each chunk is written once.

    The array grows when the items outrun its length, so a stack of unknown length can be
    streamed into an array created with N = 0. It grows by doubling (each resize rewrites the
    array's metadata), so between writes it may be longer than the items written; `flush` and
    `close` cut it to them.

    With `executor` (a one-thread ``concurrent.futures`` executor, which several writers may
    share), the writes run there, in order, while the caller goes on: compressing and writing
    files release the GIL. At most `max_queued` blocks of this writer wait there; `flush` and
    `close` wait for them; a failed write raises from the next call; `abort` drops what has not
    started. The caller keeps the executor and shuts it down.
    """

    def __init__(
        self,
        array: zarr.Array[Any],
        start: int = 0,
        executor: Any = None,
        max_queued: int = 2,
    ) -> None:
        """Write from item `start` on (items before it are kept: a resumed stack)."""
        self.array = array
        self._chunk = int(array.chunks[0])
        self.at = (start // self._chunk) * self._chunk  # a partial first chunk is read back
        head = [np.asarray(array[self.at : start])] if start > self.at else []
        self._pending: list[np.ndarray] = head
        self._n_pending = start - self.at
        self._rows = int(array.shape[0])  # the array's length (set by the writing thread only)
        self._executor = executor
        self._max_queued = max(1, max_queued)
        self._queued: list[Any] = []  # futures of the writes sent to the executor, oldest first

    def _store(self, block: np.ndarray, at: int, exact: bool) -> None:
        """Write `block` at item `at`, growing the array (to the exact end where `exact`)."""
        end = at + len(block)
        rows = self._rows
        if exact:
            rows = end
        elif end > rows:
            rows = max(end, -(-2 * rows // self._chunk) * self._chunk)
        if rows != self._rows:
            self.array.resize((rows, *self.array.shape[1:]))
            self._rows = rows
        if len(block):
            self.array[at:end] = block

    def _submit(self, block: np.ndarray, at: int, exact: bool = False) -> None:
        if self._executor is None:
            self._store(block, at, exact)
            return
        self._reap()
        while len(self._queued) >= self._max_queued:
            self._queued.pop(0).result()
        self._queued.append(self._executor.submit(self._store, block, at, exact))

    def _reap(self) -> None:
        """Raise the error of a failed background write (and forget the finished ones)."""
        while self._queued and self._queued[0].done():
            self._queued.pop(0).result()

    def _wait(self) -> None:
        while self._queued:
            self._queued.pop(0).result()

    def append(self, items: np.ndarray) -> None:
        """Queue `items` (k, ...) and write every whole chunk that is ready."""
        if len(items) == 0:
            return
        self._pending.append(np.asarray(items))
        self._n_pending += len(items)
        if self._n_pending >= self._chunk:
            block = np.concatenate(self._pending)
            whole = (len(block) // self._chunk) * self._chunk
            self._submit(block[:whole], self.at)
            self.at += whole
            self._pending = [block[whole:]] if whole < len(block) else []
            self._n_pending = len(block) - whole

    def flush(self) -> None:
        """Write the queued items too (a partial chunk, rewritten when the chunk fills), and wait
        for them: the array then holds exactly the items appended."""
        block = np.concatenate(self._pending) if self._n_pending else self._empty()
        self._submit(block, self.at, exact=True)
        self._wait()

    def close(self) -> None:
        """Write what is left (and wait for it)."""
        self.flush()
        self.at += self._n_pending
        self._pending, self._n_pending = [], 0

    def abort(self) -> None:
        """Drop the writes that have not started and wait for the one running (its error too)."""
        for fut in self._queued:
            fut.cancel()
        for fut in self._queued:
            if not fut.cancelled():
                with contextlib.suppress(Exception):
                    fut.result()
        self._queued = []

    def _empty(self) -> np.ndarray:
        return np.zeros((0, *self.array.shape[1:]), self.array.dtype)


OLD_LAYOUT = ("patches.zarr", "gan.zarr", "synthetic.zarr")  # wsi-aug 0.1's store names


@dataclass(frozen=True)
class WorkDir:
    """The layout of a work folder (``--work``), a public interface documented in the README.

    Each stage has one name, used on the CLI, in pipeline files and here: its store is
    ``NAME.zarr`` (only zarr inside) and its other files (checkpoints, PNG, CSV) are in ``NAME/``.
    """

    root: Path

    def store(self, stage: str) -> Path:
        """The stage's Zarr store."""
        return self.root / f"{stage}.zarr"

    def files(self, stage: str) -> Path:
        """The stage's folder of non-zarr files, beside its store."""
        return self.root / stage

    @property
    def patches(self) -> Path:
        return self.store("extract")

    @property
    def structure(self) -> Path:
        return self.store("structure")

    @property
    def gan(self) -> Path:
        return self.store("train-gan")

    @property
    def gan_files(self) -> Path:
        return self.files("train-gan")

    @property
    def synthetic(self) -> Path:
        return self.store("synthesize")

    @property
    def eval_seg(self) -> Path:
        return self.files("eval-seg")

    @property
    def eval_gan(self) -> Path:
        return self.files("eval-gan")

    @property
    def slides(self) -> Path:
        return self.root / "slides"

    def old_layout(self) -> list[str]:
        """Stores of wsi-aug 0.1's layout found here (names it no longer reads)."""
        return [n for n in OLD_LAYOUT if (self.root / n / "zarr.json").is_file()]

    def check_layout(self, force: bool = False) -> None:
        """Refuse a work folder made with the old layout (unless `force`): never misread it."""
        old = self.old_layout()
        if not old:
            return
        if not force:
            raise StageMissingError(
                f"{self.root}: made by wsi-aug 0.1 with the old layout ({', '.join(old)}): "
                "rerun with --force (the old stores are then moved to old-0.1/)"
            )
        keep = self.root / "old-0.1"
        keep.mkdir(exist_ok=True)
        for name in old:
            target = keep / name
            if target.exists():
                shutil.rmtree(target)
            os.replace(self.root / name, target)
        log.info("%s: moved the old layout's %s to %s", self.root, ", ".join(old), keep)


def work_stores(root: Path) -> list[Path]:
    """Every wsi-aug store of a work folder (not inside another store, not hidden, not old)."""
    found = sorted(p for p in root.rglob("*.zarr") if not p.name.startswith("."))
    return [
        p
        for p in found
        if not any(q.suffix == ".zarr" for q in p.parents)
        and p.parent.name != "old-0.1"
        and p.name not in OLD_LAYOUT
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]


def describe_work(root: str | os.PathLike[str], stages: Sequence[tuple[str, str]] = ()) -> str:
    """A few lines per stage store of a work folder: stage, state, when, arrays, parameters.

    `stages` are (name, store path in the work folder) of the registered stages, in pipeline
    order: each is listed, built or not, so the output reads as the pipeline's progress.
    """
    base = Path(root)
    if not base.is_dir():
        return f"{base}: no work folder yet (the stages create it)"
    lines = [f"work folder {base}"]
    if stages:
        states = []
        for name, rel in stages:
            path = base / rel
            meta = read_meta(path) if rel.endswith(".zarr") else None
            if meta is not None:
                done = bool(meta.get("complete")) and files_match(path, meta)
                states.append(f"{name} {'done' if done else 'INCOMPLETE'}")
            elif path.exists():
                states.append(f"{name} present")
            else:
                states.append(f"{name} -")
        lines.append("  stages: " + ", ".join(states))
    old = WorkDir(base).old_layout()
    if old:
        lines.append(
            f"  made by wsi-aug 0.1 with the old layout ({', '.join(old)}): not read; "
            "rerun the stages with --force"
        )
    for p in work_stores(base):
        meta = read_meta(p)
        if meta is None:
            lines.append(f"  {p.relative_to(base)}: not a wsi-aug store")
            continue
        complete = bool(meta.get("complete")) and files_match(p, meta)
        state = f"complete {meta.get('completed_at', '')}" if complete else "INCOMPLETE"
        lines.append(f"  {p.relative_to(base)}: stage {meta.get('stage')}, {state}")
        group = zarr.open_group(p, mode="r")
        for name, arr in sorted(group.arrays()):
            lines.append(f"      {name} {tuple(arr.shape)} {arr.dtype}")
        if meta.get("files"):
            lines.append(f"      files: {p.parent.relative_to(base) / str(meta['files'])}/")
        params = ", ".join(f"{k}={v}" for k, v in (meta.get("params") or {}).items())
        lines.append(f"      params: {params}"[:300])
    partial = sorted(
        q.relative_to(base).as_posix()
        for q in base.rglob(".*.partial-*")
        if not q.name.endswith(".files")
    )
    if partial:
        lines.append(
            "  unfinished runs (running now, or interrupted: rerun the stage with the same "
            f"options to continue; --force starts over): {', '.join(partial)}"
        )
    leftovers = sorted(
        q.relative_to(base).as_posix()
        for kind in ("tmp", "old")
        for q in base.rglob(f".*.{kind}-*")
        if q in stale_temporaries(q.parent / q.name[1:].split(f".{kind}-", 1)[0])
    )
    if leftovers:
        lines.append(
            f"  leftovers of killed runs (removed by that stage's next run): {', '.join(leftovers)}"
        )
    if len(lines) == 1:
        lines.append("  no stage store yet; start with `wsi-aug extract SLIDES`")
    return "\n".join(lines)
