"""What every stage returns; kept apart so the CLI can name it without importing zarr."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class StageResult:
    """A stage's store, whether the cache served it, and what people look at."""

    path: Path
    cached: bool
    meta: dict[str, Any] = field(default_factory=dict)
    outputs: tuple[Path, ...] = ()
    text: str = ""  # a table or summary to print after the stage line

    def with_(self, **changes: Any) -> StageResult:
        """A copy with some fields changed."""
        return replace(self, **changes)
