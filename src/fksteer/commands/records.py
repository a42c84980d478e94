"""The files every steering command writes: config.json, summary.json and results.jsonl.

    from fksteer.commands.records import run_summary, write_json, write_jsonl

``run_summary`` extends :meth:`SteeringResult.summary` with the prompts, the per-step trace
(ESS, resampling, rewards, per step and group) and wall-clock timings.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["run_summary", "trace_records", "write_json", "write_jsonl", "finite"]


def finite(value: float) -> float | None:
    """JSON has no NaN or infinity: those become null."""
    value = float(value)
    return value if math.isfinite(value) else None


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return finite(value)
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(item) for item in value]
    return value


def trace_records(result: Any) -> list[dict[str, Any]]:
    """One dict per step: ESS, resampled, distinct ancestors and rewards per group."""
    records = []
    for step in result.trace:
        records.append({
            "step": step.step,
            "scored": step.scored,
            "ess": step.ess.tolist(),
            "resampled": step.resampled.tolist(),
            "num_distinct": None if step.num_distinct is None else step.num_distinct.tolist(),
            "reward_mean": None if step.reward_mean is None else step.reward_mean.tolist(),
            "reward_max": None if step.reward_max is None else step.reward_max.tolist(),
        })
    return records


def run_summary(result: Any, prompts: list[Any], timings: dict[str, float]) -> dict[str, Any]:
    """The engine's summary, the prompts, the trace and the command's wall-clock timings."""
    summary = result.summary()
    summary["prompts"] = ["" if prompt is None else str(prompt) for prompt in prompts]
    summary["wall_seconds"] = timings
    summary["trace"] = trace_records(result)
    return _clean(summary)


def write_json(path: str | Path, data: Any) -> None:
    Path(path).write_text(json.dumps(_clean(data), indent=2, default=str) + "\n")


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    with open(path, "w") as handle:
        for record in records:
            handle.write(json.dumps(_clean(record), default=str) + "\n")
