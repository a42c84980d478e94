"""Diagnostics of Markov chains run side by side: autocorrelation, effective sample size, R-hat.

    from fksteer.smc.chains import autocorrelation, effective_sample_size, split_rhat

    values = torch.randn(8, 200)          # (chains C, draws N, ...) any trailing axes
    effective_sample_size(values)         # () multi-chain ESS
    split_rhat(values)                    # () potential scale reduction

All three follow Vehtari, Gelman, Simpson, Carpenter & Bürkner (2021), "Rank-normalization,
folding, and localization: an improved R-hat for assessing convergence of MCMC", sec. 3 and
appendix A, on the raw values (not rank-normalised): each chain is split in halves (so a trend
within a chain shows as disagreement between chains), the within-chain variance W and the
variance of the chain means B/n combine into var+ = (n - 1)/n W + B/n, and

- ``split_rhat`` = sqrt(var+ / W): near 1 when the chains agree, above 1.01-1.05 when they do not;
- ``autocorrelation``: rho_t = 1 - (W - mean_c acov_c(t)) / var+, with acov_c the biased
  autocovariance of chain c (computed by FFT);
- ``effective_sample_size`` = C n / tau, tau = -1 + 2 sum_{k=0}^{m} (rho_{2k} + rho_{2k+1}),
  truncated at the first negative pair sum and made monotone (Geyer 1992's initial monotone
  sequence).

Constant values (W = 0) have no defined ESS or R-hat: the result is NaN there. Every function
is vectorised over the trailing axes.
"""

from __future__ import annotations

import math

import torch

__all__ = ["autocorrelation", "effective_sample_size", "split_rhat", "split_chains"]


def split_chains(values: torch.Tensor) -> torch.Tensor:
    """(C, N, ...) -> (2C, N // 2, ...): each chain's first and second halves (odd N drops the
    middle draw)."""
    values = _check(values)
    half = values.shape[1] // 2
    if half < 2:
        raise ValueError(
            f"split chains need at least 4 draws per chain, got {values.shape[1]}: run more "
            "sweeps or lower burn_in / thin."
        )
    return torch.cat([values[:, :half], values[:, values.shape[1] - half :]], dim=0)


def _variances(chains: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, var+) of (C, n, ...) chains, float64."""
    n = chains.shape[1]
    within = chains.var(dim=1, unbiased=True).mean(dim=0)  # W
    between_over_n = chains.mean(dim=1).var(dim=0, unbiased=True)  # B / n
    return within, (n - 1) / n * within + between_over_n


def split_rhat(values: torch.Tensor) -> torch.Tensor:
    """Split R-hat of (C, N, ...) draws: (...) float64, NaN where the draws are constant."""
    chains = split_chains(values)
    within, var_plus = _variances(chains)
    return torch.where(within > 0, torch.sqrt(var_plus / within), math.nan)


def autocorrelation(values: torch.Tensor, split: bool = True) -> torch.Tensor:
    """Multi-chain autocorrelation rho_t of (C, N, ...) draws: (n, ...) float64, lags 0 .. n-1.

    ``split=False`` uses the chains whole (n = N) instead of their halves (n = N // 2).
    """
    chains = split_chains(values) if split else _check(values)
    n = chains.shape[1]
    centred = chains - chains.mean(dim=1, keepdim=True)
    spectrum = torch.fft.rfft(centred, n=2 * n, dim=1)
    acov = torch.fft.irfft(spectrum * spectrum.conj(), n=2 * n, dim=1)[:, :n] / n  # (C, n, ...)
    within, var_plus = _variances(chains)
    rho = 1.0 - (within - acov.mean(dim=0)) / var_plus
    return torch.where(within > 0, rho, math.nan)


def effective_sample_size(values: torch.Tensor) -> torch.Tensor:
    """Multi-chain effective sample size of (C, N, ...) draws (split chains): (...) float64.

    Capped at C n log10(C n) as Stan does (antithetic chains can exceed C n; the cap keeps one
    lucky estimate from claiming an unbounded precision). NaN where the draws are constant.
    """
    rho = autocorrelation(values)  # (n, ...)
    n = rho.shape[0]
    total = 2 * values.shape[0] * (values.shape[1] // 2)
    pairs = rho[: 2 * (n // 2)].reshape(n // 2, 2, *rho.shape[1:]).sum(dim=1)  # (n//2, ...)
    # initial positive sequence: keep pair sums up to the first negative one
    positive = torch.cumprod((pairs > 0).to(torch.int64), dim=0).bool()
    # initial monotone sequence: each pair sum at most the previous one
    monotone = torch.cummin(torch.where(positive, pairs, 0.0), dim=0).values
    tau = -1.0 + 2.0 * torch.where(positive, monotone, 0.0).sum(dim=0)
    tau = tau.clamp(min=1.0 / math.log10(max(total, 10)))
    ess = total / tau
    return torch.where(torch.isfinite(rho[0]), ess, math.nan)


def _check(values: torch.Tensor) -> torch.Tensor:
    values = torch.as_tensor(values).detach().to(device="cpu", dtype=torch.float64)
    if values.dim() < 2:
        raise ValueError(
            f"values must be shaped (chains, draws, ...), got shape {tuple(values.shape)}; "
            "a single chain is values[None]."
        )
    return values
