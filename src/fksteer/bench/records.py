"""Result files of a benchmark run: JSONL records, the resolved config, a markdown table.

    from fksteer.bench.records import RecordFile, write_json, markdown_table, mean_and_ci

A run writes one JSON line per completed unit of work. Lines are appended whole and flushed with
fsync, so an interrupted run leaves complete lines only (a torn last line is dropped on reading);
rerunning the same command skips the units already recorded.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["RecordFile", "write_json", "markdown_table", "mean_and_ci"]


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
                        self.records.append(json.loads(line))
                    except json.JSONDecodeError:
                        torn = True  # cut by an interruption: it and anything after are redone
                        break
            if torn:
                self._rewrite()
        self._done = {self.key(record) for record in self.records}

    def key(self, record: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(record.get(field) for field in self.key_fields)

    def done(self, **key: Any) -> bool:
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


    def _rewrite(self) -> None:
        temporary = self.path.with_suffix(self.path.suffix + ".tmp")
        temporary.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in self.records))
        temporary.replace(self.path)


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented JSON atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    temporary.replace(path)


def mean_and_ci(values: Iterable[float]) -> tuple[float, float]:
    """Mean and half-width of a normal 95% confidence interval (0 for a single value)."""
    values = [float(value) for value in values]
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    variance = sum((value - mean) ** 2 for value in values) / (len(values) - 1)
    return mean, 1.96 * math.sqrt(variance / len(values))


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats are printed with 4 significant digits."""

    def cell(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
