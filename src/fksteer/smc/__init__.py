"""The engine: pure-torch Feynman-Kac particle machinery, knowing nothing of diffusion.

    from fksteer.smc import steer, FKConfig, resample, ess

Modules: ``config`` (FKConfig, lambda schedules), ``protocol`` (StepModel, Reward), ``weights``
(log-space reductions), ``resampling`` (schemes and their registry), ``engine`` (the particle
loop), ``result`` (SteeringResult, StepTrace).
"""

from fksteer.smc.config import METHODS, POTENTIALS, FKConfig, LinearRamp
from fksteer.smc.engine import AllParticlesDeadError, engine_generator, steer
from fksteer.smc.protocol import Reward, StepModel
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
    "engine_generator",
    "AllParticlesDeadError",
    "Reward",
    "StepModel",
    "resample",
    "SteeringResult",
    "StepTrace",
    "ess",
    "log_mean_exp",
    "normalise",
]
