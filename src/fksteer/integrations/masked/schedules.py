"""Masking schedules of absorbing-state diffusion: `LogLinearSchedule`, `CosineSchedule`.

    from fksteer.integrations.masked.schedules import LogLinearSchedule, SCHEDULES

alpha(t) is the probability that a token is still unmasked at time t in [0, 1] (alpha(0) = 1);
``sigma(t) = -log alpha(t)`` is the total noise, which time-conditioned denoisers (MDLM) read.
Any object with an ``alpha(t)`` method on float64 tensors, non-increasing in t, is a schedule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["LogLinearSchedule", "CosineSchedule", "SCHEDULES"]


@dataclass(frozen=True)
class LogLinearSchedule:
    """MDLM's log-linear schedule: alpha(t) = 1 - (1 - eps) t, total noise sigma(t) = -log alpha(t).

    sigma(t) = -log(1 - (1 - eps) t) is "log-linear" (Sahoo et al. 2024, sec. 3.5; the
    ``loglinear`` noise of the MDLM code); eps keeps sigma(1) finite for time-conditioned
    denoisers. The unmasking probability (alpha_s - alpha_t) / (1 - alpha_t) = (t - s) / t does not
    depend on eps: eps only changes the time a time-conditioned denoiser is told.
    """

    eps: float = 1e-3

    def __post_init__(self) -> None:
        if not isinstance(self.eps, (int, float)) or not 0.0 <= self.eps < 1.0:
            raise ValueError(f"LogLinearSchedule.eps={self.eps!r}: pass a float in [0, 1).")

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """alpha(t) = 1 - (1 - eps) t: the share of tokens still unmasked at time t."""
        return 1.0 - (1.0 - self.eps) * t

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """MDLM's noise level sigma(t) = -log alpha(t): what its backbone takes as time."""
        return -torch.log1p(-(1.0 - self.eps) * t)


@dataclass(frozen=True)
class CosineSchedule:
    """The cosine schedule alpha(t) = 1 - cos(pi/2 (1 - t)) = 1 - sin(pi t / 2) (MD4, MaskGIT)."""

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """alpha(t) = 1 - sin(pi t / 2)."""
        return 1.0 - torch.sin(0.5 * math.pi * t)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """sigma(t) = -log alpha(t)."""
        return -torch.log(self.alpha(t))


#: name -> schedule class, for ``MaskedDiffusionModel(schedule=name)``.
SCHEDULES = {"log-linear": LogLinearSchedule, "cosine": CosineSchedule}
