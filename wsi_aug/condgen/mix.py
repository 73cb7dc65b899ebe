"""The ``--source`` spec of synthesize: one condition source, or a weighted mix of them.

Pure Python (no numpy or torch), so that validating a stage's parameters stays cheap.
"""

from __future__ import annotations

import math

SOURCES = ("augment", "real", "learned")


def parse_mix(spec: str) -> list[tuple[str, float]]:
    """``learned:0.5,augment:0.5`` -> [("learned", 0.5), ("augment", 0.5)]; ``augment`` -> 1.0.

    Raises ValueError (one line) for an unknown source, a repeated one, a weight that is not a
    positive number, or an empty spec.
    """
    text = str(spec).strip()
    if not text:
        raise ValueError(
            f"empty; use one of {', '.join(SOURCES)} or a mix like learned:0.5,augment:0.5"
        )
    out: list[tuple[str, float]] = []
    for part in text.split(","):
        name, _, weight = part.strip().partition(":")
        name = name.strip()
        if name not in SOURCES:
            raise ValueError(
                f"{name!r} is not a condition source; use {', '.join(SOURCES)}, or a mix like "
                "learned:0.5,augment:0.5"
            )
        if any(n == name for n, _ in out):
            raise ValueError(f"{name!r} appears twice in the mix {text!r}")
        try:
            w = float(weight) if weight.strip() else 1.0
        except ValueError:
            w = float("nan")
        if not (w > 0 and math.isfinite(w)):
            raise ValueError(
                f"{part.strip()!r}: the weight must be a positive number, e.g. {name}:0.5"
            )
        out.append((name, w))
    if len(out) == 1 and ":" in text:
        raise ValueError(f"{text!r}: a single source takes no weight; write {out[0][0]}")
    return out


def canonical_source(spec: str) -> str:
    """The spec as written canonically: ``augment`` stays ``augment``; mixes as ``a:0.5,b:0.5``."""
    parts = parse_mix(spec)
    if len(parts) == 1:
        return parts[0][0]
    return ",".join(f"{n}:{w:g}" for n, w in parts)
