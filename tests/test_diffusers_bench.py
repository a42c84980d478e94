"""`fksteer bench overhead --quick`: runs, writes its files, reports the steered / stock ratio."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("matplotlib")

from fksteer.cli import main  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")



def test_bench_overhead_writes_results_and_resumes(tmp_path, capsys):
    args = ["bench", "overhead", "--quick", "--out", str(tmp_path), "--repeats", "1"]
    assert main(args) == 0
    assert "Steered / stock" in capsys.readouterr().out
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["variant"] for r in records] == ["stock", "base", "fk", "fk_stepmodel"]
    assert len({r["nfe"] for r in records}) == 1  # equal denoiser evaluations
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["bench"] == "overhead" and config["num_particles"] == 4
    assert (tmp_path / "overhead.png").stat().st_size > 0
    assert "| fk |" in (tmp_path / "report.md").read_text()
    assert main(args) == 0  # a rerun computes nothing new
    assert (tmp_path / "results.jsonl").read_text().splitlines() == lines
