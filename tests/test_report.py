"""`fksteer report`: pages of real runs in headless Chromium, the genealogy, collapse, bad folders.

The browser tests drive Debian's ``chromium`` with Playwright's Python package (pointed at that
executable: nothing is downloaded); they skip, saying why, where either is missing.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_cli

from fksteer.report.genealogy import Genealogy

SECTIONS = ("samples", "ess", "rewards", "lineage", "config")
SAMPLE = ["--steps", "4", "--num-particles", "3"]


class _Page(HTMLParser):
    """The elements of a page with an id, and the attributes of every sample element."""

    def __init__(self, text: str):
        super().__init__()
        self.ids, self.samples, self.collapses = set(), [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        classes = (attrs.get("class") or "").split()
        if "sample" in classes:
            self.samples.append(attrs)
        if "collapse" in classes:
            self.collapses.append(attrs)


def _page(folder: Path) -> _Page:
    return _Page((folder / "report.html").read_text())


def _cli(argv) -> int:
    from fksteer.cli import main

    return main([str(arg) for arg in argv])


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    """A real `fksteer sample` run (embedded model, 2 prompts x 3 particles, 4 steps)."""
    pytest.importorskip("diffusers")
    pytest.importorskip("PIL")
    out = tmp_path_factory.mktemp("report") / "sample"
    assert _cli(["sample", "sneaker", "bag", *SAMPLE, "--out", out]) == 0
    return out


# -- the genealogy -------------------------------------------------------------------------


class _Trace:
    def __init__(self, ancestors, num_particles):
        self.trace = [{"ancestors": a} for a in ancestors]
        self.num_groups, self.num_particles = 1, num_particles


def test_genealogy_by_hand():
    run = _Trace([[[0, 0, 2, 2]], None, [[1, 1, 1, 3]], None], 4)
    tree = Genealogy.of(run)
    assert tree.roots[-1].tolist() == [[0, 0, 0, 2]]
    assert tree.distinct_roots()[:, 0].tolist() == [4, 2, 2, 2, 2]
    assert tree.survives[0].tolist() == [[True, False, True, False]]  # 0 and 2 have heirs
    assert tree.survives[2].tolist() == [[False, True, False, True]]  # parents of step 2


def test_genealogy_matches_following_each_lineage():
    generator = np.random.default_rng(0)
    K, S, G = 6, 9, 3
    ancestors = [generator.integers(0, K, (G, K)).tolist() if s % 3 else None for s in range(S)]

    class Run:
        trace = [{"ancestors": a} for a in ancestors]
        num_groups, num_particles = G, K

    tree = Genealogy.of(Run())
    for g in range(G):
        for k in range(K):  # walk the final particle k back to its root
            particle = k
            for step in reversed(ancestors):
                particle = particle if step is None else step[g][particle]
            assert tree.final_roots()[g, k] == particle
        for s in range(S + 1):  # a particle survives iff some final particle passes through it
            through = set()
            for k in range(K):
                particle = k
                for t in range(S - 1, s - 1, -1):
                    particle = particle if ancestors[t] is None else ancestors[t][g][particle]
                through.add(particle)
            assert set(np.flatnonzero(tree.survives[s, g])) == through


def test_images_become_thumbnails_beyond_a_few_dozen_particles(tmp_path):
    pytest.importorskip("PIL")
    import base64
    import io

    from PIL import Image

    from fksteer.report import samples

    buffer = io.BytesIO()
    Image.new("RGB", (300, 200), "white").save(buffer, format="PNG")
    for size in (samples.THUMBNAIL_SIZE, samples.FULL_SIZE):
        uri = samples._image(buffer.getvalue(), size)
        shown = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
        assert max(shown.size) == size and shown.size[0] > shown.size[1]  # aspect kept
    small = io.BytesIO()
    Image.new("RGB", (16, 16), "white").save(small, format="PNG")
    assert samples._image(small.getvalue(), 64) == samples.data_uri(small.getvalue())  # as is


# -- real runs in a real browser -------------------------------------------------------------


def _chromium() -> str:
    pytest.importorskip("playwright.sync_api", reason="Playwright's Python package is not "
                        "installed (pip install playwright; its browser download is not needed)")
    executable = (os.environ.get("FKSTEER_CHROMIUM") or shutil.which("chromium")
                  or shutil.which("chromium-browser"))
    if executable is None:
        pytest.skip("no chromium executable on PATH (apt-get install chromium; .ci/run does)")
    return executable


def _open_in_chromium(page_path: Path, screenshot: Path) -> dict:
    """Load the page from disk; its console messages, page errors, requests and samples."""
    from playwright.sync_api import sync_playwright

    seen = {"console": [], "errors": [], "requests": []}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(),
                                             args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda message: seen["console"].append(
                (message.type, message.text)))
            page.on("pageerror", lambda error: seen["errors"].append(str(error)))
            page.on("request", lambda request: seen["requests"].append(request.url))
            page.goto(page_path.resolve().as_uri(), wait_until="load")
            seen["sections"] = [name for name in SECTIONS
                                if page.locator(f"section#{name}").count() == 1]
            seen["samples"] = page.eval_on_selector_all(".sample", """elements =>
                elements.map(e => ({prompt: e.dataset.prompt, particle: e.dataset.particle,
                                    weight: e.dataset.weight, best: e.dataset.best || null,
                                    image: e.querySelector('img')?.getAttribute('src') || null,
                                    prompt_text: e.querySelector('.prompt-text')?.textContent
                                    ?? null}))""")
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    keep = os.environ.get("FKSTEER_REPORT_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, Path(keep) / screenshot.name)
    return seen


def _check_page(seen: dict, page_path: Path, prompts: list[str], num_particles: int) -> None:
    assert [m for m in seen["console"] if m[0] in ("error", "warning")] == []
    assert seen["errors"] == []
    outside = [url for url in seen["requests"]
               if url != page_path.resolve().as_uri() and not url.startswith("data:")]
    assert outside == []  # nothing fetched but the file itself
    assert seen["sections"] == list(SECTIONS)
    for prompt in prompts:
        mine = [sample for sample in seen["samples"] if sample["prompt"] == prompt]
        assert sorted(int(sample["particle"]) for sample in mine) == list(range(num_particles))
        weights = [float(sample["weight"]) for sample in mine]
        assert weights == sorted(weights, reverse=True)  # heaviest first
        assert sum(weights) == pytest.approx(1.0, abs=1e-4)
        assert sum(sample["best"] == "true" for sample in mine) == 1


def test_sample_report_opens_in_chromium(sample_run, tmp_path):
    page_path = sample_run / "report.html"
    seen = _open_in_chromium(page_path, tmp_path / "sample-report.png")
    _check_page(seen, page_path, ["sneaker", "bag"], 3)
    assert all(sample["image"].startswith("data:image/png;base64,")
               for sample in seen["samples"])
    assert (tmp_path / "sample-report.png").stat().st_size > 10_000


def test_text_report_opens_in_chromium(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("profanity_check")
    out = tmp_path / "text"
    prompts = ["You will", "The best"]  # the embedded model takes prompts of equal length
    assert _cli(["text", *prompts, "--steps", "4", "--seq-len", "8", "--num-particles", "3",
                 "--out", out]) == 0
    page_path = out / "report.html"
    seen = _open_in_chromium(page_path, tmp_path / "text-report.png")
    _check_page(seen, page_path, prompts, 3)
    assert all(sample["prompt_text"] == sample["prompt"] for sample in seen["samples"])


# -- what the page shows -------------------------------------------------------------------


def test_the_report_is_rebuilt_from_the_folder_alone(sample_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(sample_run, copy)
    (copy / "report.html").unlink()
    assert _cli(["report", copy]) == 0
    assert _page(copy).samples == _page(sample_run).samples
    assert {"evidence", "lambda", "timing", *SECTIONS} <= _page(copy).ids


def test_a_folder_written_before_the_rename_of_reward_calls_shows_its_count(sample_run, tmp_path):
    copy = tmp_path / "old"
    shutil.copytree(sample_run, copy)
    summary = json.loads((copy / "summary.json").read_text())
    count = summary.pop("samples_scored")
    (copy / "summary.json").write_text(json.dumps(summary))  # "reward_calls" only, as before
    assert _cli(["report", copy]) == 0
    assert f"samples scored {count}" in (copy / "report.html").read_text()


def test_a_collapsed_run_shows_ess_at_one_and_one_lineage(tmp_path):
    pytest.importorskip("diffusers")
    out = tmp_path / "collapsed"
    # lambda 1e5 on log-probabilities: at every scoring step one particle takes all the weight
    assert _cli(["sample", "sneaker", "--steps", "5", "--num-particles", "6", "--lmbda", "1e5",
                 "--out", out]) == 0
    trace = [json.loads(line) for line in (out / "trace.jsonl").read_text().splitlines()]
    collapsed = [step["step"] for step in trace if step["ess"][0] < 1.05]
    assert collapsed[:3] == [0, 1, 2]  # from the first step on (the last ones may level off)
    page = _page(out)
    assert [c["data-lineages"] for c in page.collapses] == ["1"]
    assert page.collapses[0]["data-steps"] == ",".join(map(str, collapsed))
    assert len({sample["data-ancestor"] for sample in page.samples}) == 1  # one lineage


def test_an_adaptive_schedule_is_plotted_and_reruns(tmp_path):
    pytest.importorskip("diffusers")
    pytest.importorskip("matplotlib")
    from fksteer.cli import build_parser
    from fksteer.commands.options import resolve_options
    from fksteer.commands.sample import SAMPLE_DEFAULTS
    from fksteer.smc.tempering import AdaptiveTilt

    out = tmp_path / "adaptive"
    assert _cli(["sample", "sneaker", "bag", *SAMPLE, "--lmbda", "adaptive:1000", "--out",
                 out]) == 0
    trace = [json.loads(line) for line in (out / "trace.jsonl").read_text().splitlines()]
    tilts = np.array([step["lmbda"] for step in trace])  # (steps, G)
    assert (np.diff(tilts, axis=0) >= 0).all() and (tilts[-1] == 1000).all()
    assert (tilts[0] < 1000).all()  # chosen from the particles, not the target at once
    text = (out / "report.html").read_text()
    lmbda = text[text.index('<section id="lambda">'):text.index('<section id="dead">')]
    assert "<svg" in lmbda and "AdaptiveTilt" in lmbda
    config = json.loads((out / "config.json").read_text())
    values = resolve_options(build_parser().parse_args(shlex.split(config["reproduce"])[1:]),
                             SAMPLE_DEFAULTS)
    assert values["lmbda"] == AdaptiveTilt(target=1000.0, ess=0.5)


def test_two_runs_side_by_side(sample_run, tmp_path, capsys):
    base = tmp_path / "base"
    assert _cli(["sample", "sneaker", "bag", *SAMPLE, "--method", "base", "--no-report",
                 "--out", base]) == 0
    assert not (base / "report.html").exists()
    code, stdout, stderr = run_cli(["report", base, sample_run], capsys)
    assert code == 0, stderr
    page = _Page((base / "compare-sample.html").read_text())
    assert set(SECTIONS) <= page.ids
    for prompt in ("sneaker", "bag"):
        assert sum(sample["data-prompt"] == prompt for sample in page.samples) == 2 * 3
    other = tmp_path / "other"
    assert _cli(["sample", "dress", *SAMPLE, "--no-report", "--out", other]) == 0
    code, _, stderr = run_cli(["report", other, sample_run], capsys)
    assert code == 2 and "different prompts" in stderr


def test_the_config_section_reruns_the_run(sample_run):
    from fksteer.cli import build_parser
    from fksteer.commands.options import resolve_options
    from fksteer.commands.sample import SAMPLE_DEFAULTS

    config = json.loads((sample_run / "config.json").read_text())
    words = shlex.split(config["reproduce"])
    assert words[:2] == ["fksteer", "sample"]
    values = resolve_options(build_parser().parse_args(words[1:]), SAMPLE_DEFAULTS)
    assert values["prompts"] == config["prompts"]
    for name in ("model", "reward", "method", "steps", "seed", "out"):
        assert values[name] == config[name]
    for name, value in config["fk_config"].items():
        if name in values:
            assert values[name] == value, name
    assert config["reproduce"] in (sample_run / "report.html").read_text()


def test_without_matplotlib_the_page_says_so_and_keeps_the_tables(sample_run, tmp_path,
                                                                   monkeypatch):
    from fksteer.report import figures, write_report

    monkeypatch.setattr(figures, "available", lambda: False)
    text = write_report(sample_run, tmp_path / "plain.html").read_text()
    assert "<svg" not in text and 'pip install "fksteer[report]"' in text
    assert set(SECTIONS) <= _Page(text).ids and len(_Page(text).samples) == 6


def test_dead_particles_are_plotted_and_a_nan_reward_shown_as_missing(sample_run, tmp_path):
    pytest.importorskip("matplotlib")
    copy = tmp_path / "dead"
    shutil.copytree(sample_run, copy)
    steps = [json.loads(line) for line in (copy / "trace.jsonl").read_text().splitlines()]
    steps[1]["num_dead"] = [1, 0]  # as a run whose reward gave NaN to one particle writes it
    (copy / "trace.jsonl").write_text("".join(json.dumps(step) + "\n" for step in steps))
    rows = [json.loads(line) for line in (copy / "results.jsonl").read_text().splitlines()]
    rows[0]["reward"] = None  # NaN is written as null
    (copy / "results.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert _cli(["report", copy]) == 0
    text = (copy / "report.html").read_text()
    dead = text[text.index('<section id="dead">'):text.index('<section id="timing">')]
    assert "<svg" in dead and "summed over the scoring steps: 1." in dead
    first = next(s for s in _Page(text).samples if s["data-particle"] == "0"
                 and s["data-prompt"] == "sneaker")
    assert first["data-reward"] == "–"


def test_a_summary_folder_shows_its_tables_and_plots(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "exact"
    assert _cli(["demo", "--exact", "--particles", "4", "--runs", "4", "--out", out]) == 0
    text = (out / "report.html").read_text()
    page = _Page(text)
    assert {"results", "plots", "config"} <= page.ids
    assert "<table>" in text and 'src="data:image/png;base64,' in text


# -- folders that have no report -------------------------------------------------------------


def test_a_folder_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    code, _, stderr = run_cli(["report", tmp_path], capsys)
    assert code == 2 and "not an fksteer run folder" in stderr
    (tmp_path / "exact").mkdir()
    (tmp_path / "exact" / "report.md").write_text("# bench exact\n")
    code, _, stderr = run_cli(["report", tmp_path], capsys)  # e.g. a bench all folder
    assert code == 2 and "holds the folders exact: pass one of them" in stderr
    code, _, stderr = run_cli(["report", tmp_path / "missing"], capsys)
    assert code == 2 and "no such folder" in stderr
    code, _, stderr = run_cli(["report", tmp_path / "notes.txt"], capsys)
    assert code == 2 and "not a folder" in stderr


def _tear(path: Path) -> None:
    text = path.read_text()
    path.write_text(text[: len(text) - 25])


@pytest.mark.parametrize("damage, named", [
    (lambda d: (d / "trace.jsonl").unlink(), "no trace.jsonl"),
    (lambda d: (d / "summary.json").unlink(), "no summary.json"),
    (lambda d: _tear(d / "results.jsonl"), "results.jsonl line"),
    (lambda d: _tear(d / "summary.json"), "summary.json is not valid JSON"),
    (lambda d: (d / "images" / "g001_k002.png").unlink(), "images/g001_k002.png is missing"),
], ids=["no-trace", "no-summary", "torn-results", "torn-summary", "missing-image"])
def test_a_half_written_run_fails_clearly(sample_run, tmp_path, capsys, damage, named):
    copy = tmp_path / "run"
    shutil.copytree(sample_run, copy)
    damage(copy)
    code, _, stderr = run_cli(["report", copy], capsys)
    assert code == 2
    assert "half-written" in stderr and named in stderr, stderr
