"""Tests for fksteer.smc.resampling: unbiasedness, count bounds, support, batching, errors.

Statistical checks use a fixed seed and a tolerance derived from the Monte Carlo error, written
next to each check. Most run on many independent rows in one batched call, which also exercises
the leading-dim batching.
"""

from __future__ import annotations

import math

import pytest
import torch

from fksteer.smc import resampling
from fksteer.smc.resampling import (
    RESAMPLING_SCHEMES,
    get_scheme,
    multinomial,
    resample,
    residual,
    stratified,
    systematic,
)

SCHEMES = sorted(RESAMPLING_SCHEMES)
N = 8
NUM_ROWS = 20_000  # independent replicate rows per weight vector
SAMPLE_SIZES = (N, 3, 2 * N + 1)  # M = N, fewer, more


def make_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def offspring_counts(ancestors: torch.Tensor, num_particles: int) -> torch.Tensor:
    """(..., M) ancestors -> (..., N) float64 counts N_i = #{j : ancestors[..., j] == i}."""
    counts = torch.zeros(*ancestors.shape[:-1], num_particles, dtype=torch.float64)
    return counts.scatter_add_(-1, ancestors, torch.ones_like(ancestors, dtype=torch.float64))


def unbiasedness_weights() -> torch.Tensor:
    """(4, N) weight vectors: generic, with zeros, skewed with small weights, near-uniform.

    Every positive weight is >= 1e-3, so with M >= 3 and 20000 rows each particle is expected
    to be drawn >= 60 times: enough for the normal approximation behind the 5-SE bound.
    """
    generic = torch.tensor([0.05, 0.21, 0.13, 0.07, 0.18, 0.11, 0.16, 0.09], dtype=torch.float64)
    with_zeros = torch.tensor([0.0, 0.31, 0.0, 0.27, 0.05, 0.37, 0.0, 0.0], dtype=torch.float64)
    skewed = torch.tensor([1e-3] * 7 + [1 - 7e-3], dtype=torch.float64)
    near_uniform = torch.full((N,), 1.0 / N, dtype=torch.float64) + torch.linspace(
        -0.01, 0.01, N, dtype=torch.float64
    )
    weights = torch.stack([generic, with_zeros, skewed, near_uniform])  # (4, N)
    return weights / weights.sum(-1, keepdim=True)


# --------------------------------------------------------------------------------------------
# Unbiasedness: E[N_i] = M w_i
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("num_samples", SAMPLE_SIZES)
def test_expected_offspring_equals_m_times_weight(scheme: str, num_samples: int) -> None:
    weights = unbiasedness_weights()  # (V, N)
    batch = weights[:, None, :].expand(-1, NUM_ROWS, -1)  # (V, R, N): R iid replicates
    ancestors = resample(batch, num_samples, scheme, make_generator(0))  # (V, R, M)
    counts = offspring_counts(ancestors, N)  # (V, R, N)

    mean = counts.mean(dim=1)  # (V, N)
    # Tolerance: rows are independent, so by the CLT the mean count over R rows is normal
    # around E[N_i] with standard error SE = sqrt(Var[N_i] / R); Var[N_i] is estimated by the
    # empirical variance of the R counts (it depends on the scheme: M w (1 - w) for
    # multinomial, at most 1/4 for systematic/residual, ...). A 5-SE bound fails with
    # probability ~5.7e-7 per comparison, < 1e-4 over the 4 x 8 x 3 x 4 = 384 comparisons of
    # this test. The 1e-9 slack covers counts that are deterministic (zero variance, e.g.
    # weight 0 or an integer M w_i) up to float rounding.
    standard_error = (counts.var(dim=1) / NUM_ROWS).sqrt()  # (V, N)
    expected = num_samples * weights  # (V, N)
    excess = (mean - expected).abs() - (5 * standard_error + 1e-9)
    assert (excess <= 0).all(), (
        f"{scheme}, M={num_samples}: mean counts {mean} vs M w {expected}"
    )


@pytest.mark.parametrize("scheme", SCHEMES)
def test_rows_not_summing_to_one_are_used_up_to_their_total(scheme: str) -> None:
    # Float32 rounding (total 1 - 7.7e-7) and a row with total 0.9: E[N_i] = M w_i / total.
    # Same 5-SE bound as above (60 comparisons per scheme). No M w_i / total is within 0.03 of
    # an integer: a count that is an integer k with probability 1 - 1e-7 (float32 rounding of
    # an "exact" M w_i = k) would show zero empirical variance but a 1e-7 bias.
    weights = torch.stack(
        [
            _float32_not_one().to(torch.float64),
            torch.tensor([0.0, 0.2, 0.35, 0.1, 0.25] + [0.0] * 10, dtype=torch.float64),
        ]
    ).to(torch.float32)  # (2, 15), totals ~1 - 7.7e-7 and 0.9
    num_particles = weights.shape[-1]
    for num_samples in (num_particles, 7):
        ancestors = resample(weights[:, None].expand(-1, NUM_ROWS, -1), num_samples, scheme,
                             make_generator(20))
        counts = offspring_counts(ancestors, num_particles)  # (2, R, N)
        weights64 = weights.to(torch.float64)
        expected = num_samples * weights64 / weights64.sum(-1, keepdim=True)
        standard_error = (counts.var(dim=1) / NUM_ROWS).sqrt()
        assert ((counts.mean(1) - expected).abs() <= 5 * standard_error + 1e-9).all()


def test_unbiasedness_check_has_power() -> None:
    """The 5-SE check above rejects a biased scheme (here: systematic with U fixed at 0.5)."""

    def biased(weights, num_samples, generator):
        offsets = torch.arange(num_samples, dtype=torch.float64)
        return resampling._inverse_cdf(weights, (offsets + 0.5) / num_samples)

    weights = unbiasedness_weights()[0]
    ancestors = resample(weights.expand(NUM_ROWS, -1), N, biased, make_generator(0))
    counts = offspring_counts(ancestors, N)
    se = (counts.var(dim=0) / NUM_ROWS).sqrt()
    assert ((counts.mean(0) - N * weights).abs() > 5 * se + 1e-9).any()


# --------------------------------------------------------------------------------------------
# Offspring-count bounds
# --------------------------------------------------------------------------------------------


def count_bounds(weights: torch.Tensor, num_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """floor(M w_i) and ceil(M w_i), with a 1e-9 margin for float rounding of M w_i."""
    expected = num_samples * weights.to(torch.float64)
    expected = expected / weights.to(torch.float64).sum(-1, keepdim=True)
    return torch.floor(expected - 1e-9), torch.ceil(expected + 1e-9)


@pytest.mark.parametrize("scheme", ["systematic", "residual"])
@pytest.mark.parametrize("num_samples", SAMPLE_SIZES)
def test_systematic_and_residual_counts_within_floor_ceil(scheme: str, num_samples: int) -> None:
    # Exact property (no tolerance): an interval of length w_i holds floor(M w_i) or
    # ceil(M w_i) points of the grid (j + U) / M; residual gives floor(M w_i) copies plus 0 or 1
    # from the systematic remainder. Checked on 20000 rows of random weights.
    weights = torch.distributions.Dirichlet(torch.full((N,), 0.7)).sample((NUM_ROWS,))
    weights = weights.to(torch.float64)  # (R, N), a different weight vector per row
    ancestors = resample(weights, num_samples, scheme, make_generator(1))
    counts = offspring_counts(ancestors, N)
    low, high = count_bounds(weights, num_samples)
    assert ((counts >= low) & (counts <= high)).all()


@pytest.mark.parametrize("num_samples", SAMPLE_SIZES)
def test_stratified_counts_within_floor_minus_one_ceil_plus_one(num_samples: int) -> None:
    # Exact property: the interval of length w_i fully covers >= floor(M w_i) - 1 strata of
    # width 1/M (each holding exactly one point) and meets <= ceil(M w_i) + 1 of them.
    weights = torch.distributions.Dirichlet(torch.full((N,), 0.7)).sample((NUM_ROWS,))
    weights = weights.to(torch.float64)
    counts = offspring_counts(resample(weights, num_samples, "stratified", make_generator(2)), N)
    low, high = count_bounds(weights, num_samples)
    assert ((counts >= (low - 1).clamp(min=0)) & (counts <= high + 1)).all()
    # ... and the bound is not the systematic one: stratified does leave [floor, ceil].
    assert ((counts < low) | (counts > high)).any()


def test_multinomial_leaves_floor_ceil_bounds() -> None:
    """Sanity check that the bound tests have power: multinomial counts do leave the bounds."""
    weights = torch.distributions.Dirichlet(torch.full((N,), 0.7)).sample((NUM_ROWS,))
    weights = weights.to(torch.float64)
    counts = offspring_counts(resample(weights, N, "multinomial", make_generator(3)), N)
    low, high = count_bounds(weights, N)
    assert ((counts < low - 1) | (counts > high + 1)).any()


def test_residual_remainder_is_systematic_not_multinomial() -> None:
    # With M w = (1.5, 1.5, 0.5, 0.5) there are 2 remainder slots over residuals (.5,.5,.5,.5)
    # / 2: a multinomial remainder gives particle 0 two extra copies with probability 1/16 per
    # row (P(no copy in 20000 rows) = (15/16)^20000 ~ 0), a systematic one never does.
    weights = torch.tensor([0.375, 0.375, 0.125, 0.125], dtype=torch.float64)
    ancestors = resample(weights.expand(NUM_ROWS, -1), 4, "residual", make_generator(4))
    counts = offspring_counts(ancestors, 4)
    assert counts[:, 0].max() <= 2 and counts[:, 0].min() >= 1
    assert (counts[:, 2] <= 1).all()


# --------------------------------------------------------------------------------------------
# Zero-weight particles are never chosen
# --------------------------------------------------------------------------------------------


def _float32_not_one() -> torch.Tensor:
    """float32 weights (15,) with leading/trailing zeros whose float32 cumsum is not 1."""
    # A float32 softmax output (rounded to 6 digits), padded with zeros on both sides: its
    # float32 cumsum ends at 1 - 7.7e-7, not 1 (torch's CPU cumsum accumulates in double, so
    # equal weights such as [0.1] * 10 would still end at exactly 1.0 in float32).
    probabilities = [0.363579, 0.0580654, 0.00881284, 0.137473, 0.0263239, 0.0192287,
                     0.116553, 0.180012, 0.03793, 0.0520214]
    return torch.tensor([0.0, 0.0, *probabilities, 0.0, 0.0, 0.0], dtype=torch.float32)


ZERO_WEIGHT_CASES = {
    "leading_zeros": torch.tensor([0.0, 0.0, 0.0, 0.25, 0.75], dtype=torch.float64),
    "trailing_zeros": torch.tensor([0.25, 0.75, 0.0, 0.0, 0.0], dtype=torch.float64),
    "interleaved_zeros": torch.tensor([0.0, 0.3, 0.0, 0.0, 0.2, 0.0, 0.5, 0.0]),
    # float32 weights whose float32 cumsum does not end at exactly 1 (asserted below).
    "float32_cumsum_not_one": _float32_not_one(),
    # float64 total below 1: an implementation that does not scale u by the total picks the
    # trailing zeros whenever u > 0.9 (10% of draws).
    "total_below_one": torch.tensor([0.3, 0.3, 0.3, 0.0, 0.0], dtype=torch.float64),
    # total 1 + 1e-4 in float32, in the tolerated rounding range.
    "total_above_one_float32": torch.tensor([0.0, 0.50005, 0.5, 0.0], dtype=torch.float32),
    # many tiny weights next to a huge one: after the huge weight the float64 cumsum no longer
    # moves, so tiny and zero weights share one cdf value.
    "tiny_next_to_huge_float32": torch.tensor(
        [1e-30, 0.0] * 20 + [1.0, 0.0] + [1e-30, 0.0] * 20, dtype=torch.float32
    ),
    "tiny_next_to_huge_float64": torch.tensor(
        [5e-324, 0.0, 1e-300, 0.0] * 10 + [1.0, 0.0, 0.0] + [1e-300, 0.0, 5e-324] * 10,
        dtype=torch.float64,
    ),
    "tiny_low_precision_float16": torch.tensor(
        [0.0, 6e-8, 0.0, 0.999, 0.0, 6e-8, 0.0], dtype=torch.float16
    ),
}


def test_float32_case_really_has_cumsum_not_one() -> None:
    weights = ZERO_WEIGHT_CASES["float32_cumsum_not_one"]
    assert torch.cumsum(weights, 0)[-1].item() != 1.0
    assert weights.to(torch.float64).sum().item() != 1.0


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("case", sorted(ZERO_WEIGHT_CASES))
def test_zero_weight_never_chosen(scheme: str, case: str) -> None:
    weights = ZERO_WEIGHT_CASES[case]
    support = weights > 0
    generator = make_generator(5)
    for num_samples in (weights.shape[-1], 3, 2 * weights.shape[-1] + 1):
        batch = weights.expand(2_000, -1)  # (R, N)
        ancestors = resample(batch, num_samples, scheme, generator)
        assert ancestors.shape == (2_000, num_samples)
        assert support[ancestors].all(), f"{scheme} chose a zero-weight particle in {case}"


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("case", sorted(ZERO_WEIGHT_CASES))
@pytest.mark.parametrize("uniform", [0.0, 1.0 - 2.0**-53, 1.0])
def test_zero_weight_never_chosen_at_extreme_uniforms(
    scheme: str, case: str, uniform: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Force every uniform draw to the extremes: u = 0 must skip leading zeros; u = 1 - 2^-53
    # (the largest value torch.rand can return), and 1.0 itself, make u * total round to the
    # total (and (M - 1 + U) / M round to 1), which must land on the last positive weight, not
    # on trailing zeros or past the end.
    def extreme(shape, generator, device):
        return torch.full(shape, uniform, dtype=torch.float64, device=device)

    monkeypatch.setattr(resampling, "_uniforms", extreme)
    weights = ZERO_WEIGHT_CASES[case]
    support = weights > 0
    for num_samples in (1, 3, weights.shape[-1], 2 * weights.shape[-1] + 1):
        ancestors = resample(weights, num_samples, scheme, make_generator(0))
        assert support[ancestors].all(), (
            f"{scheme} chose a zero-weight particle in {case} at u={uniform}: {ancestors}"
        )
    last_positive = int(support.nonzero().max())
    if uniform == 1.0 and scheme in ("multinomial", "stratified", "systematic"):
        assert resample(weights, 1, scheme, make_generator(0)).item() == last_positive


def test_inverse_cdf_clamps_to_last_positive_weight() -> None:
    weights = torch.tensor([[0.0, 0.4, 0.6, 0.0, 0.0]], dtype=torch.float32)
    uniforms = torch.tensor([[0.0, 0.4, 1.0 - 2.0**-53, 1.0]], dtype=torch.float64)
    assert resampling._inverse_cdf(weights, uniforms).tolist() == [[1, 2, 2, 2]]


def test_search_cdf_repairs_a_cdf_rounded_by_a_parallel_scan() -> None:
    # A tree-ordered (GPU) cumsum can round cdf[i] != cdf[i-1] although w[i] == 0, giving the
    # zero-weight particle a one-ulp interval, or even make the cdf decrease. Neither may ever
    # select the zero-weight particle.
    half = 0.5
    above = math.nextafter(half, 1.0)
    below = math.nextafter(half, 0.0)
    positive = torch.tensor([[True, False, True], [True, False, True]])
    cdf = torch.tensor([[half, above, 1.0], [half, below, 1.0]], dtype=torch.float64)
    uniforms = torch.tensor([[half, below, above], [half, below, above]], dtype=torch.float64)
    ancestors = resampling._search_cdf(cdf, positive, uniforms)
    assert positive.gather(-1, ancestors).all(), ancestors


# --------------------------------------------------------------------------------------------
# Shapes, dtypes, determinism, batching
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_shape_dtype_range_for_every_float_dtype(scheme: str, dtype: torch.dtype) -> None:
    weights = torch.softmax(torch.randn(3, 4, N, generator=make_generator(6)), -1).to(dtype)
    for num_samples in SAMPLE_SIZES:
        ancestors = resample(weights, num_samples, scheme, make_generator(7))
        assert ancestors.shape == (3, 4, num_samples)
        assert ancestors.dtype == torch.int64
        assert ancestors.device == weights.device
        assert ((ancestors >= 0) & (ancestors < N)).all()
    # 1-D weights (no leading dims) work too.
    assert resample(weights[0, 0], 5, scheme, make_generator(7)).shape == (5,)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_same_seed_same_ancestors_and_different_seed_differs(scheme: str) -> None:
    weights = torch.softmax(torch.randn(100, N, generator=make_generator(8)), -1)
    first = resample(weights, 64, scheme, make_generator(1234))
    again = resample(weights, 64, scheme, make_generator(1234))
    other = resample(weights, 64, scheme, make_generator(1235))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_global_rng_untouched(scheme: str) -> None:
    torch.manual_seed(0)
    state = torch.get_rng_state()
    resample(torch.full((4, N), 1.0 / N), N, scheme, make_generator(0))
    assert torch.equal(torch.get_rng_state(), state)


def batch_weights() -> torch.Tensor:
    """(2, 3, N) weight vectors with different supports per row."""
    raw = torch.rand(2, 3, N, generator=make_generator(9), dtype=torch.float64) + 0.05
    mask = torch.tensor(
        [
            [[1, 1, 1, 1, 1, 1, 1, 1], [0, 1, 0, 1, 0, 1, 0, 1], [1, 0, 0, 0, 0, 0, 0, 1]],
            [[0, 0, 0, 0, 0, 0, 0, 1], [1, 1, 1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 1, 1, 0, 0]],
        ],
        dtype=torch.float64,
    )
    weights = raw * mask
    return weights / weights.sum(-1, keepdim=True)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_batched_rows_follow_each_rows_own_law(scheme: str) -> None:
    weights = batch_weights()  # (2, 3, N)
    num_samples = 5
    ancestors = resample(weights, num_samples, scheme, make_generator(10))
    assert ancestors.shape == (2, 3, num_samples) and ancestors.dtype == torch.int64
    assert torch.gather(weights > 0, -1, ancestors).all()  # each row within its own support

    # Same law as processing each row on its own: compare the first two moments of the counts
    # from the batched call (R replicates of the (2, 3, N) batch) with separate calls on each
    # row. Two independent means of R samples each differ by a normal with variance
    # (var_a + var_b) / R; a 5-SE bound (per-comparison false alarm ~5.7e-7, 2 x 6 x 8 = 96
    # comparisons) is used, plus the 1e-9 slack for deterministic counts.
    reps = 10_000
    batched = offspring_counts(
        resample(weights.expand(reps, -1, -1, -1), num_samples, scheme, make_generator(11)), N
    )  # (reps, 2, 3, N)
    for a in range(2):
        for b in range(3):
            single = offspring_counts(
                resample(weights[a, b].expand(reps, -1), num_samples, scheme,
                         make_generator(12 + 3 * a + b)),
                N,
            )  # (reps, N)
            together = batched[:, a, b]  # (reps, N)
            for power in (1, 2):
                x, y = together**power, single**power
                se = ((x.var(0) + y.var(0)) / reps).sqrt()
                assert ((x.mean(0) - y.mean(0)).abs() <= 5 * se + 1e-9).all()
            # ... and both are unbiased for M w of that row.
            se = (together.var(0) / reps).sqrt()
            assert ((together.mean(0) - num_samples * weights[a, b]).abs() <= 5 * se + 1e-9).all()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_one_hot_weights_return_only_that_index(scheme: str) -> None:
    for index in (0, 3, N - 1):
        weights = torch.zeros(N, dtype=torch.float32)
        weights[index] = 1.0
        for num_samples in (1, N, 2 * N + 1):
            ancestors = resample(weights.expand(50, -1), num_samples, scheme, make_generator(13))
            assert (ancestors == index).all()


def test_schemes_callable_directly_and_registry() -> None:
    assert set(RESAMPLING_SCHEMES) == {"multinomial", "stratified", "systematic", "residual"}
    assert get_scheme("systematic") is systematic
    assert get_scheme("residual") is residual
    assert get_scheme("stratified") is stratified
    assert get_scheme("multinomial") is multinomial
    weights = torch.full((2, N), 1.0 / N)
    # Equal weights with M = N: systematic and residual give every particle exactly one copy.
    for scheme in (systematic, residual):
        ancestors = scheme(weights, N, make_generator(0))
        assert torch.equal(ancestors.sort(-1).values, torch.arange(N).expand(2, -1))


def test_resample_accepts_a_callable_scheme() -> None:
    calls = []

    def custom(weights, num_samples, generator):
        calls.append(num_samples)
        return systematic(weights, num_samples, generator)

    weights = torch.full((3, N), 1.0 / N)
    assert resample(weights, 4, custom, make_generator(0)).shape == (3, 4)
    assert calls == [4]


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def test_unknown_scheme_lists_valid_names() -> None:
    with pytest.raises(ValueError) as error:
        get_scheme("bogus")
    for name in RESAMPLING_SCHEMES:
        assert name in str(error.value)
    with pytest.raises(ValueError, match="bogus"):
        resample(torch.full((N,), 1.0 / N), N, "bogus", make_generator(0))


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        (torch.tensor([0.5, -0.1, 0.6]), "non-negative"),
        (torch.tensor([0.5, float("nan"), 0.5]), "finite"),
        (torch.tensor([0.5, float("inf"), 0.5]), "finite"),
        (torch.tensor([[0.5, 0.5], [0.0, 0.0]]), r"positive sum.*row \(1,\)"),
        (torch.tensor([1, 0, 0]), "floating dtype"),
        (torch.tensor(1.0), "shape"),
        (torch.zeros(3, 0), "shape"),
    ],
)
def test_bad_weights_raise(weights: torch.Tensor, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        resample(weights, 3, "systematic", make_generator(0))


def test_bad_arguments_raise() -> None:
    weights = torch.full((N,), 1.0 / N)
    with pytest.raises(ValueError, match="num_samples"):
        resample(weights, 0, "systematic", make_generator(0))
    with pytest.raises(TypeError, match="num_samples"):
        resample(weights, 2.5, "systematic", make_generator(0))
    with pytest.raises(TypeError, match="num_samples"):
        resample(weights, True, "systematic", make_generator(0))
    with pytest.raises(TypeError, match="generator"):
        resample(weights, N, "systematic", None)
    with pytest.raises(TypeError, match="scheme"):
        resample(weights, N, 3, make_generator(0))
    with pytest.raises(ValueError, match="int64 tensor of shape"):
        resample(weights, N, lambda w, m, g: torch.zeros(m + 1, dtype=torch.int64),
                 make_generator(0))


def test_keep_in_place_keeps_the_offspring_and_every_survivor_in_its_slot():
    from fksteer.smc.resampling import survivors_in_place as keep_in_place

    generator = torch.Generator().manual_seed(0)
    for K in (1, 2, 5, 16):
        ancestors = torch.randint(0, K, (200, K), generator=generator)
        arranged = keep_in_place(ancestors)
        assert torch.equal(arranged.sort(dim=1).values, ancestors.sort(dim=1).values)
        survivors = torch.zeros_like(ancestors, dtype=torch.bool).scatter_(1, ancestors, True)
        slots = torch.arange(K).expand(200, K)
        assert torch.equal(arranged[survivors], slots[survivors])  # survivors stay put
    identity = torch.arange(6).expand(3, 6)
    assert torch.equal(keep_in_place(identity), identity)
    assert torch.equal(keep_in_place(torch.tensor([[3, 3, 0, 2]])), torch.tensor([[0, 3, 2, 3]]))


def test_systematic_by_counts_at_the_edges_of_the_uniform():
    """U = 0 and U up to just below 1, with leading, inner and trailing zero weights: every
    ancestor has a positive weight, and each offspring count is floor or ceil of M w_i (at U
    within an ulp of 1, rounding may move one point across an exact boundary, as in the
    inverse-CDF lookup: only the first property is asked there)."""
    from fksteer.smc.resampling import _systematic_by_counts

    weights = torch.tensor([[0.0, 0.3, 0.0, 0.7, 0.0, 0.0], [0.5, 0.0, 0.25, 0.25, 0.0, 0.0]],
                           dtype=torch.float64)
    for u in (0.0, 0.5, 0.999, 1.0 - 2.0**-53):
        uniform = torch.full((2, 1), u, dtype=torch.float64)
        for num_samples in (1, 5, 6, 7, 64):
            ancestors = _systematic_by_counts(weights, num_samples, uniform)
            assert ancestors.shape == (2, num_samples)
            assert bool((weights.gather(1, ancestors) > 0).all())
            if u > 0.999:
                continue
            counts = torch.zeros_like(weights).scatter_add_(
                1, ancestors, torch.ones_like(ancestors, dtype=torch.float64))
            expected = num_samples * weights
            assert bool(((counts >= expected.floor()) & (counts <= expected.ceil())).all())
