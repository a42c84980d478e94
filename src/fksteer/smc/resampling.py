"""Resampling schemes: draw ancestor indices from normalised particle weights.

    from fksteer.smc.resampling import resample

    ancestors = resample(weights, num_samples, "systematic", generator)  # (..., num_samples)

What is in it:

- :func:`multinomial`, :func:`stratified`, :func:`systematic`, :func:`residual`: the four
  standard unbiased schemes, all with one signature
  ``scheme(weights, num_samples, generator) -> ancestors``; :func:`systematic_from_uniform`
  is the systematic scheme for uniforms its caller drew.
- :data:`RESAMPLING_SCHEMES`: the registry, name -> scheme; :func:`get_scheme` looks a name up.
- :func:`resample`: the public entry point; validates its input once, then calls a scheme given
  by name or as a callable of the signature above.
- :func:`conditional_multinomial`, :func:`conditional_systematic` and
  :data:`CONDITIONAL_SCHEMES` (:func:`get_conditional_scheme`): the same signature, for
  conditional SMC (particle Gibbs): particle 0 is the reference and is its own ancestor, the
  other ancestors are drawn from the scheme's law given that (Andrieu, Doucet & Holenstein
  2010; Chopin & Singh 2015). Other schemes have no conditional version here and are refused
  by name.

The registry's names load without torch (the command line lists them in its help before any
model is loaded); the functions import it when called.

Conventions shared by every scheme:

- ``weights`` is a float tensor ``(..., N)`` of probabilities over the last axis, batched over any
  leading axes (e.g. ``(groups, particles_per_group)``). Each row is used up to its own total, so
  rows whose sum is ``1 +- rounding`` (or any positive constant) are handled exactly.
- The result is an int64 tensor ``(..., num_samples)`` of ancestor indices in ``[0, N)`` on the
  weights' device. Every scheme is unbiased: ``E[#{j : ancestors[..., j] == i}] =
  num_samples * w_i``.
- Randomness comes only from the explicit ``generator`` (on the weights' device), never from the
  global RNG, so the same seed gives the same ancestors.
- Every scheme is an inverse-CDF lookup in float64: ``searchsorted(cumsum(w), u * total,
  right=True)``. A particle with zero weight is never chosen, whatever the rounding (see
  :func:`_inverse_cdf` for how leading zeros, trailing zeros and ``u * total == total`` are
  handled).

References: R. Douc, O. Cappé and E. Moulines (2005), "Comparison of resampling schemes for
particle filtering", ISPA 2005; N. Chopin and O. Papaspiliopoulos (2020), "An Introduction to
Sequential Monte Carlo", Springer, chapter 9.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import TYPE_CHECKING

# the inverse-CDF lookups and the systematic scheme's search (re-exported)
from fksteer.smc.systematic_search import (
    _inverse_cdf,
    _search_cdf,  # noqa: F401
    _systematic_by_counts,  # noqa: F401
    systematic_from_uniform,
    uniforms_far_from_one,
)

if TYPE_CHECKING:  # torch is imported inside the functions: the names load without it
    import torch


__all__ = [
    "CONDITIONAL_SCHEMES",
    "RESAMPLING_SCHEMES",
    "conditional_multinomial",
    "conditional_systematic",
    "get_conditional_scheme",
    "ResamplingScheme",
    "get_scheme",
    "survivors_in_place",
    "multinomial",
    "systematic_from_uniform",
    "uniforms_far_from_one",
    "residual",
    "resample",
    "stratified",
    "systematic",
]

ResamplingScheme = Callable[["torch.Tensor", int, "torch.Generator"], "torch.Tensor"]


# --------------------------------------------------------------------------------------------
# Shared machinery
# --------------------------------------------------------------------------------------------


def _uniforms(
    shape: tuple[int, ...], generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """Uniform draws in [0, 1), float64, from ``generator`` (the only source of randomness)."""
    import torch

    return torch.rand(shape, generator=generator, dtype=torch.float64, device=device)


# --------------------------------------------------------------------------------------------
# The schemes. Each assumes valid input (use `resample` to validate).
# --------------------------------------------------------------------------------------------


def multinomial(
    weights: torch.Tensor, num_samples: int, generator: torch.Generator
) -> torch.Tensor:
    """Multinomial resampling: ``num_samples`` iid draws from the categorical law ``weights``.

    The reference scheme (the bootstrap filter's), and the noisiest: offspring counts are
    Multinomial(M, w), with variance ``M w_i (1 - w_i)``. Ancestors come in the order drawn
    (not sorted). ``weights`` (..., N) -> int64 ancestors (..., num_samples).
    """
    uniforms = _uniforms((*weights.shape[:-1], num_samples), generator, weights.device)
    return _inverse_cdf(weights, uniforms)  # (..., M)


def stratified(
    weights: torch.Tensor, num_samples: int, generator: torch.Generator
) -> torch.Tensor:
    """Stratified resampling: one uniform in each stratum, ``u_j = (j + U_j) / M``, U_j iid.

    Unbiased, with lower variance than multinomial for every test function (Douc, Cappé &
    Moulines 2005, sec. 3; Chopin & Papaspiliopoulos 2020, sec. 9.6). Each offspring count lies
    in ``[floor(M w_i) - 1, ceil(M w_i) + 1]`` (particle ``i``'s interval of length ``w_i`` fully
    covers at least ``floor(M w_i) - 1`` strata and meets at most ``ceil(M w_i) + 1``).
    Ancestors are sorted. ``weights`` (..., N) -> int64 ancestors (..., num_samples).
    """
    import torch

    batch_shape = weights.shape[:-1]
    offsets = torch.arange(num_samples, dtype=torch.float64, device=weights.device)  # (M,)
    uniforms = (offsets + _uniforms((*batch_shape, num_samples), generator, weights.device))
    return _inverse_cdf(weights, uniforms / num_samples)  # (..., M)


def systematic(
    weights: torch.Tensor, num_samples: int, generator: torch.Generator
) -> torch.Tensor:
    """Systematic resampling: one uniform per row, ``u_j = (j + U) / M``.

    Unbiased, cheap, and usually the lowest-variance scheme in practice; each offspring count is
    ``floor(M w_i)`` or ``ceil(M w_i)`` (an interval of length ``w_i`` holds that many points of
    a grid of spacing ``1/M``). Unlike stratified, it is not guaranteed to beat multinomial for
    every test function (Douc, Cappé & Moulines 2005, sec. 3.4; Chopin & Papaspiliopoulos 2020,
    sec. 9.6). Ancestors are sorted. ``weights`` (..., N) -> int64 ancestors (..., num_samples).
    """
    uniform = _uniforms((*weights.shape[:-1], 1), generator, weights.device)  # (..., 1)
    return systematic_from_uniform(weights, num_samples, uniform)


def residual(
    weights: torch.Tensor, num_samples: int, generator: torch.Generator
) -> torch.Tensor:
    """Residual resampling with a systematic remainder.

    Particle ``i`` first gets ``floor(M w_i)`` deterministic copies; the ``R = M - sum_i
    floor(M w_i)`` remaining slots are then filled by *systematic* resampling on the residual
    weights ``(M w_i - floor(M w_i)) / R``. Since each residual weight times ``R`` is below 1,
    the systematic step gives each particle 0 or 1 extra copy, so every count lies within
    ``[floor(M w_i), ceil(M w_i)]``, like systematic resampling.

    This differs from the textbook residual-multinomial variant (Liu & Chen 1998; Douc, Cappé &
    Moulines 2005, sec. 3.2), which draws the remainder multinomially and can give a particle
    more than ``ceil(M w_i)`` copies. Both are unbiased: E[count_i] = M w_i. See also Chopin &
    Papaspiliopoulos 2020, sec. 9.6.

    The number of remaining slots ``R`` differs from row to row; the rows are handled together
    by masks (no loop). Ancestors come sorted within the deterministic part, then sorted within
    the remainder. ``weights`` (..., N) -> int64 ancestors (..., num_samples).
    """
    import torch

    device = weights.device
    batch_shape = weights.shape[:-1]
    num_particles = weights.shape[-1]
    weights64 = weights.detach().to(torch.float64)  # (..., N)
    total = weights64.sum(dim=-1, keepdim=True)  # (..., 1)
    expected = num_samples * (weights64 / total)  # (..., N), M w_i
    copies = torch.floor(expected)  # (..., N)
    residual_weights = (expected - copies).clamp_(min=0.0)  # (..., N), in [0, 1)
    copies = copies.to(torch.int64)
    copies_cdf = torch.cumsum(copies, dim=-1).contiguous()  # (..., N)
    num_deterministic = copies_cdf[..., -1:]  # (..., 1); <= M up to rounding of M * N * eps
    num_remaining = (num_samples - num_deterministic).clamp(min=1)  # (..., 1), 1 if none left

    slots = torch.arange(num_samples, device=device)  # (M,)
    # Deterministic part: slot p goes to the first i with cumsum(copies)[i] > p.
    slots_batched = slots.expand(*batch_shape, num_samples).contiguous()  # (..., M)
    deterministic = torch.searchsorted(copies_cdf, slots_batched, right=True)  # (..., M)
    deterministic = deterministic.clamp_(max=num_particles - 1)

    # Remainder: slot p is the j-th remainder slot, j = p - num_deterministic, with the
    # systematic point u_j = (j + U) / R. Slots of the deterministic part get j < 0 and are
    # discarded below; rows with no remainder (residual weights all zero) are fully
    # deterministic and their remainder lookups, though in range, are discarded too.
    uniform = _uniforms((*batch_shape, 1), generator, device)  # (..., 1)
    remainder_slot = (slots - num_deterministic).to(torch.float64)  # (..., M)
    uniforms = ((remainder_slot + uniform) / num_remaining).clamp_(min=0.0)  # (..., M)
    remainder = _inverse_cdf(residual_weights, uniforms)  # (..., M)

    return torch.where(slots < num_deterministic, deterministic, remainder)  # (..., M)


# --------------------------------------------------------------------------------------------
# Registry and public entry point
# --------------------------------------------------------------------------------------------

RESAMPLING_SCHEMES: dict[str, ResamplingScheme] = {
    "multinomial": multinomial,
    "stratified": stratified,
    "systematic": systematic,
    "residual": residual,
}


def get_scheme(name: str) -> ResamplingScheme:
    """Look up a resampling scheme by name in :data:`RESAMPLING_SCHEMES`."""
    try:
        return RESAMPLING_SCHEMES[name]
    except (KeyError, TypeError):
        valid = ", ".join(repr(key) for key in RESAMPLING_SCHEMES)
        raise ValueError(
            f"Unknown resampling scheme {name!r}; valid names are {valid}."
        ) from None


def _validate(weights: torch.Tensor, num_samples: int, generator: torch.Generator) -> int:
    """Check the arguments of :func:`resample`; return ``num_samples`` as an int."""
    import torch

    if not isinstance(weights, torch.Tensor):
        raise TypeError(
            f"weights must be a torch.Tensor of shape (..., N), got {type(weights).__name__}; "
            "wrap it with torch.as_tensor."
        )
    if not weights.is_floating_point():
        raise TypeError(
            f"weights must have a floating dtype, got {weights.dtype}; "
            "convert with weights.to(torch.float64)."
        )
    if weights.dim() < 1 or weights.shape[-1] < 1:
        raise ValueError(
            f"weights must have shape (..., N) with N >= 1 particles, got shape "
            f"{tuple(weights.shape)}."
        )
    if isinstance(num_samples, bool):
        raise TypeError(f"num_samples must be an int >= 1, got {num_samples!r}.")
    try:
        num_samples = operator.index(num_samples)
    except TypeError:
        raise TypeError(
            f"num_samples must be an int >= 1, got {num_samples!r} "
            f"({type(num_samples).__name__})."
        ) from None
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator, got {type(generator).__name__}; pass "
            "torch.Generator(device=weights.device).manual_seed(seed)."
        )
    if generator.device.type != weights.device.type:
        raise ValueError(
            f"generator is on device {generator.device} but weights are on {weights.device}; "
            f"create it with torch.Generator(device={str(weights.device)!r})."
        )
    if weights.numel():
        _check_values(weights)
    return num_samples


def _check_values(weights: torch.Tensor) -> None:
    """Finite, non-negative weights with a positive sum in every row, or a ValueError."""
    import torch

    weights64 = weights.detach().to(torch.float64)
    if not bool(torch.isfinite(weights64).all()):
        bad = weights64[~torch.isfinite(weights64)][0].item()
        raise ValueError(
            f"weights must be finite, found {bad}; compute weights in log space and normalise "
            "with softmax / logsumexp."
        )
    if bool((weights64 < 0).any()):
        bad = weights64[weights64 < 0].min().item()
        raise ValueError(
            f"weights must be non-negative, found {bad}; pass probabilities (e.g. "
            "softmax of log-weights), not log-weights."
        )
    row_sums = weights64.sum(dim=-1)  # (...)
    if not bool((row_sums > 0).all()):
        row = tuple(int(i) for i in (row_sums <= 0).nonzero()[0].tolist())
        raise ValueError(
            f"weights must have a positive sum in every row, but row {row} of weights with "
            f"shape {tuple(weights.shape)} sums to 0 (every particle dead); drop or restart "
            "that row before resampling."
        )


def resample(
    weights: torch.Tensor,
    num_samples: int,
    scheme: str | ResamplingScheme,
    generator: torch.Generator,
) -> torch.Tensor:
    """Draw ancestor indices from ``weights`` with the given resampling scheme.

    Args:
        weights: (..., N) float tensor of probabilities over the last axis, batched over any
            leading axes; each row is used up to its own total (normalised up to rounding is
            fine). Must be finite, non-negative, with a positive sum in every row.
        num_samples: M >= 1, the number of ancestors per row (need not equal N).
        scheme: a name in :data:`RESAMPLING_SCHEMES` (``"multinomial"``, ``"stratified"``,
            ``"systematic"``, ``"residual"``) or a callable
            ``scheme(weights, num_samples, generator) -> ancestors``.
        generator: the torch.Generator to draw from, on the weights' device.

    Returns:
        int64 tensor (..., M) of ancestor indices in [0, N) on the weights' device; a particle
        with zero weight is never an ancestor.
    """
    import torch

    num_samples = _validate(weights, num_samples, generator)
    if isinstance(scheme, str):
        scheme_fn = get_scheme(scheme)
    elif callable(scheme):
        scheme_fn = scheme
    else:
        raise TypeError(
            f"scheme must be a name in {sorted(RESAMPLING_SCHEMES)} or a callable "
            f"(weights, num_samples, generator) -> ancestors, got {scheme!r}."
        )
    ancestors = scheme_fn(weights, num_samples, generator)
    expected_shape = (*weights.shape[:-1], num_samples)
    if (
        not isinstance(ancestors, torch.Tensor)
        or tuple(ancestors.shape) != expected_shape
        or ancestors.dtype != torch.int64
    ):
        got = (
            f"{tuple(ancestors.shape)} {ancestors.dtype}"
            if isinstance(ancestors, torch.Tensor)
            else type(ancestors).__name__
        )
        raise ValueError(
            f"resampling scheme {scheme!r} must return an int64 tensor of shape "
            f"{expected_shape}, got {got}."
        )
    return ancestors


# --------------------------------------------------------------------------------------------
# Conditional schemes: particle 0 is the reference and keeps itself as its ancestor
# --------------------------------------------------------------------------------------------


def conditional_multinomial(
    weights: torch.Tensor, num_samples: int, generator: torch.Generator
) -> torch.Tensor:
    """Multinomial resampling given that slot 0 descends from particle 0 (the reference).

    Under multinomial resampling the ancestors are iid, so conditioning slot 0 on ancestor 0
    leaves the others iid from ``weights`` (Andrieu, Doucet & Holenstein 2010, sec. 4.3).
    ``weights`` (..., N) -> int64 ancestors (..., num_samples) with ``ancestors[..., 0] == 0``.
    """
    ancestors = multinomial(weights, num_samples, generator)  # (..., M)
    ancestors[..., 0] = 0
    return ancestors


def conditional_systematic(
    weights: torch.Tensor, num_samples: int, generator: torch.Generator
) -> torch.Tensor:
    """Systematic resampling, randomly permuted, given that slot 0 descends from particle 0.

    Chopin & Singh (2015, "On particle Gibbs sampling", sec. 3): the unconditional scheme is
    systematic resampling (grid points (n + U) / M, n = 0 .. M-1) followed by a uniform random
    permutation of the slots, which makes the slots exchangeable as conditional SMC needs. Given
    that slot 0's ancestor is 0, U has density proportional to particle 0's offspring count
    O_0(U), and slot 0 holds a uniformly chosen one of those offspring. Both at once: draw
    v ~ Uniform(0, M w_0) (the grid coordinate n + U of a point landing in particle 0's
    interval [0, w_0)), set U = frac(v) and give slot 0 the grid point floor(v); the other
    M - 1 grid points go to slots 1 .. M-1 in a uniformly random order.
    ``weights`` (..., N) -> int64 ancestors (..., num_samples) with ``ancestors[..., 0] == 0``.
    """
    import torch

    weights64 = weights.detach().to(torch.float64)  # (..., N)
    batch_shape, device = weights.shape[:-1], weights.device
    share = weights64[..., :1] / weights64.sum(dim=-1, keepdim=True)  # (..., 1) w_0
    v = _uniforms((*batch_shape, 1), generator, device) * num_samples * share  # (..., 1)
    point = v.floor().clamp_(max=num_samples - 1)  # (..., 1) the reference's grid point
    offsets = torch.arange(num_samples, dtype=torch.float64, device=device)  # (M,)
    grid = _inverse_cdf(weights64, (offsets + (v - point)) / num_samples)  # (..., M) sorted
    # slots 1 .. M-1 take the other grid points in a uniformly random order
    keys = _uniforms((*batch_shape, num_samples), generator, device)  # (..., M)
    keys = keys.scatter(-1, point.long(), -1.0)  # the reference's point sorts first
    order = torch.argsort(keys, dim=-1)  # (..., M): order[..., 0] is the reference's point
    ancestors = torch.gather(grid, -1, order)
    ancestors[..., 0] = 0  # already 0 in exact arithmetic (v lies in [0, M w_0))
    return ancestors


#: name -> conditional version of the scheme of that name (slot 0 keeps ancestor 0).
CONDITIONAL_SCHEMES: dict[str, ResamplingScheme] = {
    "multinomial": conditional_multinomial,
    "systematic": conditional_systematic,
}


def get_conditional_scheme(name: str) -> ResamplingScheme:
    """The conditional version of the scheme ``name``; a ValueError for schemes that have none."""
    try:
        return CONDITIONAL_SCHEMES[name]
    except (KeyError, TypeError):
        valid = ", ".join(repr(key) for key in CONDITIONAL_SCHEMES)
        raise ValueError(
            f"resampling scheme {name!r} has no conditional version for particle Gibbs: use "
            f"FKConfig(resampling=...) with one of {valid}."
        ) from None


def survivors_in_place(ancestors: torch.Tensor) -> torch.Tensor:
    """The same offspring as ``ancestors`` (G, K), with every surviving particle in its own slot.

    After resampling the particles of a group are exchangeable (equal weights), so any
    rearrangement of the slots leaves the particle system's law unchanged. This one keeps each
    particle that has offspring at its own index and puts its extra copies, in index order, into
    the slots of the particles that have none. A driver whose particles live in several places
    (processes, devices) then moves only the extra copies: with unsorted ancestors
    (multinomial) most slots would otherwise change.
    """
    import torch

    num_groups, K = ancestors.shape
    counts = torch.zeros(num_groups, K, dtype=torch.int64, device=ancestors.device)
    counts.scatter_add_(1, ancestors, torch.ones_like(ancestors))
    own = torch.arange(K, device=ancestors.device).expand(num_groups, K)
    arranged = torch.where(counts > 0, own, -1)
    # extra copies, row-major; each row has exactly as many as it has empty slots
    extras = torch.repeat_interleave(own.reshape(-1), (counts - 1).clamp(min=0).reshape(-1))
    arranged[arranged < 0] = extras
    return arranged


def __getattr__(name: str):
    # keep_in_place was this function's name until 0.1; it also named a ParticleSystem flag
    if name == "keep_in_place":
        import warnings

        warnings.warn(
            "fksteer.smc.resampling.keep_in_place is renamed survivors_in_place.",
            DeprecationWarning,
            stacklevel=2,
        )
        return survivors_in_place
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
