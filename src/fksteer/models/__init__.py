"""Models adapted to the engine's StepModel protocol; here, the exact fixtures.

    from fksteer.models import GaussianMixtureDiffusion, LinearReward, TabularMaskedDiffusion

- :mod:`fksteer.models.gaussian_mixture`: a Gaussian mixture under a DDPM forward process with
  exact reverse kernels, and a linear reward whose tilt is a mixture in closed form.
- :mod:`fksteer.models.tabular_masked`: a masked discrete diffusion whose data distribution is an
  explicit table, so p(x_0 | x_t) and any tilted target are computed by enumeration.
- :mod:`fksteer.models.masked_exact`: the same table as a denoiser for the masked diffusion
  sampler (``TableDenoiser``), and that sampler's exact law by enumeration (``sampler_law``).

All are pure torch and exact for any number of steps: tests and benchmarks compare the engine's
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
from fksteer.models.masked_exact import TableDenoiser, sampler_law
from fksteer.models.tabular_masked import TabularMaskedDiffusion

__all__ = [
    "GaussianMixture",
    "GaussianMixtureDiffusion",
    "LinearReward",
    "RareModeProblem",
    "TableDenoiser",
    "TabularMaskedDiffusion",
    "TiltedGaussianMixture",
    "cosine_alphabar",
    "sampler_law",
]
