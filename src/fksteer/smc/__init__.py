"""The engine: pure-torch Feynman-Kac particle machinery, knowing nothing of diffusion.

    from fksteer.smc import steer, FKConfig, resample, ess

Modules, from the bottom up:

- ``potentials`` (the potentials, one class each, and their registry), ``rules`` (when a group
  resamples: ``always``, ``ess``), ``resampling`` (the schemes that draw ancestors, and their
  registry): none imports torch at import time, so their names load without it;
- ``tempering`` (tilts chosen during the run: AdaptiveTilt, LargestTilt, GroupSchedule) and
  ``config`` (FKConfig, lambda schedules, validated against those registries and tilts);
- ``weights`` (log-space reductions), ``protocol`` (StepModel, GuidedStepModel, Reward, the one
  way to call a reward), ``rows`` (a model's per-particle state, declared once; permuting and
  moving particles derive from it), ``wrapper`` (ModelWrapper, the base of models that wrap
  another);
- ``checks`` (the checks of a step's rewards and weights, AllParticlesDeadError),
  ``systematic_search`` (systematic ancestors by one binary search, bit for bit the offspring
  counts'), ``plan`` (what every driver does the same way: scoring steps, guidance strength,
  evaluation counts, time attribution), ``particles`` (the Feynman-Kac bookkeeping, driven step
  by step),
  ``guidance`` (reward-gradient proposals and their exact weights), ``result`` (SteeringResult,
  StepTrace);
- ``engine`` (``steer``, the driver for any StepModel), ``search`` (SVDD, CoDe and beam search
  over M candidates per particle, driven through the same model calls).
- ``chains`` (Markov-chain diagnostics: autocorrelation, effective sample size, split R-hat),
  ``gibbs_result`` (GibbsResult), ``particle_gibbs`` (``gibbs``: particle Gibbs, sweeps of
  conditional SMC built on ``engine``, under a sweep count or a compute ``Budget``).

The names below load on first use, so that ``import fksteer.smc`` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name -> the module of this package that defines it
_EXPORTS = {
    "FKConfig": "config",
    "LinearRamp": "config",
    "POTENTIALS": "potentials",
    "RESAMPLING_RULES": "rules",
    "METHODS": "config",
    "SEARCH_METHODS": "config",
    "SearchConfig": "config",
    "RESAMPLING_SCHEMES": "resampling",
    "steer": "engine",
    "gibbs": "particle_gibbs",
    "Budget": "particle_gibbs",
    "GibbsResult": "gibbs_result",
    "ParticleSystem": "particles",
    "engine_generator": "plan",
    "AllParticlesDeadError": "particles",
    "Reward": "protocol",
    "StepModel": "protocol",
    "GuidedStepModel": "protocol",
    "resample": "resampling",
    "SteeringResult": "result",
    "StepTrace": "result",
    "ess": "weights",
    "log_mean_exp": "weights",
    "normalise": "weights",
}

__all__ = list(_EXPORTS)

if TYPE_CHECKING:  # for type checkers and editors; at run time __getattr__ loads them
    from fksteer.smc.config import (  # noqa: F401
        METHODS,
        SEARCH_METHODS,
        FKConfig,
        LinearRamp,
        SearchConfig,
    )
    from fksteer.smc.engine import steer  # noqa: F401
    from fksteer.smc.gibbs_result import GibbsResult  # noqa: F401
    from fksteer.smc.particle_gibbs import Budget, gibbs  # noqa: F401
    from fksteer.smc.particles import AllParticlesDeadError, ParticleSystem  # noqa: F401
    from fksteer.smc.plan import engine_generator  # noqa: F401
    from fksteer.smc.potentials import POTENTIALS  # noqa: F401
    from fksteer.smc.protocol import GuidedStepModel, Reward, StepModel  # noqa: F401
    from fksteer.smc.resampling import RESAMPLING_SCHEMES, resample  # noqa: F401
    from fksteer.smc.result import SteeringResult, StepTrace  # noqa: F401
    from fksteer.smc.rules import RESAMPLING_RULES  # noqa: F401
    from fksteer.smc.weights import ess, log_mean_exp, normalise  # noqa: F401


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fksteer.smc' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"fksteer.smc.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
