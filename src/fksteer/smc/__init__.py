"""The engine: pure-torch Feynman-Kac particle machinery, knowing nothing of diffusion.

    from fksteer.smc import steer, FKConfig, resample, ess

Modules: ``config`` (FKConfig, lambda schedules), ``protocol`` (StepModel, GuidedStepModel, Reward),
``weights`` (log-space reductions), ``resampling`` (schemes and their registry), ``particles``
(the Feynman-Kac bookkeeping, driven step by step), ``guidance`` (reward-gradient proposals and
their exact weights), ``engine`` (``steer``, the loop for any StepModel), ``result``
(SteeringResult, StepTrace), ``wrapper`` (ModelWrapper, the base of models that wrap another).
"""

from fksteer.smc.config import METHODS, POTENTIALS, FKConfig, LinearRamp
from fksteer.smc.engine import steer
from fksteer.smc.particles import AllParticlesDeadError, ParticleSystem, engine_generator
from fksteer.smc.protocol import GuidedStepModel, Reward, StepModel
from fksteer.smc.resampling import RESAMPLING_SCHEMES, resample
from fksteer.smc.result import SteeringResult, StepTrace
from fksteer.smc.weights import ess, log_mean_exp, normalise

__all__ = [
    "FKConfig",
    "LinearRamp",
    "POTENTIALS",
    "METHODS",
    "RESAMPLING_SCHEMES",
    "steer",
    "ParticleSystem",
    "engine_generator",
    "AllParticlesDeadError",
    "Reward",
    "StepModel",
    "GuidedStepModel",
    "resample",
    "SteeringResult",
    "StepTrace",
    "ess",
    "log_mean_exp",
    "normalise",
]
