"""The README's code snippets, extracted and run (the worker of tests/test_readme.py).

    python tests/readme_snippets.py README.md OUT.json     # run everything, offline, in one process

Fenced blocks by info string: ``python`` runs for real; ``python hub`` loads weights from the
Hugging Face hub, so offline (HF_HUB_OFFLINE=1) it must stop at a ``from_pretrained`` line with
the hub's own error; ``bash`` blocks hold ``fksteer`` command lines (also after ``torchrun ... -m``
or ``python -m``), each parsed by the real parser and run in-process with ``--steps 2`` (the
commands' other settings as written, ``--device cuda`` on the CPU where there is no GPU). A
command that names what is not here (a hub model or reward, a file the README does not ship)
must end with exit 2 and one ``fksteer: error:`` line; every other one must exit 0. Each runs
in its own directory; ``fksteer report`` where an earlier command wrote the folders it reads.
``bench`` commands are parsed only (the suites take minutes to an hour; their quick variants
have tests).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Command", "Snippet", "commands", "run_all", "snippets"]

#: rewards whose weights come from the hub (or a path), never shipped in a wheel
HUB_REWARDS = ("clip-score", "pickscore", "hpsv2", "aesthetic", "image-reward", "hf-classifier",
               "lm-likelihood")
EMBEDDED_MODELS = ("embedded", "embedded-weak", "embedded-strong")
#: the commands that take --steps (the others run as written)
STEPPED = ("sample", "text", "demo")


@dataclass(frozen=True)
class Snippet:
    """One fenced block: its first code line in README.md, its info string and its code."""

    line: int
    info: str
    code: str

    @property
    def language(self) -> str:
        return self.info.split()[0] if self.info else ""


@dataclass(frozen=True)
class Command:
    """One ``fksteer`` command line of a bash block."""

    line: int
    argv: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"README.md:{self.line}: fksteer {shlex.join(self.argv)}"


def snippets(readme: Path) -> list[Snippet]:
    """Every fenced block of ``readme``."""
    found, lines = [], readme.read_text().splitlines()
    start = info = None
    for number, text in enumerate(lines, start=1):
        if text.startswith("```"):
            if start is None:
                start, info = number + 1, text[3:].strip()
            else:
                found.append(Snippet(start, info, "\n".join(lines[start - 1 : number - 1])))
                start = None
    if start is not None:
        raise ValueError(f"README.md:{start - 1}: unclosed code fence")
    return found


def commands(snippet: Snippet) -> list[Command]:
    """The ``fksteer`` commands of a bash block (continuation lines joined, comments dropped)."""
    found, logical, first = [], "", None
    for number, text in enumerate(snippet.code.splitlines(), start=snippet.line):
        first = number if not logical else first
        logical += text[:-1] + " " if text.endswith("\\") else text
        if text.endswith("\\"):
            continue
        tokens, logical = shlex.split(logical, comments=True), ""
        segment: list[str] = []
        for token in [*tokens, "&&"]:
            if token not in ("&&", ";", "||", "|"):
                segment.append(token)
                continue
            if segment[:1] == ["fksteer"]:
                found.append(Command(first, tuple(segment[1:])))
            elif "fksteer" in segment and segment[segment.index("fksteer") - 1] == "-m":
                found.append(Command(first, tuple(segment[segment.index("fksteer") + 1 :])))
            segment = []
    return found


def _option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv[:-1] else None


def needs_absent(argv: list[str]) -> str | None:
    """What the command needs that this machine lacks (a hub model or reward, a file), or None."""
    model, reward = _option(argv, "--model"), _option(argv, "--reward")
    if model is not None and model not in EMBEDDED_MODELS and not Path(model).exists():
        return f"--model {model}"
    if reward in HUB_REWARDS:
        return f"--reward {reward}"
    for option in ("--prompts-file", "--config"):
        value = _option(argv, option)
        if value is not None and not Path(value).exists():
            return f"{option} {value}"
    return None


def runnable(argv: list[str]) -> list[str]:
    """The argv run here: two denoising steps (commands that step), and the CPU where the
    command asks for CUDA."""
    import torch

    argv = list(argv)
    device = _option(argv, "--device")
    if device is not None and device.startswith("cuda") and not torch.cuda.is_available():
        argv[argv.index("--device") + 1] = "cpu"
    return [*argv, "--steps", "2"] if argv[0] in STEPPED else argv


def run_command(command: Command) -> dict:
    """Parse, then (bench aside) run ``command`` in this process: exit code and stderr's tail."""
    from fksteer.cli import build_parser, main

    result = {"kind": "command", "name": command.name, "argv": list(command.argv)}
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            build_parser().parse_args(list(command.argv))
    except SystemExit as exit_:
        return {**result, "parsed": False, "exit": exit_.code, "stderr": stderr.getvalue()}
    result["parsed"] = True
    if command.argv[0] == "bench":
        return {**result, "ran": False}
    argv = runnable(list(command.argv))
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = exit_.code
        except Exception:  # a traceback is a failure of the README or of the CLI
            traceback.print_exc()
            code = "traceback"
    return {**result, "ran": True, "run_argv": argv, "exit": code,
            "needs_absent": needs_absent(list(command.argv)),
            "stderr": stderr.getvalue()[-4000:]}


def run_python(snippet: Snippet) -> dict:
    """Execute a python block in a fresh namespace; where it stopped, with which error."""
    result = {"kind": snippet.info, "name": f"README.md:{snippet.line}: ```{snippet.info}",
              "line": snippet.line}
    code = compile(snippet.code, f"README.md:{snippet.line}", "exec")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            exec(code, {"__name__": "__readme__"})
    except Exception as error:
        frames = [f for f in traceback.extract_tb(error.__traceback__)
                  if f.filename == f"README.md:{snippet.line}"]
        stopped = frames[-1].lineno if frames else None
        source = snippet.code.splitlines()
        return {**result, "error": type(error).__name__,
                "error_types": [cls.__name__ for cls in type(error).__mro__],
                "message": str(error)[:1000], "traceback": traceback.format_exc()[-3000:],
                "stopped_at": source[stopped - 1].strip() if stopped else None}
    return {**result, "error": None}


@contextlib.contextmanager
def _directory(path: Path):
    """Run in the directory ``path`` (made if missing)."""
    path.mkdir(parents=True, exist_ok=True)
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def _reader_directory(argv: tuple[str, ...], written: list[Path]) -> Path | None:
    """Where an earlier command wrote every run folder that ``fksteer report`` reads."""
    folders = [arg for arg in argv[1:] if not arg.startswith("-")]
    for directory in reversed(written):
        if all((directory / folder).is_dir() for folder in folders):
            return directory
    return None


def run_all(readme: Path) -> list[dict]:
    """Every python block and every fksteer command of ``readme``, in order (a command written
    twice runs once), each in its own subdirectory of the working directory; ``fksteer
    report`` runs where an earlier command wrote the folders it reads."""
    results, ran, written = [], {}, []
    for snippet in snippets(readme):
        if snippet.language == "python":
            with _directory(Path(f"{len(results)}-line{snippet.line}")):
                results.append(run_python(snippet))
        elif snippet.language == "bash":
            for command in commands(snippet):
                if command.argv not in ran:
                    directory = Path(f"{len(results)}-line{command.line}").resolve()
                    if command.argv[0] == "report":
                        directory = _reader_directory(command.argv, written) or directory
                    written.append(directory)
                    with _directory(directory):
                        ran[command.argv] = run_command(command)
                results.append({**ran[command.argv], "name": command.name})
    return results


def main(argv: list[str]) -> int:
    readme, out = Path(argv[0]).resolve(), Path(argv[1]).resolve()
    os.environ["HF_HUB_OFFLINE"] = "1"  # before anything imports huggingface_hub
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    results = run_all(readme)  # in the working directory the caller chose (a temporary one)
    out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
