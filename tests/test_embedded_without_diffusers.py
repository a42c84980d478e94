"""The embedded image model runs on torch alone: with diffusers refused by the import system it
loads, steers and serves `fksteer sample`, and its load never imports torch._dynamo.

These tests need no diffusers (they block it themselves), so they live apart from the
comparisons with diffusers' classes in test_embedded_unet.py, which skip without it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import fksteer

SOURCE = str(Path(fksteer.__file__).resolve().parent.parent)  # this fksteer, in a subprocess


def test_the_embedded_image_model_loads_and_steers_without_diffusers():
    """With diffusers refused by the import system, the embedded model loads and steers; run
    normally, the load imports neither diffusers nor torch._dynamo (their import was most of
    `fksteer sample`'s start-up)."""
    program = (
        "import sys\n"
        "blocked = sys.argv[1] == 'blocked'\n"
        "if blocked:\n    sys.modules['diffusers'] = None\n"
        "import torch, fksteer\n"
        "from fksteer.embedded.image_model import load_image_model\n"
        "model = load_image_model('weak', num_inference_steps=2, scheduler='ddim')\n"
        "reward = lambda images, prompts: images.mean(dim=(1, 2, 3))\n"
        "result = fksteer.steer(model, reward, fksteer.FKConfig(num_particles=2),\n"
        "                       prompts=['bag'], generator=torch.Generator().manual_seed(0))\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] == 'diffusers'\n"
        "         or m.startswith('torch._dynamo')]\n"
        "print(tuple(result.samples.shape), heavy if not blocked else [])\n"
    )
    for mode in ("blocked", "free"):
        run = subprocess.run(
            [sys.executable, "-c", program, mode],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": SOURCE},
        )
        assert run.returncode == 0, run.stderr
        assert run.stdout.split("\n")[-2] == "(1, 2, 1, 16, 16) []", (mode, run.stdout)


def test_fksteer_sample_on_the_embedded_model_runs_with_diffusers_refused(tmp_path):
    """The whole command: arguments, the embedded reward and model, steering, the run folder."""
    out = tmp_path / "run"
    argv = ["sample", "--steps", "2", "--num-particles", "2", "--no-report", "--out", str(out)]
    program = (
        "import sys; sys.modules['diffusers'] = None\n"
        "from fksteer.cli import main\n"
        f"code = main({argv!r})\n"
        "print('dynamo', any(m.startswith('torch._dynamo') for m in sys.modules))\n"
        "sys.exit(code)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        env={**os.environ, "PYTHONPATH": SOURCE},
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "dynamo False"
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 3 * 2  # the default prompts, two particles each
