"""`fksteer sample`: steer an image model and save every particle, grids and the run's records.

    from fksteer.commands.sample import SAMPLE_DEFAULTS, run_sample
    run_sample(values)     # values: SAMPLE_DEFAULTS updated by --config and the command line

Writes into ``out``: ``images/g{group}_k{particle}.png`` (every particle), ``grid_g{group}.png``
per prompt (its prompt above; particles by weight, heaviest first, each captioned with its weight
and reward, the highest reward framed in red),
``results.jsonl`` (one line per particle: prompt, group, particle, reward, weight, path),
``summary.json`` (log Z per group, ESS trace, NFE, samples scored, timings) and ``config.json``
(the resolved options and FKConfig). Everything is validated (model, reward, prompts, config,
``out``) before the run; the directory appears only when the run has finished. Under torchrun
the prompts (``--parallel prompts``, per-group seeds) or every prompt's particles (``--parallel
particles``) are split over the processes, and rank 0 alone writes (:mod:`fksteer.distributed`).
"""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING, Any

from fksteer.commands.options import (
    FK_FIELDS,
    SEARCH_DEFAULTS,
    build_fk_config,
    build_method,
    resolve_device,
    set_threads,
    torch_dtype,
)
from fksteer.smc.config import FKConfig

if TYPE_CHECKING:  # annotations only: the parser imports this module without torch
    import torch

__all__ = [
    "SAMPLE_DEFAULTS", "EMBEDDED_REWARD", "run_sample", "load_image_reward", "write_image_run"
]

logger = logging.getLogger(__name__)

#: The reward name that means: the embedded steering classifier, log p(prompt's class | x).
EMBEDDED_REWARD = "embedded-classifier"

SAMPLE_DEFAULTS: dict[str, Any] = {
    "prompts": ["sneaker", "bag", "dress"],
    "prompts_file": None,
    "model": "embedded-weak",
    "reward": EMBEDDED_REWARD,
    **{field: getattr(FKConfig(), field) for field in FK_FIELDS},
    "method": "fk",
    **SEARCH_DEFAULTS,
    "steps": 50,
    "guidance_scale": 1.0,
    "parallel": "prompts",
    "per_group_seeds": False,
    "device": "cpu",
    "dtype": "float32",
    "seed": 0,
    "threads": None,
    "config": None,
    "out": "runs/sample",
    "report": True,
    "overwrite": False,
}


def load_image_reward(name: str, embedded: bool, device: torch.device):
    """The reward named by ``--reward``; the embedded classifier only for embedded models."""
    if name == EMBEDDED_REWARD:
        if not embedded:
            raise ValueError(
                f"--reward {EMBEDDED_REWARD} scores Fashion-MNIST classes and needs an embedded "
                "model: pass --reward NAME or package.module:function for this --model."
            )
        from fksteer.embedded.classifier import load_classifier
        from fksteer.embedded.fashion import CLASS_NAMES
        from fksteer.rewards.classifier import ClassifierLogProb

        return ClassifierLogProb(load_classifier("steering"), labels=CLASS_NAMES,
                                 transform=lambda images: images.float(), device=device)
    from fksteer.rewards import load_reward

    try:
        return load_reward(name)
    except ValueError as error:
        raise ValueError(f"--reward: {error}") from None
    except ImportError as error:
        raise ImportError(f"--reward {name}: {error}") from None


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", _text(text).lower()).strip("-")[:40] or "prompt"


def _text(prompt: Any) -> str:
    return "" if prompt is None else str(prompt)


def run_sample(values: dict[str, Any]) -> str:
    """Validate, steer and write; return a short text report for the terminal."""
    from fksteer.commands.image_models import load_image_runner, locate_image_model
    from fksteer.commands.prompts import read_prompts_file
    from fksteer.commands.reward_option import check_reward_modality, ready_reward
    from fksteer.commands.staging import check_writable, staged_directory
    from fksteer.distributed.launch import local_device, start_process_group, stop_process_group
    from fksteer.distributed.modes import steer_in_mode

    started = time.perf_counter()
    embedded = locate_image_model(values["model"]) == "embedded"
    set_threads(values["threads"], embedded=embedded)
    config = build_fk_config(values)
    check_reward_modality(values["reward"], "image")
    method = build_method(values)
    prompts = (read_prompts_file(values["prompts_file"]) if values["prompts_file"]
               else list(values["prompts"]))
    if not prompts:
        raise ValueError("no prompts: pass PROMPT arguments or --prompts-file FILE.")
    device = local_device(resolve_device(values["device"]))  # under torchrun: cuda:LOCAL_RANK
    check_writable(values["out"], overwrite=values["overwrite"])
    communicator = start_process_group(device)  # one process unless launched by torchrun
    reward = ready_reward(load_image_reward(values["reward"], embedded, device), values["reward"])
    runner = load_image_runner(values["model"], values["steps"], values["guidance_scale"],
                               device, torch_dtype(values["dtype"]))
    prompts = runner.check_prompts(prompts)
    loaded = time.perf_counter()
    logger.info("steering %d prompts x %d particles with %s", len(prompts),
                config.num_particles, runner.description)
    # one process: runner.run with one generator, as before; distributed (or per-group seeds):
    # see fksteer.distributed.modes. Rank 0 gets the whole result and writes; the others None.
    result = steer_in_mode(
        lambda group_prompts, generator: runner.run(reward, config, group_prompts, generator,
                                                    method),
        None if runner.kind == "pipeline" else runner.model, reward, config, prompts,
        values["seed"], method, parallel=values["parallel"],
        per_group_seeds=values["per_group_seeds"], communicator=communicator,
    )
    steered = time.perf_counter()
    if result is None:
        stop_process_group()  # waits for rank 0 to finish writing
        return ""
    values = {**values, "world_size": communicator.world_size}
    samples = result.samples.detach().float().cpu()  # (G, K, C, H, W)
    timings = {"load": loaded - started, "steer": steered - loaded}
    with staged_directory(values["out"], overwrite=values["overwrite"]) as work:
        _write(work, values, config, prompts, result, samples, timings)
    stop_process_group()
    if values["report"]:
        from fksteer.report import write_report

        write_report(values["out"])
    return _report(values, prompts, result, timings)


def write_image_run(work, prompts, result, samples, timings, config_record) -> None:
    """An image run's folder: every particle's PNG, a labelled grid per prompt, results.jsonl,
    summary.json, trace.jsonl and ``config_record`` as config.json (what ``fksteer report``
    reads)."""
    from fksteer.commands.images import labelled, particle_row, save_png, to_pil_image
    from fksteer.commands.run_folder import run_summary, write_json, write_jsonl, write_trace

    records = []
    for group, prompt in enumerate(prompts):
        for particle in range(result.num_particles):
            path = f"images/g{group:03d}_k{particle:03d}.png"
            save_png(to_pil_image(samples[group, particle]), work / path)
            records.append({
                "prompt": _text(prompt), "group": group, "particle": particle,
                "reward": float(result.rewards[group, particle]),
                "weight": float(result.weights[group, particle]),
                "best": particle == int(result.best[group]), "path": path,
            })
        row = particle_row(samples[group], result.weights[group], best=int(result.best[group]),
                           rewards=result.rewards[group])
        save_png(labelled(row, _text(prompt)), work / f"grid_g{group:03d}_{_slug(prompt)}.png")
    write_jsonl(work / "results.jsonl", records)
    write_json(work / "summary.json", run_summary(result, prompts, timings))
    write_trace(work, result)
    write_json(work / "config.json", config_record)


def _write(work, values, config, prompts, result, samples, timings) -> None:
    from fksteer.commands.run_folder import environment, reproduce_command

    options = {key: value for key, value in values.items() if key not in FK_FIELDS}
    rerun = reproduce_command("sample", {**values, "prompts": list(prompts), "prompts_file": None},
                              FK_FIELDS)
    write_image_run(work, prompts, result, samples, timings, {
        "command": "sample", "fk_config": config.to_dict(), "reproduce": rerun,
        "machine": environment(), **options, "prompts": [_text(p) for p in prompts],
    })


def _report(values, prompts, result, timings) -> str:
    from fksteer.bench.records import counted

    lines = [f"{values['method']} on {values['model']}: {counted(len(prompts), 'prompt')} x "
             f"{counted(result.num_particles, 'particle')}, NFE {result.nfe}, samples scored "
             f"by the reward {result.samples_scored}, {timings['steer']:.1f} s"]
    for group, prompt in enumerate(prompts):
        best = int(result.best[group])
        lines.append(f"  {_text(prompt)!r}: best reward {float(result.rewards[group, best]):.3f}, "
                     f"log Z {float(result.log_evidence[group]):.3f}, "
                     f"final ESS {float(result.ess[group]):.2f}")
    lines.append(f"results in {values['out']}/ ({'report.html, ' if values['report'] else ''}"
                 "grid_*.png, images/, results.jsonl, trace.jsonl, summary.json, config.json)")
    return "\n".join(lines)
