"""`wsi-aug perception-test` / `perception-score`: the page in headless Chromium, and scoring."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest

from tests.test_report import Chromium, add_gan_and_synthetic, chromium_path, png_std
from wsi_aug.perception import COLUMNS, score_files, wilson

N = 10  # the tiny work folder has 5 glomeruli in its test and val splits


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """extract + structure (5 test/val glomeruli) and 12 synthetic patches."""
    from tests.factories import make_tiny_work

    w = make_tiny_work(tmp_path_factory.mktemp("perception-work"))
    add_gan_and_synthetic(w)
    return w


@pytest.fixture(scope="module")
def browser():
    binary = chromium_path()
    if binary is None:
        pytest.skip("chromium not found: apt-get install -y chromium")
    try:
        b = Chromium(binary, 900, 760)
    except (OSError, RuntimeError, TimeoutError) as exc:
        pytest.skip(f"chromium does not start headless here: {exc}")
    yield b
    b.close()


def _trials(page: str) -> list[dict[str, str]]:
    m = re.search(r'<script type="application/json" id="trials">(.*?)</script>', page, re.S)
    assert m
    return json.loads(m.group(1))


def test_trials_balanced_seeded_and_from_the_right_rows(work):
    from wsi_aug.perception import choose_trials
    from wsi_aug.stages.extract import PatchStore

    a = choose_trials(work.root, N, seed=3)
    b = choose_trials(work.root, N, seed=3)
    c = choose_trials(work.root, N, seed=4)
    assert [t.patch_id for t in a] == [t.patch_id for t in b]
    assert [t.patch_id for t in a] != [t.patch_id for t in c]
    assert sum(t.truth == "real" for t in a) == sum(t.truth == "synthetic" for t in a) == N // 2
    table = PatchStore.open(work.root).table
    for t in a:
        kind, row = t.patch_id.split(":")
        if t.truth == "real":
            assert kind == "extract" and table.positive[int(row)]
            assert table.split[int(row)] in ("test", "val")
        else:
            assert kind == "synthesize"


def test_page_hides_names_and_errors_are_one_line(work, tmp_path, capsys):
    from wsi_aug.cli import main

    out = tmp_path / "p.html"
    main(["perception-test", "--work", str(work.root), "--n", str(N), "--seed", "1", str(out)])
    page = out.read_text()
    assert '.png"' not in page and "extract.zarr" not in page and "http" not in page
    assert page.count("data:image/png;base64,") == N
    assert len(_trials(page)) == N
    capsys.readouterr()
    for n, needle in ((12, "--n 10 or less"), (7, "even")):
        with pytest.raises(SystemExit) as exc:
            main(["perception-test", "--work", str(work.root), "--n", str(n), str(out)])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0]


def test_always_real_viewer_scores_half(work, browser, tmp_path):
    from wsi_aug.perception import perception_page

    page = perception_page(work.root, tmp_path / "p.html", n=N, seed=0)
    browser.open(page)
    assert png_std(browser.screenshot()) > 5  # the intro is drawn
    browser.js("document.getElementById('viewer').value = 'robot'")
    browser.js("document.getElementById('start').click()")
    widths = browser.js(
        "Promise.all(IMAGES.map(src => { const i = new Image(); i.src = src;"
        " return i.decode().then(() => i.naturalWidth); }))"
    )
    assert len(widths) == N and all(w == 64 for w in widths)
    assert browser.js("document.getElementById('patch').naturalWidth") == 64
    assert png_std(browser.screenshot()) > 10  # a patch is on screen
    for i in range(N):  # half by the R key, half by the button
        if i % 2:
            browser.key("r")
        else:
            browser.js("document.getElementById('btn-real').click()")
    acc = browser.js("document.getElementById('accuracy').textContent")
    assert acc == "50.0 %"
    assert browser.js("document.getElementById('accuracy').dataset.correct") == str(N // 2)
    lo, hi = wilson(N // 2, N)
    assert browser.js("document.getElementById('interval').textContent") == (
        f"{100 * lo:.1f} % to {100 * hi:.1f} %"
    )
    assert browser.js("document.getElementById('download').download") == "perception-robot.csv"
    text = browser.js("fetch(document.getElementById('download').href).then(r => r.text())")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0]) == COLUMNS and len(rows) == N
    assert {r["answer"] for r in rows} == {"real"} and {r["viewer"] for r in rows} == {"robot"}
    assert sum(r["truth"] == "real" for r in rows) == N // 2
    assert [r["patch_id"] for r in rows] == [t["id"] for t in _trials(page.read_text())]
    assert all(int(r["ms"]) >= 0 for r in rows)
    # the CSV scores as the page said
    saved = tmp_path / "robot.csv"
    saved.write_text(text)
    pooled = score_files([saved])[-1]
    assert (pooled.correct, pooled.n) == (N // 2, N)


def _answers(path, viewer, right, n):
    lines = [",".join(COLUMNS)]
    for i in range(n):
        truth = "real" if i % 2 else "synthetic"
        other = "synthetic" if truth == "real" else "real"
        lines.append(f"{i + 1},p{i},{truth},{truth if i < right else other},500,{viewer}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_score_pools_viewers(tmp_path, capsys):
    from wsi_aug.cli import main

    a = _answers(tmp_path / "a.csv", "ann", 8, 10)
    b = _answers(tmp_path / "b.csv", "anonymous", 5, 10)  # no name: the file's name
    scores = score_files([a, b])
    assert [s.viewer for s in scores] == ["ann", "b", "pooled"]
    pooled = scores[-1]
    assert (pooled.correct, pooled.n) == (13, 20) and pooled.accuracy == 0.65
    assert pooled.low == pytest.approx(0.43285, abs=1e-4)
    assert pooled.high == pytest.approx(0.81881, abs=1e-4)
    assert pooled.p_value == pytest.approx(0.26318, abs=1e-4)
    assert scores[0].low == pytest.approx(0.49016, abs=1e-4)
    assert scores[1].p_value == pytest.approx(1.0)
    md = tmp_path / "out" / "scores.md"
    main(["perception-score", str(a), str(b), "--markdown", str(md)])
    out = capsys.readouterr().out
    assert "| pooled | 13 | 20 | 65.0 % | 43.3 - 81.9 % | 0.263 |" in out
    assert "pooled" in md.read_text()


def test_score_errors_name_the_file(tmp_path, capsys):
    from wsi_aug.cli import main

    bad = tmp_path / "bad.csv"
    bad.write_text("trial,answer\n1,real\n")
    odd = tmp_path / "odd.csv"
    odd.write_text("truth,answer\nreal,maybe\n")
    for path, needle in ((bad, "truth"), (odd, "line 2")):
        with pytest.raises(SystemExit) as exc:
            main(["perception-score", str(path)])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and path.name in err[0] and needle in err[0]


def test_wilson_edges():
    assert wilson(0, 0) == (0.0, 1.0)
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and 0.25 < hi < 0.35
    lo, hi = wilson(10, 10)
    assert hi == pytest.approx(1.0) and 0.65 < lo < 0.75
