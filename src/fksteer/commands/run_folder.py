"""The files every steering command writes: config.json, summary.json, results.jsonl, trace.jsonl.

    from fksteer.commands.run_folder import run_summary, write_json, write_jsonl, write_trace

``run_summary`` extends :meth:`SteeringResult.summary` with the prompts, the per-step trace
(ESS, resampling, rewards, per step and group) and wall-clock timings. ``write_trace`` writes
``trace.jsonl``: one line per step with everything :class:`~fksteer.smc.result.StepTrace` holds
(ancestors, tilts, dead particles and the seconds by part included), which is what
``fksteer report`` rebuilds a run's genealogy and traces from. ``environment`` (the machine and
the versions) and ``reproduce_command`` (the command line that reruns a run) go into
config.json.

The JSON writers themselves (atomic, NaN-safe) are :mod:`fksteer.bench.records`'s, re-exported
here: the one records module, below both the commands and the suites (bench never imports
commands).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fksteer.bench.records import clean_json, finite, write_json, write_jsonl

__all__ = [
    "run_summary",
    "trace_records",
    "step_records",
    "write_trace",
    "environment",
    "reproduce_command",
    "write_json",
    "write_jsonl",
    "finite",
    "TRACE_FILE",
]

#: The per-step trace of a run folder (one JSON line per step).
TRACE_FILE = "trace.jsonl"


#: The fields of each step that summary.json keeps (trace.jsonl keeps them all).
_SUMMARY_FIELDS = ("step", "scored", "ess", "resampled", "num_distinct", "reward_mean",
                   "reward_max")


def trace_records(result: Any) -> list[dict[str, Any]]:
    """One dict per step: ESS, resampled, distinct ancestors and rewards per group."""
    return [{name: record[name] for name in _SUMMARY_FIELDS} for record in step_records(result)]


def _listed(value: Any) -> Any:
    return None if value is None else value.tolist()


def step_records(result: Any) -> list[dict[str, Any]]:
    """One dict per step with every field of the run's :class:`StepTrace`, tensors as lists."""
    records = []
    for step in result.trace:
        records.append({
            "step": step.step,
            "scored": step.scored,
            "ess": step.ess.tolist(),
            "resampled": step.resampled.tolist(),
            "ancestors": _listed(step.ancestors),
            "num_distinct": _listed(step.num_distinct),
            "reward_mean": _listed(step.reward_mean),
            "reward_max": _listed(step.reward_max),
            "num_dead": _listed(step.num_dead),
            "lmbda": _listed(step.lmbda),
            "model_seconds": step.model_seconds,
            "decode_seconds": step.decode_seconds,
            "reward_seconds": step.reward_seconds - step.decode_seconds,
            "engine_seconds": step.engine_seconds,
        })
    return records


def write_trace(directory: str | Path, result: Any) -> None:
    """Write ``directory/trace.jsonl`` from ``result.trace`` (reward seconds exclude decoding)."""
    write_jsonl(Path(directory) / TRACE_FILE, step_records(result))


def environment() -> dict[str, Any]:
    """The machine, the accelerator and the versions of the packages a run may use."""
    from importlib import metadata

    import torch

    from fksteer.bench.suite import machine_info

    info = machine_info()
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name()
    versions = {}
    for package in ("fksteer", "numpy", "diffusers", "transformers", "matplotlib", "jinja2"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return {**info, "versions": versions}


def _option_text(value: Any) -> str | None:
    """A resolved option value as the command line writes it (None: not expressible)."""
    from fksteer.smc.config import AdaptiveTilt, LargestTilt, LinearRamp

    if isinstance(value, LinearRamp):
        return f"ramp:{value.start!r}:{value.end!r}"
    if isinstance(value, AdaptiveTilt) and value.pace == "ramp":
        return f"adaptive:{value.target!r}:{value.ess!r}"
    if isinstance(value, LargestTilt) and (value.ess, value.pace) == (0.5, "greedy"):
        return f"largest:{value.cap!r}:{value.final_ess!r}"
    if isinstance(value, (bool, int, float, str)):
        return str(value)
    return None


def reproduce_command(command: str, values: dict[str, Any], flags: dict[str, str]) -> str:
    """The ``fksteer COMMAND ...`` line that reruns a run with ``values`` (resolved options).

    ``flags`` maps the FKConfig fields to their flags (``FK_FIELDS``); every other option is
    ``--name-with-dashes``. Every option is written out, so the line depends on no config file
    and no default; a None FKConfig field is written ``none``, another None option left out.
    A value the command line cannot express (e.g. an adaptive tilt from the library) is named
    in a trailing comment.
    """
    import shlex

    skip = {"prompts", "prompts_file", "config", "world_size", "report"}
    words, unsaid = ["fksteer", command], []
    for name, value in values.items():
        if name in skip:
            continue
        flag = flags.get(name, "--" + name.replace("_", "-"))
        if isinstance(value, bool):
            words += [flag] if value else []
            continue
        if value is None:  # "none" where the option takes it (FKConfig fields), else unset
            words += [flag, "none"] if name in flags else []
            continue
        text = _option_text(value)
        if text is None:
            unsaid.append(flag)
        else:
            words += [flag, text]
    prompts = [str(prompt) for prompt in values.get("prompts") or []]
    words += ["--", *prompts] if any(p.startswith("-") for p in prompts) else prompts
    line = shlex.join(words)
    if values.get("world_size", 1) > 1:
        line = f"torchrun --nproc-per-node {values['world_size']} -m " + line[len("fksteer "):]
    if unsaid:
        line += f"  # {', '.join(unsaid)}: not expressible on the command line, see fk_config"
    return line


def run_summary(result: Any, prompts: list[Any], timings: dict[str, float]) -> dict[str, Any]:
    """The engine's summary, the prompts, the trace and the command's wall-clock timings."""
    summary = result.summary()
    summary["prompts"] = ["" if prompt is None else str(prompt) for prompt in prompts]
    summary["wall_seconds"] = timings
    summary["trace"] = trace_records(result)
    return clean_json(summary)
