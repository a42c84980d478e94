"""`fksteer text`: steer a masked diffusion language model and save the texts and records.

    from fksteer.commands.text import TEXT_DEFAULTS, run_text
    run_text(values)     # values: TEXT_DEFAULTS updated by --config and the command line

``--model embedded`` (the default) is the embedded fortunes model
(:func:`fksteer.embedded.text_model.load_text_model`); ``--model embedded-minilm`` is the
MiniLM encoder with an MDLM-trained top (:func:`fksteer.embedded.minilm_text.
load_minilm_text_model`), not yet more fluent (BENCHMARKS.md, "Text fluency"); anything
else is a transformers masked LM id or local folder, loaded with
:meth:`TransformersDenoiser.from_pretrained`. The default reward, ``toxicity``, is the FK
steering paper's rare-attribute demo (red-teaming: steering towards a rare attribute).

Writes into ``out``: ``results.jsonl`` (one line per particle: prompt, group, particle, text,
reward, weight), ``texts.md`` (each prompt's texts by weight), ``summary.json`` and
``config.json``; the directory appears only when the run has finished.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
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
from fksteer.smc.wrapper import ModelWrapper

if TYPE_CHECKING:  # the parser imports this module without torch
    import torch

__all__ = ["EMBEDDED_TEXT_MODELS", "TEXT_DEFAULTS", "run_text", "load_text_runner"]

logger = logging.getLogger(__name__)

#: ``--model`` names of the models this project ships (the first is the default).
EMBEDDED_TEXT_MODELS = ("embedded", "embedded-minilm")

TEXT_DEFAULTS: dict[str, Any] = {
    "prompts": ["You will", "The best", "Never"],
    "prompts_file": None,
    "model": "embedded",
    "reward": "toxicity",
    **{field: getattr(FKConfig(), field) for field in FK_FIELDS},
    "method": "fk",
    **SEARCH_DEFAULTS,
    "steps": 32,
    "seq_len": 32,
    "num_x0_samples": 1,
    "device": "cpu",
    "dtype": "float32",
    "seed": 0,
    "threads": None,
    "config": None,
    "out": "runs/text",
    "report": True,
    "parallel": "prompts",
    "per_group_seeds": False,
    "overwrite": False,
}


def load_text_runner(values: dict[str, Any], device: torch.device, dtype: torch.dtype):
    """The MaskedDiffusionModel that ``--model`` names; errors name --model and the fix."""
    from fksteer.commands.image_models import looks_like_path
    from fksteer.integrations.masked import MaskedDiffusionModel, TransformersDenoiser

    name = values["model"]
    sizes = {"seq_len": values["seq_len"], "num_steps": values["steps"],
             "num_x0_samples": values["num_x0_samples"]}
    if name in EMBEDDED_TEXT_MODELS:
        from fksteer.embedded.minilm_text import load_minilm_text_model
        from fksteer.embedded.text_model import load_text_model

        loader = load_minilm_text_model if name == "embedded-minilm" else load_text_model
        try:
            model = loader(**sizes, device=device)
        except FileNotFoundError as error:
            raise FileNotFoundError(f"--model {name}: {error}") from None
        model.denoiser.to(device=device, dtype=dtype)
        return model
    path = Path(name).expanduser()
    fix = ("pass embedded, embedded-minilm, a transformers masked-LM id, or a local folder "
           "saved by save_pretrained")
    if path.exists() and not (path / "config.json").is_file():
        raise ValueError(f"--model {name}: no config.json there; {fix}.")
    if not path.exists() and looks_like_path(name):
        raise FileNotFoundError(f"--model {name}: no such directory; {fix}.")
    if not path.exists():  # a hub id: its config from the cache (or the hub), one clear message
        from fksteer.rewards.base import require
        from fksteer.rewards.hub import load_pretrained

        transformers = require("transformers", "text", what="--model (a hub masked LM)")
        load_pretrained(transformers.AutoConfig.from_pretrained, name, what=f"--model {name}")
    try:
        denoiser = TransformersDenoiser.from_pretrained(str(path) if path.exists() else name,
                                                        device=device)
    except ImportError:
        raise
    except ValueError as error:
        raise ValueError(f"--model {name}: {error}") from None
    except Exception as error:  # hub, network and format errors all mean: cannot load it
        raise ValueError(
            f"--model {name}: cannot load a masked LM ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); {fix}."
        ) from None
    denoiser.model.to(dtype=dtype)
    suppress = [i for i in getattr(denoiser.tokenizer, "all_special_ids", []) if i is not None]
    return MaskedDiffusionModel(denoiser, **sizes, suppress_token_ids=suppress, device=device)


def run_text(values: dict[str, Any]) -> str:
    """Validate, steer and write; return a short text report for the terminal."""
    from fksteer.commands.prompts import read_prompts_file
    from fksteer.commands.reward_option import check_reward_modality, ready_reward
    from fksteer.commands.staging import check_writable, staged_directory
    from fksteer.distributed.launch import local_device, start_process_group, stop_process_group
    from fksteer.distributed.modes import steer_in_mode
    from fksteer.rewards import load_reward
    from fksteer.smc.engine import steer

    started = time.perf_counter()
    set_threads(values["threads"], embedded=values["model"] in EMBEDDED_TEXT_MODELS)
    config = build_fk_config(values)
    check_reward_modality(values["reward"], "text")
    method = build_method(values)
    if config.guidance != 0:
        raise ValueError(
            "--reward-guidance: masked diffusion moves tokens, not Gaussian states; gradient "
            "guidance does not apply to text models. Leave it at 0."
        )
    for option in ("seq_len", "num_x0_samples"):
        value = values[option]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"--{option.replace('_', '-')} {value!r}: pass a positive int.")
    prompts = (read_prompts_file(values["prompts_file"]) if values["prompts_file"]
               else list(values["prompts"]))
    if not prompts:
        raise ValueError("no prompts: pass PROMPT arguments or --prompts-file FILE.")
    device = local_device(resolve_device(values["device"]))  # under torchrun: cuda:LOCAL_RANK
    communicator = start_process_group(device)  # one process unless launched by torchrun
    check_writable(values["out"], overwrite=values["overwrite"])
    try:
        reward = ready_reward(load_reward(values["reward"]), values["reward"])
    except ValueError as error:
        raise ValueError(f"--reward: {error}") from None
    except ImportError as error:
        raise ImportError(f"--reward {values['reward']}: {error}") from None
    model = load_text_runner(values, device, torch_dtype(values["dtype"]))
    for prompt in prompts:
        model.prompt_ids(prompt)  # a ValueError names a prompt the model cannot take
    loaded = time.perf_counter()
    progress = _progress_bar(model.num_steps) if communicator.is_root else None
    # one process: one generator, as before; under torchrun (or with per-group seeds) see
    # fksteer.distributed.modes. Rank 0 gets the whole result and writes; the others None.
    try:
        result = steer_in_mode(
            lambda group_prompts, generator: steer(
                _WithProgress(model, progress), reward, config, prompts=group_prompts,
                generator=generator, method=method),
            model, reward, config, prompts, values["seed"], method,
            parallel=values["parallel"], per_group_seeds=values["per_group_seeds"],
            communicator=communicator,
        )
    except BaseException:
        if progress is not None:
            progress.leave = False  # a failed run's bar is removed, not left at its last step
        raise
    finally:
        if progress is not None:
            progress.close()
    if result is None:
        stop_process_group()  # waits for rank 0 to finish writing
        return ""
    values = {**values, "world_size": communicator.world_size}
    steered = time.perf_counter()
    timings = {"load": loaded - started, "steer": steered - loaded}
    with staged_directory(values["out"], overwrite=values["overwrite"]) as work:
        _write(work, values, config, prompts, result, timings)
    stop_process_group()
    if values["report"]:
        from fksteer.report import write_report

        write_report(values["out"])
    return _report(values, prompts, result, timings)


def _progress_bar(total: int):
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="steer", unit="step")


class _WithProgress(ModelWrapper):
    """The model, ticking a progress bar at each ``move``."""

    def __init__(self, model, bar):
        super().__init__(model)
        self._bar = bar

    def move(self, state, model_output, step, generator):
        if self._bar is not None:
            self._bar.update(1)
        return self.model.move(state, model_output, step, generator)


def _texts(result) -> list[list[str]]:
    return [[str(text) for text in row] for row in result.samples]


def _write(work, values, config, prompts, result, timings) -> None:
    import torch

    from fksteer.commands.run_folder import (
        environment,
        reproduce_command,
        run_summary,
        write_json,
        write_jsonl,
        write_trace,
    )

    texts = _texts(result)
    records, markdown = [], ["# fksteer text\n"]
    for group, prompt in enumerate(prompts):
        markdown.append(f"## {prompt!r}\n")
        for particle in range(result.num_particles):
            records.append({
                "prompt": prompt, "group": group, "particle": particle,
                "text": texts[group][particle],
                "reward": float(result.rewards[group, particle]),
                "weight": float(result.weights[group, particle]),
                "best": particle == int(result.best[group]),
            })
        order = torch.argsort(result.weights[group], descending=True, stable=True).tolist()
        for particle in order:
            markdown.append(f"- w={float(result.weights[group, particle]):.3f} "
                            f"r={float(result.rewards[group, particle]):.3f}: "
                            f"{texts[group][particle]!r}")
        markdown.append("")
    write_jsonl(work / "results.jsonl", records)
    (work / "texts.md").write_text("\n".join(markdown) + "\n")
    summary = run_summary(result, prompts, timings)
    summary["best_texts"] = [texts[g][int(result.best[g])] for g in range(len(prompts))]
    write_json(work / "summary.json", summary)
    write_trace(work, result)
    options = {key: value for key, value in values.items() if key not in FK_FIELDS}
    rerun = reproduce_command("text", {**values, "prompts": list(prompts), "prompts_file": None},
                              FK_FIELDS)
    write_json(work / "config.json", {"command": "text", "fk_config": config.to_dict(),
                                      "reproduce": rerun, "machine": environment(),
                                      **options, "prompts": list(prompts)})


def _report(values, prompts, result, timings) -> str:
    from fksteer.bench.records import counted

    texts = _texts(result)
    lines = [f"{values['method']} on {values['model']} with reward {values['reward']}: "
             f"{counted(len(prompts), 'prompt')} x {counted(result.num_particles, 'particle')}, "
             f"NFE {result.nfe}, "
             f"{timings['steer']:.1f} s"]
    for group, prompt in enumerate(prompts):
        best = int(result.best[group])
        lines.append(f"  {prompt!r} -> {texts[group][best]!r} "
                     f"(reward {float(result.rewards[group, best]):.3f})")
    lines.append(f"results in {values['out']}/ ({'report.html, ' if values['report'] else ''}"
                 "results.jsonl, texts.md, trace.jsonl, summary.json, config.json)")
    return "\n".join(lines)
