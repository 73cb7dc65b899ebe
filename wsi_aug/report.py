"""`wsi-aug report`: one self-contained HTML page describing a work folder.

Per stage, in pipeline order: its state (complete / stale / partial / incomplete / not run),
parameters, inputs (fingerprints shortened) and what it made: the extraction summary, the
structure-map grid, the GAN's loss curves and samples, a strip of synthetic patches, the eval
tables and plots, and the tables of a `segment` folder where one exists. Images are embedded as
base64 data URIs and the CSS is inline: the page opens offline and can be mailed as one file.
The state comes from the store functions `wsi-aug info` uses (`read_meta`, `files_match`,
`damage`, `stage_fingerprint`, `partial_path`'s naming); nothing here writes to the work folder.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wsi_aug import __version__, store
from wsi_aug.errors import WsiAugError

INPUT_STAGES = {
    "patches": "extract",
    "structure": "structure",
    "gan": "train-gan",
    "synthetic": "synthesize",
}
"""The keys under which stages record an upstream store's fingerprint, and that store's stage."""

STATES = ("complete", "stale", "partial", "incomplete", "damaged", "not run")
MAX_ROWS = 200  # rows of one CSV table shown
STRIP = 8  # synthetic patches shown


@dataclass
class StageState:
    """What a stage's store says about itself, as `wsi-aug info` reads it."""

    name: str
    state: str  # one of STATES
    detail: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


def short(fp: Any, n: int = 12) -> str:
    """``sha256:0123456789ab…`` for a fingerprint; other values as text."""
    text = str(fp)
    if text.startswith("sha256:") and len(text) > 7 + n:
        return text[: 7 + n] + "…"
    return text


def _partials(path: Path) -> list[Path]:
    """Unfinished runs of a store (``.NAME.partial-KEY`` folders, see `store.partial_path`)."""
    return sorted(
        p for p in path.parent.glob(f".{path.name}.partial-*") if not p.name.endswith(".files")
    )


def _stale_inputs(work: Path, meta: Mapping[str, Any]) -> list[str]:
    """The upstream stores a store was built from that have been rebuilt or removed since."""
    out = []
    for key, value in (meta.get("inputs") or {}).items():
        upstream = INPUT_STAGES.get(key)
        if upstream is None or not isinstance(value, str):
            continue
        try:
            now = store.stage_fingerprint(store.WorkDir(work).store(upstream))
        except WsiAugError:
            out.append(f"{upstream} is gone")
            continue
        if now != value:
            out.append(f"{upstream} was rebuilt")
    return out


def store_state(work: Path, name: str, path: Path) -> StageState:
    """The state of one stage store: complete, stale, partial, incomplete, damaged or not run."""
    meta = store.read_meta(path)
    partial = _partials(path)
    if meta is None:
        if partial:
            return StageState(name, "partial", f"unfinished run in {partial[-1].name}")
        return StageState(name, "not run", f"make it with `wsi-aug {name}`")
    if not meta.get("complete"):
        return StageState(name, "incomplete", "interrupted; rerun the stage", meta)
    if not store.files_match(path, meta):
        return StageState(name, "incomplete", f"{meta.get('files')}/ does not belong to it", meta)
    problem = store.damage(path, meta)
    if problem:
        return StageState(name, "damaged", f"{problem}; rebuild with --force", meta)
    stale = _stale_inputs(work, meta)
    if stale:
        return StageState(name, "stale", "; ".join(stale) + f": rerun `wsi-aug {name}`", meta)
    if partial:
        return StageState(
            name, "partial", f"complete, and a new run unfinished ({partial[-1].name})", meta
        )
    return StageState(name, "complete", f"completed {meta.get('completed_at', '?')}", meta)


def eval_seg_state(work: Path, folder: Path) -> StageState:
    """The state of ``eval-seg/``: its configuration stores under ``configs/``."""
    configs = sorted(folder.glob("configs/*.zarr"))
    states = [store_state(work, "eval-seg", c) for c in configs]
    partial = [c for c in folder.glob("configs/.*.partial-*") if not c.name.endswith(".files")]
    done = [s for s in states if s.state in ("complete", "stale")]
    if not states and not partial:
        if (folder / "results.md").is_file():
            return StageState("eval-seg", "incomplete", "results without configuration stores")
        return StageState("eval-seg", "not run", "make it with `wsi-aug eval-seg`")
    meta = done[-1].meta if done else {}
    stale = [s for s in states if s.state == "stale"]
    if stale:
        return StageState("eval-seg", "stale", stale[0].detail, meta)
    if partial:
        return StageState(
            "eval-seg",
            "partial",
            f"{len(done)} configuration(s) done, {len(partial)} unfinished",
            meta,
        )
    bad = [s for s in states if s.state != "complete"]
    if bad:
        return StageState("eval-seg", bad[0].state, bad[0].detail, meta)
    return StageState("eval-seg", "complete", f"{len(done)} configuration(s)", meta)


def stage_states(work: str | Path) -> list[StageState]:
    """Every registered stage's state, in pipeline order."""
    from wsi_aug.stages.registry import stages

    root = Path(work)
    out = []
    for st in stages():
        path = root / st.store
        if st.name == "eval-seg":
            out.append(eval_seg_state(root, path))
        elif st.kind == "files":
            found = path.is_dir() and any(path.iterdir())
            out.append(
                StageState(
                    st.name,
                    "complete" if found else "not run",
                    "" if found else f"make it with `wsi-aug {st.name}`",
                )
            )
        else:
            out.append(store_state(root, st.name, path))
    return out


# --- HTML pieces ---------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;
background:#f4f4f6;line-height:1.4}
main{max-width:1100px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:1.6em;margin:.4em 0 .1em}h2{font-size:1.25em;margin:0 0 .3em}
h3{font-size:1em;margin:1em 0 .3em;color:#444}
section{background:#fff;border:1px solid #ddd;border-radius:8px;padding:14px 18px;margin:14px 0}
.muted{color:#666;font-size:.9em}
table{border-collapse:collapse;font-size:.85em;margin:.3em 0 .6em}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:1px 9px;border-radius:10px;font-size:.8em;color:#fff;
vertical-align:middle;margin-left:6px}
.s-complete{background:#2e7d32}.s-stale{background:#ef6c00}.s-partial{background:#1565c0}
.s-incomplete,.s-damaged{background:#c62828}.s-not-run{background:#9e9e9e}
img{max-width:100%;height:auto;border:1px solid #ddd;display:block;margin:.3em 0}
code{background:#f0f0f4;padding:0 3px;border-radius:3px}
.scroll{overflow-x:auto}
.row{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}.row>div{min-width:0}
.half{flex:1 1 420px;max-width:calc(50% - 9px)}
a{color:#1565c0;text-decoration:none}
ul.summary{margin:.2em 0;padding-left:1.2em;font-size:.9em}
"""


def esc(value: Any) -> str:
    """Text escaped for HTML."""
    return html.escape(str(value), quote=True)


def badge(state: str) -> str:
    """A coloured state label."""
    return f'<span class="badge s-{state.replace(" ", "-")}">{esc(state)}</span>'


def _cell(value: Any) -> str:
    text = str(value)
    try:
        float(text)
    except ValueError:
        return f"<td>{esc(text)}</td>"
    return f'<td class="num">{esc(text)}</td>'


def html_table(header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> str:
    """An HTML table (numbers right-aligned)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return f'<div class="scroll"><table><tr>{head}</tr>{body}</table></div>'


def markdown_html(text: str) -> str:
    """A Markdown file of pipe tables and paragraphs (what the eval stages write) as HTML."""
    out: list[str] = []
    table: list[list[str]] = []

    def flush() -> None:
        if table:
            rows = [r for r in table if not all(set(c.strip()) <= set("-: ") for c in r)]
            if rows:
                out.append(html_table(rows[0], rows[1:]))
            table.clear()

    for line in text.splitlines():
        s = line.strip()
        if s.startswith("|"):
            table.append([c.strip() for c in s.strip("|").split("|")])
            continue
        flush()
        if s.startswith("#"):
            out.append(f"<h3>{esc(s.lstrip('#').strip())}</h3>")
        elif s:
            out.append(f'<p class="muted">{esc(s)}</p>')
    flush()
    return "\n".join(out)


def csv_html(path: Path, max_rows: int = MAX_ROWS) -> str:
    """A CSV file as an HTML table (at most `max_rows` rows, then a note)."""
    with path.open(newline="", encoding="utf-8", errors="replace") as f:
        rows = list(csv.reader(f))
    if not rows:
        return f'<p class="muted">{esc(path.name)}: empty</p>'
    more = len(rows) - 1 - max_rows
    note = f'<p class="muted">… {more} more row(s) in {esc(path.name)}</p>' if more > 0 else ""
    return html_table(rows[0], rows[1 : max_rows + 1]) + note


def png_uri(data: bytes) -> str:
    """A PNG as a data URI."""
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def img_file(path: Path, alt: str) -> str:
    """An embedded image from a PNG file, or a note where it is absent."""
    if not path.is_file():
        return f'<p class="muted">{esc(path.name)}: not written</p>'
    return f'<img src="{png_uri(path.read_bytes())}" alt="{esc(alt)}">'


def img_array(rgb: np.ndarray, alt: str) -> str:
    """An embedded image from an (H, W, 3) uint8 array."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG", optimize=True)
    return f'<img src="{png_uri(buf.getvalue())}" alt="{esc(alt)}">'


def figure_png(fig: Any) -> bytes:
    """A matplotlib figure as PNG bytes (closed afterwards)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _running_mean(y: np.ndarray, k: int) -> np.ndarray:
    """Mean over the last `k` values at each point (NaNs skipped)."""
    ok = np.isfinite(y)
    c = np.concatenate([[0.0], np.cumsum(np.where(ok, y, 0.0))])
    n = np.concatenate([[0], np.cumsum(ok)])
    i = np.arange(1, len(y) + 1)
    lo = np.maximum(0, i - k)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (c[i] - c[lo]) / (n[i] - n[lo])


def loss_plot(path: Path) -> bytes | None:
    """Loss curves from a train-gan loss CSV (discriminator, generator terms), as PNG.

    Each curve is drawn raw (faint) and as a running mean over ~3 % of the steps.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    names = [c for c in rows[0] if c not in ("step", "epoch", "it/s")]

    def column(name: str) -> np.ndarray:
        out = []
        for r in rows:
            try:
                out.append(float(r.get(name) or "nan"))
            except ValueError:
                out.append(float("nan"))
        return np.array(out)

    x = column("step") if "step" in rows[0] else np.arange(1.0, len(rows) + 1)
    k = max(1, len(rows) // 30)
    panels = [
        ("discriminator", [n for n in names if n.startswith("d_")]),
        ("generator", [n for n in names if not n.startswith("d_")]),
    ]
    panels = [(t, ns) for t, ns in panels if ns]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3), squeeze=False)
    for ax, (title, cols) in zip(axes[0], panels):
        for i, name in enumerate(cols):
            y = column(name)
            colour = f"C{i}"
            ax.plot(x, y, color=colour, lw=0.6, alpha=0.3)
            ax.plot(x, _running_mean(y, k), color=colour, lw=1.6, label=name)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("loss" + (f" (bold: mean of {k} steps)" if k > 1 else ""), fontsize=9)
    fig.tight_layout()
    return figure_png(fig)


def _kv_table(items: Mapping[str, Any], per_row: int = 3) -> str:
    """Parameters as a compact table: `per_row` name/value pairs on each row."""
    if not items:
        return '<p class="muted">none</p>'
    pairs = [(k, _value(v)) for k, v in items.items()]
    per_row = min(per_row, max(1, -(-len(pairs) // 4)))  # up to 4 rows before going wider
    header = ["name", "value"] * per_row
    rows = []
    for i in range(0, len(pairs), per_row):
        chunk = pairs[i : i + per_row]
        rows.append([x for pair in chunk for x in pair] + ["", ""] * (per_row - len(chunk)))
    return html_table(header, rows)


def _value(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ", ".join(_value(x) for x in v)
    if isinstance(v, Mapping):
        return "; ".join(f"{k}={_value(x)}" for k, x in v.items())
    return short(v)


def inputs_table(inputs: Mapping[str, Any]) -> str:
    """A stage's recorded inputs, fingerprints shortened (file inputs by their name)."""
    rows: list[tuple[str, str]] = []
    for key, value in inputs.items():
        if isinstance(value, Mapping):
            for sub, fp in value.items():
                name = Path(str(sub)).name or str(sub)
                rows.append((f"{key}: {name}", _value(fp)))
        else:
            label = f"{key} ({INPUT_STAGES[key]})" if key in INPUT_STAGES else key
            rows.append((label, _value(value)))
    if not rows:
        return '<p class="muted">none</p>'
    return html_table(["input", "fingerprint"], rows)


# --- per-stage content ---------------------------------------------------------------------


def _phantom(work: Path) -> str:
    slides = store.WorkDir(work).slides
    names = sorted(p.name for p in slides.iterdir() if p.is_file() and not p.name.startswith("."))
    return f"<p>{len(names)} file(s) in <code>{esc(slides)}</code>: {esc(', '.join(names))}</p>"


def _extract(work: Path) -> str:
    from wsi_aug.stages.extract import PatchStore

    patches = PatchStore.open(work)
    t = patches.table
    parts = [f"<p>{len(t)} patches of {patches.size} px</p>"]
    lines = patches.group.attrs.get("summary")
    if isinstance(lines, list) and lines:
        items = "".join(f"<li>{esc(x)}</li>" for x in lines)
        parts.append(f'<ul class="summary">{items}</ul>')
    pos = t.positive.astype(bool)
    rows = []
    for s in ("train", "val", "test"):
        sel = t.split == s
        rows.append(
            (
                s,
                int(sel.sum()),
                int((sel & pos).sum()),
                int((sel & ~pos).sum()),
                len(set(t.slide[sel].tolist())),
            )
        )
    rows.append(("all", len(t), int(pos.sum()), int((~pos).sum()), len(set(t.slide.tolist()))))
    parts.append("<h3>Patches per split</h3>")
    parts.append(html_table(["split", "patches", "glomeruli", "negatives", "slides"], rows))
    per_slide = []
    for slide in sorted(set(t.slide.tolist())):
        sel = t.slide == slide
        split = ", ".join(sorted(set(t.split[sel].tolist())))
        per_slide.append(
            (
                slide,
                split,
                int(sel.sum()),
                int((sel & pos).sum()),
                int((sel & ~pos).sum()),
                int(t.padded[sel].sum()),
            )
        )
    parts.append("<h3>Patches per slide</h3>")
    parts.append(
        html_table(
            ["slide", "split", "patches", "glomeruli", "negatives", "at slide edge"],
            per_slide[:MAX_ROWS],
        )
    )
    return "\n".join(parts)


def _structure(work: Path) -> str:
    return img_file(store.WorkDir(work).files("structure") / "grid.png", "structure-map grid")


def _train_gan(work: Path) -> str:
    from wsi_aug.stages.train_gan import GanStore

    files = store.WorkDir(work).gan_files
    parts = ["<h3>Losses</h3>"]
    losses = GanStore.losses_csv(files)
    png = loss_plot(losses) if losses.is_file() else None
    if png is None:
        parts.append(f'<p class="muted">{esc(losses.name)}: not written</p>')
    else:
        parts.append(f'<img src="{png_uri(png)}" alt="loss curves">')
    grids = sorted(GanStore.samples_dir(files).glob("*.png"))
    if grids:
        shown = [grids[-1]] if len(grids) == 1 else [grids[0], grids[-1]]
        cells = [
            f'<div class="half"><h3>Samples: {esc(g.stem)}</h3>'
            f"{img_file(g, f'GAN samples {g.stem}')}</div>"
            for g in shown
        ]
        parts.append('<div class="row">' + "".join(cells) + "</div>")
        parts.append(
            f'<p class="muted">{len(grids)} sample grid(s) in '
            f"<code>{esc(GanStore.samples_dir(files))}</code></p>"
        )
    return "\n".join(parts)


def _synthesize(work: Path) -> str:
    from wsi_aug.stages.synthesize import SyntheticStore

    synth = SyntheticStore.open(work)
    n = len(synth)
    prov = synth.provenance
    kinds = ", ".join(f"{k}: {int((prov.source == k).sum())}" for k in sorted(set(prov.source)))
    parts = [f"<p>{n} synthetic patches ({esc(kinds)})</p>"]
    if n:
        rows = np.linspace(0, n - 1, min(STRIP, n)).astype(int)
        imgs = store.read_rows(synth.images, rows)
        maps = store.read_rows(synth.masks, rows)
        gap = np.full((imgs.shape[1], 4, 3), 255, np.uint8)
        top = np.concatenate([x for img in imgs for x in (img, gap)], axis=1)
        masks = np.repeat((maps * 255).astype(np.uint8)[..., None], 3, -1)
        bottom = np.concatenate([x for m in masks for x in (m, gap)], axis=1)
        strip = np.concatenate([top, np.full((4, top.shape[1], 3), 255, np.uint8), bottom])
        parts.append(img_array(strip, "synthetic patches and their masks"))
        parts.append('<p class="muted">top: synthetic images; bottom: their masks</p>')
    return "\n".join(parts)


def _tables(folder: Path, names: Sequence[str]) -> list[str]:
    parts = []
    for name in names:
        p = folder / name
        if p.is_file():
            parts.append(markdown_html(p.read_text(encoding="utf-8", errors="replace")))
    return parts


def _more_rows(path: Path, than: Path) -> bool:
    """True when Markdown file `path` holds table rows that `than` does not."""
    if not path.is_file():
        return False

    def rows(p: Path) -> set[str]:
        text = p.read_text(errors="replace") if p.is_file() else ""
        return {line.strip() for line in text.splitlines() if line.strip().startswith("|")}

    return bool(rows(path) - rows(than))


def _eval_seg(work: Path) -> str:
    folder = store.WorkDir(work).eval_seg
    parts = _tables(folder, ["results.md"]) or [
        csv_html(folder / "results.csv") if (folder / "results.csv").is_file() else ""
    ]
    parts.append(img_file(folder / "dice.png", "eval-seg scores against the synthetic ratio"))
    if _more_rows(folder / "all.md", folder / "results.md"):
        parts.append("<h3>Every cached configuration</h3>")
        parts += _tables(folder, ["all.md"])
    return "\n".join(parts)


def _eval_gan(work: Path) -> str:
    folder = store.WorkDir(work).eval_gan
    parts = _tables(folder, ["results.md"]) or [
        csv_html(folder / "results.csv") if (folder / "results.csv").is_file() else ""
    ]
    parts.append("<h3>Real and synthetic side by side</h3>")
    parts.append(img_file(folder / "grid.png", "eval-gan grid"))
    for extra in sorted(folder.glob("grid-*.png")):  # one per further synthetic set
        parts.append(f"<h3>{esc(extra.stem)}</h3>" + img_file(extra, extra.stem))
    if (folder / "spectrum.png").is_file():
        parts.append("<h3>Power spectra</h3>")
        parts.append(img_file(folder / "spectrum.png", "radially averaged power spectra"))
    return "\n".join(parts)


CONTENT: dict[str, Callable[[Path], str]] = {
    "phantom": _phantom,
    "extract": _extract,
    "structure": _structure,
    "train-gan": _train_gan,
    "synthesize": _synthesize,
    "eval-seg": _eval_seg,
    "eval-gan": _eval_gan,
}


def folder_tables(folder: Path) -> str:
    """Every CSV and Markdown table of a folder (e.g. a `segment` stage's scores), or ''."""
    parts = []
    for p in sorted(folder.glob("*")):
        if p.suffix.lower() == ".md":
            parts.append(f"<h3>{esc(p.name)}</h3>" + markdown_html(p.read_text(errors="replace")))
        elif p.suffix.lower() == ".csv":
            parts.append(f"<h3>{esc(p.name)}</h3>" + csv_html(p))
        elif p.suffix.lower() == ".png":
            parts.append(f"<h3>{esc(p.name)}</h3>" + img_file(p, p.stem))
    return "\n".join(parts)


def stage_section(work: Path, st: StageState, help_text: str) -> str:
    """One stage's section: state, parameters, inputs and its results."""
    head = f'<section id="stage-{esc(st.name)}" data-state="{esc(st.state)}">'
    head += f"<h2>{esc(st.name)}{badge(st.state)}</h2>"
    head += f'<p class="muted">{esc(help_text)}</p>'
    if st.detail and st.state != "complete":
        head += f"<p>{esc(st.detail)}</p>"
    if st.state == "not run":
        return head + "</section>"
    body = []
    if st.meta:
        body.append(
            '<div class="row"><div><h3>Parameters</h3>'
            + _kv_table(st.meta.get("params") or {})
            + "</div><div><h3>Inputs</h3>"
            + inputs_table(st.meta.get("inputs") or {})
            + "</div></div>"
        )
        when = st.meta.get("completed_at") or st.meta.get("started_at")
        if when:
            body.append(
                f'<p class="muted">version {esc(st.meta.get("version", "?"))}, '
                f"key {esc(short(st.meta.get('key', '')))}, {esc(when)}</p>"
            )
    if st.state in ("complete", "stale", "partial") or st.name in ("phantom", "eval-seg"):
        try:
            body.append(CONTENT[st.name](work) if st.name in CONTENT else "")
        except (WsiAugError, OSError, KeyError, ValueError) as exc:
            body.append(f'<p class="muted">its results could not be read: {esc(exc)}</p>')
    return head + "\n".join(body) + "</section>"


def build_report(work: str | Path) -> str:
    """The report page of a work folder, as HTML text (self-contained)."""
    from wsi_aug.stages.registry import stages

    root = Path(work)
    if not root.is_dir():
        raise WsiAugError(f"{root}: no work folder here; give the right one with --work")
    helps = {s.name: s.help for s in stages()}
    states = stage_states(root)
    overview = (
        "<table><tr><th>stage</th><th>state</th><th>detail</th></tr>"
        + "".join(
            f'<tr><td><a href="#stage-{esc(s.name)}">{esc(s.name)}</a></td>'
            f"<td>{badge(s.state)}</td><td>{esc(s.detail)}</td></tr>"
            for s in states
        )
        + "</table>"
    )
    sections = [stage_section(root, s, helps.get(s.name, "")) for s in states]
    segment = root / "segment"
    if segment.is_dir():
        tables = folder_tables(segment)
        if tables:
            sections.append(
                f'<section id="stage-segment"><h2>segment</h2>'
                f'<p class="muted">tables found in {esc(segment)}</p>{tables}</section>'
            )
    old = store.WorkDir(root).old_layout()
    warn = (
        f"<p>made by wsi-aug 0.1 with the old layout ({esc(', '.join(old))}): not read</p>"
        if old
        else ""
    )
    stamp = time.strftime("%Y-%m-%d %H:%M")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>wsi-aug report: {esc(root.name)}</title><style>{CSS}</style></head>
<body><main>
<h1>wsi-aug report</h1>
<p class="muted">work folder <code>{esc(root.resolve())}</code>, made {esc(stamp)} by wsi-aug
{esc(__version__)}</p>{warn}
<section id="overview"><h2>Stages</h2>{overview}</section>
{"".join(sections)}
</main></body></html>
"""


def write_report(work: str | Path, out: str | Path | None = None) -> Path:
    """Write the report page (default ``WORK/report.html``); returns its path."""
    root = Path(work)
    page = build_report(root)
    path = Path(out) if out is not None else root / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    store.atomic_write_bytes(path, page.encode("utf-8"))
    return path
