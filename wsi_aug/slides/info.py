"""What `wsi-aug info SLIDE` shows: a slide's levels, pixel size and extra images."""

from __future__ import annotations

from typing import Any

from wsi_aug.errors import SlideError
from wsi_aug.slides.base import Slide


def slide_info(slide: Slide) -> dict[str, Any]:
    """A JSON-ready summary of a slide: backend, vendor, levels, pixel size, associated images."""
    mpp = slide.mpp_or_none
    levels = []
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


def format_slide_info(info: dict[str, Any]) -> str:
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
        if lvl.get("mpp"):
            line += f" {lvl['mpp'][0]:.4g} µm/px"
        lines.append(line.rstrip())
    assoc = info.get("associated_images") or {}
    if assoc:
        lines.append("  associated images")
        for name, size in assoc.items():
            lines.append(f"    {name:<12} {f'{size[0]} x {size[1]} px' if size else 'unreadable'}")
    else:
        lines.append("  associated images  none")
    return "\n".join(lines)
