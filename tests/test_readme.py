"""Every code snippet of README.md runs: python blocks for real (hub ones up to the hub's offline
error), every ``fksteer`` command line parsed by the real parser and run (see readme_snippets)."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from readme_snippets import commands, snippets

import fksteer

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SOURCE = str(Path(fksteer.__file__).resolve().parent.parent)  # this fksteer, in a subprocess
SNIPPETS = snippets(README)
PYTHON = [s for s in SNIPPETS if s.language == "python"]
COMMANDS = [c for s in SNIPPETS if s.language == "bash" for c in commands(s)]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, dict]:
    """Every snippet's outcome, by name: one offline process in a temporary directory."""
    for module in ("diffusers", "transformers", "profanity_check", "vaderSentiment"):
        pytest.importorskip(module)
    work = tmp_path_factory.mktemp("readme")
    out = work / "results.json"
    worker = Path(__file__).with_name("readme_snippets.py")
    env = {**os.environ, "PYTHONPATH": SOURCE, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, str(worker), str(README), str(out)], cwd=work,
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return {result["name"]: result for result in json.loads(out.read_text())}


def test_the_readme_has_the_snippets_this_test_reads():
    assert len(PYTHON) >= 5 and len(COMMANDS) >= 15
    assert {s.info for s in PYTHON} == {"python", "python hub"}
    assert all(s.language in ("python", "bash", "text") for s in SNIPPETS), "a block without a "
    "language (or one this test does not know) is not checked: give it python, bash or text"


@pytest.mark.parametrize("snippet", PYTHON, ids=lambda s: f"line{s.line}-{s.info}")
def test_python_snippet_defines_every_name_it_uses(snippet, tmp_path):
    """Static: no undefined names (pyflakes' F821 through ruff), also in hub snippets, whose
    run stops early offline."""
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff not installed (the dev extra)")
    path = tmp_path / f"readme_line_{snippet.line}.py"
    path.write_text(snippet.code + "\n")
    check = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--isolated",
                            "--select", "F821,F822,E9", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout


@pytest.mark.parametrize("snippet", PYTHON, ids=lambda s: f"line{s.line}-{s.info}")
def test_python_snippet_runs(snippet, results):
    result = results[f"README.md:{snippet.line}: ```{snippet.info}"]
    if snippet.info == "python":
        assert result["error"] is None, result["traceback"]
        return
    # a hub snippet, offline: the hub's own error, where the weights are loaded, nothing before
    assert result["error"] is not None, "a hub snippet ran offline: mark it ```python"
    assert "from_pretrained" in (result["stopped_at"] or ""), result["traceback"]
    offline = "OSError" in result["error_types"] or "offline" in result["message"].lower()
    assert offline, result["traceback"]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: f"line{c.line}")
def test_command_line_parses_and_runs(command, results):
    result = results[command.name]
    assert result["parsed"], f"{command.name}: {result['stderr']}"
    if not result["ran"]:
        assert command.argv[0] == "bench"
        return
    if result["needs_absent"] is None:
        assert result["exit"] == 0, f"{shlex.join(result['run_argv'])}: {result['stderr']}"
    else:  # a hub model or reward, or a file the README does not ship: one clear line
        lines = [line for line in result["stderr"].splitlines() if line.strip()]
        assert result["exit"] == 2, result["stderr"]
        assert lines[-1].startswith("fksteer: error:"), result["stderr"]
        assert "Traceback" not in result["stderr"]


def test_the_readme_test_command_is_what_ci_runs():
    """The quick start's install-and-test line is .ci/run's last line, word for word."""
    if not (ROOT / ".ci" / "run").is_file():
        pytest.skip("no .ci/run here (a source distribution)")
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    quick_start = next(s for s in SNIPPETS if s.language == "bash")
    assert ci in quick_start.code.splitlines()


def test_bash_blocks_are_valid_shell(tmp_path):
    bash = shutil.which("bash") or pytest.skip("no bash")
    for snippet in (s for s in SNIPPETS if s.language == "bash"):
        check = subprocess.run([bash, "-n"], input=snippet.code, capture_output=True, text=True)
        assert check.returncode == 0, f"README.md:{snippet.line}: {check.stderr}"

