"""Common mistakes end in one line naming what is wrong and the fix, exit status 2 (Ctrl-C: 130),
with nothing written; --debug or FKSTEER_DEBUG=1 shows the traceback instead.

Each case runs the real command line in-process (``main([...])``) on the embedded models with
tiny settings, or on the exact fixture; rewards are real modules written into the test's folder.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from cli_helpers import run_cli

pytest.importorskip("diffusers")
pytest.importorskip("PIL")

TINY = ["--steps", "2", "--num-particles", "2"]
SRC = Path(__file__).resolve().parents[1] / "src"

REWARDS = textwrap.dedent("""
    import torch

    def nan(samples, prompts):
        return torch.full((len(samples),), float("nan"))

    def boom(samples, prompts):
        raise ZeroDivisionError("division by zero in my reward")

    def interrupt(samples, prompts):
        raise KeyboardInterrupt

    def bright(samples, prompts):
        return samples.float().mean(dim=(1, 2, 3)) if hasattr(samples, "float") else \\
            torch.zeros(len(samples))

    def slow(samples, prompts):
        import pathlib, time
        pathlib.Path("started").touch()
        time.sleep(60)
        return torch.zeros(len(samples))
""")


@pytest.fixture
def rewards_here(tmp_path, monkeypatch):
    """A reward module with a unique name in the working directory (not on sys.path)."""
    name = f"user_rewards_{os.getpid()}_{time.monotonic_ns()}"
    (tmp_path / f"{name}.py").write_text(REWARDS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    return name


def one_error_line(stderr: str) -> str:
    """The last line of stderr (progress bars erased by carriage returns end before it)."""
    line = stderr.strip().splitlines()[-1].split("\r")[-1]
    assert line.startswith("fksteer: error: "), stderr
    assert "Traceback" not in stderr, stderr
    return line


def test_a_text_reward_for_images_is_refused_before_any_model_loads(tmp_path, capsys,
                                                                    monkeypatch):
    import fksteer.commands.image_models as image_models

    def no_load(*args, **kwargs):
        raise AssertionError("the image model was loaded before the reward was checked")

    monkeypatch.setattr(image_models, "load_image_runner", no_load)
    out = tmp_path / "runs" / "out"
    code, _, err = run_cli(["sample", "--reward", "toxicity", *TINY, "--out", out], capsys)
    assert code == 2 and "--reward toxicity scores texts" in one_error_line(err)
    assert "clip-score" in err and not (tmp_path / "runs").exists()


def test_an_image_reward_for_texts_is_refused_at_once(tmp_path, capsys):
    started = time.perf_counter()
    code, _, err = run_cli(["text", "--reward", "aesthetic", "--out", tmp_path / "o"], capsys)
    assert code == 2 and "--reward aesthetic scores images" in one_error_line(err)
    assert time.perf_counter() - started < 20  # no hub retries (26 s before), no model load
    assert not (tmp_path / "o").exists()


def test_an_offline_hub_reward_says_once_what_to_download(tmp_path, capsys, monkeypatch):
    pytest.importorskip("transformers")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    out = tmp_path / "o"
    code, _, err = run_cli(["sample", "--reward", "clip-score", *TINY, "--out", out], capsys)
    line = one_error_line(err)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "hf download openai/clip-vit-large-patch14" in line and "HF_HUB_OFFLINE" in line
    assert "local_files_only" not in line and "stacktrace" not in line
    assert not out.exists()


def test_an_unreachable_hub_is_asked_once_not_retried(monkeypatch):
    from fksteer.rewards import hub

    monkeypatch.setattr(hub, "hub_offline", lambda: False)
    monkeypatch.setattr(hub, "hub_reachable", lambda: False)
    calls = []

    def loader(source, local_files_only):
        calls.append(local_files_only)
        raise OSError("We couldn't connect; pass local_files_only=False; see the stacktrace above")

    with pytest.raises(hub.WeightsNotFoundError) as caught:
        hub.load_pretrained(loader, "no-such-org/model", what="the test reward")
    assert calls == [True]  # the cache only: no request to a hub that cannot answer
    message = str(caught.value)
    assert "cannot be reached" in message and "hf download no-such-org/model" in message
    assert "stacktrace" not in message


def test_a_reward_returning_nan_everywhere_is_one_line(tmp_path, capsys, rewards_here):
    code, _, err = run_cli(["sample", "--reward", f"{rewards_here}:nan", *TINY, "--out",
                            tmp_path / "o"], capsys)
    assert code == 2 and "weight zero" in one_error_line(err) and "nan" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", ["sample", "text"])
def test_an_exception_in_the_users_reward_is_quoted(command, tmp_path, capsys, rewards_here):
    args = [command, "--reward", f"{rewards_here}:boom", *TINY, "--out", tmp_path / "o"]
    if command == "text":
        args += ["--seq-len", "4", "You will"]  # one prompt: lengths are another test's matter
    code, _, err = run_cli(args, capsys)
    line = one_error_line(err)
    assert code == 2
    assert f"--reward {rewards_here}:boom raised ZeroDivisionError: division by zero in my " \
           "reward" in line and "--debug" in line
    assert not (tmp_path / "o").exists()


def test_debug_and_the_environment_variable_show_the_traceback(tmp_path, capsys, rewards_here,
                                                                monkeypatch):
    from fksteer.cli import main
    from fksteer.commands.errors import RewardError

    args = ["sample", "--reward", f"{rewards_here}:boom", *TINY, "--out", tmp_path / "o"]
    with pytest.raises(RewardError) as caught:
        main([*map(str, args), "--debug"])
    assert isinstance(caught.value.__cause__, ZeroDivisionError)
    monkeypatch.setenv("FKSTEER_DEBUG", "1")
    with pytest.raises(RewardError):
        main(list(map(str, args)))
    monkeypatch.setenv("FKSTEER_DEBUG", "0")
    assert main(list(map(str, args))) == 2


def test_ctrl_c_inside_a_run_exits_130_and_leaves_nothing(tmp_path, capsys, rewards_here):
    out = tmp_path / "runs" / "o"
    code, _, err = run_cli(["sample", "--reward", f"{rewards_here}:interrupt", *TINY, "--out",
                            out], capsys)
    assert code == 130 and "interrupted" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_a_real_sigint_exits_130_without_a_traceback(tmp_path, rewards_here):
    import signal

    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; from fksteer.cli import main; sys.exit(main())",
         "sample", "--reward", f"{rewards_here}:slow", *TINY, "--out", "runs/o"],
        cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (tmp_path / "started").exists():
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    assert not (tmp_path / "runs").exists()


def test_a_reward_module_beside_the_user_is_found(tmp_path, capsys, rewards_here):
    code, out, err = run_cli(["sample", "--reward", f"{rewards_here}:bright", *TINY, "--out",
                              tmp_path / "o"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["sample", "--reward", "no_such_module_here:fn", *TINY, "--out",
                            tmp_path / "p"], capsys)
    assert code == 2 and "no no_such_module_here.py" in one_error_line(err)


@pytest.mark.parametrize("args, option", [
    (["demo", "--exact", "--runs", "0"], "--runs"),
    (["demo", "--exact", "--particles", "0"], "--particles"),
    (["demo", "--particles", "0", "--steps", "2"], "--particles"),
])
def test_demo_names_the_bad_option_and_writes_nothing(args, option, tmp_path, capsys):
    out = tmp_path / "runs" / "o"
    code, _, err = run_cli([*args, "--out", out], capsys)
    assert code == 2 and one_error_line(err).startswith(f"fksteer: error: {option}")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("command", [["demo", "--exact", "--runs", "2"],
                                     ["bench", "exact", "--particles", "4", "--replicas", "2"]])
def test_an_out_that_is_a_file_is_one_line(command, tmp_path, capsys):
    path = tmp_path / "file"
    path.write_text("mine")
    code, _, err = run_cli([*command, "--out", path], capsys)
    assert code == 2 and "not a directory" in one_error_line(err)
    assert path.read_text() == "mine"


def test_demo_exact_is_staged_refuses_results_and_overwrites_on_request(tmp_path, capsys):
    out = tmp_path / "exact"
    args = ["demo", "--exact", "--runs", "4", "--particles", "4", "--out", out]
    assert run_cli(args, capsys)[0] == 0
    first = (out / "summary.json").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "report.html", "report.md",
                                                     "samples.png", "summary.json"]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "--overwrite" in one_error_line(err)
    assert (out / "summary.json").read_text() == first
    assert run_cli([*args, "--overwrite", "--seed", "1"], capsys)[0] == 0
    assert (out / "summary.json").read_text() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exact"]  # no staging leftovers


def test_run_folders_have_the_umask_permissions_and_reruns_need_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run_cli(["sample", "sneaker", *TINY, "--out", out], capsys)
    assert code == 0, err
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask
    assert "1 prompt x 2 particles" in stdout
    code, _, err = run_cli(["sample", "bag", *TINY, "--out", out], capsys)
    assert code == 2 and "--overwrite" in one_error_line(err)
    assert json.loads((out / "config.json").read_text())["prompts"] == ["sneaker"]
    assert run_cli(["sample", "bag", *TINY, "--out", out, "--overwrite"], capsys)[0] == 0
    assert json.loads((out / "config.json").read_text())["prompts"] == ["bag"]


def test_per_prompt_grids_carry_the_prompt_weights_and_rewards(tmp_path, capsys):
    from PIL import Image

    from fksteer.commands.images import BORDER, CAPTION, MIN_TILE

    out = tmp_path / "run"
    assert run_cli(["sample", "sneaker", *TINY, "--out", out], capsys)[0] == 0
    with Image.open(out / "grid_g000_sneaker.png") as image:
        grid = image.convert("L")
    tile = MIN_TILE + 2 * BORDER
    header = grid.crop((0, 0, grid.width, 14))
    captions = grid.crop((0, grid.height - CAPTION, grid.width, grid.height))
    assert grid.height == 14 + tile + CAPTION
    assert header.getextrema()[0] < 128  # the prompt is written above the row
    assert captions.getextrema()[0] < 128  # w= and r= under the tiles


def test_differently_sized_pil_images_are_fitted_to_the_input_size():
    import torch
    from PIL import Image

    from fksteer.rewards.base import as_image_batch

    wide = Image.new("RGB", (40, 20), (255, 0, 0))
    tall = Image.new("RGB", (10, 30), (0, 0, 255))
    batch = as_image_batch([wide, tall], size=16)
    assert batch.shape == (2, 3, 16, 16)
    assert torch.allclose(batch[0, 0], torch.ones(16, 16), atol=1e-6)  # still red
    assert torch.allclose(batch[1, 2], torch.ones(16, 16), atol=1e-6)  # still blue
    with pytest.raises(ValueError, match="different sizes"):
        as_image_batch([wide, tall])
    same = as_image_batch([wide, wide])  # one size: as before, no resizing
    assert same.shape == (2, 3, 20, 40)
