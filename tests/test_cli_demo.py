"""`fksteer demo`: base vs best-of-K vs FK on the embedded image model, on tiny settings."""

from __future__ import annotations

import json

import pytest
from cli_helpers import run_cli

pytest.importorskip("diffusers")
pytest.importorskip("PIL")


def test_demo_prints_the_table_and_writes_the_grid(tmp_path, capsys):
    out = tmp_path / "demo"
    code, stdout, stderr = run_cli(["demo", "sneaker", "bag", "--steps", "3", "--particles",
                                    "2", "--out", out], capsys)
    assert code == 0, stderr
    assert "judge acc (best)" in stdout and "FK steering" in stdout and "best-of-K" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"base", "best_of_n", "fk"}
    for row in summary.values():
        assert 0.0 <= row["judge_accuracy_best"] <= 1.0
        assert 0.0 <= row["judge_accuracy_draw"] <= 1.0
        assert row["nfe"] == 3 * 2 * 2  # equal K: every method costs the same
    # best-of-K puts all weight on the best particle: its drawn reward is the best reward
    assert summary["best_of_n"]["steering_reward"] >= summary["base"]["steering_reward"]
    from PIL import Image

    with Image.open(out / "grid.png") as grid:
        assert grid.width > 3 * 2 * 64 and grid.height > 2 * 64  # 3 blocks of 2, 2 rows
    assert (out / "report.md").read_text().startswith("# fksteer demo")
    config = json.loads((out / "config.json").read_text())
    assert config["prompts"] == ["sneaker", "bag"] and config["fk_config"]["num_particles"] == 2


def test_demo_with_a_bad_prompt_exits_2_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "runs" / "demo"
    code, _, stderr = run_cli(["demo", "spaceship", "--steps", "2", "--out", out], capsys)
    assert code == 2 and "spaceship" in stderr
    assert not (tmp_path / "runs").exists()
