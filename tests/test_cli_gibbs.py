"""`fksteer gibbs`: budgets stop where they say, the run replays from its record, Ctrl-C keeps
the finished sweeps with exit 130, and an embedded image model runs."""

from __future__ import annotations

import json

import pytest
from cli_helpers import run_cli

from fksteer.models.gaussian_mixture import LinearReward

EXACT = ["gibbs", "--steps", "5", "--chains", "2", "--num-particles", "3"]


def _chain(out):
    return [json.loads(line) for line in (out / "chain.jsonl").read_text().splitlines()]


def test_an_nfe_budget_makes_the_sweeps_it_pays_for_and_replays(tmp_path, capsys):
    out = tmp_path / "budget"
    per_sweep = 5 * 2 * 3
    code, stdout, stderr = run_cli([*EXACT, "--budget-nfe", 4 * per_sweep + 1, "--out", out],
                                   capsys)
    assert code == 0, stderr
    config = json.loads((out / "config.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    assert config["sweeps_made"] == 4 and config["stop_reason"] == "budget-nfe"
    assert summary["nfe"] == 4 * per_sweep and "rare-component mass" in stdout
    assert len(_chain(out)) == 4 * 2
    replay = tmp_path / "replay"
    code, _, stderr = run_cli([*EXACT, *config["replay"].split(), "--out", replay], capsys)
    assert code == 0, stderr
    assert _chain(replay) == _chain(out)


def test_a_time_budget_records_its_sweeps_and_replays_exactly(tmp_path, capsys):
    out = tmp_path / "seconds"
    code, _, stderr = run_cli([*EXACT, "--budget-seconds", "0.5", "--seed", "3", "--burn-in",
                               "1000", "--out", out], capsys)
    assert code == 0, stderr
    config = json.loads((out / "config.json").read_text())
    assert config["stop_reason"] == "budget-seconds" and config["sweeps_made"] >= 1
    replay = tmp_path / "replay"
    code, _, stderr = run_cli([*EXACT, "--sweeps", config["sweeps_made"], "--seed", "3",
                               "--out", replay], capsys)
    assert code == 0, stderr
    assert _chain(replay) == _chain(out)


def test_ctrl_c_writes_the_finished_sweeps_and_exits_130(tmp_path, capsys, monkeypatch):
    calls = {"n": 0}
    original = LinearReward.__call__

    def interrupted(self, samples, prompts=None):
        calls["n"] += 1
        if calls["n"] == 6 * 3 + 2:  # 6 reward calls a sweep (5 steps and the final): sweep 3
            raise KeyboardInterrupt
        return original(self, samples, prompts)

    monkeypatch.setattr(LinearReward, "__call__", interrupted)
    out = tmp_path / "interrupted"
    code, stdout, stderr = run_cli([*EXACT, "--sweeps", "50", "--out", out], capsys)
    assert code == 130, stderr
    config = json.loads((out / "config.json").read_text())
    assert config["stop_reason"] == "interrupted" and config["sweeps_made"] == 3
    assert "stopped: interrupted" in stdout


def test_bad_options_exit_2(tmp_path, capsys):
    code, _, stderr = run_cli([*EXACT, "--out", tmp_path / "x"], capsys)
    assert code == 2 and "--sweeps N, --budget-nfe N or --budget-seconds T" in stderr
    code, _, stderr = run_cli([*EXACT, "--sweeps", "2", "--resampling", "stratified",
                               "--out", tmp_path / "y"], capsys)
    assert code == 2 and "no conditional version" in stderr
    code, _, stderr = run_cli([*EXACT, "--sweeps", "2", "--method", "base", "--out",
                               tmp_path / "z"], capsys)
    assert code == 2 and "FK steering only" in stderr
    assert not any((tmp_path / name).exists() for name in "xyz")


def test_an_embedded_image_model_runs(tmp_path, capsys):
    pytest.importorskip("diffusers")
    pytest.importorskip("PIL")
    out = tmp_path / "image"
    code, stdout, stderr = run_cli(["gibbs", "sneaker", "--model", "embedded-weak", "--steps",
                                    "3", "--chains", "2", "--num-particles", "2", "--sweeps",
                                    "3", "--out", out], capsys)
    assert code == 0, stderr
    assert (out / "best_c0.png").exists() and (out / "chain_c1.png").exists()
    assert len(_chain(out)) == 3 * 2 and "acceptance of a new path" in stdout
