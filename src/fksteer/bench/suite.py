"""Shared parts of the prompt-level suites (`bench text`, `bench image`).

    from fksteer.bench.suite import run_units, seed_cell, machine_info, check_resumable

A suite is a list of units of work (one steering run: a method, a setting, a seed) over a set of
prompts. Each unit writes one JSONL record per prompt, keyed by the unit's fields and the
prompt's index; a unit whose prompts are all recorded is skipped, and a unit cut short by an
interruption is recomputed (it is deterministic under its seed) and only its missing prompt lines
are written, so a resumed run has no duplicate and no missing line.

Aggregates follow one rule: a metric is averaged over the prompts of a seed, then the seeds'
means give the mean and a Student t 95% interval (``mean_and_t_ci``): the interval is over seeds.
"""

from __future__ import annotations

import logging
import math
import os
import platform
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from fksteer.bench.records import RecordFile, mean_and_t_ci
from fksteer.distributed.communicator import Communicator
from fksteer.distributed.lockstep import Lockstep

__all__ = [
    "run_units",
    "seed_means",
    "seed_cell",
    "format_cell",
    "machine_info",
    "distinct_n",
    "check_resumable",
]

logger = logging.getLogger(__name__)


def machine_info() -> dict[str, Any]:
    """Where a run ran: saved in every config.json."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


def run_units(
    records: RecordFile | None,
    units: Sequence[dict[str, Any]],
    num_prompts: int,
    compute: Callable[[dict[str, Any]], list[dict[str, Any]]],
    progress: Callable[[Iterable], Iterable] | None = None,
    communicator: Communicator | None = None,
) -> int:
    """Compute every unit that misses a prompt line; append only the missing lines.

    ``compute(unit)`` returns one record per prompt, each holding the unit's fields and
    ``prompt_index``. Returns the number of units computed.

    Under torchrun (a process group of W ranks), rank 0 alone holds ``records`` (None on the
    others) and sends the to-do list; unit i runs on rank i % W, and after each round of W units
    rank 0 appends every rank's lines in to-do order, so the file is the one a single process
    writes (units are deterministic under their seeds, whichever rank computes them). An error
    on any rank stops every rank (:mod:`fksteer.distributed.lockstep`).
    """
    communicator = communicator or Communicator.current()
    if communicator.distributed:
        return _run_units_distributed(records, units, num_prompts, compute, progress,
                                      communicator)
    todo = _todo(records, units, num_prompts)
    for unit in progress(todo) if progress else todo:
        _append(records, unit, compute(unit), num_prompts)
    return len(todo)


def _todo(records: RecordFile, units: Sequence[dict[str, Any]], num_prompts: int) -> list:
    todo = [
        unit for unit in units
        if not all(records.done(**unit, prompt_index=i) for i in range(num_prompts))
    ]
    logger.info("%d of %d units to run", len(todo), len(units))
    return todo


def _append(records: RecordFile, unit: dict[str, Any], lines: list[dict[str, Any]],
            num_prompts: int) -> None:
    if len(lines) != num_prompts:
        raise RuntimeError(f"unit {unit} gave {len(lines)} records for {num_prompts} prompts")
    records.extend([line for line in lines if not records.done(**line)])


def _run_units_distributed(records, units, num_prompts, compute, progress, communicator) -> int:
    lockstep = Lockstep(communicator)
    root = communicator.is_root
    todo = lockstep.sync(_todo(records, units, num_prompts) if root else None)[0]
    world, rank = communicator.world_size, communicator.rank
    rounds = range(0, len(todo), world)
    for start in progress(rounds) if progress and root else rounds:
        index = start + rank
        mine = lockstep.run(compute, todo[index]) if index < len(todo) else None
        gathered = lockstep.gather(mine, root=0)
        if root:
            for offset, lines in enumerate(gathered):
                if start + offset < len(todo):
                    _append(records, todo[start + offset], lines, num_prompts)
    return len(todo)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def seed_means(
    records: Iterable[dict[str, Any]], where: dict[str, Any], metric: str,
    transform: Callable[[float], float] | None = None,
) -> dict[int, float]:
    """Per seed, the mean of ``metric`` over the prompt records that match ``where``.

    Missing or non-finite values are skipped; ``transform`` applies to each seed's mean (e.g.
    exp of a mean negative log-likelihood gives a perplexity).
    """
    by_seed: dict[int, list[float]] = {}
    for record in records:
        if all(record.get(field) == value for field, value in where.items()):
            value = record.get(metric)
            if _finite(value):
                by_seed.setdefault(record["seed"], []).append(float(value))
    means = {seed: sum(values) / len(values) for seed, values in by_seed.items()}
    if transform is not None:
        means = {seed: transform(value) for seed, value in means.items()}
    return dict(sorted(means.items()))


def seed_cell(
    records: Iterable[dict[str, Any]], where: dict[str, Any], metric: str,
    transform: Callable[[float], float] | None = None,
) -> tuple[float, float, int] | None:
    """(mean over seeds, 95% t half-width, number of seeds), or None when nothing matches."""
    means = seed_means(records, where, metric, transform)
    if not means:
        return None
    mean, half_width = mean_and_t_ci(means.values())
    return mean, half_width, len(means)


def format_cell(cell: tuple[float, float, int] | None, percent: bool = False,
                digits: int = 3) -> str:
    """``mean ± half-width`` (as percentages with ``percent``); ``-`` for a missing cell."""
    if cell is None:
        return "-"
    mean, half_width, _ = cell
    if abs(half_width) < 1e-9 * max(1.0, abs(mean)):
        half_width = 0.0  # rounding noise of identical values
    if percent:
        return f"{100 * mean:.1f}% ± {100 * half_width:.1f}"
    spread = f"{half_width:.0f}" if abs(half_width) >= 100 else f"{half_width:.2g}"
    return f"{mean:.{digits}g} ± {spread}"


def distinct_n(texts: Sequence[str], n: int) -> float | None:
    """Distinct n-grams over all n-grams of ``texts`` (whitespace words); None with none."""
    grams: list[tuple[str, ...]] = []
    for text in texts:
        words = str(text).split()
        grams += [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else None


def check_resumable(out_dir: str | Path, config: dict[str, Any],
                    may_change: Sequence[str]) -> None:
    """Refuse to resume into ``out_dir`` when its saved config differs in a setting that changes
    what a recorded line means (lambda, replicas, the prompts, the torch threads behind each
    timing...). Settings in ``may_change`` (seeds, particle counts, methods, ...) only add or drop
    units, so they may differ. A folder with results but no config.json is refused too.

    The ValueError names the first differing settings with the value saved there and the value
    given now; the command line turns it into exit status 2.
    """
    import json

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir}: exists and is not a directory; pick another path.")
    path = out_dir / "config.json"
    if not path.is_file():
        if (out_dir / "results.jsonl").exists():
            raise ValueError(
                f"--out {out_dir} holds results.jsonl but no config.json, so its settings are "
                "unknown: pass a new --out, or delete that directory to start over."
            )
        return
    try:
        saved = _resume_settings(json.loads(path.read_text()))
    except (json.JSONDecodeError, AttributeError):
        raise ValueError(f"--out {out_dir}: its config.json is not a benchmark's config; pass a "
                         "new --out, or delete that directory to start over.") from None
    fresh = _resume_settings(json.loads(json.dumps(config)))  # tuples -> lists, as saved
    changed = sorted(field for field in set(saved) | set(fresh) if field not in may_change
                     and (field in saved, saved.get(field)) != (field in fresh, fresh.get(field)))
    if changed:
        shown = "; ".join(f"{field} is {_shown(saved, field)} there and "
                          f"{_shown(fresh, field)} here" for field in changed[:3])
        more = f" (and {len(changed) - 3} more)" if len(changed) > 3 else ""
        raise ValueError(
            f"--out {out_dir} holds results of other settings: {shown}{more}. Rerun with the "
            "same settings to resume, pass a new --out, or delete that directory to start over."
        )


def _resume_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The settings of a saved config that a resume must match: every field, except the
    machine description, of which only the torch threads (a setting: it changes timings) count."""
    settings = {field: value for field, value in config.items()
                if field not in ("machine", "perplexity_note")}
    machine = config.get("machine")
    if isinstance(machine, dict) and "torch_threads" in machine:
        settings["torch_threads"] = machine["torch_threads"]
    return settings


def _shown(settings: dict[str, Any], field: str) -> str:
    text = repr(settings[field]) if field in settings else "unset"
    return text if len(text) <= 80 else text[:77] + "..."
