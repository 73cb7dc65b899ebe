"""One entry point for every annotation format: the format is found from the suffix and content.

``.geojson``/``.json`` are QuPath GeoJSON, LabelMe (a ``shapes`` list) or DSA/HistomicsTK (an
``elements`` list); ``.xml`` and ``.annotations`` are ASAP (by the root tag), ImageScope or HALO
(both ``<Annotations>``: HALO names its vertices ``V`` and its region types in words); image
suffixes are masks. A file with another suffix is recognised by its first character (``{``/``[``
JSON, ``<`` XML). A JSON or XML file that is none of these formats raises `AnnotationError`
naming the formats read, rather than reading as an empty file of one of them.

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
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from wsi_aug.annotations.asap import parse_asap
from wsi_aug.annotations.dsa import is_dsa, parse_dsa
from wsi_aug.annotations.geojson import GEOMETRY_TYPES, parse_geojson
from wsi_aug.annotations.halo import is_halo, parse_halo
from wsi_aug.annotations.imagescope import parse_imagescope
from wsi_aug.annotations.labelme import is_labelme, parse_labelme
from wsi_aug.annotations.masks import read_mask
from wsi_aug.annotations.model import AnnotationSet, clean_text, shown
from wsi_aug.annotations.suffixes import MASK_SUFFIXES
from wsi_aug.errors import AnnotationError

FORMATS = ("geojson", "labelme", "dsa", "asap", "imagescope", "halo", "mask")
_ALIASES = {
    "qupath": "geojson",
    "json": "geojson",
    "aperio": "imagescope",
    "histomicstk": "dsa",
    "girder": "dsa",
    "indica": "halo",
    "image": "mask",
    "png": "mask",
    "tif": "mask",
    "tiff": "mask",
}
ANNOTATION_SUFFIXES = {".geojson", ".json", ".xml", ".annotations"}
_KNOWN = (
    "use QuPath GeoJSON (.geojson), LabelMe or DSA/HistomicsTK JSON (.json), ASAP or ImageScope "
    "XML (.xml), HALO XML (.annotations), or a mask image (.png, .tif)"
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
    fix = "export it again from QuPath, LabelMe or the Digital Slide Archive"
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
    fix = "export it again from ASAP, ImageScope or HALO"
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


def xml_format(root: ET.Element, path: Path) -> str:
    """``asap``, ``imagescope`` or ``halo`` from an XML tree, or a one-line error naming the
    formats read when it is none of them.

    ImageScope and HALO share the root ``<Annotations>``; the first region decides (see
    `wsi_aug.annotations.halo.is_halo`). One with no region at all is an empty file of either:
    HALO when named ``.annotations``, ImageScope otherwise.
    """
    tag = _tag(root)
    if tag == "ASAP_Annotations":
        return "asap"
    if tag == "Annotations" and (len(root) == 0 or root.find("Annotation") is not None):
        halo = is_halo(root)
        if halo is None:
            halo = path.suffix.lower() == ".annotations"
        return "halo" if halo else "imagescope"
    if tag == "Annotations":
        child = clean_text(_tag(root[0]), 60)
        what = f"<Annotations> holding <{child}>, not <Annotation> layers"
    else:
        what = f"root <{clean_text(tag, 60)}>"
    raise AnnotationError(
        f"{path}: not a known annotation XML ({what}): neither ASAP (<ASAP_Annotations>) nor "
        f"ImageScope or HALO (<Annotations><Annotation>); {_KNOWN}"
    )


def _from_xml(root: ET.Element, path: Path, max_vertices: int | None = None) -> AnnotationSet:
    """ASAP, ImageScope or HALO, by the root tag and the regions (see `xml_format`)."""
    key = xml_format(root, path)
    if key == "asap":
        return parse_asap(root, path, max_vertices=max_vertices)
    if key == "halo":
        return parse_halo(root, path, max_vertices=max_vertices)
    return parse_imagescope(root, path, max_vertices=max_vertices)


def _is_feature(item: Any) -> bool:
    """True for a GeoJSON Feature or geometry object."""
    if not isinstance(item, dict):
        return False
    kind = item.get("type")
    if not isinstance(kind, str):  # any JSON value may stand there: a list is not hashable
        return "geometry" in item
    return kind == "Feature" or "geometry" in item or kind in GEOMETRY_TYPES


def _is_geojson(data: Any) -> bool:
    """True for the layouts `parse_geojson` reads: a FeatureCollection, a Feature, a geometry, or
    a list (empty, or holding at least one Feature)."""
    if isinstance(data, list):
        return not data or any(_is_feature(item) for item in data)
    return _is_feature(data) or (isinstance(data, dict) and data.get("type") == "FeatureCollection")


def _described(data: Any) -> str:
    """What a JSON top level that is no known format holds, for the error."""
    if isinstance(data, dict) and data:
        keys = [clean_text(str(k), 30) for k in list(data)[:5]]
        more = ", ..." if len(data) > 5 else ""
        return f"an object with keys {', '.join(repr(k) for k in keys)}{more}"
    if isinstance(data, list):
        return f"a list of {len(data):,}, none a GeoJSON Feature or a DSA document"
    return shown(data)


def json_format(data: Any, path: Path) -> str:
    """``labelme``, ``dsa`` or ``geojson`` from JSON data, or a one-line error naming the formats
    read when it is none of them."""
    if is_labelme(data):
        return "labelme"
    if is_dsa(data):
        return "dsa"
    if _is_geojson(data):
        return "geojson"
    raise AnnotationError(
        f"{path}: not GeoJSON, LabelMe (a 'shapes' list) or DSA/HistomicsTK JSON (an 'elements' "
        f"list), but {_described(data)}; {_KNOWN}"
    )


def _from_json(
    data: Any, path: Path, objects: Sequence[str], max_vertices: int | None = None
) -> AnnotationSet:
    """LabelMe, DSA or QuPath GeoJSON, by what the data holds (see `json_format`)."""
    key = json_format(data, path)
    if key == "labelme":
        return parse_labelme(data, path, max_vertices=max_vertices)
    if key == "dsa":
        return parse_dsa(data, path, max_vertices=max_vertices)
    return parse_geojson(data, path, objects=objects, max_vertices=max_vertices)


def detect_format(path: str | Path) -> str:
    """The format `read_annotations` would read `path` as (one of `FORMATS`), from its suffix and
    content; `AnnotationError` when it is none of them."""
    path = _existing(Path(path))
    key = _container(path)
    if key == "xml":
        return xml_format(load_xml(path), path)
    if key == "json":
        return json_format(load_json(path), path)
    return key


def is_annotation_file(path: Path, slide_suffixes: Collection[str] = ()) -> bool:
    """True for a file named as an annotation file, or one with another suffix (not one of
    `slide_suffixes` or an image's) whose content starts like JSON or XML."""
    suffix = path.suffix.lower()
    if suffix in ANNOTATION_SUFFIXES:
        return True
    if suffix in MASK_SUFFIXES or suffix in {s.lower() for s in slide_suffixes}:
        return False
    return path.is_file() and _sniff(path) is not None


def _container(path: Path) -> str:
    """``json``, ``xml`` or ``mask`` from the suffix, else from the content; or a one-line error."""
    suffix = path.suffix.lower()
    if suffix in (".geojson", ".json"):
        return "json"
    if suffix in (".xml", ".annotations"):
        return "xml"
    if suffix in MASK_SUFFIXES:
        return "mask"
    key = _sniff(path)
    if not key:
        raise AnnotationError(f"{path}: unknown annotation format; {_KNOWN}")
    return key


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

    `fmt` forces a format (one of `FORMATS`; ``qupath``, ``aperio``, ``histomicstk`` and
    ``indica`` are accepted too); without it the format is found from the suffix and the content
    (`detect_format`), and a JSON or XML file of no known format is an error.
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
        key = _container(path)
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
    if key in ("xml", "asap", "imagescope", "halo"):
        root = load_xml(path)
        if key == "asap":
            return parse_asap(root, path, max_vertices=mv)
        if key == "imagescope":
            return parse_imagescope(root, path, max_vertices=mv)
        if key == "halo":
            return parse_halo(root, path, max_vertices=mv)
        return _from_xml(root, path, mv)
    data = load_json(path)
    if key == "labelme":
        return parse_labelme(data, path, max_vertices=mv)
    if key == "dsa":
        return parse_dsa(data, path, max_vertices=mv)
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
