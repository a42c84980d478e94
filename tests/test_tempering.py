"""Adaptive tempering against closed-form answers.

An adaptive tilt changes the path, never the law: whatever lambdas the particles choose on the
way, the final potential tilts to exactly the target, so the checks of test_exactness apply
unchanged (pooled ratio estimates, 5 standard errors, TV bound; see that module's docstring for
how the tolerances follow from the Monte Carlo error). Two passes are checked: the adaptive run
itself (its schedule depends on its particles, so its evidence is consistent rather than
unbiased; at G = 200, K = 64 the bias is far below the standard error, as the evidence check
shows) and a second run with the first run's schedule frozen, whose evidence is unbiased.

``ess=0.9`` keeps the bisection active on both fixtures: with the default 0.5 the small targets
of test_exactness are reached at the first scoring step and nothing adaptive is exercised.
"""

from __future__ import annotations

import pytest
import torch
from test_exactness import (
    GROUPS,
    MIXTURE_DIRECTION,
    MIXTURE_LAMBDA,
    PARTICLES,
    SCHEDULES,
    TABLE_LAMBDA,
    check_mixture,
    check_table,
    count_of_token_two,
    particles_for,
    pooled,
    run_mixture,
    run_table,
    tv_bound,
)

from fksteer import FKConfig, steer
from fksteer.models.gaussian_mixture import GaussianMixtureDiffusion, LinearReward
from fksteer.smc.potentials import POTENTIALS
from fksteer.smc.tempering import AdaptiveTilt, GroupSchedule, LargestTilt


def tilts_of(result):
    """(G, S) per-group tilts at the scoring steps and the final step."""
    return torch.tensor(result.tilt_schedule().values, dtype=torch.float64)


def assert_tempered_to(result, target):
    """Non-decreasing per group, ending at exactly the target, below it somewhere on the way."""
    tilts = tilts_of(result)
    assert torch.all(tilts[:, 1:] >= tilts[:, :-1]), "a group's tilt decreased"
    assert torch.all(tilts[:, -1] == target)
    assert torch.any(tilts[:, :-1] < target), "nothing was tempered: the bisection was idle"


def second_pass(run, result, seed):
    """The first run's schedule frozen, fresh noise: the evidence is unbiased."""
    frozen = result.tilt_schedule()
    assert isinstance(frozen, GroupSchedule)
    config = FKConfig(**{**result.config.to_dict(), "lmbda": frozen})
    return run(config, seed)


@pytest.mark.parametrize("potential", POTENTIALS)
def test_adaptive_tilt_hits_the_mixture_target(potential):
    config = FKConfig(num_particles=particles_for(potential), potential=potential,
                      lmbda=AdaptiveTilt(MIXTURE_LAMBDA, ess=0.9), **SCHEDULES["fixed"])
    seed = 3000 + 31 * list(POTENTIALS).index(potential)
    model, result = run_mixture(config, seed)
    assert_tempered_to(result, MIXTURE_LAMBDA)
    check_mixture(model, result)
    model, frozen = second_pass(run_mixture, result, seed + 1)
    assert torch.equal(tilts_of(frozen), tilts_of(result))
    check_mixture(model, frozen)


@pytest.mark.parametrize("potential", POTENTIALS)
def test_adaptive_tilt_hits_the_table_target(potential):
    config = FKConfig(num_particles=particles_for(potential), potential=potential,
                      lmbda=AdaptiveTilt(TABLE_LAMBDA, ess=0.9),
                      **dict(SCHEDULES["adaptive"], resample_start=0))
    seed = 4000 + 31 * list(POTENTIALS).index(potential)
    model, result = run_table(config, seed)
    assert_tempered_to(result, TABLE_LAMBDA)
    check_table(model, result)
    model, frozen = second_pass(run_table, result, seed + 1)
    check_table(model, frozen)


@pytest.mark.parametrize("potential", ["difference", "max"])
def test_greedy_pace_hits_the_mixture_target(potential):
    config = FKConfig(num_particles=particles_for(potential), potential=potential,
                      lmbda=AdaptiveTilt(MIXTURE_LAMBDA, ess=0.9, pace="greedy"),
                      **SCHEDULES["adaptive"])
    model, result = run_mixture(config, 3100 + len(potential))
    assert_tempered_to(result, MIXTURE_LAMBDA)
    check_mixture(model, result)


# -- a lambda at which a fixed schedule collapses ------------------------------------------------

STRONG_LAMBDA = 6.0


def run_strong(lmbda, seed):
    """The table at lambda 6, scored and resampled at every one of its 4 steps."""
    config = FKConfig(num_particles=PARTICLES, lmbda=lmbda, resample_every=1, resample_start=0)
    return run_table(config, seed)


def table_tv(model, result, lmbda):
    """TV distance of the pooled estimate to the exact tilted law, and its 5-se bound."""
    exact, _ = model.tilted(count_of_token_two, lmbda)
    index = model.index_of(result.samples.reshape(-1, model.seq_len))
    one_hot = torch.nn.functional.one_hot(index, model.num_sequences).double()
    estimate, se = pooled(result, one_hot.reshape(*result.weights.shape, -1))
    return 0.5 * float((estimate - exact).abs().sum()), tv_bound(se)


def median_ess(result):
    """Median over groups of the ESS at each scoring step, the final step last."""
    return torch.stack([step.ess.median() for step in result.trace if step.scored])


def test_adaptive_tilt_keeps_the_ess_where_a_fixed_lambda_collapses():
    """Lambda 6 on the table (the reward counts the rare token), K = 64.

    Measured at these seeds: the fixed lambda's median ESS is 2.0 at step 0 (one or two
    particles carry each group) and its pooled estimate is so noisy that the 5-se TV bound
    is 0.45; the adaptive run keeps exactly ess * K = 32 at every scoring step (the
    bisection's fixed point), 26.4 after the final potential (which must reach the target
    whatever the ESS), and hits the target with TV 0.03 against a bound of 0.07.
    """
    model, collapsed = run_strong(STRONG_LAMBDA, 5000)
    assert median_ess(collapsed)[0] < 0.05 * PARTICLES
    model, result = run_strong(AdaptiveTilt(STRONG_LAMBDA, ess=0.5), 5000)
    ess = median_ess(result)
    assert torch.all(ess[:-1] >= 0.5 * PARTICLES - 1e-6), ess.tolist()
    assert ess[-1] >= 0.4 * PARTICLES
    assert_tempered_to(result, STRONG_LAMBDA)
    check_table(model, result, lmbda=STRONG_LAMBDA)
    # the same K, the same seed: the collapsed run's estimate is several times less precise
    (_, fixed_bound), (_, adaptive_bound) = (
        table_tv(model, collapsed, STRONG_LAMBDA), table_tv(model, result, STRONG_LAMBDA)
    )
    assert fixed_bound > 4 * adaptive_bound


# -- the largest tilt the particles allow ---------------------------------------------------------


def run_scaled(lmbda, scale, seed=6000):
    model = GaussianMixtureDiffusion.default(num_steps=8, dtype=torch.float64)
    reward = LinearReward([scale * d for d in MIXTURE_DIRECTION])
    config = FKConfig(num_particles=PARTICLES, lmbda=lmbda, **SCHEDULES["adaptive"])
    return steer(model, reward, config, prompts=list(range(GROUPS)),
                 generator=torch.Generator().manual_seed(seed))


def test_largest_tilt_is_scale_free_and_a_fixed_lambda_is_not():
    """Multiplying the reward by 100 divides lambda_hat by 100 and leaves the samples unchanged.

    Each bisection resolves lambda to 2^-60 of its bracket [previous, cap], an absolute
    1e6 * 2^-60 = 9e-13 whatever the reward's scale, so at scale 100 (lambda near 0.01)
    lambda_hat / 100 agrees to about 1e-10 relative (measured 4e-11): the test allows 1e-9.
    Those differences move the weights by far less than the gaps the resampling draws fall
    into, so the ancestors and the samples agree exactly. The CESS fraction (0.6) differs
    from the resampling threshold (0.5): were they equal, the ESS after each chosen step would
    sit exactly on the threshold and the resampling decision would flip on rounding.
    """
    tilt = LargestTilt(cap=1e6, ess=0.6, final_ess=0.5)
    plain, scaled = run_scaled(tilt, 1.0), run_scaled(tilt, 100.0)
    lambda_hat, lambda_hat_scaled = plain.trace[-1].lmbda, scaled.trace[-1].lmbda
    assert lambda_hat.median() > MIXTURE_LAMBDA  # it tilts, and far below the cap
    assert torch.all(lambda_hat < 1e6 / 100)
    torch.testing.assert_close(100 * lambda_hat_scaled, lambda_hat, rtol=1e-9, atol=0)
    assert torch.equal(scaled.samples, plain.samples)
    # a group whose weights are already uneven before the final step keeps less at any lambda
    # (it takes the lambda of largest ESS); the others keep half
    assert (plain.ess >= 0.5 * PARTICLES - 1e-9).double().mean() >= 0.95
    torch.testing.assert_close(scaled.ess, plain.ess, rtol=1e-9, atol=0)
    # a fixed lambda at the median lambda_hat keeps the particles alive at scale 1 and
    # collapses them at scale 100
    fixed = float(lambda_hat.median())
    alive, dead = run_scaled(fixed, 1.0), run_scaled(fixed, 100.0)
    assert alive.ess.median() > 0.25 * PARTICLES
    assert dead.ess.median() < 2.0


def test_largest_tilt_reports_lambda_hat_in_the_summary():
    result = run_scaled(LargestTilt(cap=1e6), 1.0)
    summary = result.summary()
    assert summary["final_lambda"] == result.trace[-1].lmbda.tolist()
    assert summary["lambda_schedule"]["steps"][-1] == result.trace[-1].step
