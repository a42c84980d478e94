"""The command line and the benchmark result files: each command runs and writes what it says."""

from __future__ import annotations

import json

from fksteer.bench.records import RecordFile, mean_and_ci
from fksteer.cli import main


def test_demo_exact_writes_a_report_with_the_exact_row(tmp_path, capsys):
    args = ["demo", "--exact", "--out", str(tmp_path), "--runs", "8", "--particles", "8"]
    assert main(args) == 0
    assert "exact target" in capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary) == {"base", "best_of_n", "importance", "fk", "exact"}
    assert (tmp_path / "samples.png").stat().st_size > 0
    assert json.loads((tmp_path / "config.json").read_text())["fk_config"]["num_particles"] == 8


def test_bench_exact_writes_results_and_resumes(tmp_path):
    args = ["bench", "exact", "--out", str(tmp_path), "--particles", "4,8", "--seeds", "1",
            "--replicas", "4"]
    assert main(args) == 0
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == 2 * 6  # N x methods x seeds
    record = json.loads(lines[0])
    assert {"method", "num_particles", "seed", "occupancy_error", "log_evidence_error",
            "nfe_per_run"} <= set(record)
    assert (tmp_path / "report.md").read_text().startswith("# bench exact")
    assert (tmp_path / "error_vs_particles.png").exists()
    # a rerun computes nothing new
    assert main(args) == 0
    assert (tmp_path / "results.jsonl").read_text().splitlines() == lines


def test_bench_vectorisation_reports_ratios(tmp_path):
    assert main(["bench", "vectorisation", "--out", str(tmp_path), "--repeats", "1"]) == 0
    report = (tmp_path / "report.md").read_text()
    assert "| 512 | 8192 |" in report
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 4


def test_record_file_drops_a_torn_last_line(tmp_path):
    path = tmp_path / "results.jsonl"
    records = RecordFile(path, ("name",))
    records.append({"name": "a", "value": 1})
    with path.open("a") as handle:
        handle.write('{"name": "b", "val')  # an interrupted write
    resumed = RecordFile(path, ("name",))
    assert resumed.done(name="a") and not resumed.done(name="b")
    resumed.append({"name": "b", "value": 2})
    assert [json.loads(line)["name"] for line in path.read_text().splitlines()] == ["a", "b"]


def test_record_file_reads_older_files_under_the_current_field_names(tmp_path):
    path = tmp_path / "results.jsonl"
    old = {"method": "fk", "seed": 0, "nfe": 8, "reward_calls": 10, "reward_calls_per_run": 5}
    path.write_text(json.dumps(old) + "\n")
    records = RecordFile(path, ["method", "seed"])
    assert records.records == [{"method": "fk", "seed": 0, "nfe": 8, "samples_scored": 10,
                                "samples_scored_per_run": 5}]
    assert records.done(method="fk", seed=0)


def test_mean_and_ci():
    mean, half_width = mean_and_ci([1.0, 2.0, 3.0])
    assert mean == 2.0 and abs(half_width - 1.96 / 3**0.5) < 1e-12
    assert mean_and_ci([5.0]) == (5.0, 0.0)


def test_bad_arguments_are_reported_not_raised(tmp_path, capsys):
    assert main(["bench", "exact", "--out", str(tmp_path), "--seeds", "0"]) == 2
    assert "seeds" in capsys.readouterr().err
