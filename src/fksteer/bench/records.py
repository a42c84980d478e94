"""Result files of a benchmark run: JSONL records, the resolved config, a markdown table.

    from fksteer.bench.records import RecordFile, write_json, markdown_table, mean_and_ci

A run writes one JSON line per completed unit of work. Lines are appended whole and flushed with
fsync, so an interrupted run leaves complete lines only (a torn last line is dropped on reading);
rerunning the same command skips the units already recorded.

It is the one records module: :func:`write_json` (atomic, NaN and infinities as null) and
:func:`write_jsonl` are the writers of every folder fksteer writes, run folders included
(:mod:`fksteer.commands.run_folder` re-exports them). It imports nothing from fksteer, so the
commands and the suites both sit above it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "RecordFile", "write_json", "write_jsonl", "clean_json", "finite", "markdown_table",
    "mean_and_ci", "mean_and_t_ci", "counted", "check_counts", "RENAMED_FIELDS",
]

#: Fields of records written before a rename -> their current name: a record read from an older
#: file is given the current names, so a suite resumes (and reports) from files of either age.
RENAMED_FIELDS = {
    "reward_calls": "samples_scored",
    "reward_calls_per_run": "samples_scored_per_run",
}


def current_names(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with the fields of :data:`RENAMED_FIELDS` under their current names."""
    if not any(old in record for old in RENAMED_FIELDS):
        return record
    return {RENAMED_FIELDS.get(name, name): value for name, value in record.items()}


def finite(value: float) -> float | None:
    """JSON has no NaN or infinity: those become null."""
    value = float(value)
    return value if math.isfinite(value) else None


def clean_json(value: Any) -> Any:
    """``value`` with every float NaN or infinity (in dicts, lists, tuples) replaced by None."""
    if isinstance(value, float):
        return finite(value)
    if isinstance(value, dict):
        return {key: clean_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(item) for item in value]
    return value


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON (NaN and infinities as null), atomically: a temporary
    file beside it, then a rename, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(clean_json(data), indent=2, default=str) + "\n")
    temporary.replace(path)


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Write ``records`` as JSON lines (NaN and infinities as null)."""
    with open(path, "w") as handle:
        for record in records:
            handle.write(json.dumps(clean_json(record), default=str) + "\n")


class RecordFile:
    """An append-only JSONL file of records, keyed for resuming.

    ``key_fields`` name the fields that identify a unit of work (e.g. method, N, seed): a record
    whose key is already in the file is not computed again.
    """

    def __init__(self, path: str | os.PathLike[str], key_fields: Sequence[str]):
        self.path = Path(path)
        self.key_fields = tuple(key_fields)
        self.records: list[dict[str, Any]] = []
        if self.path.exists():
            torn = False
            with self.path.open() as handle:
                for line in handle:
                    try:
                        self.records.append(current_names(json.loads(line)))
                    except json.JSONDecodeError:
                        torn = True  # cut by an interruption: it and anything after are redone
                        break
            if torn:
                self._rewrite()
        self._done = {self.key(record) for record in self.records}

    def key(self, record: dict[str, Any]) -> tuple[Any, ...]:
        """The values of ``record``'s key fields."""
        return tuple(record.get(field) for field in self.key_fields)

    def done(self, **key: Any) -> bool:
        """Whether a record with these key values is in the file."""
        return tuple(key.get(field) for field in self.key_fields) in self._done

    def append(self, record: dict[str, Any]) -> None:
        """Write one record as one line, durably, then remember it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.records.append(record)
        self._done.add(self.key(record))

    def extend(self, records: Sequence[dict[str, Any]]) -> None:
        """Write several records in one write and one fsync (a cut leaves whole lines only,
        or a torn last line that the next reader drops), then remember them."""
        if not records:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write("".join(json.dumps(record, sort_keys=True) + "\n" for record in records))
            handle.flush()
            os.fsync(handle.fileno())
        for record in records:
            self.records.append(record)
            self._done.add(self.key(record))

    def _rewrite(self) -> None:
        temporary = self.path.with_suffix(self.path.suffix + ".tmp")
        temporary.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in self.records))
        temporary.replace(self.path)


def mean_and_ci(values: Iterable[float]) -> tuple[float, float]:
    """Mean and half-width of a normal 95% confidence interval (0 for a single value)."""
    values = [float(value) for value in values]
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    variance = sum((value - mean) ** 2 for value in values) / (len(values) - 1)
    return mean, 1.96 * math.sqrt(variance / len(values))


#: Two-sided 95% Student t quantiles t_{0.975, df} for df = 1 .. 30.
_T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
          2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
          2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def mean_and_t_ci(values: Iterable[float]) -> tuple[float, float]:
    """Mean and half-width of a Student t 95% confidence interval (for a few seeds: with 3
    values the half-width is 4.30 standard errors, not 1.96); 0 for a single value."""
    values = [float(value) for value in values]
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    variance = sum((value - mean) ** 2 for value in values) / (len(values) - 1)
    df = len(values) - 1
    quantile = _T_975[df - 1] if df <= len(_T_975) else 1.96
    return mean, quantile * math.sqrt(variance / len(values))


#: Upper bounds of a suite's counts: beyond them a run would not finish (and its list of units
#: alone would fill the memory), so they are refused when the config is built.
MOST_SEEDS, MOST_REPEATS, MOST_PARTICLES, MOST_STEPS = 1000, 1000, 100_000, 10_000


def check_counts(**counts: tuple[Any, int]) -> None:
    """Raise a ValueError naming the first ``name=(value, most)`` that is not an int in
    [1, most]."""
    for name, (value, most) in counts.items():
        values = value if isinstance(value, tuple) else (value,)
        for item in values:
            if isinstance(item, bool) or not isinstance(item, int) or not 1 <= item <= most:
                raise ValueError(f"{name}={value!r}: pass ints from 1 to {most}.")


def counted(number: int, noun: str, plural: str | None = None) -> str:
    """``"1 prompt"``, ``"3 prompts"``: a count with its noun in the right number."""
    return f"{number} {noun if number == 1 else plural or noun + 's'}"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats are printed with 4 significant digits."""

    def cell(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
