"""`steer`: run G groups of K particles of any StepModel through a ParticleSystem.

    from fksteer import steer, FKConfig
    result = steer(model, reward, FKConfig(num_particles=8), prompts=["a", "b"], generator=g)

This module is the sampling loop; the weights, evidence, potentials and resampling live in
:mod:`fksteer.smc.particles`. At each step the loop calls ``model.predict``, lets the particle
system score the clean prediction and resample, reorders the model's state and output by the
ancestors it returns, then calls ``model.move`` for the next state. With ``FKConfig.guidance``
> 0 the move is ``model.guided_move`` along the reward gradient of :mod:`fksteer.smc.guidance`,
and the particle system multiplies each weight by the proposal's density ratio.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from fksteer.smc.config import FKConfig, guidance_strength
from fksteer.smc.guidance import reward_gradient
from fksteer.smc.particles import AllParticlesDeadError, ParticleSystem, engine_generator
from fksteer.smc.protocol import GuidedStepModel, Reward, StepModel
from fksteer.smc.result import SteeringResult

__all__ = ["steer", "AllParticlesDeadError", "engine_generator"]


def steer(
    model: StepModel,
    reward: Reward,
    config: FKConfig,
    *,
    prompts: Sequence[Any] | str | None = None,
    generator: torch.Generator | None = None,
    method: str = "fk",
    guidance_batch_size: int | None = None,
) -> SteeringResult:
    """Sample from p(x_0) exp(lambda r(x_0)) / Z with K particles per prompt.

    Args:
        model: any :class:`~fksteer.smc.protocol.StepModel`.
        reward: a callable ``reward(samples, prompts)`` returning one float per sample (see
            :class:`~fksteer.smc.protocol.Reward`); it is called on flat batches, chunked to its
            ``batch_size`` attribute when it has one.
        config: :class:`~fksteer.smc.config.FKConfig`.
        prompts: one prompt per group (a single string is one group); ``None`` runs one group and
            passes ``prompts=None`` to the reward.
        generator: the model's noise; ``None`` seeds a fresh CPU generator. The engine's draws
            come from a generator derived from its seed
            (:func:`~fksteer.smc.particles.engine_generator`).
        method: ``"fk"`` steers; the baselines run through the same path with no intermediate
            reward calls: ``"base"`` (uniform weights), ``"best_of_n"`` (weight 1 on the best final
            reward) and ``"importance"`` (weights exp(lambda r(x_0))). Their ``log_evidence`` is
            the importance estimate log_mean_exp(lambda r(x_0)). With ``config.guidance`` > 0
            the baselines use the guided proposal too: ``"importance"`` carries its density
            ratio (exact), ``"base"`` does not (plain guided sampling, biased).
        guidance_batch_size: particles per backward pass of the guidance gradient (default:
            the reward's ``batch_size``, else all).

    Returns:
        a :class:`~fksteer.smc.result.SteeringResult`.

    Raises:
        ValueError: bad arguments, or a reward of +inf or of the wrong length.
        AllParticlesDeadError: every particle of a group got a NaN or -inf reward.
    """
    if not isinstance(model, StepModel):
        raise ValueError(
            f"model {type(model).__name__} does not implement the StepModel protocol "
            "(num_steps, init, predict, move, decode, permute, final_sample)."
        )
    num_predictions = getattr(model, "num_predictions", 1)
    system = ParticleSystem(  # validates the arguments
        reward,
        config,
        num_steps=model.num_steps,
        prompts=prompts,
        generator=generator,
        method=method,
        num_predictions=num_predictions,
    )
    guided = config.guidance != 0
    if guided and not isinstance(model, GuidedStepModel):
        raise ValueError(
            f"FKConfig.guidance={config.guidance!r} needs a model whose step is Gaussian "
            f"(GuidedStepModel: guidance_input, clean_from, guided_move); "
            f"{type(model).__name__} is not one. Set guidance=0."
        )
    generator = system.generator
    with torch.no_grad():
        state = model.init(system.group_prompts, system.num_particles, generator)
        for step in range(system.num_steps):
            start = time.perf_counter()
            output, prediction = model.predict(state, step, generator)
            model_seconds = _elapsed(start, prediction)
            decode_seconds = permute_seconds = 0.0
            if system.scores(step):
                start = time.perf_counter()
                decoded = model.decode(prediction, final=False)
                decode_seconds = time.perf_counter() - start
                ancestors = system.score(step, decoded)
                if ancestors is not None:
                    start = time.perf_counter()
                    state, output = model.permute(state, output, ancestors)
                    permute_seconds = time.perf_counter() - start
            start = time.perf_counter()
            strength = guidance_strength(config, step, system.num_steps) if guided else 0.0
            if strength:
                gradient = reward_gradient(
                    model.guidance_input(state),
                    lambda x, rows, state=state, step=step: model.clean_from(state, x, rows, step),
                    lambda clean: model.decode(clean, final=False),
                    reward,
                    system.reward_prompts,
                    strength,
                    guidance_batch_size,
                )
                state, log_ratio = model.guided_move(state, output, step, generator, gradient)
                system.reweight(step, log_ratio)
            else:
                state = model.move(state, output, step, generator)
            model_seconds += _elapsed(start, state)
            particles = system.num_groups * system.num_particles
            system.record(
                step,
                model_seconds=model_seconds,
                reward_seconds=decode_seconds,
                engine_seconds=permute_seconds,
                # a guided step evaluates the model a second time, with gradients
                evaluations=2 * particles if strength else particles,
            )
        start = time.perf_counter()
        decoded = model.decode(model.final_sample(state), final=True)
        return system.finish(decoded, reward_seconds=time.perf_counter() - start)


def _elapsed(start: float, synchronise_on: Any) -> float:
    """Seconds since ``start``, after waiting for asynchronous device work on ``synchronise_on``."""
    if isinstance(synchronise_on, torch.Tensor) and synchronise_on.device.type == "cuda":
        torch.cuda.synchronize(synchronise_on.device)
    return time.perf_counter() - start
