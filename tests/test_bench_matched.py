"""The search methods and adaptive tempering in `bench image` and `bench text`, at matched NFE.

Tiny runs (4 steps, two prompts) whose records must show: every method evaluates the same rows
(equal NFE); a search keeps K / M samples and counts its reward evaluations by definition; CoDe
with one block over all steps picks best-of-N's best; the report names a winner per budget; the
paired differences are computed on shared (seed, prompt) pairs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fksteer.bench.image import ImageBenchConfig, run_image_bench
from fksteer.bench.matched import paired_difference, search_setting
from fksteer.bench.text import TEXT_PROMPTS, TextBenchConfig, run_text_bench

STEPS = 4


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_image_bench_runs_the_searches_at_matched_nfe(tmp_path):
    pytest.importorskip("diffusers")
    bench = ImageBenchConfig(models=("weak",), particles=(2,), seeds=1,
                             methods=("base", "best_of_n", "fk-adaptive", "svdd", "code", "beam"),
                             classes=("bag", "sneaker"), repeats=1, num_steps=STEPS,
                             resample_every=2, candidates=2, block=STEPS)
    summary = run_image_bench(bench, tmp_path)
    by = {(r["method"], r["prompt_index"]): r for r in lines(tmp_path / "results.jsonl")}
    for index in range(2):
        base = by["base", index]
        for method in bench.methods:
            assert by[method, index]["nfe"] == base["nfe"] == STEPS * 2
        for method in ("svdd", "beam"):  # chosen at steps 1 .. 3 and the end, 2 rows each
            assert by[method, index]["samples_scored"] == STEPS * 2
            assert by[method, index]["kept"] == 1
        # CoDe with one block over all steps: best of the same two chains as best-of-N
        assert by["code", index]["samples_scored"] == 2
        assert by["code", index]["reward_best"] == by["best_of_n", index]["reward_best"]
    report = (tmp_path / "report.md").read_text()
    assert "## Matched NFE: which method wins at each budget" in report
    assert summary["winners"]["weak"]["judge_draw"]["2"]["winner"] in bench.methods


def test_text_bench_runs_the_searches_at_matched_nfe(tmp_path):
    bench = TextBenchConfig(particles=(2,), methods=("base", "best_of_n", "fk", "beam", "code"),
                            x0_samples=(1,), seeds=1, prompts=TEXT_PROMPTS[:2], repeats=1,
                            seq_len=8, num_steps=STEPS, perplexity="off", candidates=2,
                            block=STEPS)
    summary = run_text_bench(bench, tmp_path)
    by = {(r["method"], r["prompt_index"]): r for r in lines(tmp_path / "results.jsonl")}
    for index in range(2):
        assert {by[m, index]["nfe"] for m in bench.methods} == {STEPS * 2}
        assert by["beam", index]["samples_scored"] == STEPS * 2
        assert by["code", index]["reward_best"] == by["best_of_n", index]["reward_best"]
    assert set(summary["winners"]) == {"heldout_rate_draw", "steer_rate_draw", "reward_draw"}


def test_paired_differences_use_the_shared_pairs_only():
    records = [
        {"method": "a", "seed": 0, "prompt_index": 0, "x": 1.0},
        {"method": "a", "seed": 0, "prompt_index": 1, "x": 3.0},
        {"method": "a", "seed": 1, "prompt_index": 0, "x": 100.0},  # no partner
        {"method": "b", "seed": 0, "prompt_index": 0, "x": 0.5},
        {"method": "b", "seed": 0, "prompt_index": 1, "x": 1.5},
    ]
    mean, half_width, pairs = paired_difference(records, {}, "a", "b", "x")
    assert pairs == 2 and mean == pytest.approx(1.0)
    # differences 0.5 and 1.5: sd 0.5 sqrt(2), standard error 0.5, t quantile 12.706 (1 df)
    assert half_width == pytest.approx(12.706 * 0.5, rel=1e-3)
    assert paired_difference(records, {}, "a", "c", "x") is None


def test_a_search_needs_a_budget_divisible_by_its_candidates():
    particles, search = search_setting("code", 8, 4, 0.5, 3)
    assert particles == 2 and (search.temperature, search.block) == (0.0, 3)
    assert search_setting("svdd", 8, 4, 0.5, 3)[1].temperature == 0.5
    with pytest.raises(ValueError, match="multiple of 3"):
        search_setting("beam", 8, 3, 0.0, 1)
    with pytest.raises(ValueError, match="multiple of 3"):
        ImageBenchConfig(particles=(2,), methods=("beam",), candidates=3)
