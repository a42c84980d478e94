"""Inverse-CDF lookups, and the systematic scheme's ancestors for uniforms its caller drew.

    from fksteer.smc.systematic_search import systematic_from_uniform

:func:`fksteer.smc.resampling.systematic` draws one uniform U per row and calls
:func:`systematic_from_uniform`; the engine draws a run's uniforms at once and calls it at each
step. The ancestors are defined by the offspring counts of :func:`_systematic_by_counts`
(O(N + M)); up to 1024 particles one ``searchsorted`` gives the same ones, bit for bit, in
fewer tensor calls, and :func:`uniforms_far_from_one` says when it may leave out its mask.
:func:`_inverse_cdf` (with :func:`_search_cdf`) is the lookup every other scheme ends in.
torch is imported inside the functions, as in :mod:`fksteer.smc.resampling`.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["systematic_from_uniform", "uniforms_far_from_one"]


def _search_cdf(cdf: torch.Tensor, positive: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF lookup that can never return an index whose weight is zero.

    ``cdf`` (..., N) float64 cumulative weights, ``positive`` (..., N) bool mask of the particles
    with positive weight, ``uniforms`` (..., M) float64 in [0, 1] (1 included, for safety).
    Returns int64 (..., M).

    In exact arithmetic ``searchsorted(cdf, u * total, right=True)`` returns the first ``i`` with
    ``cdf[i] > u * total``; a zero-weight particle has ``cdf[i] == cdf[i - 1]`` (an empty
    interval) and cannot be that ``i``, and leading zeros are skipped because ``right=True`` sends
    ``u = 0`` past them. Two things can still go wrong in floating point, and both are repaired
    here without changing the law in exact arithmetic:

    - ``u * total`` can round up to ``total`` (or ``u`` can be 1), so the search runs past the
      last positive weight into trailing zeros or to ``N``: such indices are sent to the last
      particle with positive weight.
    - a parallel cumsum (as on GPUs) adds in a tree, so ``cdf[i]`` and ``cdf[i - 1]`` may round
      differently even when ``w[i] == 0``, giving a zero-weight particle a tiny interval, or even
      a non-monotone ``cdf``: the cdf is made monotone by a running maximum, and any index that
      still lands on a zero weight is moved to the next particle with positive weight (or the
      last one, if none follows).
    """
    import torch

    num_particles = cdf.shape[-1]
    cdf = torch.cummax(cdf, dim=-1).values.contiguous()  # (..., N), monotone
    total = cdf[..., -1:]  # (..., 1)
    targets = (uniforms * total).contiguous()  # (..., M)
    index = torch.searchsorted(cdf, targets, right=True)  # (..., M), in [0, N]
    index = index.clamp_(max=num_particles - 1)

    positions = torch.arange(num_particles, device=cdf.device)  # (N,)
    # Last index with positive weight per row (N - 1 if the row has none: only for masked rows).
    last_positive = (num_particles - 1) - torch.argmax(
        positive.flip(-1).to(torch.int8), dim=-1, keepdim=True
    )  # (..., 1)
    # next_positive[i] = smallest j >= i with positive weight, else last_positive.
    candidate = torch.where(positive, positions, num_particles)  # (..., N)
    next_positive = torch.cummin(candidate.flip(-1), dim=-1).values.flip(-1)  # (..., N)
    next_positive = torch.where(next_positive == num_particles, last_positive, next_positive)
    return torch.gather(next_positive, -1, index)  # (..., M)


def _inverse_cdf(weights: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Ancestors ``F^{-1}(u)`` for uniforms ``(..., M)`` in [0, 1] under weights ``(..., N)``.

    The weights are cast to float64 before the cumulative sum, and ``u`` is scaled by the row's
    own total, so a row in float32 whose sum is not exactly 1 is handled exactly. Zero-weight
    particles are never returned (see :func:`_search_cdf`).

    On the CPU the plain lookup is tried first and kept when every index it returns has a
    positive weight: the CPU's cumulative sum adds in order, so the cdf is monotone and a zero
    weight's interval is exactly empty, and the lookup then equals :func:`_search_cdf`'s (whose
    repairs only move indices that land on a zero weight). Anything else (``u * total`` rounding
    up to the total past trailing zeros) takes :func:`_search_cdf`. On other devices that check
    would be a host synchronisation, so they always take it.
    """
    import torch

    weights = weights.detach().to(torch.float64)  # (..., N)
    cdf = torch.cumsum(weights, dim=-1)  # (..., N)
    if cdf.device.type == "cpu":
        targets = uniforms * cdf[..., -1:]  # (..., M)
        index = torch.searchsorted(cdf, targets, right=True).clamp_(max=cdf.shape[-1] - 1)
        if bool(weights.gather(-1, index).gt(0).all()):
            return index  # (..., M)
    return _search_cdf(cdf, weights > 0, uniforms)


def systematic_from_uniform(
    weights: torch.Tensor,
    num_samples: int,
    uniform: torch.Tensor,
    negated: bool = False,
    far_from_one: bool = False,
) -> torch.Tensor:
    """The ancestors of :func:`systematic` for a given uniform U per row, ``uniform`` (..., 1)
    float64 in [0, 1): the points ``(j + U) / M``. For a caller that draws its uniforms itself
    (e.g. all of a run's at once, the same numbers as one draw per call); ``negated``: it holds
    -U instead (negating is exact), which is what the search reads.

    On the CPU, rows of up to 1024 particles take one binary search whose ancestors are those
    of :func:`_systematic_by_counts`, bit for bit: with ``x_i = M cdf_i / total - U`` rounded as
    there, ``ceil(x_i) <= j`` holds exactly when ``x_i <= j`` for an integer j, so the ancestor
    of point j, the number of i < N - 1 with ``n_i <= j``, is the number of ``x_i <= j`` once
    every i whose ``cdf_i`` is the total (the last one, and trailing zeros) is sent to +inf.
    ``x`` is non-decreasing (the CPU's cumulative sum adds in order): that count is
    ``searchsorted(x, j, right=True)``.

    ``far_from_one``: the caller has checked that every row's U passes
    :func:`uniforms_far_from_one` and that every row's weights have a positive total or a NaN
    one (as softmax outputs do). Then no mask is needed: where ``cdf_i`` is the total, ``x_i``
    is M (to within two roundings) minus U, above M - 1 and so above every point j, and with a
    NaN total the mask is empty. The ancestors are the same, for two fewer tensor calls."""
    import torch

    if weights.is_cpu and weights.dim() == 2:  # rows of particles, as the engine resamples
        if weights.shape[1] <= _SEARCH_MAX_PARTICLES and num_samples <= _SEARCH_MAX_PARTICLES:
            rows = weights.detach() if weights.requires_grad else weights
            grid, inf = _search_constants(weights.shape[0], num_samples)
            cdf = torch.cumsum(rows, dim=-1, dtype=torch.float64)  # (R, N)
            total = cdf.narrow(1, weights.shape[1] - 1, 1)  # (R, 1), cdf[:, -1:]
            shift = uniform if negated else -uniform  # -U
            points = torch.addcdiv(shift, cdf, total, value=num_samples)  # (R, N), x_i
            if not far_from_one:
                points.masked_fill_(cdf == total, inf)
            return torch.searchsorted(points, grid, right=True)
        return _systematic_by_counts(weights, num_samples, -uniform if negated else uniform)
    offsets = torch.arange(num_samples, dtype=torch.float64, device=weights.device)  # (M,)
    uniform = -uniform if negated else uniform
    return _inverse_cdf(weights, (offsets + uniform) / num_samples)  # (..., M)


def uniforms_far_from_one(uniforms: torch.Tensor, num_samples: int) -> bool:
    """Whether every U in ``uniforms`` is below 1 - M 2^-46 (M = ``num_samples``), which makes
    ``systematic_from_uniform(..., far_from_one=True)`` exact: where ``cdf_i`` is the total T >
    0, the point is ``x_i = fl(q - U)`` with q = fl(fl(M T) / T) within a relative 2^-52 of M,
    so x_i > M - 1 once 1 - U exceeds M 2^-51 (the rounding of the difference included). A
    uniform draw fails the bound with probability M 2^-46."""
    return bool((uniforms < 1.0 - num_samples * 2.0**-46).all())


def _systematic_by_counts(
    weights: torch.Tensor, num_samples: int, uniform: torch.Tensor
) -> torch.Tensor:
    """Systematic ancestors (R, N) -> (R, M) without a search: O(N + M) on the CPU.

    The points ``(j + U) / M`` below ``cdf_i / total`` number ``n_i = ceil(M cdf_i / total -
    U)`` (clamped to M; exactly M where ``cdf_i`` is the total), and the ancestor of point j is
    the number of particles i < N - 1 with ``n_i <= j``: the same ancestors as the inverse-CDF
    lookup in exact arithmetic, sorted. The CPU's cumulative sum adds in order, so a zero
    weight repeats the previous cdf value exactly, has ``n_i = n_{i-1}`` and gets no offspring
    (trailing zeros included: from the last positive weight on, ``n_i = M``).
    """
    import torch

    if weights.requires_grad:
        weights = weights.detach()
    cdf = torch.cumsum(weights, dim=-1, dtype=torch.float64)  # (R, N)
    total = cdf[:, -1:]  # (R, 1)
    # n_i = ceil(M cdf_i / total - U), at most M, and exactly M where cdf_i is the total
    below = torch.addcdiv(uniform.neg(), cdf, total, value=num_samples).ceil_()
    below = below.clamp_(max=num_samples).masked_fill_(cdf == total, num_samples)
    below = below.to(torch.int64)  # (R, N), non-decreasing
    rows, stride = weights.shape[0], num_samples + 1
    boundaries = below[:, :-1]  # (R, N - 1)
    if rows > 1:  # one count per row: offset each row's boundaries into its own segment
        boundaries = boundaries + torch.arange(rows)[:, None] * stride
    marks = torch.bincount(boundaries.reshape(-1), minlength=rows * stride)  # (R * (M + 1),)
    return marks.view(rows, stride).cumsum_(1)[:, :num_samples]  # (R, M)


#: Up to this many particles (and samples), one binary search beats the offspring counts (CPU).
_SEARCH_MAX_PARTICLES = 1024


@functools.lru_cache(maxsize=32)
def _search_constants(rows: int, num_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The points 0 .. M - 1 (float64, (rows, M), contiguous) and +inf as a float64 scalar
    tensor (a tensor fill value is the cheaper call), made once per shape; read only."""
    import torch

    with torch.inference_mode(False):  # normal tensors, whatever mode they are first made in
        grid = torch.arange(num_samples, dtype=torch.float64).repeat(rows, 1)
        return grid, torch.tensor(math.inf, dtype=torch.float64)
