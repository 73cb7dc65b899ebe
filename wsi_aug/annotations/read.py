"""One entry point for every annotation format: the format is found from the suffix and content.

``.geojson``/``.json`` are QuPath GeoJSON or LabelMe (LabelMe has a ``shapes`` list), ``.xml`` is
ASAP or ImageScope (by the root tag), image suffixes are masks. A file with another suffix is
recognised by its first character (``{``/``[`` JSON, ``<`` XML).
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
from wsi_aug.annotations.model import AnnotationSet
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


def load_json(path: Path) -> Any:
    """The parsed JSON of a file, or a one-line error saying where it breaks."""
    try:
        return json.loads(_existing(path).read_bytes())
    except json.JSONDecodeError as exc:
        raise AnnotationError(
            f"{path}: not valid JSON (line {exc.lineno}): {exc.msg}; "
            "export it again from QuPath or LabelMe"
        ) from exc
    except UnicodeDecodeError as exc:
        raise AnnotationError(
            f"{path}: not valid JSON (not UTF-8 text); export it again from QuPath or LabelMe"
        ) from exc


def load_xml(path: Path) -> ET.Element:
    """The root element of an XML file, or a one-line error saying where it breaks."""
    try:
        return ET.parse(_existing(path)).getroot()
    except ET.ParseError as exc:
        line = exc.position[0] if getattr(exc, "position", None) else "?"
        msg = re.sub(r":\s*line \d+, column \d+$", "", str(exc))
        raise AnnotationError(
            f"{path}: not valid XML (line {line}): {msg}; "
            "export it again from ASAP or ImageScope"
        ) from exc


def _tag(root: ET.Element) -> str:
    """The root tag without its namespace."""
    return root.tag.rsplit("}", 1)[-1]


def _from_xml(root: ET.Element, path: Path) -> AnnotationSet:
    """ASAP or ImageScope, by the root tag."""
    tag = _tag(root)
    if tag == "ASAP_Annotations":
        return parse_asap(root, path)
    if tag == "Annotations":
        return parse_imagescope(root, path)
    raise AnnotationError(
        f"{path}: XML root <{tag}> is neither ASAP (<ASAP_Annotations>) nor ImageScope "
        f"(<Annotations>); {_KNOWN}"
    )


def _from_json(data: Any, path: Path, objects: Sequence[str]) -> AnnotationSet:
    """LabelMe when the data has a ``shapes`` list, QuPath GeoJSON otherwise."""
    if is_labelme(data):
        return parse_labelme(data, path)
    return parse_geojson(data, path, objects=objects)


def _sniff(path: Path) -> str | None:
    """``json`` or ``xml`` from the first non-blank character of a file, else None."""
    with path.open("rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
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
) -> AnnotationSet:
    """Read any supported annotation file into polygons in level-0 pixel coordinates.

    `fmt` forces a format (one of `FORMATS`; ``qupath`` and ``aperio`` are accepted too).
    `objects` are the QuPath object types to read (empty means annotations only). `label`,
    `mask_value`, `mask_channel`, `scale` and `min_area` apply to mask images only: see
    `wsi_aug.annotations.masks.read_mask`.
    """
    path = _existing(Path(path))
    objects = tuple(objects) or ("annotation",)
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
        )
    if key in ("xml", "asap", "imagescope"):
        root = load_xml(path)
        if key == "asap":
            return parse_asap(root, path)
        if key == "imagescope":
            return parse_imagescope(root, path)
        return _from_xml(root, path)
    data = load_json(path)
    if key == "labelme":
        return parse_labelme(data, path)
    if key == "geojson":
        return parse_geojson(data, path, objects=objects)
    return _from_json(data, path, objects)


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
    if rep.dropped:
        why = "; ".join(rep.dropped_reasons[:reasons])
        lines.append(f"  dropped {rep.dropped} (empty or degenerate): {why}")
    if rep.skipped:
        hints = sorted({h for h in rep.skipped_reasons.values() if h})
        tail = f" ({'; '.join(hints)})" if hints else ""
        lines.append(f"  skipped {rep.n_skipped}: {_counts(rep.skipped)}{tail}")
    return "\n".join(lines)
