"""fksteer: steer diffusion models towards high reward with Feynman-Kac particle systems.

    import fksteer
    result = fksteer.steer(model, reward, fksteer.FKConfig(num_particles=8), prompts=[...])

The engine lives in ``fksteer.smc``; exact test models in ``fksteer.models``.
"""

from fksteer.smc import (
    AllParticlesDeadError,
    FKConfig,
    LinearRamp,
    Reward,
    SteeringResult,
    StepModel,
    StepTrace,
    steer,
)

__version__ = "0.1.0"

__all__ = [
    "AllParticlesDeadError",
    "FKConfig",
    "LinearRamp",
    "Reward",
    "SteeringResult",
    "StepModel",
    "StepTrace",
    "steer",
    "__version__",
]
