"""Benchmark folders resume only under the settings that wrote them.

A rerun with identical settings computes nothing and exits 0; a run whose settings change what a
recorded line means (replicas, steps, lambda, threads...) is refused with exit 2 and a message
naming the setting and both values; settings that only add or drop units (seeds, N, methods,
repeats) may change, and the report then reads only the units of the current settings.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from cli_helpers import run_cli

from fksteer.bench.suite import check_resumable

EXACT = ["bench", "exact", "--particles", "4", "--seeds", "1", "--replicas", "4"]


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_exact_resumes_identical_settings_and_refuses_other_replicas(tmp_path, capsys):
    out = tmp_path / "bench"
    assert run_cli([*EXACT, "--out", out], capsys)[0] == 0
    before = (out / "results.jsonl").read_text()
    assert run_cli([*EXACT, "--out", out], capsys)[0] == 0
    assert (out / "results.jsonl").read_text() == before  # resumed: nothing recomputed

    code, _, err = run_cli([*EXACT[:-1], "7", "--out", out], capsys)
    assert code == 2
    assert "replicas is 4 there and 7 here" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli([*EXACT, "--resample-every", "2", "--out", out], capsys)
    assert code == 2 and "resample_every is 1 there and 2 here" in err
    assert (out / "results.jsonl").read_text() == before  # a refused run writes nothing


def test_exact_more_seeds_add_units_and_fewer_seeds_report_only_theirs(tmp_path, capsys):
    out = tmp_path / "bench"
    assert run_cli([*EXACT[:5], "2", *EXACT[6:], "--out", out], capsys)[0] == 0
    assert {r["seed"] for r in lines(out / "results.jsonl")} == {0, 1}
    assert run_cli([*EXACT, "--out", out], capsys)[0] == 0  # --seeds 1: a subset, resumed
    report = (out / "report.md").read_text()
    assert "mean over 1 seed of" in report
    # each cell of the one-seed report is that seed's value alone (no interval, no seed 1)
    seed0 = [r for r in lines(out / "results.jsonl")
             if r["seed"] == 0 and r["method"] == "fk-difference"][0]
    assert f"| fk-difference | {seed0['occupancy_error']:.4g} +- 0 |" in report


def test_a_folder_with_results_but_no_config_is_refused(tmp_path, capsys):
    (tmp_path / "results.jsonl").write_text('{"method": "fk-difference"}\n')
    code, _, err = run_cli([*EXACT, "--out", tmp_path], capsys)
    assert code == 2 and "no config.json" in err


def test_an_out_that_is_a_file_is_refused(tmp_path, capsys):
    path = tmp_path / "file"
    path.write_text("x")
    code, _, err = run_cli([*EXACT, "--out", path], capsys)
    assert code == 2 and "not a directory" in err and path.read_text() == "x"


def test_check_resumable_tells_none_from_unset_and_counts_threads(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(
        {"bench": "x", "ess_threshold": None, "machine": {"torch_threads": 1, "cpu_count": 2}}))
    check_resumable(tmp_path, {"bench": "x", "ess_threshold": None,
                               "machine": {"torch_threads": 1, "cpu_count": 64}}, ())
    with pytest.raises(ValueError, match="ess_threshold is None there and 0.5 here"):
        check_resumable(tmp_path, {"bench": "x", "ess_threshold": 0.5,
                                   "machine": {"torch_threads": 1}}, ())
    with pytest.raises(ValueError, match="ess_threshold is None there and unset here"):
        check_resumable(tmp_path, {"bench": "x", "machine": {"torch_threads": 1}}, ())
    with pytest.raises(ValueError, match="torch_threads is 1 there and 2 here"):
        check_resumable(tmp_path, {"bench": "x", "ess_threshold": None,
                                   "machine": {"torch_threads": 2}}, ())
    check_resumable(tmp_path, {"bench": "x", "ess_threshold": 0.5,
                               "machine": {"torch_threads": 1}}, ("ess_threshold",))


def test_vectorisation_refuses_other_particles_and_reports_current_repeats(tmp_path):
    from fksteer.bench.vectorisation import VectorisationBenchConfig, run_vectorisation_bench

    bench = VectorisationBenchConfig(groups=(1, 2), num_particles=4, num_steps=3, repeats=2)
    run_vectorisation_bench(bench, tmp_path)
    run_vectorisation_bench(replace(bench, repeats=1), tmp_path)  # a subset: resumes
    assert len(lines(tmp_path / "results.jsonl")) == 4
    assert "median of 1 interleaved repeat," in (tmp_path / "report.md").read_text()
    with pytest.raises(ValueError, match="num_particles is 4 there and 8 here"):
        run_vectorisation_bench(replace(bench, num_particles=8), tmp_path)


def test_overhead_refuses_other_steps(tmp_path):
    pytest.importorskip("diffusers")
    from fksteer.bench.overhead import OverheadBenchConfig, run_overhead_bench

    bench = replace(OverheadBenchConfig.quick(), num_steps=2, repeats=1)
    run_overhead_bench(bench, tmp_path)
    with pytest.raises(ValueError, match="num_steps is 2 there and 3 here"):
        run_overhead_bench(replace(bench, num_steps=3), tmp_path)
    run_overhead_bench(replace(bench, repeats=2), tmp_path)  # more repeats: added
    assert len(lines(tmp_path / "results.jsonl")) == 8


def test_text_suite_refuses_other_steps_naming_both_values(tmp_path, capsys):
    args = ["bench", "text", "--quick", "--perplexity", "off", "--prompts", "You will",
            "--methods", "base", "--out", tmp_path]
    assert run_cli(args, capsys)[0] == 0
    assert run_cli(args, capsys)[0] == 0
    code, _, err = run_cli([*args, "--lmbda", "3"], capsys)
    assert code == 2 and "lmbda is 10.0 there and 3.0 here" in err


def test_text_suite_refuses_a_folder_measured_on_other_weights(tmp_path, capsys):
    """The config records a digest of the model's weight files: results of a retrained model are
    never mixed with the shipped one's, although every option is the same."""
    args = ["bench", "text", "--quick", "--perplexity", "off", "--prompts", "You will",
            "--methods", "base", "--out", tmp_path]
    assert run_cli(args, capsys)[0] == 0
    config = json.loads((tmp_path / "config.json").read_text())
    assert len(config["model_weights"]) == 16 and config["model"] == "embedded"
    config["model_weights"] = "0" * 16  # as if written by other weights
    (tmp_path / "config.json").write_text(json.dumps(config))
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "model_weights" in err and "0" * 16 in err
