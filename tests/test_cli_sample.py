"""`fksteer sample`: end to end on the embedded model and a UNet folder; config files; bad input."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from cli_helpers import run_cli

from fksteer.commands.staging import staged_directory

pytest.importorskip("diffusers")
pytest.importorskip("PIL")

WEAK_FOLDER = Path(__file__).resolve().parents[1] / "src/fksteer/embedded/weights/fashion16-weak"
TINY = ["--steps", "3", "--num-particles", "2"]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_sample_on_the_embedded_model_writes_images_grids_and_records(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, stderr = run_cli(["sample", "sneaker", "Bag", *TINY, "--out", out], capsys)
    assert code == 0, stderr
    assert "best reward" in stdout
    images = sorted(path.name for path in (out / "images").iterdir())
    assert images == ["g000_k000.png", "g000_k001.png", "g001_k000.png", "g001_k001.png"]
    assert sorted(path.name for path in out.glob("grid_*.png")) == [
        "grid_g000_sneaker.png", "grid_g001_bag.png"]
    records = read_jsonl(out / "results.jsonl")
    assert len(records) == 4
    assert {"prompt", "group", "particle", "reward", "weight", "path"} <= set(records[0])
    assert [r["prompt"] for r in records] == ["sneaker", "sneaker", "bag", "bag"]
    for group in (0, 1):
        weights = [r["weight"] for r in records if r["group"] == group]
        assert sum(weights) == pytest.approx(1.0)
        assert sum(r["best"] for r in records if r["group"] == group) == 1
    assert all((out / r["path"]).is_file() for r in records)
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["log_evidence"]) == 2
    assert summary["nfe"] == 3 * 4 and summary["samples_scored"] > 0
    assert len(summary["trace"]) == 4 and len(summary["trace"][0]["ess"]) == 2
    assert set(summary["seconds"]) == {"model", "reward", "engine"}
    assert set(summary["wall_seconds"]) == {"load", "steer"}
    config = json.loads((out / "config.json").read_text())
    assert config["fk_config"]["num_particles"] == 2
    assert config["model"] == "embedded-weak" and config["steps"] == 3
    assert not list(tmp_path.glob(".*"))  # no staging leftovers


def test_reward_guidance_with_the_embedded_model_and_classifier(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, stderr = run_cli(
        ["sample", "sneaker", *TINY, "--reward-guidance", "ramp:2:0", "--out", out], capsys
    )
    assert code == 0, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["nfe"] == 2 * 3 * 2  # guided steps evaluate the UNet twice
    config = json.loads((out / "config.json").read_text())
    assert config["fk_config"]["guidance"] == {"schedule": "LinearRamp", "start": 2.0, "end": 0.0}


def test_a_search_method_from_the_command_line(tmp_path, capsys):
    """--method svdd with 3 candidates: 3 steps x 2 particles x 3 rows evaluated; rewards at
    steps 1, 2 and the end; K = 2 kept samples per prompt with uniform weights."""
    out = tmp_path / "run"
    code, stdout, stderr = run_cli(["sample", "sneaker", *TINY, "--method", "svdd",
                                    "--candidates", "3", "--temperature", "0.5", "--out", out],
                                   capsys)
    assert code == 0, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "svdd" and summary["nfe"] == 3 * 2 * 3
    assert summary["samples_scored"] == 3 * 2 * 3
    assert summary["search"] == {"method": "svdd", "candidates": 3, "temperature": 0.5,
                                 "block": 1}
    assert [r["weight"] for r in read_jsonl(out / "results.jsonl")] == [0.5, 0.5]
    config = json.loads((out / "config.json").read_text())
    assert "--candidates 3" in config["reproduce"] and config["temperature"] == 0.5


def test_config_file_sets_options_and_the_command_line_overrides_it(tmp_path, capsys):
    config_file = tmp_path / "run.toml"
    config_file.write_text(textwrap.dedent("""
        num_particles = 3
        lmbda = "ramp:0:5"
        ess-threshold = 0.5
        method = "best_of_n"
        steps = 3
        prompts = ["dress"]
    """))
    out = tmp_path / "run"
    code, _, stderr = run_cli(["sample", "--config", config_file, "--num-particles", "2",
                               "--out", out], capsys)
    assert code == 0, stderr
    config = json.loads((out / "config.json").read_text())
    assert config["fk_config"]["num_particles"] == 2  # the command line wins
    assert config["fk_config"]["lmbda"] == {"schedule": "LinearRamp", "start": 0.0, "end": 5.0}
    assert config["fk_config"]["ess_threshold"] == 0.5
    assert config["method"] == "best_of_n" and config["prompts"] == ["dress"]
    assert len(read_jsonl(out / "results.jsonl")) == 2


def test_yaml_config_and_jsonl_prompts_file(tmp_path, capsys):
    pytest.importorskip("yaml")
    config_file = tmp_path / "run.yaml"
    config_file.write_text("num-particles: 2\nsteps: 2\nmethod: base\n")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "sandal"}\n\n{"prompt": "coat"}\n')
    out = tmp_path / "run"
    code, _, stderr = run_cli(["sample", "--config", config_file, "--prompts-file", prompts,
                               "--out", out], capsys)
    assert code == 0, stderr
    records = read_jsonl(out / "results.jsonl")
    assert [r["prompt"] for r in records] == ["sandal", "sandal", "coat", "coat"]
    assert all(r["weight"] == pytest.approx(0.5) for r in records)  # base: uniform weights


def test_a_unet_folder_with_a_module_function_reward(tmp_path, capsys, monkeypatch):
    (tmp_path / "cli_test_rewards.py").write_text(
        "def brightness(images, prompts):\n    return images.mean(dim=(1, 2, 3))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "run"
    code, _, stderr = run_cli(["sample", "7", "--model", WEAK_FOLDER, "--reward",
                               "cli_test_rewards:brightness", *TINY, "--out", out], capsys)
    assert code == 0, stderr
    records = read_jsonl(out / "results.jsonl")
    assert len(records) == 2 and all(0.0 <= r["reward"] <= 1.0 for r in records)


def _empty_file(tmp_path):
    (tmp_path / "empty.txt").write_text("\n  \n")
    return ["--prompts-file", tmp_path / "empty.txt"]


def _file_as_parent(tmp_path):
    (tmp_path / "a-file").write_text("x")
    return []


BAD_INPUTS = {
    "unknown reward": (lambda tmp: ["--reward", "no-such-reward"], "--reward", "Registered"),
    "bad model path": (lambda tmp: ["--model", tmp / "missing" / "model"], "--model",
                       "no such directory"),
    "folder that is no model": (lambda tmp: ["--model", tmp], "--model", "model_index.json"),
    "zero particles": (lambda tmp: ["--num-particles", "0"], "--num-particles",
                       "positive int"),
    "lambda not a number": (lambda tmp: ["--lmbda", "strong"], "--lmbda", "not a number"),
    "negative guidance": (lambda tmp: ["--reward-guidance", "-1"], "--reward-guidance", ">= 0"),
    "guidance not a number": (lambda tmp: ["--reward-guidance", "x"], "--reward-guidance",
                              "not a number"),
    "empty prompt file": (_empty_file, "--prompts-file", "no prompts"),
    "unknown prompt": (lambda tmp: ["spaceship"], "spaceship", "ankle boot"),
    "bad config key": (lambda tmp: _config(tmp, "particles = 3\n"), "--config",
                       "unknown key"),
    "bad config lambda": (lambda tmp: _config(tmp, 'lmbda = "big"\n'), "--lmbda",
                          "not a number"),
    "reward of the wrong module": (lambda tmp: ["--reward", "no_such_module_xyz:f"],
                                   "--reward", "cannot import"),
    "largest tilt without a cap": (lambda tmp: ["--lmbda", "largest:"], "--lmbda",
                                   "largest:CAP"),
    "largest tilt with a bad fraction": (lambda tmp: ["--lmbda", "largest:10:2"], "--lmbda",
                                         "final_ess"),
    "zero candidates": (lambda tmp: ["--method", "svdd", "--candidates", "0"], "--candidates",
                        "int >= 1"),
    "beam with a temperature": (lambda tmp: ["--method", "beam", "--temperature", "1"],
                                "--temperature", "use method='svdd'"),
}


def _config(tmp_path, text):
    (tmp_path / "bad.toml").write_text(text)
    return ["--config", tmp_path / "bad.toml"]


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_2_with_a_one_line_message_and_writes_nothing(case, tmp_path, capsys):
    make_args, option, hint = BAD_INPUTS[case]
    out = tmp_path / "runs" / "out"
    code, _, stderr = run_cli(["sample", *TINY, *make_args(tmp_path), "--out", out], capsys)
    assert code == 2
    assert option in stderr and hint in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(("fksteer: error:", "fksteer sample: error:"))
    assert not (tmp_path / "runs").exists()


def test_an_out_dir_that_cannot_be_written_exits_2(tmp_path, capsys):
    (tmp_path / "a-file").write_text("x")
    out = tmp_path / "a-file" / "run"
    code, _, stderr = run_cli(["sample", *TINY, "--out", out], capsys)
    assert code == 2 and "--out" in stderr and "writable" in stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a-file"]


def test_staged_directory_replaces_on_success_and_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "deep" / "run"
    with pytest.raises(RuntimeError), staged_directory(target) as work:
        (work / "half.json").write_text("{}")
        raise RuntimeError("the run failed")
    assert not (tmp_path / "deep").exists()
    with staged_directory(target) as work:
        (work / "first").write_text("1")
    with pytest.raises(ValueError, match="--overwrite"), staged_directory(target) as work:
        pass  # an earlier run's results are not replaced silently
    with staged_directory(target, overwrite=True) as work:
        (work / "second").write_text("2")
    assert sorted(path.name for path in (tmp_path / "deep").iterdir()) == ["run"]
    assert sorted(path.name for path in target.iterdir()) == ["second"]


def test_a_pipeline_folder_runs_through_steer_pipeline(tmp_path, capsys, monkeypatch):
    import diffusers
    import torch

    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
        block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4,
    )
    folder = tmp_path / "tiny-ddpm"
    diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler()).save_pretrained(folder)
    (tmp_path / "cli_test_rewards2.py").write_text(
        "def brightness(images, prompts):\n    return images.mean(dim=(1, 2, 3))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "run"
    code, _, stderr = run_cli(["sample", "--model", folder, "--reward",
                               "cli_test_rewards2:brightness", *TINY, "--out", out], capsys)
    assert code == 0, stderr
    records = read_jsonl(out / "results.jsonl")
    assert len(records) == 2 and records[0]["prompt"] == ""  # unconditional: one group
    assert (out / "images" / "g000_k001.png").is_file()
    assert json.loads((out / "summary.json").read_text())["nfe"] == 3 * 2


def test_the_largest_tilt_from_the_command_line_reports_lambda_hat(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, stderr = run_cli(["sample", "sneaker", "bag", *TINY, "--lmbda", "largest:100",
                               "--out", out], capsys)
    assert code == 0, stderr
    summary = json.loads((out / "summary.json").read_text())
    lambda_hat = summary["final_lambda"]
    assert len(lambda_hat) == 2 and all(0 <= value <= 100 for value in lambda_hat)
    rerun = json.loads((out / "config.json").read_text())["reproduce"]
    assert "--lmbda largest:100.0:0.5" in rerun
