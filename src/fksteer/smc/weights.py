"""Reductions on log-weights, per group along the last axis.

    from fksteer.smc.weights import normalise, ess, log_mean_exp, soft_reward

All functions take float log-weights shaped (..., K), where -inf is a dead particle (weight 0),
and reduce over the last axis. A row that is entirely -inf has no normalisation: ``normalise``
gives NaN there, ``ess`` gives 0 and ``log_mean_exp`` gives -inf; the engine stops before that
happens.
"""

from __future__ import annotations

import math

import torch

__all__ = ["normalise", "ess", "log_mean_exp", "soft_reward"]


def normalise(log_weights: torch.Tensor) -> torch.Tensor:
    """Normalised log-weights: log w_k - logsumexp_j log w_j, per row."""
    return log_weights - torch.logsumexp(log_weights, dim=-1, keepdim=True)


def ess(log_weights: torch.Tensor) -> torch.Tensor:
    """Effective sample size (sum w)^2 / sum w^2, in [1, K] per row (0 for an all-dead row).

    Computed on the weights scaled by the row's largest, w_k / max_j w_j = exp(log w_k - max),
    which lie in [0, 1] with at least one equal to 1, so it neither overflows nor underflows
    whatever the scale of the weights (Kong 1992; Liu 2001, eq. 2.7); one exponential per
    weight instead of the two of a pair of logsumexp.
    """
    top = log_weights.amax(dim=-1, keepdim=True)  # (..., 1); -inf for an all-dead row
    scaled = (log_weights - torch.where(torch.isfinite(top), top, 0.0)).exp_()  # (..., K)
    total = scaled.sum(dim=-1)
    return torch.nan_to_num(total.square() / scaled.square_().sum(dim=-1), nan=0.0)


def log_mean_exp(values: torch.Tensor) -> torch.Tensor:
    """log((1/K) sum_k exp(values_k)) per row: the SMC estimate of a log normalising constant."""
    return torch.logsumexp(values, dim=-1) - math.log(values.shape[-1])


def soft_reward(rewards: torch.Tensor, lmbda: float | torch.Tensor) -> torch.Tensor:
    """(1/lambda) log mean_j exp(lambda r_j) over the last axis: one reward from M predictions.

    With M clean predictions x_0^(j) ~ p(x_0 | x_t) per particle, exp(lambda * soft_reward)
    is the Monte Carlo estimate of the expected potential E[exp(lambda r(x_0)) | x_t] (the
    log-mean-exp is taken of lambda r, not of r). At lambda = 0 it is the mean. A NaN or -inf
    draw contributes weight 0; a particle whose draws are all NaN/-inf gets NaN (it dies).
    ``lmbda`` is a float or a tensor broadcasting against ``rewards`` (e.g. (G, 1, 1): one tilt
    per group).
    """
    # NaN and -inf draws drop out; +inf is kept so that it reaches the engine's +inf error.
    kept = ~(torch.isnan(rewards) | torch.isneginf(rewards))
    count = kept.sum(dim=-1)
    mean = torch.where(kept, rewards, 0.0).sum(dim=-1) / count
    lmbda = torch.as_tensor(lmbda, dtype=rewards.dtype)
    scaled = torch.where(kept, lmbda * rewards, -math.inf)
    combined = log_mean_exp(scaled) / lmbda.squeeze(-1)
    combined = torch.where(lmbda.squeeze(-1) == 0.0, mean, combined)
    return torch.where(kept.any(dim=-1), combined, math.nan)
