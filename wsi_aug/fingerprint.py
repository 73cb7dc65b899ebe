"""Content fingerprints of files and values: the cache keys' inputs, without importing zarr.

`store` re-exports these; they live apart so that a stage can hash its input files in threads
(hashlib and file reads release the GIL) while the store module, which imports zarr, loads.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_HEAD_TAIL = 1 << 20  # bytes hashed at each end of a large file
_SMALL = 8 << 20  # files up to this size are hashed whole


def fingerprint_file(path: str | os.PathLike[str]) -> str:
    """Content fingerprint of a file: whole-file SHA-256 up to 8 MiB, else size + head + tail.

    Slides can be many GB; hashing their first and last MiB plus the size catches replaced or
    re-exported files at a cost independent of the slide's size.
    """
    p = Path(path)
    size = p.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with p.open("rb") as f:
        if size <= _SMALL:
            h.update(f.read())
        else:
            h.update(f.read(_HEAD_TAIL))
            f.seek(size - _HEAD_TAIL)
            h.update(f.read(_HEAD_TAIL))
    return "sha256:" + h.hexdigest()[:32]


def fingerprint_value(value: Any) -> str:
    """Stable fingerprint of a JSON-serialisable value (dict keys sorted)."""
    text = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:32]


class FileFingerprints:
    """Fingerprints of files computed in threads; `get` waits for one (and raises its error)."""

    def __init__(self, futures: dict[Path, Future[str]]) -> None:
        self._futures = futures

    def get(self, path: str | os.PathLike[str]) -> str:
        """The fingerprint of `path`: computed ahead when it was among the files, else here."""
        fut = self._futures.get(Path(path))
        return fut.result() if fut is not None else fingerprint_file(path)


@contextmanager
def fingerprinting(
    paths: Iterable[str | os.PathLike[str]], threads: int = 2
) -> Iterator[FileFingerprints]:
    """Within the block, `paths` are fingerprinted in `threads` threads, in order.

    At the block's end the files not yet started are dropped; an error (a missing or unreadable
    file) is raised by `get` for that file, not at the start.
    """
    unique = list(dict.fromkeys(Path(p) for p in paths))
    if threads <= 0 or len(unique) < 2:
        yield FileFingerprints({})
        return
    with ThreadPoolExecutor(threads, thread_name_prefix="wsi-aug-hash") as pool:
        futures = {p: pool.submit(fingerprint_file, p) for p in unique}
        try:
            yield FileFingerprints(futures)
        finally:
            for fut in futures.values():
                fut.cancel()
