"""`wsi-aug report`: the page's content per stage, and (in headless Chromium) that it renders.

The browser tests drive the system Chromium (Debian package `chromium`) over the DevTools protocol
on a pipe (`--remote-debugging-pipe`), with the standard library only; they skip where Chromium
is absent. `Chromium` is shared with tests/test_perception.py.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import io
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest


def chromium_path() -> str | None:
    """The system Chromium (or Chrome), or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class Chromium:
    """One headless browser with one page; `call` sends a command and waits for its answer."""

    def __init__(self, binary: str, width: int = 1100, height: int = 800) -> None:
        self._profile = tempfile.mkdtemp(prefix="wsi-aug-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        # the child reads commands on fd 3 and writes answers on fd 4
        hi_r, hi_w = os.dup(to_child_r), os.dup(from_child_w)

        def fds() -> None:
            os.dup2(hi_r, 3)
            os.dup2(hi_w, 4)

        self.proc = subprocess.Popen(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--remote-debugging-pipe",
                "--no-first-run",
                "--disable-extensions",
                "--mute-audio",
                "--hide-scrollbars",
                f"--user-data-dir={self._profile}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=fds,
            close_fds=False,
        )
        for fd in (to_child_r, from_child_w, hi_r, hi_w):
            os.close(fd)
        self._buf = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []
        self.session = ""
        try:
            target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            attached = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})
            self.session = attached["sessionId"]
            self.page("Page.enable")
            self.page("Runtime.enable")
            self.resize(width, height)
        except BaseException:
            self.close()
            raise

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_child], [], [], left)[0]:
                raise TimeoutError("chromium did not answer")
            chunk = os.read(self._from_child, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed its pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session: str | None = None,
        timeout: float = 30,
    ) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            got = self._read(deadline)
            if got.get("id") == self._id:
                if "error" in got:
                    raise RuntimeError(f"{method}: {got['error']}")
                return got.get("result", {})
            self.events.append(got)

    def page(
        self, method: str, params: dict[str, Any] | None = None, timeout: float = 30
    ) -> dict[str, Any]:
        return self.call(method, params, session=self.session, timeout=timeout)

    def resize(self, width: int, height: int) -> None:
        self.page(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    def open(self, path: Path, timeout: float = 30) -> None:
        """Navigate to a local file and wait for its load event."""
        self.events.clear()
        self.page("Page.navigate", {"url": Path(path).resolve().as_uri()})
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(self._read(deadline))

    def js(self, expression: str, timeout: float = 30) -> Any:
        """Evaluate JavaScript in the page (promises awaited), returning its JSON value."""
        got = self.page(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            timeout=timeout,
        )
        if "exceptionDetails" in got:
            raise RuntimeError(f"{expression[:60]}: {got['exceptionDetails']}")
        return got["result"].get("value")

    def key(self, char: str) -> None:
        """Press and release a key (a letter)."""
        code = f"Key{char.upper()}"
        for kind in ("keyDown", "keyUp"):
            params = {
                "type": kind,
                "key": char,
                "code": code,
                "windowsVirtualKeyCode": ord(char.upper()),
            }
            if kind == "keyDown":
                params["text"] = char
            self.page("Input.dispatchKeyEvent", params)

    def screenshot(self, full: bool = False) -> bytes:
        """The viewport (or the whole page) as PNG bytes."""
        params: dict[str, Any] = {"format": "png"}
        if full:
            params["captureBeyondViewport"] = True
            w = self.js("document.documentElement.scrollWidth")
            h = self.js("document.documentElement.scrollHeight")
            params["clip"] = {"x": 0, "y": 0, "width": w, "height": h, "scale": 1}
        return base64.b64decode(self.page("Page.captureScreenshot", params)["data"])

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call("Browser.close", timeout=5)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_child, self._from_child):
            with contextlib.suppress(OSError):
                os.close(fd)
        shutil.rmtree(self._profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module's tests (skipped where there is none)."""
    binary = chromium_path()
    if binary is None:
        pytest.skip("chromium not found: apt-get install -y chromium")
    try:
        b = Chromium(binary)
    except (OSError, RuntimeError, TimeoutError) as exc:
        pytest.skip(f"chromium does not start headless here: {exc}")
    yield b
    b.close()


def png_std(data: bytes) -> float:
    """The pixel standard deviation of a PNG (0 for a blank image)."""
    from PIL import Image

    return float(np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=float).std())


# --- a small work folder: extract, structure, train-gan, synthesize, eval-seg; no eval-gan ----


def _png(path: Path, rgb: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)


def add_gan_and_synthetic(work, n: int = 12, seed: int = 1) -> None:
    """A train-gan store (losses.csv, sample grids) and a synthesize store of `n` patches."""
    from wsi_aug import store
    from wsi_aug.stages.synthesize import SyntheticWriter
    from wsi_aug.stages.train_gan import GanStore

    rng = np.random.default_rng(seed)
    size = 64
    ups = {
        "patches": store.stage_fingerprint(work.patches),
        "structure": store.stage_fingerprint(work.structure),
    }
    with store.build_stage(
        work.gan, stage="train-gan", params={"epochs": 2}, inputs=ups, files=work.gan_files
    ) as b:
        b.group.attrs["config"] = {}
        assert b.files is not None
        with GanStore.losses_csv(b.files).open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["step", "epoch", "d_loss", "g_adv", "g_l1", "g_ms", "it/s"])
            for s in range(1, 41):
                w.writerow([s, s // 20, 1 / s + 0.5, 3 - s / 20, 0.4, 2.0, 9.0])
        for e in (1, 2):
            grid = rng.integers(0, 255, (48, 96, 3), dtype=np.uint8)
            _png(GanStore.samples_dir(b.files) / f"epoch-{e:04d}.png", grid)
    inputs = {**ups, "gan": store.stage_fingerprint(work.gan)}
    with store.build(work.synthetic, stage="synthesize", params={"n": n}, inputs=inputs) as g:
        writer = SyntheticWriter(g, n, size)
        images = rng.integers(60, 240, (n, size, size, 3), dtype=np.uint8)
        masks = np.zeros((n, size, size), np.uint8)
        masks[:, 16:48, 16:48] = 1
        prov = {
            "source_index": list(range(n)),
            "source": ["augment"] * n,
            "transform": ["none"] * n,
            "seed": list(range(n)),
            "checkpoint": ["x"] * n,
        }
        writer.write(0, images, masks, masks, prov)
        writer.finish({})


def add_eval_seg(work) -> None:
    """eval-seg/: one configuration store, results.md/.csv and dice.png, as the stage writes."""
    from wsi_aug import store
    from wsi_aug.eval_seg import METRICS, summary_row, write_outputs

    folder = work.eval_seg
    per_seed = [
        {"n_real": 10, "n_synthetic": 0, **{m: 0.5 + 0.1 * s for m in METRICS}} for s in range(2)
    ]
    rows = [summary_row(0.0, per_seed)]
    inputs = {"patches": store.stage_fingerprint(work.patches)}
    with store.build(
        folder / "configs" / "abc.zarr",
        stage="eval-seg",
        params={"synthetic_ratio": 0.0},
        inputs=inputs,
    ):
        pass
    write_outputs(folder, rows, "eval-seg: test")


@pytest.fixture(scope="module")
def small_work(tmp_path_factory):
    """A work folder with every stage but phantom and eval-gan (those are not run)."""
    from tests.factories import make_tiny_work

    work = make_tiny_work(tmp_path_factory.mktemp("report-work"))
    add_gan_and_synthetic(work)
    add_eval_seg(work)
    return work


# --- content (no browser) -------------------------------------------------------------------


def test_report_has_every_stage_and_missing_ones_not_run(small_work):
    from wsi_aug.report import build_report, stage_states
    from wsi_aug.stages.registry import NAMES

    page = build_report(small_work.root)
    states = {s.name: s.state for s in stage_states(small_work.root)}
    for name in NAMES:
        assert f'id="stage-{name}"' in page
    assert states["extract"] == states["structure"] == "complete"
    assert states["train-gan"] == states["synthesize"] == states["eval-seg"] == "complete"
    assert states["eval-gan"] == "not run" and states["phantom"] == "not run"
    assert 'id="stage-eval-gan" data-state="not run"' in page
    # extraction summary: 16 patches, 12 glomeruli, 4 negatives; per split and slide
    assert "Patches per split" in page and "Patches per slide" in page and "slide4" in page
    assert '<td>all</td><td class="num">16</td><td class="num">12</td>' in page
    # parameters and shortened fingerprints
    assert "sha256:" in page and "…" in page
    assert "Dice (pooled)" in page  # eval-seg's Markdown table, as HTML
    assert "<table>" in page and "|---" not in page
    # self-contained: images inline, nothing fetched
    assert 'src="http' not in page and "<link" not in page
    assert page.count('src="data:image/png;base64,') >= 5  # grid, loss, 2 samples, strip, dice
    assert states["segment"] == states["train-seg"] == "not run"  # registered, not run here


def test_report_stale_partial_and_segment(small_work, tmp_path):
    from wsi_aug import store
    from wsi_aug.report import build_report, stage_states
    from wsi_aug.stages.structure import StructureStore
    from wsi_aug.store import WorkDir

    root = tmp_path / "w"
    shutil.copytree(small_work.root, root)
    work = WorkDir(root)
    # rebuild structure: everything made from it is now stale
    inputs = {"patches": store.stage_fingerprint(work.patches)}
    with store.build(
        work.structure, stage="structure", params={"method": "again"}, inputs=inputs
    ) as g:
        StructureStore.write_maps(g, 16, 64)[:] = 0
    (root / ".eval-gan.zarr.partial-0123456789ab").mkdir()
    (root / "segment").mkdir()
    (root / "segment" / "scores.csv").write_text("slide,dice\nslide0,0.75\n")
    states = {s.name: s for s in stage_states(root)}
    assert states["structure"].state == "complete"
    assert states["train-gan"].state == "stale" and "structure" in states["train-gan"].detail
    assert states["synthesize"].state == "stale"
    assert states["eval-seg"].state == "complete"  # made from extract only
    assert states["eval-gan"].state == "partial"
    page = build_report(root)
    assert 'id="stage-segment"' in page and "scores.csv" in page and "0.75" in page


def test_report_command_default_path_and_errors(small_work, tmp_path, capsys):
    from wsi_aug.cli import main

    main(["report", "--work", str(small_work.root)])
    assert (small_work.root / "report.html").is_file()
    out = tmp_path / "sub" / "r.html"
    main(["report", "--work", str(small_work.root), str(out)])
    assert out.read_text().startswith("<!DOCTYPE html>")
    empty = tmp_path / "empty"
    empty.mkdir()
    main(["report", "--work", str(empty)])
    assert (empty / "report.html").read_text().count('data-state="not run"') >= 6
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["report", "--work", str(tmp_path / "nope")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0] and "--work" in err[0]


def test_markdown_and_csv_tables():
    from wsi_aug.report import markdown_html

    got = markdown_html("title <b>\n\n| a | b |\n|---|---|\n| 1 | x<y |\n")
    assert "<th>a</th>" in got and '<td class="num">1</td>' in got and "x&lt;y" in got
    assert "title &lt;b&gt;" in got


# --- in the browser -------------------------------------------------------------------------


def test_report_renders_in_chromium(small_work, browser, tmp_path):
    from wsi_aug.report import write_report

    page = write_report(small_work.root, tmp_path / "report.html")
    browser.open(page)
    widths = browser.js("[...document.images].map(i => i.complete ? i.naturalWidth : -1)")
    assert len(widths) >= 5 and all(w > 0 for w in widths), widths
    assert browser.js("document.querySelectorAll('section').length") >= 8
    shot = browser.screenshot()
    assert png_std(shot) > 10


def test_eval_gan_section_shows_every_grid_and_the_spectra(tmp_path):
    from PIL import Image

    from wsi_aug.report import _eval_gan

    folder = tmp_path / "eval-gan"
    folder.mkdir()
    (folder / "results.md").write_text("| set | c2st |\n|---|---|\n| paper | 0.99 |\n")
    for name in ("grid.png", "grid-no-ms.png", "spectrum.png"):
        Image.new("RGB", (4, 4)).save(folder / name)
    html = _eval_gan(tmp_path)
    assert "Power spectra" in html and "grid-no-ms" in html and "<td>paper</td>" in html
    assert html.count('src="data:image/png;base64,') == 3
