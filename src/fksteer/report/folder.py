"""Read a run folder for its report: `load_folder` and what it returns.

    from fksteer.report.folder import load_folder, RunFolderError
    folder = load_folder("runs/sample")     # RunFolder: .run (RunData) and/or .summary

Two kinds of folders have a report:

- a *steering run* (``fksteer sample``, ``fksteer text``, and each method of ``fksteer demo``
  under ``methods/<method>/``): ``config.json``, ``summary.json``, ``results.jsonl`` (one line
  per particle) and ``trace.jsonl`` (one line per step, ancestors included), plus the images
  that ``results.jsonl`` names;
- a *summary* (``fksteer bench ...``, ``fksteer demo --exact``): ``report.md``, ``config.json``
  and the PNG plots beside them.

``fksteer demo`` folders are both: the demo's table and grid, then its FK run. Anything else,
or a folder missing a file or holding a torn one, raises :class:`RunFolderError` (a ValueError,
so the command line exits with status 2) that names the folder, what is wrong and the fix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["RunFolderError", "RunData", "Summary", "RunFolder", "load_folder", "load_run"]

RUN_FILES = ("config.json", "summary.json", "results.jsonl", "trace.jsonl")
#: Where ``fksteer demo`` keeps the run of each method, and the one its report shows.
DEMO_RUNS, DEMO_SHOWN = "methods", "fk"


class RunFolderError(ValueError):
    """A folder that is not a run, or a half-written one; the message says which and why."""


@dataclass(frozen=True)
class RunData:
    """One steering run as its folder holds it.

    Attributes:
        path: the folder.
        config: config.json (the command, its options, the FKConfig, the machine).
        summary: summary.json (log-evidence, final ESS, rewards per group, NFE, timings).
        particles: results.jsonl, one dict per particle, in (group, particle) order.
        trace: trace.jsonl, one dict per step (the last is the final potential).
        prompts: one prompt per group.
        num_particles: K, particles per prompt.
    """

    path: Path
    config: dict[str, Any]
    summary: dict[str, Any]
    particles: list[dict[str, Any]]
    trace: list[dict[str, Any]]
    prompts: list[str]
    num_particles: int

    @property
    def num_groups(self) -> int:
        """G, the number of prompts."""
        return len(self.prompts)

    def series(self, name: str) -> np.ndarray:
        """(steps, G) float array of a per-group trace field; NaN where a step has none."""
        rows = [
            [np.nan] * self.num_groups if step[name] is None else step[name] for step in self.trace
        ]
        return np.array(rows, dtype=float)

    def steps(self) -> np.ndarray:
        """(steps,) the step index of each trace line (``num_steps`` for the final potential)."""
        return np.array([step["step"] for step in self.trace])

    def group(self, group: int) -> list[dict[str, Any]]:
        """The particles of ``group``, heaviest first (ties in particle order)."""
        rows = self.particles[group * self.num_particles : (group + 1) * self.num_particles]
        return sorted(rows, key=lambda row: (-(row["weight"] or 0.0), row["particle"]))


@dataclass(frozen=True)
class Summary:
    """A folder's ``report.md``, its PNG plots (name -> bytes) and ``config.json``."""

    path: Path
    markdown: str
    images: dict[str, bytes]
    config: dict[str, Any]


@dataclass(frozen=True)
class RunFolder:
    """What a report shows of a folder: a summary, a run, or both (a demo)."""

    path: Path
    run: RunData | None
    summary: Summary | None


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise RunFolderError(
            f"{path} is not valid JSON ({error.msg}, line {error.lineno}): the folder is "
            "half-written; rerun the command that made it."
        ) from None


def _jsonl(path: Path) -> list[Any]:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise RunFolderError(
                f"{path} line {number} is not valid JSON (a torn write): the folder is "
                "half-written; rerun the command that made it."
            ) from None
    return records


def _half_written(path: Path, what: str) -> RunFolderError:
    return RunFolderError(
        f"{path} is a half-written run folder ({what}); rerun the command that made it "
        "(config.json, where present, holds its command line)."
    )


def load_run(path: str | Path) -> RunData:
    """Read and check a steering run's folder; a RunFolderError says what is missing."""
    path = Path(path)
    missing = [name for name in RUN_FILES if not (path / name).is_file()]
    if missing:
        older = missing == ["trace.jsonl"]
        raise _half_written(path, f"no {', '.join(missing)}" + (
            "; folders written before fksteer kept trace.jsonl have no report" if older else ""))
    config, summary = _json(path / "config.json"), _json(path / "summary.json")
    particles, trace = _jsonl(path / "results.jsonl"), _jsonl(path / "trace.jsonl")
    if not isinstance(summary, dict) or "log_evidence" not in summary:
        raise _half_written(path, "summary.json has no log_evidence")
    prompts = [str(prompt) for prompt in summary.get("prompts", [])]
    groups, num_particles = len(prompts), int(summary.get("num_particles", 0))
    if groups == 0 or num_particles < 1 or len(summary["log_evidence"]) != groups:
        raise _half_written(path, "summary.json lacks its prompts or particle count")
    if len(particles) != groups * num_particles:
        raise _half_written(path, f"results.jsonl has {len(particles)} lines for {groups} "
                            f"prompts x {num_particles} particles")
    expected = [(g, k) for g in range(groups) for k in range(num_particles)]
    if [(row.get("group"), row.get("particle")) for row in particles] != expected:
        raise _half_written(path, "results.jsonl is not one line per (group, particle) in order")
    if not trace or trace[-1].get("ancestors") is not None:
        raise _half_written(path, "trace.jsonl does not end with the final potential")
    for step in trace:
        if len(step.get("ess") or []) != groups:
            raise _half_written(path, f"trace.jsonl step {step.get('step')} has no ESS for "
                                f"each of the {groups} prompts")
    for row in particles:
        if "path" in row and not (path / row["path"]).is_file():
            raise _half_written(path, f"{row['path']} is missing")
    return RunData(path, config, summary, particles, trace, prompts, num_particles)


def _load_summary(path: Path) -> Summary:
    config = _json(path / "config.json") if (path / "config.json").is_file() else {}
    images = {image.name: image.read_bytes() for image in sorted(path.glob("*.png"))}
    return Summary(path, (path / "report.md").read_text(), images, config)


def load_folder(path: str | Path) -> RunFolder:
    """The run and/or summary in ``path``; a RunFolderError when it holds neither."""
    path = Path(path)
    if not path.exists():
        raise RunFolderError(f"{path}: no such folder; pass the --out of an fksteer run.")
    if not path.is_dir():
        raise RunFolderError(f"{path} is not a folder; pass the --out of an fksteer run.")
    if (path / "report.md").is_file():
        demo_run = path / DEMO_RUNS / DEMO_SHOWN
        run = load_run(demo_run) if demo_run.is_dir() else None
        return RunFolder(path, run, _load_summary(path))
    if any((path / name).exists() for name in RUN_FILES):
        return RunFolder(path, load_run(path), None)
    inside = sorted(sub.name for sub in path.iterdir() if (sub / "report.md").is_file()
                    or (sub / "config.json").is_file())
    hint = f" It holds the folders {', '.join(inside)}: pass one of them." if inside else ""
    raise RunFolderError(
        f"{path} is not an fksteer run folder: it holds none of {', '.join(RUN_FILES)} or "
        f"report.md. Pass the --out folder of fksteer sample, text, demo or bench.{hint}"
    )
