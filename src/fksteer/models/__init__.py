"""Models adapted to the engine's StepModel protocol; here, the two exact fixtures.

    from fksteer.models import GaussianMixtureDiffusion, LinearReward, TabularMaskedDiffusion

- :mod:`fksteer.models.gaussian_mixture`: a Gaussian mixture under a DDPM forward process with
  exact reverse kernels, and a linear reward whose tilt is a mixture in closed form.
- :mod:`fksteer.models.tabular_masked`: a masked discrete diffusion whose data distribution is an
  explicit table, so p(x_0 | x_t) and any tilted target are computed by enumeration.

Both are pure torch and exact for any number of steps: tests and benchmarks compare the engine's
weighted particles with their closed-form targets.
"""

from fksteer.models.gaussian_mixture import (
    GaussianMixture,
    GaussianMixtureDiffusion,
    LinearReward,
    RareModeProblem,
    TiltedGaussianMixture,
    cosine_alphabar,
)
from fksteer.models.tabular_masked import TabularMaskedDiffusion

__all__ = [
    "GaussianMixture",
    "GaussianMixtureDiffusion",
    "LinearReward",
    "RareModeProblem",
    "TabularMaskedDiffusion",
    "TiltedGaussianMixture",
    "cosine_alphabar",
]
