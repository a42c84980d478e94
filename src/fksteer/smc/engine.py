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

import functools
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch

from fksteer.smc.config import SEARCH_METHODS, FKConfig, SearchConfig
from fksteer.smc.guidance import reward_gradient
from fksteer.smc.particles import AllParticlesDeadError, ParticleSystem
from fksteer.smc.plan import StepTimes, engine_generator, require_guided_model
from fksteer.smc.protocol import Reward, StepModel, is_step_model
from fksteer.smc.result import SteeringResult
from fksteer.smc.rows import has_particle_rows, permute_particles

__all__ = ["steer", "run_system", "SweepHooks", "AllParticlesDeadError", "engine_generator"]


def steer(
    model: StepModel,
    reward: Reward,
    config: FKConfig,
    *,
    prompts: Sequence[Any] | str | None = None,
    generator: torch.Generator | None = None,
    method: str | SearchConfig = "fk",
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
            (:func:`~fksteer.smc.plan.engine_generator`).
        method: ``"fk"`` steers; the baselines run through the same path with no intermediate
            reward calls: ``"base"`` (uniform weights), ``"best_of_n"`` (weight 1 on the best final
            reward) and ``"importance"`` (weights exp(lambda r(x_0))). Their ``log_evidence`` is
            the importance estimate log_mean_exp(lambda r(x_0)). With ``config.guidance`` > 0
            the baselines use the guided proposal too: ``"importance"`` carries its density
            ratio (exact), ``"base"`` does not (plain guided sampling, biased). The searches
            ``"svdd"``, ``"code"`` and ``"beam"`` (default options), or a
            :class:`~fksteer.smc.config.SearchConfig`, keep the best of M candidates per
            particle instead of weighting (:mod:`fksteer.smc.search`).
        guidance_batch_size: particles per backward pass of the guidance gradient (default:
            the reward's ``batch_size``, else all).

    Returns:
        a :class:`~fksteer.smc.result.SteeringResult`.

    Raises:
        ValueError: bad arguments, or a reward of +inf or of the wrong length.
        AllParticlesDeadError: every particle of a group got a NaN or -inf reward.
    """
    if not is_step_model(model):
        raise ValueError(
            f"model {type(model).__name__} does not implement the StepModel protocol "
            "(num_steps, init, predict, move, decode, final_sample)."
        )
    if not (has_particle_rows(model) or hasattr(model, "permute")):
        raise ValueError(
            f"model {type(model).__name__} cannot reorder its particles: implement "
            "particle_rows and with_particle_rows (fksteer.smc.rows.ParticleRows), or permute."
        )
    if isinstance(method, str) and method in SEARCH_METHODS:
        method = SearchConfig(method)
    if isinstance(method, SearchConfig):
        from fksteer.smc.search import search

        if generator is None:
            generator = torch.Generator()
            generator.seed()
        return search(model, reward, config, method, prompts=prompts, generator=generator)
    system = ParticleSystem(  # validates the arguments
        reward,
        config,
        num_steps=model.num_steps,
        prompts=prompts,
        generator=generator,
        method=method,
        num_predictions=getattr(model, "num_predictions", 1),
    )
    require_guided_model(model, config)
    return run_system(model, system, guidance_batch_size)


class SweepHooks(Protocol):
    """What a driver built on :func:`run_system` may rewrite (conditional SMC restores its
    reference path through them): each step's predicted particles, and the final samples."""

    def after_predict(
        self, state: Any, output: Any, prediction: Any, step: int
    ) -> tuple[Any, Any, Any]:
        """The state, model output and clean prediction of ``step`` the run continues with."""
        ...

    def final_sample(self, sample: Any) -> Any:
        """The final samples (flat, G*K) the run decodes and scores."""
        ...


def run_system(
    model: StepModel,
    system: ParticleSystem,
    guidance_batch_size: int | None = None,
    hooks: SweepHooks | None = None,
) -> SteeringResult:
    """The sampling loop of :func:`steer` on a built particle system, once; ``hooks`` (see
    :class:`SweepHooks`) are called after every ``predict`` and on the final samples."""
    generator = system.generator
    # the model's own permute, looked up once for the run (else the rows' generic one)
    permute = getattr(model, "permute", None) or functools.partial(permute_particles, model)
    with torch.no_grad():
        state = model.init(system.group_prompts, system.num_particles, generator)
        for step in range(system.num_steps):
            state = _step(model, system, state, step, guidance_batch_size, hooks, permute)
        times = StepTimes()
        start = time.perf_counter()
        sample = model.final_sample(state)
        if hooks is not None:
            sample = hooks.final_sample(sample)
        decoded = model.decode(sample, final=True)
        times.add("decode", start)
        return system.finish(decoded, times=times)


def _step(
    model: StepModel,
    system: ParticleSystem,
    state: Any,
    step: int,
    guidance_batch_size: int | None,
    hooks: SweepHooks | None,
    permute: Callable[[Any, Any, torch.Tensor], tuple[Any, Any]],
) -> Any:
    """One step of the chain: predict, score and resample where due, move; recorded.
    ``permute(state, output, ancestors)`` reorders the model's particles."""
    generator = system.generator
    begin = time.perf_counter()
    output, prediction = model.predict(state, step, generator)
    if hooks is not None:
        state, output, prediction = hooks.after_predict(state, output, prediction, step)
    if getattr(prediction, "is_cuda", False):  # its queued kernels count as the model's
        torch.cuda.synchronize(prediction.device)
    start = time.perf_counter()
    model_seconds, decode_seconds, permute_seconds = start - begin, 0.0, 0.0
    if step in system.plan.scoring_steps:
        decoded = model.decode(prediction, final=False)
        decode_seconds = time.perf_counter() - start
        ancestors = system.weigh_and_resample(step, decoded)
        start = time.perf_counter()
        if ancestors is not None:
            state, output = permute(state, output, ancestors)
            now = time.perf_counter()
            permute_seconds, start = now - start, now
    strength = system.guidance_strength(step) if system.config.guidance != 0 else None
    if strength is not None:
        gradient = reward_gradient(
            model.guidance_input(state),
            lambda x, rows: model.clean_from(state, x, rows, step),
            lambda clean: model.decode(clean, final=False),
            system.reward,
            system.reward_prompts,
            strength,
            guidance_batch_size,
        )
        state, log_ratio = model.guided_move(state, output, step, generator, gradient)
        system.reweight(step, log_ratio)
    else:
        state = model.move(state, output, step, generator)
    if getattr(state, "is_cuda", False):
        torch.cuda.synchronize(state.device)
    model_seconds += time.perf_counter() - start
    times = StepTimes(model=model_seconds, decode=decode_seconds, permute=permute_seconds)
    # one evaluation per particle (the default), two when the move was guided
    evaluations = None if strength is None else system.plan.evaluations(guided=True)
    system.record(step, times, evaluations=evaluations)
    return state
