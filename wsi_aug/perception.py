"""A perception test: can a viewer tell real glomerulus patches from synthetic ones?

`perception_page` writes one self-contained HTML page that shows n patches one at a time, half
real (glomeruli of the test and val splits of ``extract.zarr``) and half synthetic
(``synthesize.zarr``), in a seeded random order. The viewer answers "real" or "synthetic"
(buttons, or the keys R and S); at the end the page shows the accuracy with its Wilson 95 %
interval and offers the answers as a CSV file. The images are embedded as data URIs in the
shuffled order, with no file names; the truth is in the page's script (a self-test, not a blinded
study: a viewer who reads the source can cheat). `score_files` pools the CSV files of several
viewers: accuracy per viewer and pooled, Wilson intervals, and a two-sided binomial test against
chance (0.5).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsi_aug.errors import WsiAugError
from wsi_aug.metrics import wilson_interval

COLUMNS = ("trial", "patch_id", "truth", "answer", "ms", "viewer")
"""The columns of the answers CSV the page offers (``truth`` and ``answer``: real / synthetic)."""
LABELS = ("real", "synthetic")


def wilson(k: int, n: int) -> tuple[float, float]:
    """The Wilson 95 % interval of k/n, (0, 1) for n = 0 (no answers: nothing is excluded)."""
    return (0.0, 1.0) if n <= 0 else wilson_interval(k, n)


@dataclass(frozen=True)
class Trial:
    """One patch shown: its id (``extract:ROW`` or ``synthesize:ROW``), truth and image."""

    patch_id: str
    truth: str
    image: np.ndarray


def choose_trials(work: str | Path, n: int, seed: int = 0) -> list[Trial]:
    """n/2 real test/val glomeruli and n/2 synthetic patches, in a seeded random order."""
    from wsi_aug import store
    from wsi_aug.stages.extract import PatchStore
    from wsi_aug.stages.synthesize import SyntheticStore

    if n < 2 or n % 2:
        raise WsiAugError(f"--n {n}: give an even number of at least 2 (half real, half synthetic)")
    half = n // 2
    patches = PatchStore.open(work)
    real_rows = np.concatenate([patches.select("test", True), patches.select("val", True)])
    synth = SyntheticStore.open(work)
    n_synth = len(synth)
    most = 2 * min(len(real_rows), n_synth)
    if len(real_rows) < half:
        raise WsiAugError(
            f"{patches.path}: only {len(real_rows)} glomeruli in the test and val splits; "
            f"use --n {most} or less"
        )
    if n_synth < half:
        raise WsiAugError(
            f"{synth.path}: only {n_synth} synthetic patches; use --n {most} or less, or make "
            f"more with `wsi-aug synthesize --n {half}`"
        )
    rng = np.random.default_rng(seed)
    real_pick = np.sort(rng.choice(real_rows, half, replace=False))
    synth_pick = np.sort(rng.choice(n_synth, half, replace=False))
    real_imgs = store.read_rows(patches.images, real_pick)
    synth_imgs = store.read_rows(synth.images, synth_pick)
    trials = [Trial(f"extract:{int(r)}", "real", im) for r, im in zip(real_pick, real_imgs)]
    trials += [
        Trial(f"synthesize:{int(r)}", "synthetic", im) for r, im in zip(synth_pick, synth_imgs)
    ]
    order = rng.permutation(len(trials))
    return [trials[i] for i in order]


def _png_uri(rgb: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb[..., :3])).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f4f4f6;
color:#222}
main{max-width:720px;margin:0 auto;padding:20px;text-align:center}
h1{font-size:1.4em}.muted{color:#666;font-size:.9em}
#patch{width:min(448px,90vw);height:auto;image-rendering:auto;border:1px solid #bbb;
background:#fff;display:block;margin:12px auto}
button{font-size:1.1em;padding:10px 26px;margin:6px 10px;border-radius:8px;border:1px solid #888;
background:#fff;cursor:pointer}
button:hover{background:#eef}
#btn-real{border-color:#2e7d32}#btn-synthetic{border-color:#6a1b9a}
kbd{border:1px solid #aaa;border-radius:3px;padding:0 4px;background:#fafafa;font-size:.85em}
#result table{margin:10px auto;border-collapse:collapse}
#result td,#result th{border:1px solid #ccc;padding:3px 10px}
input{font-size:1em;padding:4px 8px}
.hidden{display:none}
"""

SCRIPT = """
const TRIALS = JSON.parse(document.getElementById('trials').textContent);
const IMAGES = JSON.parse(document.getElementById('trial-images').textContent);
const Z = 1.959963984540054;
let at = -1, shown = 0;
const answers = [];
const $ = (id) => document.getElementById(id);
function wilson(k, n) {
  if (n <= 0) return [0, 1];
  const p = k / n, d = 1 + Z * Z / n;
  const c = (p + Z * Z / (2 * n)) / d;
  const h = Z * Math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / d;
  return [Math.max(0, c - h), Math.min(1, c + h)];
}
function show() {
  $('patch').src = IMAGES[at];
  $('progress').textContent = (at + 1) + ' / ' + TRIALS.length;
  shown = performance.now();
}
function start() {
  $('intro').classList.add('hidden');
  $('test').classList.remove('hidden');
  at = 0;
  show();
}
function answer(label) {
  if (at < 0 || at >= TRIALS.length) return;
  const t = TRIALS[at];
  answers.push({trial: at + 1, patch_id: t.id, truth: t.truth, answer: label,
                ms: Math.round(performance.now() - shown)});
  at += 1;
  if (at < TRIALS.length) show(); else finish();
}
function csvText() {
  const viewer = ($('viewer').value || 'anonymous').replace(/[\\r\\n,"]/g, ' ').trim();
  const rows = [COLUMNS.join(',')];
  for (const a of answers) {
    rows.push([a.trial, a.patch_id, a.truth, a.answer, a.ms, viewer].join(','));
  }
  return rows.join('\\n') + '\\n';
}
function finish() {
  $('test').classList.add('hidden');
  const n = answers.length, k = answers.filter(a => a.truth === a.answer).length;
  const [lo, hi] = wilson(k, n);
  const pct = (x) => (100 * x).toFixed(1) + ' %';
  $('accuracy').textContent = pct(k / n);
  $('accuracy').dataset.correct = k;
  $('accuracy').dataset.n = n;
  $('interval').textContent = pct(lo) + ' to ' + pct(hi);
  const by = (truth) => {
    const sel = answers.filter(a => a.truth === truth);
    return sel.filter(a => a.answer === truth).length + ' of ' + sel.length;
  };
  $('real-right').textContent = by('real');
  $('synthetic-right').textContent = by('synthetic');
  const blob = new Blob([csvText()], {type: 'text/csv'});
  const link = $('download');
  link.href = URL.createObjectURL(blob);
  const who = ($('viewer').value || 'anonymous').replace(/[^A-Za-z0-9_-]+/g, '-');
  link.download = 'perception-' + who + '.csv';
  $('result').classList.remove('hidden');
}
$('start').addEventListener('click', start);
$('btn-real').addEventListener('click', () => answer('real'));
$('btn-synthetic').addEventListener('click', () => answer('synthetic'));
document.addEventListener('keydown', (e) => {
  if (e.target && e.target.tagName === 'INPUT') return;
  const key = e.key.toLowerCase();
  if (key === 'r') answer('real');
  else if (key === 's') answer('synthetic');
});
"""


def perception_html(trials: Sequence[Trial], *, title: str = "Real or synthetic?") -> str:
    """The page for the given trials (shown in this order)."""
    meta = [{"id": t.patch_id, "truth": t.truth} for t in trials]
    images = [_png_uri(t.image) for t in trials]

    def data(obj: object) -> str:  # JSON in a <script> block: no "</" can close it early
        return json.dumps(obj).replace("</", "<\\/")

    n = len(trials)
    script = f"const COLUMNS = {json.dumps(list(COLUMNS))};\n{SCRIPT}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><style>{CSS}</style></head>
<body><main>
<h1>{html.escape(title)}</h1>
<div id="intro">
<p>You will see {n} glomerulus patches, one at a time: half are real (cut from slides),
half made by the GAN. For each, answer <b>real</b> or <b>synthetic</b>
(keys <kbd>R</kbd> and <kbd>S</kbd>). Go with your first impression; the time is recorded.</p>
<p><label>Your name or initials (goes into the answers file):
<input id="viewer" autocomplete="off"></label></p>
<button id="start">Start</button>
</div>
<div id="test" class="hidden">
<p class="muted" id="progress"></p>
<img id="patch" alt="patch to judge">
<button id="btn-real">Real <kbd>R</kbd></button>
<button id="btn-synthetic">Synthetic <kbd>S</kbd></button>
</div>
<div id="result" class="hidden">
<h2>Accuracy <span id="accuracy"></span></h2>
<p>95 % interval (Wilson): <span id="interval"></span>; chance is 50 %.</p>
<table><tr><th>shown</th><th>answered right</th></tr>
<tr><td>real</td><td id="real-right"></td></tr>
<tr><td>synthetic</td><td id="synthetic-right"></td></tr></table>
<p><a id="download" href="#">Download the answers (CSV)</a>; pool several viewers' files with
<code>wsi-aug perception-score FILE...</code></p>
</div>
<p class="muted">A self-test: the answers are in this page's script, so it is no blinded study.</p>
</main>
<script type="application/json" id="trials">{data(meta)}</script>
<script type="application/json" id="trial-images">{data(images)}</script>
<script>{script}</script>
</body></html>
"""


def perception_page(work: str | Path, out: str | Path, n: int = 40, seed: int = 0) -> Path:
    """Write the perception-test page for a work folder; returns its path."""
    from wsi_aug import store

    trials = choose_trials(work, n, seed)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    store.atomic_write_bytes(path, perception_html(trials).encode("utf-8"))
    return path


# --- scoring -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Score:
    """One viewer's (or the pooled) result."""

    viewer: str
    correct: int
    n: int
    low: float
    high: float
    p_value: float

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else float("nan")


def score(viewer: str, correct: int, n: int) -> Score:
    """Accuracy, Wilson 95 % interval and the two-sided binomial test against 0.5."""
    from scipy.stats import binomtest

    low, high = wilson(correct, n)
    p = float(binomtest(correct, n, 0.5).pvalue) if n else float("nan")
    return Score(viewer, correct, n, low, high, p)


def read_answers(path: Path) -> list[dict[str, str]]:
    """The rows of one answers CSV, checked: truth and answer are real or synthetic."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            fields = reader.fieldnames or []
    except UnicodeDecodeError:
        raise WsiAugError(
            f"{path}: not a text CSV; give the file the perception page saved"
        ) from None
    missing = [c for c in ("truth", "answer") if c not in fields]
    if missing:
        raise WsiAugError(
            f"{path}: no column {', '.join(missing)}; give the CSV the perception page saved "
            f"(columns {', '.join(COLUMNS)})"
        )
    for i, r in enumerate(rows, start=2):
        for c in ("truth", "answer"):
            if (r.get(c) or "").strip() not in LABELS:
                raise WsiAugError(
                    f"{path}: line {i}: {c} is {r.get(c)!r}, not real or synthetic; fix that line"
                )
    return rows


def score_files(paths: Sequence[Path]) -> list[Score]:
    """One score per viewer (the CSV's viewer column, else the file name), then the pooled one."""
    if not paths:
        raise WsiAugError("no answers file given: name the CSV files the perception page saved")
    tallies: dict[str, list[int]] = {}
    for path in paths:
        for r in read_answers(Path(path)):
            who = (r.get("viewer") or "").strip()
            if not who or who == "anonymous":
                who = Path(path).stem
            t = tallies.setdefault(who, [0, 0])
            t[0] += r["truth"].strip() == r["answer"].strip()
            t[1] += 1
    out = [score(who, k, n) for who, (k, n) in tallies.items()]
    out.append(score("pooled", sum(s.correct for s in out), sum(s.n for s in out)))
    return out


def scores_table(scores: Sequence[Score]) -> str:
    """The scores as a Markdown table (also readable as plain text)."""
    lines = [
        "| viewer | correct | n | accuracy | 95 % interval (Wilson) | p (binomial vs 0.5) |",
        "|---|---|---|---|---|---|",
    ]
    for s in scores:
        lines.append(
            f"| {s.viewer} | {s.correct} | {s.n} | {100 * s.accuracy:.1f} % | "
            f"{100 * s.low:.1f} - {100 * s.high:.1f} % | {s.p_value:.3g} |"
        )
    return "\n".join(lines) + "\n"
