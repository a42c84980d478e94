"""What every driver of a particle system does the same way: `StepPlan` and `StepTimes`.

    from fksteer.smc.plan import StepPlan, StepTimes, group_prompts

A driver owns a sampling loop and a :class:`~fksteer.smc.particles.ParticleSystem`: `steer`
(:mod:`fksteer.smc.engine`) for any StepModel, the scheduler proxy of the diffusers integration
from inside a pipeline's loop, and the particle-parallel run of :mod:`fksteer.distributed`. What
they must agree on is computed here, once:

- which steps score (:meth:`StepPlan.is_scoring_step`; the baselines never do);
- the scale s_i of reward-gradient guidance in the move out of each step
  (:meth:`StepPlan.guidance_scale`; the particle system multiplies it by each group's tilt:
  :meth:`~fksteer.smc.particles.ParticleSystem.guidance_strength`) and which models can be
  guided (:func:`require_guided_model`);
- how many denoiser evaluations a step costs (:meth:`StepPlan.evaluations`; a guided move
  evaluates the model a second time, with gradients);
- how time is attributed (:class:`StepTimes`: the driver measures the model, decoding, its own
  reward calls and permuting; the particle system measures its reward calls and bookkeeping);
- how prompts become groups (:func:`group_prompts`);
- how the engine's own random stream is seeded (:func:`engine_generator`: from the model's
  generator, without drawing from it), and that the bookkeeping runs without autograd
  (:func:`without_grad`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from fksteer.smc.config import METHODS, SEARCH_METHODS, FKConfig, guidance_at

__all__ = [
    "StepPlan",
    "StepTimes",
    "group_prompts",
    "check_method",
    "require_guided_model",
    "engine_generator",
    "without_grad",
]


# Odd 64-bit constant (golden ratio) that decorrelates the engine's seed from the model's.
_SEED_MIX = 0x9E3779B97F4A7C15


def without_grad(method: Callable) -> Callable:
    """``method`` with autograd off. The drivers already run without it, so the check comes
    first: a no_grad context entered on every call of every step costs more than the check."""

    @functools.wraps(method)
    def run(*args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled():
            return method(*args, **kwargs)
        with torch.no_grad():
            return method(*args, **kwargs)

    return run


def engine_generator(generator: torch.Generator) -> torch.Generator:
    """A CPU generator for the engine's own draws, derived from ``generator``'s initial seed.

    Nothing is drawn from ``generator``, so the model sees the same noise stream with and without
    steering, and the same seed gives the same resampling.
    """
    seed = (generator.initial_seed() * _SEED_MIX + 1) % (2**63)
    return torch.Generator(device="cpu").manual_seed(seed)


def group_prompts(prompts: Sequence[Any] | str | None) -> list[Any]:
    """One prompt per group: a single string is one group, ``None`` is one group of ``None``."""
    if isinstance(prompts, str):
        return [prompts]
    groups = [None] if prompts is None else list(prompts)
    if not groups:
        raise ValueError("prompts is empty: pass at least one prompt, or None for one group.")
    return groups


def check_method(method: str) -> None:
    """A ValueError naming the valid methods when ``method`` is not one of them."""
    if method not in METHODS:
        raise ValueError(f"method={method!r} is unknown: choose one of {', '.join(METHODS)}.")


def require_guided_model(model: Any, config: FKConfig) -> None:
    """Refuse reward-gradient guidance for a model whose step is not Gaussian."""
    from fksteer.smc.protocol import GuidedStepModel

    if config.guidance != 0 and not isinstance(model, GuidedStepModel):
        raise ValueError(
            f"FKConfig.guidance={config.guidance!r} needs a model whose step is Gaussian "
            f"(GuidedStepModel: guidance_input, clean_from, guided_move); "
            f"{type(model).__name__} is not one. Set guidance=0."
        )


@dataclass(frozen=True)
class StepPlan:
    """The step sequence of one run: scoring steps, guidance strengths, evaluation counts.

    Attributes:
        config: the run's configuration.
        num_steps: steps of the sampler, 0 .. num_steps - 1 from the noisiest.
        method: ``"fk"`` or a baseline (which never scores at intermediate steps).
        num_particles: all particles of the run, G * K.
        scoring_steps: the steps at which an intermediate potential applies.
    """

    config: FKConfig
    num_steps: int
    method: str
    num_particles: int
    scoring_steps: frozenset[int] = field(init=False)

    def __post_init__(self) -> None:
        check_method(self.method)
        if self.method in SEARCH_METHODS:
            raise ValueError(
                f"method={self.method!r} is a search over candidates, run by fksteer.steer "
                "(fksteer.smc.search) on a StepModel in one process; this driver weighs one "
                "particle system: use fk or a baseline (base, best_of_n, importance)."
            )
        steps = self.config.scoring_steps(self.num_steps) if self.method == "fk" else ()
        object.__setattr__(self, "scoring_steps", frozenset(steps))

    def is_scoring_step(self, step: int) -> bool:
        """Whether an intermediate potential applies at ``step``."""
        return step in self.scoring_steps

    def guidance_scale(self, step: int) -> float:
        """s_i, the guidance of the move out of ``step`` (0: the model's own kernel)."""
        if self.config.guidance == 0 or step >= self.num_steps:
            return 0.0
        return guidance_at(self.config.guidance, step, self.num_steps)

    def evaluations(self, guided: bool) -> int:
        """Denoiser evaluations of one step: one per particle, two when the move is guided."""
        return self.num_particles * (2 if guided else 1)


@dataclass
class StepTimes:
    """Seconds a driver spent in one step, by part; the particle system adds its own.

    ``model`` (predict and move, guidance gradients included), ``decode`` (turning predictions
    into reward input), ``reward`` (reward calls the driver made itself, e.g. each process
    scoring its own particles) and ``permute`` (reordering the model's particles). Time spent
    inside the particle system's own calls is measured there: never include it here.
    """

    model: float = 0.0
    decode: float = 0.0
    reward: float = 0.0
    permute: float = 0.0

    def add(self, part: str, since: float, sync_on: Any = None) -> float:
        """Add the seconds since ``since`` to ``part``, after waiting for queued device work on
        ``sync_on`` (a CUDA tensor), so that asynchronous kernels count where they were queued.
        Returns the time now."""
        if getattr(sync_on, "is_cuda", False):
            torch.cuda.synchronize(sync_on.device)
        now = time.perf_counter()
        setattr(self, part, getattr(self, part) + now - since)
        return now
