"""The pipeline's own arguments, made ready for a steered call: `pipeline_arguments`.

    from fksteer.integrations.diffusers.arguments import pipeline_arguments, check_scheduler

`steer_pipeline` calls the pipeline with the user's keyword arguments, changed in four ways:
K images per prompt (``num_images_per_prompt``, or ``batch_size`` for unconditional pipelines);
precomputed prompt embeddings repeated K times when the pipeline does not repeat them;
``output_type="pt"`` and ``return_dict=True`` (the reward reads tensors); and the run's
generator. Everything that can be refused is refused here, before the pipeline runs.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch

from fksteer.integrations.diffusers.options import DiffusersOptions
from fksteer.integrations.diffusers.schedulers import GAUSSIAN_STEP_SCHEDULERS, scheduler_spec
from fksteer.smc.config import FKConfig

__all__ = ["pipeline_arguments", "check_scheduler", "PROMPT_TENSOR_SUFFIXES"]

#: Keyword arguments ending so hold one row per prompt (repeated K times when precomputed).
PROMPT_TENSOR_SUFFIXES = ("prompt_embeds", "prompt_embeds_mask", "prompt_attention_mask")

FLOW_EULER = "FlowMatchEulerDiscreteScheduler"


def check_scheduler(scheduler: Any, config: FKConfig, options: DiffusersOptions) -> None:
    """Refuse a scheduler the run cannot use, before any work: unsupported, a flow option on a
    scheduler that is not flow-matching Euler, or guidance on a step that is not Gaussian."""
    scheduler_spec(scheduler)  # refuses unsupported schedulers
    names = {cls.__name__ for cls in type(scheduler).__mro__}
    flow = FLOW_EULER in names
    if options.flow_eta is not None and not flow:
        raise ValueError(
            f"DiffusersOptions.flow_eta needs {FLOW_EULER}; the pipeline has "
            f"{type(scheduler).__name__}. Leave flow_eta=None for it."
        )
    if config.guidance != 0 and (
        not names & set(GAUSSIAN_STEP_SCHEDULERS) or (flow and options.flow_eta is None)
    ):
        raise ValueError(
            f"FKConfig.guidance needs a scheduler whose step is Gaussian: DDPMScheduler, "
            f"DDIMScheduler (eta > 0), EulerAncestralDiscreteScheduler, or {FLOW_EULER} with "
            f"DiffusersOptions.flow_eta; the pipeline has {type(scheduler).__name__}."
        )


def pipeline_arguments(
    pipe: Any,
    config: FKConfig,
    options: DiffusersOptions,
    pipeline_kwargs: dict[str, Any],
    generator: Any,
) -> tuple[dict[str, Any], list | None]:
    """The keyword arguments of the steered call, and one prompt per group for the reward."""
    K = config.num_particles
    parameters = inspect.signature(pipe.__call__).parameters
    kwargs = dict(pipeline_kwargs)
    for name in ("output_type", "return_dict"):
        if name in kwargs:
            raise ValueError(
                f"{name}={kwargs[name]!r}: steer_pipeline sets it (the reward reads the "
                "pipeline's output_type='pt' images); PIL images are in result.images."
            )
    if "output_type" not in parameters:
        raise ValueError(f"{type(pipe).__name__} has no output_type argument: not supported.")
    count = next((n for n in ("num_images_per_prompt", "batch_size") if n in parameters), None)
    if count is None:
        raise ValueError(
            f"{type(pipe).__name__} takes neither num_images_per_prompt nor batch_size: "
            "steer_pipeline cannot ask it for K particles per prompt."
        )
    if kwargs.get(count, K) not in (None, K):
        raise ValueError(
            f"{count}={kwargs[count]!r} conflicts with config.num_particles={K}: the particles "
            f"are the images per prompt; drop {count} or set num_particles={kwargs[count]}."
        )
    kwargs[count] = K
    prompts = _group_prompts(kwargs)
    if prompts is None and isinstance(kwargs.get("prompt_embeds"), torch.Tensor):
        prompts = _repeat_embeddings(kwargs, K)
        kwargs[count] = 1  # the embeddings already hold one row per particle
    prompts = _reward_prompts(prompts, options.reward_prompts)
    kwargs.update(output_type="pt", return_dict=True, generator=generator)
    return kwargs, prompts


def _group_prompts(kwargs: dict[str, Any]) -> list | None:
    """One prompt per group from ``prompt`` (text) or ``class_labels`` (class-conditional)."""
    prompt = kwargs.get("prompt")
    if prompt is None:
        labels = kwargs.get("class_labels")
        if labels is None:
            return None
        return list(labels) if isinstance(labels, (list, tuple)) else [labels]
    return [prompt] if isinstance(prompt, str) else list(prompt)


def _repeat_embeddings(kwargs: dict[str, Any], K: int) -> list:
    """Precomputed embeddings come one row per prompt; SD3 and Flux do not repeat them for
    num_images_per_prompt, so repeat them here (group-major). Returns the groups' prompts."""
    groups = kwargs["prompt_embeds"].shape[0]
    for name, value in list(kwargs.items()):
        if (
            isinstance(value, torch.Tensor)
            and name.endswith(PROMPT_TENSOR_SUFFIXES)
            and value.dim() > 0
            and value.shape[0] == groups
        ):
            kwargs[name] = value.repeat_interleave(K, dim=0)
    return [None] * groups


def _reward_prompts(prompts: list | None, given: Sequence[Any] | None) -> list | None:
    """``DiffusersOptions.reward_prompts`` where given (one per group), else ``prompts``."""
    if given is None:
        return prompts
    if prompts is not None and len(given) != len(prompts):
        raise ValueError(
            f"DiffusersOptions.reward_prompts has {len(given)} entries for "
            f"{len(prompts)} prompt(s): pass one per prompt."
        )
    return list(given)
