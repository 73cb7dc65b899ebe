"""What `wsi-aug info SLIDE` shows: a slide's levels, pixel size and extra images."""

from __future__ import annotations

from typing import Literal, TypedDict

from wsi_aug.errors import SlideError
from wsi_aug.slides.base import Slide


class LevelInfo(TypedDict):
    """One pyramid level in `SlideInfo`."""

    level: int
    dimensions: list[int]  # [width, height]
    downsample: float
    mpp: list[float] | None  # [x, y] micrometres per pixel, None when unknown


class SlideInfo(TypedDict):
    """What `slide_info` returns (JSON-ready): the fields ``wsi-aug info`` shows."""

    path: str
    backend: str
    vendor: str | None
    dimensions: list[int]
    levels: list[LevelInfo]
    mpp: list[float] | None
    mpp_source: Literal["--slide-mpp", "metadata"] | None
    objective_power: float | None
    associated_images: dict[str, list[int] | None]  # name -> [width, height], None: unreadable


def slide_info(slide: Slide) -> SlideInfo:
    """A JSON-ready summary of a slide: backend, vendor, levels, pixel size, associated images."""
    mpp = slide.mpp_or_none
    levels: list[LevelInfo] = []
    for i, ((w, h), ds) in enumerate(zip(slide.level_dimensions, slide.level_downsamples)):
        levels.append(
            {
                "level": i,
                "dimensions": [w, h],
                "downsample": ds,
                "mpp": [mpp[0] * ds, mpp[1] * ds] if mpp else None,
            }
        )
    associated: dict[str, list[int] | None] = {}
    for name in slide.associated_image_names:
        try:
            associated[name] = list(slide._associated_size(name))
        except SlideError:  # an unreadable extra image should not hide the rest
            associated[name] = None
    return {
        "path": str(slide.path),
        "backend": slide.backend,
        "vendor": slide.vendor,
        "dimensions": list(slide.dimensions),
        "levels": levels,
        "mpp": list(mpp) if mpp else None,
        "mpp_source": None if mpp is None else ("--slide-mpp" if slide._slide_mpp else "metadata"),
        "objective_power": slide.objective_power,
        "associated_images": associated,
    }


def format_slide_info(info: SlideInfo) -> str:
    """`slide_info`'s summary as a readable block of text."""
    mpp = info.get("mpp")
    if mpp:
        source = info.get("mpp_source") or "metadata"
        mpp_text = f"{mpp[0]:.4g} x {mpp[1]:.4g} µm/px (from {source})"
    else:
        mpp_text = "unknown (give it with --slide-mpp)"
    objective = info.get("objective_power")
    w, h = info["dimensions"]
    lines = [
        f"{info['path']}",
        f"  backend      {info['backend']}",
        f"  vendor       {info.get('vendor') or '-'}",
        f"  size         {w} x {h} px (level 0)",
        f"  pixel size   {mpp_text}",
        f"  objective    {f'{objective:g}x' if objective else '-'}",
        f"  levels       {len(info['levels'])}",
    ]
    for lvl in info["levels"]:
        lw, lh = lvl["dimensions"]
        line = f"    {lvl['level']:>2}  {lw:>7} x {lh:<7} downsample {lvl['downsample']:<8.4g}"
        level_mpp = lvl.get("mpp")
        if level_mpp:
            line += f" {level_mpp[0]:.4g} µm/px"
        lines.append(line.rstrip())
    assoc = info.get("associated_images") or {}
    if assoc:
        lines.append("  associated images")
        for name, size in assoc.items():
            lines.append(f"    {name:<12} {f'{size[0]} x {size[1]} px' if size else 'unreadable'}")
    else:
        lines.append("  associated images  none")
    return "\n".join(lines)
