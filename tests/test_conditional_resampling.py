"""Conditional resampling for particle Gibbs: the law given that slot 0 descends from particle 0.

Method. The conditional law of a scheme is, by definition, the unconditional law (the scheme
followed by a uniform random permutation of the slots, which makes them exchangeable) restricted
to the event ``ancestors[0] == 0``. Rejection sampling from the unconditional scheme draws from
it exactly; the conditional scheme must give the same law over whole ancestor vectors. With
N = 3 particles there are 27 vectors; each cell's frequency p_i from n draws has standard error
sqrt(p_i (1 - p_i) / n), and the two independent estimates of a cell must agree within 5
standard errors of their difference (two-sided normal tail 6e-7 per cell; seeds fixed).
"""

from __future__ import annotations

import pytest
import torch

from fksteer.smc.resampling import (
    CONDITIONAL_SCHEMES,
    RESAMPLING_SCHEMES,
    conditional_systematic,
    get_conditional_scheme,
    resample,
)

SIGMAS = 5.0
WEIGHTS = [
    torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64),
    torch.tensor([0.05, 0.7, 0.25], dtype=torch.float64),  # reference light: mostly one copy
    torch.tensor([0.8, 0.0, 0.2], dtype=torch.float64),  # reference heavy, a dead particle
]


def _cells(ancestors: torch.Tensor, num_particles: int) -> torch.Tensor:
    """(R, M) ancestor vectors -> their frequencies over all N^M vectors."""
    num_samples = ancestors.shape[-1]
    places = num_particles ** torch.arange(num_samples - 1, -1, -1)
    index = (ancestors * places).sum(-1)
    counts = torch.bincount(index, minlength=num_particles**num_samples).double()
    return counts / counts.sum()


def _rejection(weights: torch.Tensor, name: str, rows: int, generator) -> torch.Tensor:
    """Unconditional scheme, slots randomly permuted, kept where slot 0's ancestor is 0."""
    N = weights.numel()
    ancestors = resample(weights.expand(rows, N), N, name, generator)  # (R, N)
    order = torch.argsort(torch.rand(rows, N, generator=generator, dtype=torch.float64), dim=-1)
    permuted = torch.gather(ancestors, -1, order)
    return permuted[permuted[:, 0] == 0]


@pytest.mark.parametrize("name", sorted(CONDITIONAL_SCHEMES))
@pytest.mark.parametrize("case", range(len(WEIGHTS)))
def test_conditional_law_is_the_unconditional_law_given_the_reference(name, case):
    weights = WEIGHTS[case]
    N = weights.numel()
    generator = torch.Generator().manual_seed(17 + case)
    kept = _rejection(weights, name, 400_000, generator)
    conditional = get_conditional_scheme(name)(weights.expand(200_000, N), N, generator)
    assert conditional.dtype == torch.int64 and bool((conditional[:, 0] == 0).all())
    p_reference, p_conditional = _cells(kept, N), _cells(conditional, N)
    se = torch.sqrt(
        p_reference * (1 - p_reference) / len(kept)
        + p_conditional * (1 - p_conditional) / len(conditional)
    )
    # cells impossible under one law must be empty under the other
    assert bool(((p_reference == 0) == (p_conditional == 0)).all())
    assert bool(((p_reference - p_conditional).abs() <= SIGMAS * se + 1e-12).all())


def test_conditional_systematic_keeps_systematic_counts_and_never_picks_dead():
    generator = torch.Generator().manual_seed(3)
    weights = torch.tensor([0.3, 0.0, 0.45, 0.25], dtype=torch.float64).expand(5000, 4)
    ancestors = conditional_systematic(weights, 8, generator)  # (R, 8)
    counts = torch.zeros(5000, 4, dtype=torch.int64).scatter_add_(
        1, ancestors, torch.ones_like(ancestors)
    )
    expected = 8 * weights
    assert bool((counts >= expected.floor()).all() and (counts <= expected.ceil()).all())
    assert bool((counts[:, 1] == 0).all()) and bool((ancestors[:, 0] == 0).all())
    # the other slots are in random order (not sorted as plain systematic gives them)
    assert bool((ancestors[:, 1:].diff(dim=-1) < 0).any())


def test_conditional_schemes_batch_over_groups_and_use_the_generator_only():
    weights = torch.softmax(torch.randn(6, 5, generator=torch.Generator().manual_seed(0)), -1)
    for name, scheme in CONDITIONAL_SCHEMES.items():
        first = scheme(weights, 5, torch.Generator().manual_seed(9))
        second = scheme(weights, 5, torch.Generator().manual_seed(9))
        assert first.shape == (6, 5) and torch.equal(first, second), name
        assert bool((first[:, 0] == 0).all()), name


@pytest.mark.parametrize("name", sorted(set(RESAMPLING_SCHEMES) - set(CONDITIONAL_SCHEMES)))
def test_schemes_without_a_conditional_version_are_refused_by_name(name):
    with pytest.raises(ValueError, match=f"{name!r} has no conditional version"):
        get_conditional_scheme(name)


def test_unconditional_systematic_given_reference_is_not_plain_systematic():
    """Sanity of the method: plain systematic with slot 0 forced to 0 has another law (so the
    rejection check above can fail), e.g. it never puts a copy of particle 0 in slot 1 when
    particle 0 has one offspring."""
    weights = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    generator = torch.Generator().manual_seed(5)
    kept = _rejection(weights, "systematic", 200_000, generator)
    plain = resample(weights.expand(200_000, 3), 3, "systematic", generator)
    plain[:, 0] = 0
    difference = (_cells(kept, 3) - _cells(plain, 3)).abs().max()
    assert float(difference) > 0.05
