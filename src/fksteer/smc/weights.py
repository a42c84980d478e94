"""Reductions on log-weights, per group along the last axis.

    from fksteer.smc.weights import normalise, ess, log_mean_exp

All functions take float log-weights shaped (..., K), where -inf is a dead particle (weight 0),
and reduce over the last axis. A row that is entirely -inf has no normalisation: ``normalise``
gives NaN there, ``ess`` gives 0 and ``log_mean_exp`` gives -inf; the engine stops before that
happens.
"""

from __future__ import annotations

import math

import torch

__all__ = ["normalise", "ess", "log_mean_exp"]


def normalise(log_weights: torch.Tensor) -> torch.Tensor:
    """Normalised log-weights: log w_k - logsumexp_j log w_j, per row."""
    return log_weights - torch.logsumexp(log_weights, dim=-1, keepdim=True)


def ess(log_weights: torch.Tensor) -> torch.Tensor:
    """Effective sample size (sum w)^2 / sum w^2, in [1, K] per row (0 for an all-dead row).

    Computed in log space as exp(2 logsumexp(log w) - logsumexp(2 log w)), so it neither overflows
    nor underflows whatever the scale of the weights (Kong 1992; Liu 2001, eq. 2.7).
    """
    log_sum = torch.logsumexp(log_weights, dim=-1)
    log_ess = 2.0 * log_sum - torch.logsumexp(2.0 * log_weights, dim=-1)
    return torch.nan_to_num(torch.exp(log_ess), nan=0.0)


def log_mean_exp(values: torch.Tensor) -> torch.Tensor:
    """log((1/K) sum_k exp(values_k)) per row: the SMC estimate of a log normalising constant."""
    return torch.logsumexp(values, dim=-1) - math.log(values.shape[-1])
