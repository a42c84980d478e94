"""Start-up time of the command line: `fksteer --help` and the load phase of `fksteer sample`.

    python benchmarks/load_time.py --baseline ../main/src --out docs/results/load-time

For each source tree (this one's ``src`` and, with ``--baseline``, another's, e.g. a checkout of
an earlier commit), run in fresh processes with ``PYTHONPATH`` set to it:

- ``help``: wall time of ``python -m fksteer --help`` (process start to exit);
- ``sample load``: ``python -m fksteer sample --steps 2 --num-particles 2 --no-report`` (the
  embedded weak model, the embedded classifier reward, the default prompts), time from the
  process start to the first output of the sampler's progress bar, which the model prints when
  its initial noise is drawn, just before the first denoising step: imports, the reward and the
  model loaded, the arguments checked;
- ``sample total``: that run's wall time to exit (2 steps, the images and files written);
- ``import torch``: process start to the end of ``import torch`` in ``python -c``, the floor
  every torch command pays (to the import's end: an interpreter holding torch takes a while to
  exit).

The versions alternate within each round (the first one swapped every round) so that a busy
machine slows both alike; medians over the rounds, and the ratio of the medians. Writes
results.json (every measurement) and report.md into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKER = b"steer:   0%"  # the progress bar at 0 steps (UNetStepModel.init)
SAMPLE = ["sample", "--steps", "2", "--num-particles", "2", "--no-report", "--threads", "1"]


def _environment(source: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(source), "OMP_NUM_THREADS": "1"}


def _check_source(python: str, source: Path) -> str:
    """The fksteer that ``PYTHONPATH=source`` imports (refuses another one)."""
    found = subprocess.run(
        [python, "-c", "import fksteer; print(fksteer.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        env=_environment(source),
        cwd=tempfile.gettempdir(),
    ).stdout.strip()
    if not Path(found).resolve().is_relative_to(source.resolve()):
        raise SystemExit(f"PYTHONPATH={source} imports fksteer from {found}")
    return found


def _wall(command: list[str], source: Path, cwd: str) -> float:
    start = time.perf_counter()
    subprocess.run(
        command,
        env=_environment(source),
        cwd=cwd,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def _until(command: list[str], source: Path, cwd: Path, marker: bytes) -> tuple[float, float]:
    """(seconds from the process start to ``marker`` in its output, seconds to its exit)."""
    start = time.perf_counter()
    process = subprocess.Popen(
        command,
        env=_environment(source),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    seen, reached = b"", None
    while True:
        chunk = os.read(process.stdout.fileno(), 4096)
        if not chunk:
            break
        seen += chunk
        if reached is None and marker in seen:
            reached = time.perf_counter() - start
    code = process.wait()
    total = time.perf_counter() - start
    if code != 0 or reached is None:
        raise SystemExit(f"{command} failed (exit {code}):\n{seen.decode(errors='replace')}")
    return reached, total


def measure(python: str, sources: dict[str, Path], rounds: int) -> dict[str, dict[str, list]]:
    """Every measurement, by version and quantity, over ``rounds`` alternating rounds."""
    times = {
        name: {"help": [], "sample_load": [], "sample_total": [], "import_torch": []}
        for name in sources
    }
    names = list(sources)
    with tempfile.TemporaryDirectory() as work:
        for round_ in range(rounds):
            order = names if round_ % 2 == 0 else names[::-1]
            for name in order:
                source = sources[name]
                record = times[name]
                record["help"].append(_wall([python, "-m", "fksteer", "--help"], source, work))
                out = Path(work) / f"{name}-{round_}"
                command = [python, "-m", "fksteer", *SAMPLE, "--out", str(out)]
                loaded, total = _until(command, source, Path(work), MARKER)
                record["sample_load"].append(loaded)
                record["sample_total"].append(total)
                command = [python, "-c", "import torch; print('imported', flush=True)"]
                record["import_torch"].append(_until(command, source, Path(work), b"imported")[0])
            print(
                f"round {round_ + 1}/{rounds}: "
                + "; ".join(
                    f"{name} load {times[name]['sample_load'][-1]:.2f} s, help "
                    f"{times[name]['help'][-1]:.2f} s"
                    for name in names
                ),
                flush=True,
            )
    return times


def _commit(source: Path) -> str | None:
    run = subprocess.run(
        ["git", "-C", str(source), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return run.stdout.strip() or None


def report(times: dict, sources: dict[str, Path], rounds: int) -> tuple[dict, str]:
    """results.json's object and report.md's text."""
    medians = {
        name: {key: statistics.median(values) for key, values in record.items()}
        for name, record in times.items()
    }
    results = {
        "rounds": rounds,
        "command": ["fksteer", *SAMPLE],
        "versions": {
            name: {"source": os.path.relpath(path, ROOT), "commit": _commit(path)}
            for name, path in sources.items()
        },
        "seconds": times,
        "medians": medians,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
    }
    rows = [
        f"| {name} ({results['versions'][name]['commit']}) | {m['help']:.2f} | "
        f"{m['sample_load']:.2f} | {m['sample_total']:.2f} | {m['import_torch']:.2f} |"
        for name, m in medians.items()
    ]
    lines = [
        "# Start-up time of the command line\n",
        f"Medians of {rounds} alternating rounds, seconds (`python benchmarks/load_time.py`). "
        "*sample load*: process start to the first denoising step of "
        f"`fksteer {' '.join(SAMPLE)}` (embedded weak model and classifier).\n",
        "| version | `--help` | sample load | sample total | `import torch` |",
        "|---|---|---|---|---|",
        *rows,
    ]
    if "baseline" in medians:
        ratio = medians["this"]["sample_load"] / medians["baseline"]["sample_load"]
        results["load_ratio"] = ratio
        lines.append(f"\nsample load, this / baseline: {ratio:.2f}")
    return results, "\n".join(lines) + "\n"


def main() -> None:
    """Measure, print the table and write results.json and report.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="another source tree (its src/) to compare")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "load-time")
    args = parser.parse_args()
    sources = {"this": ROOT / "src"}
    if args.baseline is not None:
        sources["baseline"] = args.baseline
    for source in sources.values():
        _check_source(args.python, source)
    times = measure(args.python, sources, args.rounds)
    results, text = report(times, sources, args.rounds)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "report.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
