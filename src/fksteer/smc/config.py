"""Configuration of a steering run: `FKConfig` and the lambda schedules.

    from fksteer import FKConfig
    from fksteer.smc.config import LinearRamp

`FKConfig` is frozen and validated when it is built: a wrong value raises a ValueError naming the
field, the value and the fix. Values that depend on the model (``resample_start`` against the
number of steps) are checked by :meth:`FKConfig.scoring_steps` when a run starts.

The potentials, resampling schemes and resampling rules are validated against their registries
(:mod:`fksteer.smc.potentials`, :mod:`fksteer.smc.resampling`, :mod:`fksteer.smc.rules`); none of
these modules imports torch, so a configuration is built and checked without it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from fksteer.smc.potentials import POTENTIALS
from fksteer.smc.resampling import RESAMPLING_SCHEMES
from fksteer.smc.rules import RESAMPLING_RULES
from fksteer.smc.tempering import AdaptiveTilt, GroupSchedule, LargestTilt, fixed_at

#: Tilts that are not one float per step: chosen from the particles, or given per group.
TILTS = (AdaptiveTilt, LargestTilt, GroupSchedule)

__all__ = [
    "FKConfig",
    "SearchConfig",
    "LinearRamp",
    "AdaptiveTilt",
    "LargestTilt",
    "GroupSchedule",
    "POTENTIALS",
    "METHODS",
    "SEARCH_METHODS",
    "lambda_at",
    "guidance_at",
]

#: Searches over candidate next states (:mod:`fksteer.smc.search`), configured by SearchConfig.
SEARCH_METHODS = ("svdd", "code", "beam")

#: What `steer` can run through the same code path: FK steering and its baselines.
METHODS = ("fk", "base", "best_of_n", "importance", *SEARCH_METHODS)


@dataclass(frozen=True)
class SearchConfig:
    """A search baseline over M candidates per particle (:mod:`fksteer.smc.search`).

    ``steer(model, reward, FKConfig(num_particles=K), method=SearchConfig("svdd", candidates=M))``
    keeps K particles per prompt, each with M candidate next states (K * M rows of the model).

    Attributes:
        method: ``"svdd"`` (SVDD-PM, Li et al. 2024: each particle keeps one of its M candidates
            drawn by softmax(value / temperature)), ``"code"`` (CoDe, Singh et al. 2025: each
            particle keeps the best of its M candidates every ``block`` steps) or ``"beam"``
            (beam search over the denoising steps: each group keeps the top K of its K * M
            candidates). A candidate's value is the reward of its clean-sample prediction; at
            the end, the reward of the final sample.
        candidates: M >= 1, candidates per particle (1: nothing to choose, base sampling).
        temperature: SVDD's softmax temperature, >= 0; 0 keeps the best candidate (the limit
            the SVDD paper uses in practice). Only ``"svdd"`` draws; the others must keep 0.
        block: choose every ``block`` steps (1: at every step); the final samples are always
            chosen. CoDe with one block over all steps is best-of-M per particle.
    """

    method: str = "svdd"
    candidates: int = 4
    temperature: float = 0.0
    block: int = 1

    def __post_init__(self) -> None:
        if self.method not in SEARCH_METHODS:
            raise ValueError(f"SearchConfig.method={self.method!r} is invalid: choose one of "
                             f"{', '.join(SEARCH_METHODS)}.")
        for name in ("candidates", "block"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SearchConfig.{name}={value!r} is invalid: pass an int >= 1.")
        value = self.temperature
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and value >= 0
        ):
            raise ValueError(f"SearchConfig.temperature={value!r} is invalid: pass a finite "
                             "float >= 0 (0 keeps the best candidate).")
        if value != 0 and self.method != "svdd":
            raise ValueError(f"SearchConfig.temperature={value!r} is invalid for method "
                             f"{self.method!r}, which keeps the best candidates: pass 0, or use "
                             "method='svdd'.")

    def choosing_steps(self, num_steps: int) -> list[int]:
        """The steps (1 .. num_steps-1) at which candidates are chosen, before the final one.

        Step 0's rows are K * M independent draws from the prior, so the first choice falls at
        step ``block``, among candidates that descend from the initial states."""
        return list(range(self.block, num_steps, self.block))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the search's options."""
        return asdict(self)


@dataclass(frozen=True)
class LinearRamp:
    """lambda growing linearly from ``start`` at step 0 to ``end`` at the final sample.

    With ``num_steps`` steps, step ``i`` uses ``start + (end - start) * i / num_steps``; the final
    potential (``i == num_steps``) uses ``end``, so the run targets p(x_0) exp(end * r(x_0)) / Z.
    """

    start: float
    end: float

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(
                    f"LinearRamp.{name} must be a finite number, got {value!r}: "
                    "pass e.g. LinearRamp(start=0.0, end=10.0)."
                )

    def __call__(self, step: int, num_steps: int) -> float:
        """lambda at ``step`` of ``num_steps`` (``num_steps``: the final potential)."""
        return float(self.start + (self.end - self.start) * step / num_steps)


def lambda_at(lmbda: float | LinearRamp, step: int, num_steps: int) -> float:
    """The tilt lambda at ``step`` (``num_steps`` means the final potential), for a tilt fixed in
    advance; tilts chosen during the run or per group live in :mod:`fksteer.smc.tempering`."""
    if isinstance(lmbda, TILTS):
        raise ValueError(
            f"{type(lmbda).__name__} has no single lambda per step: the particle system's "
            "Tilts gives each group's value during the run."
        )
    return fixed_at(lmbda, step, num_steps, "lambda")


def guidance_at(guidance: float | LinearRamp, step: int, num_steps: int) -> float:
    """The reward-guidance strength of the move out of ``step``."""
    value = fixed_at(guidance, step, num_steps, "guidance")
    if value < 0:
        raise ValueError(f"the guidance schedule {guidance!r} gave {value} < 0 at step {step}")
    return value


def _registered(name: Any, registry: dict[str, Any]) -> bool:
    """Whether ``name`` is a key of ``registry`` (a list or a dict is not: no TypeError)."""
    return isinstance(name, str) and name in registry


def _fail(field: str, value: Any, fix: str) -> None:
    raise ValueError(f"FKConfig.{field}={value!r} is invalid: {fix}")


@dataclass(frozen=True)
class FKConfig:
    """How to steer: particles, potential, tilt, resampling scheme and schedule.

    Attributes:
        num_particles: K, particles per prompt (group).
        potential: a name in :data:`~fksteer.smc.potentials.POTENTIALS`: ``"difference"``
            exp(lambda_i r_i - lambda_prev r_prev), ``"max"`` exp(lambda_i max_{j<=i} r_j),
            ``"sum"`` exp(lambda_i sum_{j<=i} r_j) or ``"immediate"`` exp(lambda_i r_i), with
            r_i the reward of the clean-sample prediction at scoring step i. The final step
            multiplies by exp(lambda r(x_0)) over the product of the potentials already applied
            to the particle's path, so every choice targets p(x_0) exp(lambda r(x_0)) / Z; the
            choice only changes the variance, but that by a lot: ``difference`` keeps the
            intermediate targets at the tilt lambda, while the others compound it at every
            scoring step (``immediate`` ~ n lambda, ``sum`` ~ n(n+1)/2 lambda after n steps), so
            with many scoring steps their final correction needs far more particles. Prefer
            ``difference``; use the others with few scoring steps.
        lmbda: the tilt, a float or a schedule called as ``lmbda(step, num_steps)`` (e.g.
            :class:`LinearRamp`); the value at ``num_steps`` defines the target. Or chosen from
            the particles: :class:`~fksteer.smc.tempering.AdaptiveTilt` (each scoring step's
            lambda keeps a conditional ESS, the final one is exactly ``target``) or
            :class:`~fksteer.smc.tempering.LargestTilt` (the final lambda_hat is the largest
            <= ``cap`` that keeps a final ESS); or per group,
            :class:`~fksteer.smc.tempering.GroupSchedule` (e.g. a first run's schedule frozen).
        resampling: the scheme, a name in :data:`~fksteer.smc.resampling.RESAMPLING_SCHEMES`:
            ``"systematic"``, ``"stratified"``, ``"multinomial"`` or ``"residual"``.
        ess_threshold: adaptive resampling: at a scoring step, a group resamples only when its
            effective sample size falls below ``ess_threshold * num_particles``; otherwise its
            weights carry over to the next scoring step. ``None`` resamples at every scoring step.
        resampling_rule: which groups resample at a scoring step, a name in
            :data:`~fksteer.smc.rules.RESAMPLING_RULES`; ``None`` (the default) means ``"ess"``
            when ``ess_threshold`` is set and ``"always"`` otherwise.
        resample_every, resample_start, resample_end: potentials apply at step i (counted from
            the noisiest, 0 .. num_steps-1) when ``resample_start <= i <= resample_end`` and
            ``(i - resample_start) % resample_every == 0``; ``resample_end=None`` means the last
            step. The final potential always applies to the final sample.
        guidance: reward-gradient guidance of the proposal, a float >= 0 or a schedule like
            ``lmbda`` (0, the default, uses the model's own kernel and needs no gradients). With
            strength s the move out of step i draws from the model's Gaussian kernel with its
            mean shifted by s * Var * grad_x lambda_{i+1} r(decode(x0_hat(x))) and the weights
            gain log p(x' | x) - log q(x' | x), so the target stays exact for every potential.
            Needs a model implementing :class:`~fksteer.smc.protocol.GuidedStepModel` and a
            reward differentiable in torch.
    """

    num_particles: int = 4
    potential: str = "difference"
    lmbda: float | LinearRamp = 10.0
    resampling: str = "systematic"
    ess_threshold: float | None = None
    resample_every: int = 1
    resample_start: int = 0
    resample_end: int | None = None
    guidance: float | LinearRamp = 0.0
    resampling_rule: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.num_particles, bool) or not isinstance(self.num_particles, int):
            _fail("num_particles", self.num_particles, "pass a positive int, e.g. 8.")
        if self.num_particles < 1:
            _fail("num_particles", self.num_particles, "pass a positive int, e.g. 8.")
        if not _registered(self.potential, POTENTIALS):
            _fail("potential", self.potential, f"choose one of {', '.join(POTENTIALS)}.")
        if isinstance(self.lmbda, bool):
            _fail("lmbda", self.lmbda, "pass a finite float or a schedule such as LinearRamp.")
        if isinstance(self.lmbda, (int, float)):
            if not math.isfinite(self.lmbda):
                _fail("lmbda", self.lmbda, "pass a finite float, e.g. 10.0.")
        elif not (callable(self.lmbda) or isinstance(self.lmbda, TILTS)):
            _fail(
                "lmbda",
                self.lmbda,
                "pass a finite float, a schedule such as LinearRamp, AdaptiveTilt(target=...), "
                "LargestTilt(cap=...) or a GroupSchedule.",
            )
        self._check_resampling()
        self._check_schedule()
        if isinstance(self.guidance, bool):
            _fail("guidance", self.guidance, "pass a float >= 0 or a schedule such as LinearRamp.")
        if isinstance(self.guidance, (int, float)):
            if not math.isfinite(self.guidance) or self.guidance < 0:
                _fail("guidance", self.guidance, "pass a finite float >= 0 (0 turns it off).")
        elif not callable(self.guidance):
            _fail("guidance", self.guidance, "pass a float >= 0 or a schedule such as LinearRamp.")

    def _check_resampling(self) -> None:
        if not _registered(self.resampling, RESAMPLING_SCHEMES):
            _fail("resampling", self.resampling, f"choose one of {', '.join(RESAMPLING_SCHEMES)}.")
        if self.ess_threshold is not None:
            if isinstance(self.ess_threshold, bool) or not isinstance(
                self.ess_threshold, (int, float)
            ):
                _fail("ess_threshold", self.ess_threshold, "pass a float in (0, 1] or None.")
            if not 0.0 < self.ess_threshold <= 1.0:
                _fail(
                    "ess_threshold",
                    self.ess_threshold,
                    "pass a float in (0, 1] (e.g. 0.5) for adaptive resampling, or None to "
                    "resample at every scoring step.",
                )
        if self.resampling_rule is not None and not _registered(self.resampling_rule,
                                                                  RESAMPLING_RULES):
            _fail(
                "resampling_rule",
                self.resampling_rule,
                f"choose one of {', '.join(RESAMPLING_RULES)}, or None.",
            )
        if self.resampling_rule == "ess" and self.ess_threshold is None:
            _fail("resampling_rule", self.resampling_rule, "set ess_threshold too (e.g. 0.5).")

    def _check_schedule(self) -> None:
        for field in ("resample_every", "resample_start"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int):
                _fail(field, value, "pass an int.")
        if self.resample_every < 1:
            _fail("resample_every", self.resample_every, "pass an int >= 1.")
        if self.resample_start < 0:
            _fail("resample_start", self.resample_start, "pass an int >= 0 (0 is the noisiest).")
        if self.resample_end is not None:
            if isinstance(self.resample_end, bool) or not isinstance(self.resample_end, int):
                _fail("resample_end", self.resample_end, "pass an int or None (the last step).")
            if self.resample_end < self.resample_start:
                _fail(
                    "resample_end",
                    self.resample_end,
                    f"it must be >= resample_start={self.resample_start}.",
                )

    @property
    def rule(self) -> str:
        """The resampling rule in force: ``resampling_rule``, or what ``ess_threshold`` implies."""
        if self.resampling_rule is not None:
            return self.resampling_rule
        return "always" if self.ess_threshold is None else "ess"

    def scoring_steps(self, num_steps: int) -> list[int]:
        """The steps (0 .. num_steps-1) at which intermediate potentials apply."""
        if self.resample_start >= num_steps:
            _fail(
                "resample_start",
                self.resample_start,
                f"the model has {num_steps} steps (0 .. {num_steps - 1}); pass a smaller value.",
            )
        end = num_steps - 1 if self.resample_end is None else min(self.resample_end, num_steps - 1)
        return list(range(self.resample_start, end + 1, self.resample_every))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the configuration (schedules become their fields)."""
        data = asdict(self)
        for name in ("lmbda", "guidance"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)):
                data[name] = {"schedule": type(value).__name__, **_fields_of(value)}
        return data


def _fields_of(obj: Any) -> dict[str, Any]:
    try:
        return asdict(obj)
    except TypeError:
        return {"repr": repr(obj)}
