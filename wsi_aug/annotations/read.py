"""One entry point for every annotation format: the format is found from the suffix and content.

``.geojson``/``.json`` are QuPath GeoJSON or LabelMe (LabelMe has a ``shapes`` list), ``.xml`` is
ASAP or ImageScope (by the root tag), image suffixes are masks. A file with another suffix is
recognised by its first character (``{``/``[`` JSON, ``<`` XML).

Any file is read in time about linear in its size: integers of any length are read (as a float,
infinite when too large, rather than Python's ``ValueError`` beyond 4300 digits), numbers too large
for a float read as infinite, and the parsers reject, per object, every value that is not a finite
coordinate (see `wsi_aug.annotations.model`). A file that cannot be parsed at all (not JSON or XML,
nested too deeply, not a known format) raises `AnnotationError` naming the file and the fix.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wsi_aug.annotations.asap import parse_asap
from wsi_aug.annotations.geojson import parse_geojson
from wsi_aug.annotations.imagescope import parse_imagescope
from wsi_aug.annotations.labelme import is_labelme, parse_labelme
from wsi_aug.annotations.masks import MASK_SUFFIXES, read_mask
from wsi_aug.annotations.model import AnnotationSet, clean_text
from wsi_aug.errors import AnnotationError

FORMATS = ("geojson", "labelme", "asap", "imagescope", "mask")
_ALIASES = {
    "qupath": "geojson",
    "json": "geojson",
    "aperio": "imagescope",
    "image": "mask",
    "png": "mask",
    "tif": "mask",
    "tiff": "mask",
}
ANNOTATION_SUFFIXES = {".geojson", ".json", ".xml"}
_KNOWN = (
    "use QuPath GeoJSON (.geojson), LabelMe JSON (.json), ASAP or ImageScope XML (.xml), "
    "or a mask image (.png, .tif)"
)


def _existing(path: Path) -> Path:
    """`path` itself, or a one-line error when it is missing or a folder."""
    if not path.exists():
        raise AnnotationError(f"{path}: no such annotation file; check the path")
    if path.is_dir():
        raise AnnotationError(f"{path}: is a folder, not an annotation file; name the file")
    return path


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, or a one-line error when it cannot be read."""
    try:
        return _existing(path).read_bytes()
    except OSError as exc:
        raise AnnotationError(
            f"{path}: cannot be read ({clean_text(exc.strerror or str(exc), 100)}); "
            "check the file and its permissions"
        ) from exc


_LONG_INT = 300  # digits: longer integers are read as floats (no int-to-str limit, no overflow)


def _parse_int(text: str) -> int | float:
    """A JSON integer: exact when short; a float (infinite beyond ~1e308) when long."""
    return int(text) if len(text) <= _LONG_INT else float(text)


def load_json(path: Path) -> Any:
    """The parsed JSON of a file, or a one-line error saying where it breaks.

    Integers of any length are read (long ones as floats); numbers beyond a float's range, and
    ``NaN``/``Infinity``, are read as non-finite floats for the parsers to reject per object.
    """
    data = _read_bytes(path)
    fix = "export it again from QuPath or LabelMe"
    try:
        return json.loads(data, parse_int=_parse_int)
    except json.JSONDecodeError as exc:
        raise AnnotationError(
            f"{path}: not valid JSON (line {exc.lineno}): {clean_text(exc.msg, 100)}; {fix}"
        ) from exc
    except UnicodeDecodeError as exc:
        raise AnnotationError(f"{path}: not valid JSON (not UTF-8 text); {fix}") from exc
    except RecursionError as exc:
        raise AnnotationError(f"{path}: not usable JSON (lists nested too deeply); {fix}") from exc
    except ValueError as exc:  # anything else json refuses
        raise AnnotationError(
            f"{path}: not valid JSON ({clean_text(str(exc), 100)}); {fix}"
        ) from exc


def load_xml(path: Path) -> ET.Element:
    """The root element of an XML file, or a one-line error saying where it breaks."""
    data = _read_bytes(path)
    fix = "export it again from ASAP or ImageScope"
    try:
        return ET.fromstring(data)
    except ET.ParseError as exc:
        line = exc.position[0] if getattr(exc, "position", None) else "?"
        msg = re.sub(r":\s*line \d+, column \d+$", "", str(exc))
        raise AnnotationError(
            f"{path}: not valid XML (line {line}): {clean_text(msg, 100)}; {fix}"
        ) from exc
    except (LookupError, ValueError) as exc:  # an unknown or unsupported encoding
        raise AnnotationError(
            f"{path}: not readable XML ({clean_text(str(exc), 100)}); {fix}"
        ) from exc
    except RecursionError as exc:
        raise AnnotationError(f"{path}: not usable XML (nested too deeply); {fix}") from exc


def _tag(root: ET.Element) -> str:
    """The root tag without its namespace."""
    return root.tag.rsplit("}", 1)[-1]


def _from_xml(root: ET.Element, path: Path, max_vertices: int | None = None) -> AnnotationSet:
    """ASAP or ImageScope, by the root tag."""
    tag = _tag(root)
    if tag == "ASAP_Annotations":
        return parse_asap(root, path, max_vertices=max_vertices)
    if tag == "Annotations":
        return parse_imagescope(root, path, max_vertices=max_vertices)
    raise AnnotationError(
        f"{path}: XML root <{clean_text(tag, 60)}> is neither ASAP (<ASAP_Annotations>) nor "
        f"ImageScope (<Annotations>); {_KNOWN}"
    )


def _from_json(
    data: Any, path: Path, objects: Sequence[str], max_vertices: int | None = None
) -> AnnotationSet:
    """LabelMe when the data has a ``shapes`` list, QuPath GeoJSON otherwise."""
    if is_labelme(data):
        return parse_labelme(data, path, max_vertices=max_vertices)
    return parse_geojson(data, path, objects=objects, max_vertices=max_vertices)


def _sniff(path: Path) -> str | None:
    """``json`` or ``xml`` from the first non-blank character of a file, else None."""
    try:
        with path.open("rb") as f:
            head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    except OSError:
        return None  # reported when read
    if head[:1] in (b"{", b"["):
        return "json"
    if head[:1] == b"<":
        return "xml"
    return None


def read_annotations(
    path: str | Path,
    *,
    fmt: str | None = None,
    objects: Sequence[str] = ("annotation",),
    label: str = "mask",
    mask_value: int | None = None,
    mask_channel: int | None = None,
    scale: float | tuple[float, float] = 1.0,
    min_area: float = 0.0,
    max_vertices: int | None = None,
) -> AnnotationSet:
    """Read any supported annotation file into polygons in level-0 pixel coordinates.

    `fmt` forces a format (one of `FORMATS`; ``qupath`` and ``aperio`` are accepted too).
    `objects` are the QuPath object types to read (empty means annotations only). `label`,
    `mask_value`, `mask_channel`, `scale` and `min_area` apply to mask images only: see
    `wsi_aug.annotations.masks.read_mask`. Objects above `max_vertices` vertices (default
    `wsi_aug.annotations.model.MAX_VERTICES`, 200,000) are simplified, and the report says so.

    Objects with invalid values are rejected one by one (see `AnnotationSet.report`); only a
    file that cannot be read at all raises `AnnotationError`.
    """
    path = _existing(Path(path))
    objects = tuple(objects) or ("annotation",)
    if not all(isinstance(o, str) for o in objects):
        raise AnnotationError(f"{path}: objects must be names of object types, got {objects!r}")
    if max_vertices is not None and max_vertices < 4:
        raise AnnotationError(f"{path}: max_vertices {max_vertices} is too small; use 4 or more")
    mv = max_vertices
    if fmt is not None:
        key = _ALIASES.get(fmt.strip().lower(), fmt.strip().lower())
        if key not in FORMATS:
            raise AnnotationError(
                f"{path}: unknown annotation format {fmt!r}; use one of {', '.join(FORMATS)}"
            )
    else:
        suffix = path.suffix.lower()
        if suffix in (".geojson", ".json"):
            key = "json"
        elif suffix == ".xml":
            key = "xml"
        elif suffix in MASK_SUFFIXES:
            key = "mask"
        else:
            key = _sniff(path) or ""
            if not key:
                raise AnnotationError(f"{path}: unknown annotation format; {_KNOWN}")
    if key == "mask":
        return read_mask(
            path,
            label=label,
            mask_value=mask_value,
            mask_channel=mask_channel,
            scale=scale,
            min_area=min_area,
            max_vertices=mv,
        )
    if key in ("xml", "asap", "imagescope"):
        root = load_xml(path)
        if key == "asap":
            return parse_asap(root, path, max_vertices=mv)
        if key == "imagescope":
            return parse_imagescope(root, path, max_vertices=mv)
        return _from_xml(root, path, mv)
    data = load_json(path)
    if key == "labelme":
        return parse_labelme(data, path, max_vertices=mv)
    if key == "geojson":
        return parse_geojson(data, path, objects=objects, max_vertices=mv)
    return _from_json(data, path, objects, mv)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items())


def summarise(aset: AnnotationSet, reasons: int = 3) -> str:
    """A few lines for ``wsi-aug info``: objects per class; what was repaired, dropped, skipped."""
    rep = aset.report
    fmt = f" ({aset.fmt})" if aset.fmt else ""
    n = len(aset.annotations)
    head = f"{aset.source.name}{fmt}: {n} object{'s' if n != 1 else ''}"
    lines = [head + (f": {_counts(aset.classes())}" if n else "")]
    if rep.repaired:
        why = "; ".join(rep.repaired_reasons[:reasons])
        lines.append(f"  repaired {rep.repaired} (invalid shape, kept its area): {why}")
    if rep.simplified:
        why = "; ".join(rep.simplified_reasons[:reasons])
        lines.append(f"  simplified {rep.simplified} (too many vertices, kept): {why}")
    if rep.dropped:
        why = "; ".join(rep.dropped_reasons[:reasons])
        lines.append(f"  dropped {rep.dropped} (empty or degenerate): {why}")
    if rep.rejected:
        why = "; ".join(rep.rejected_reasons[:reasons])
        lines.append(
            f"  rejected {rep.rejected} (invalid or too complex, not read; correct or delete "
            f"them, or export the file again): {why}"
        )
    if rep.skipped:
        hints = sorted({h for h in rep.skipped_reasons.values() if h})
        tail = f" ({'; '.join(hints)})" if hints else ""
        lines.append(f"  skipped {rep.n_skipped}: {_counts(rep.skipped)}{tail}")
    return "\n".join(lines)
