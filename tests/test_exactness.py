"""The engine against closed-form answers: every potential x resampling scheme x schedule.

Method. One call to `steer` runs G independent SMC replicas (groups) of K particles. Replica g
gives an evidence estimate Z_g = exp(log_evidence_g), unbiased for Z, and a self-normalised
estimate m_g = sum_k w_gk f(x_gk). Pooled across replicas, the ratio estimator

    est(f) = sum_g Z_g m_g / sum_g Z_g

is consistent for the target expectation as G grows for a fixed K (sum_g Z_g m_g / G is unbiased
for Z E_target[f], Del Moral 2004, thm. 7.4.2), unlike the plain average of m_g, whose O(1/K)
bias would not shrink with G. Its standard error is the delta-method one,
se = sd_g(Z_g (m_g - est)) / (mean_g(Z_g) sqrt(G)).

Tolerances. Each check allows 5 standard errors (two-sided normal tail 6e-7 per check; a few
hundred checks in the suite give a false-alarm probability below 1e-3, and the seeds are fixed,
so a pass is reproducible). For the evidence, mean_g(Z_g / Z) must be within 5 se of 1. For
total variation over a table of cells, each cell error e_i is approximately N(0, se_i^2), so
TV = 0.5 sum_i |e_i| has mean 0.5 sqrt(2/pi) sum_i se_i and variance
0.25 (1 - 2/pi) sum_i se_i^2 (cells treated as independent, conservative since their errors are
negatively correlated); the bound is that mean plus 5 standard deviations.

Sharpness. With G*K = 12,800 particles the standard errors are about 0.005 on occupancies, while
the bugs these tests exist for (weights dropped when resampling is skipped, a final correction
taken from the running max, a wrong lambda) move the answer by 0.05 or more: the mutation tests
at the end show the checks rejecting them.
"""

from __future__ import annotations

import math

import pytest
import torch

from fksteer import FKConfig, LinearRamp, steer
from fksteer.models.gaussian_mixture import GaussianMixtureDiffusion, LinearReward
from fksteer.models.tabular_masked import TabularMaskedDiffusion
from fksteer.smc import engine as engine_module
from fksteer.smc.particles import ParticleSystem
from fksteer.smc.potentials import POTENTIALS
from fksteer.smc.resampling import RESAMPLING_SCHEMES

GROUPS, PARTICLES = 200, 64
SIGMAS = 5.0


def particles_for(potential):
    """K per replica: the sum potential's final correction has the most variance (see below)."""
    return 2 * PARTICLES if potential == "sum" else PARTICLES


# Mixture runs have 8 steps, table runs 4. Few scoring steps keep the max, sum and immediate
# potentials usable at this K: their path products before the final correction over-tilt the
# intermediate targets (sum by about n(n+1)/2 * lambda after n scoring steps), so the final
# correction has high variance. More scoring steps are exact too, but need far more particles.
SCHEDULES = {
    # resample at every scoring step: steps 2, 5 (mixture); 2 (table, plus 0 below)
    "fixed": dict(ess_threshold=None, resample_every=3, resample_start=2),
    # score at steps 3, 5, 7 (mixture; 0, 2 for the table); resample only when ESS < K / 2,
    # weights carried otherwise. Measured: at step 3 no group resamples, at later steps a mix
    # of groups do, so both the carried weights and the per-group decisions are exercised.
    "adaptive": dict(ess_threshold=0.5, resample_every=2, resample_start=3),
}


def pooled(result, values, by_evidence=True):
    """Pooled ratio estimate and standard error of E_target[f] from G replicas.

    ``values`` is f on every particle, shaped (G, K, ...). Returns (estimate, se) shaped (...).
    ``by_evidence=False`` averages replicas equally (for the unweighted base sampler, whose
    log_evidence estimates the tilted Z, not a normaliser of its own weights).
    """
    log_z = result.log_evidence if by_evidence else torch.zeros_like(result.log_evidence)
    z = torch.exp(log_z - log_z.max())  # (G,) scaled evidences: the ratio is scale-free
    extra = values.dim() - 2
    w = result.weights.reshape(*result.weights.shape, *([1] * extra))
    per_group = (w * values).sum(dim=1)  # (G, ...) m_g
    zz = z.reshape(-1, *([1] * extra))
    estimate = (zz * per_group).sum(0) / z.sum()
    residuals = zz * (per_group - estimate)  # (G, ...)
    se = residuals.std(dim=0) / (z.mean() * math.sqrt(len(z)))
    return estimate, se


def evidence_ratio(result, log_z):
    """mean_g Z_g / Z and its standard error.

    The standard errors above assume the Z_g are not heavy-tailed. When a few replicas carry
    most of sum_g Z_g the estimate of se is itself unreliable, so the check refuses to judge
    (the configuration needs more particles to be tested sharply).
    """
    ratio = torch.exp(result.log_evidence - log_z)
    spread = float(ratio.sum() ** 2 / (ratio**2).sum())  # effective number of replicas
    assert spread >= len(ratio) / 2, f"evidence too heavy-tailed to test: {spread:.0f} replicas"
    return ratio.mean(), ratio.std() / math.sqrt(len(ratio))


def assert_within(estimate, exact, se, what):
    error = (estimate - exact).abs()
    bound = SIGMAS * se
    worst = torch.argmax(error - bound) if error.dim() else None
    assert torch.all(error <= bound), (
        f"{what}: estimate {estimate.tolist()} vs exact {torch.as_tensor(exact).tolist()}, "
        f"|error| {error.tolist()} > {SIGMAS} se = {bound.tolist()} (worst index {worst})"
    )


def assert_schedule_exercised(result, schedule):
    """Some group resampled; in adaptive runs, some scoring step also carried weights over."""
    scored = [step for step in result.trace[:-1] if step.scored]
    assert any(step.resampled.any() for step in scored)
    if schedule == "adaptive":
        assert any(not step.resampled.all() for step in scored)


def _final_lambda(result):
    """The run's final tilt: the configured one, or (a tilt chosen per group) the one every
    group's final potential used, which must be shared for a single exact target."""
    lmbda = result.config.lmbda
    if isinstance(lmbda, float):
        return lmbda
    if isinstance(lmbda, LinearRamp):
        return lmbda.end
    final = result.trace[-1].lmbda  # (G,)
    assert torch.all(final == final[0]), f"the groups' final tilts differ: {final.unique()}"
    return float(final[0])


def tv_bound(se):
    mean = 0.5 * math.sqrt(2 / math.pi) * se.sum()
    sd = 0.5 * math.sqrt(1 - 2 / math.pi) * se.pow(2).sum().sqrt()
    return float(mean + SIGMAS * sd)


# -- Gaussian mixture with a linear reward -------------------------------------------------------

MIXTURE_DIRECTION = [1.0, 0.5]
MIXTURE_LAMBDA = 0.5


def run_mixture(config, seed, method="fk", num_steps=8):
    model = GaussianMixtureDiffusion.default(num_steps=num_steps, dtype=torch.float64)
    reward = LinearReward(MIXTURE_DIRECTION)
    result = steer(model, reward, config, prompts=list(range(GROUPS)),
                   generator=torch.Generator().manual_seed(seed), method=method)
    return model, result


def check_mixture(model, result, lmbda=MIXTURE_LAMBDA):
    """Weighted particles against the target at ``lmbda``; evidence against the run's Z.

    The base sampler (uniform weights) is checked against lmbda = 0, the mixture itself; its
    log_evidence is still the importance estimate of Z at the configured lambda.
    """
    base = result.method == "base"
    target = model.tilted(MIXTURE_DIRECTION, lmbda)
    samples = result.samples.double()  # (G, K, d)
    responsibilities = target.responsibilities(samples.reshape(-1, 2)).reshape(
        *samples.shape[:2], -1
    )  # (G, K, C)
    occupancy, occupancy_se = pooled(result, responsibilities, by_evidence=not base)
    assert_within(occupancy, target.weights, occupancy_se, "component occupancy")
    mean, mean_se = pooled(result, samples, by_evidence=not base)
    assert_within(mean, target.mean(), mean_se, "mean")
    log_z = model.tilted(MIXTURE_DIRECTION, _final_lambda(result)).log_normaliser
    ratio, ratio_se = evidence_ratio(result, log_z)
    assert_within(ratio, torch.tensor(1.0, dtype=torch.float64), ratio_se, "evidence Z_hat / Z")


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
@pytest.mark.parametrize("scheme", sorted(RESAMPLING_SCHEMES))
@pytest.mark.parametrize("potential", POTENTIALS)
def test_mixture_matches_the_exact_tilted_target(potential, scheme, schedule):
    config = FKConfig(num_particles=particles_for(potential), potential=potential,
                      lmbda=MIXTURE_LAMBDA, resampling=scheme, **SCHEDULES[schedule])
    seed = (1000 + 31 * list(POTENTIALS).index(potential)
            + 7 * sorted(RESAMPLING_SCHEMES).index(scheme))
    model, result = run_mixture(config, seed)
    assert_schedule_exercised(result, schedule)
    check_mixture(model, result)


@pytest.mark.parametrize("potential", POTENTIALS)
def test_mixture_with_a_lambda_ramp_targets_the_final_lambda(potential):
    config = FKConfig(num_particles=particles_for(potential), potential=potential,
                      lmbda=LinearRamp(0.0, MIXTURE_LAMBDA), **SCHEDULES["adaptive"])
    model, result = run_mixture(config, seed=77)
    check_mixture(model, result)


@pytest.mark.parametrize("method", ["importance", "base"])
def test_mixture_baselines(method):
    model, result = run_mixture(FKConfig(num_particles=PARTICLES, lmbda=MIXTURE_LAMBDA), 5, method)
    if method == "importance":
        check_mixture(model, result)
    else:  # uniform weights: the untilted mixture itself (lambda = 0)
        check_mixture(model, result, lmbda=0.0)


class IntermediateAndFinal:
    """A reward whose intermediate scores differ from its final ones (declared ``final_reward``),
    as an image reward's fast and exact preprocessing do: the target is the final reward's."""

    def __init__(self, intermediate, final):
        self.intermediate = LinearReward(intermediate)
        self.final_reward = LinearReward(final)

    def __call__(self, samples, prompts=None):
        return self.intermediate(samples, prompts)


@pytest.mark.parametrize("potential", ["difference", "max"])
def test_mixture_targets_the_final_reward_when_it_differs_from_the_intermediate(potential):
    model = GaussianMixtureDiffusion.default(num_steps=8, dtype=torch.float64)
    reward = IntermediateAndFinal([-0.5, 1.0], MIXTURE_DIRECTION)
    config = FKConfig(num_particles=PARTICLES, potential=potential, lmbda=MIXTURE_LAMBDA,
                      **SCHEDULES["fixed"])
    result = steer(model, reward, config, prompts=list(range(GROUPS)),
                   generator=torch.Generator().manual_seed(91))
    flat = result.samples.reshape(-1, 2)
    torch.testing.assert_close(
        result.rewards.reshape(-1), reward.final_reward(flat).double(), rtol=0, atol=1e-12
    )
    check_mixture(model, result)


# -- masked diffusion over an explicit table ------------------------------------------------------

TABLE_LAMBDA = 1.0


def count_of_token_two(tokens, prompts):
    """Reward: how many positions hold token 2 (rare under the default table)."""
    return (tokens == 2).sum(dim=-1).double()


def run_table(config, seed, method="fk"):
    model = TabularMaskedDiffusion.default(num_steps=4)
    result = steer(model, count_of_token_two, config, prompts=list(range(GROUPS)),
                   generator=torch.Generator().manual_seed(seed), method=method)
    return model, result


def check_table(model, result, lmbda=TABLE_LAMBDA):
    """As check_mixture, for the table: TV distance and evidence."""
    exact, _ = model.tilted(count_of_token_two, lmbda)
    _, log_z = model.tilted(count_of_token_two, _final_lambda(result))
    index = model.index_of(result.samples.reshape(-1, model.seq_len))
    one_hot = torch.nn.functional.one_hot(index, model.num_sequences).double()
    values = one_hot.reshape(*result.weights.shape, -1)  # (G, K, N)
    estimate, se = pooled(result, values, by_evidence=result.method != "base")  # (N,)
    tv = 0.5 * float((estimate - exact).abs().sum())
    assert tv <= tv_bound(se), f"TV {tv:.4f} > bound {tv_bound(se):.4f}"
    ratio, ratio_se = evidence_ratio(result, log_z)
    assert_within(ratio, torch.tensor(1.0, dtype=torch.float64), ratio_se, "evidence Z_hat / Z")


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
@pytest.mark.parametrize("scheme", sorted(RESAMPLING_SCHEMES))
@pytest.mark.parametrize("potential", POTENTIALS)
def test_table_matches_the_exact_tilted_target(potential, scheme, schedule):
    # 4 steps: score at 0 and 3 (fixed) or 0 and 2 (adaptive)
    schedule_kwargs = dict(SCHEDULES[schedule], resample_start=0)
    config = FKConfig(num_particles=particles_for(potential), potential=potential,
                      lmbda=TABLE_LAMBDA, resampling=scheme, **schedule_kwargs)
    seed = (2000 + 31 * list(POTENTIALS).index(potential)
            + 7 * sorted(RESAMPLING_SCHEMES).index(scheme))
    model, result = run_table(config, seed)
    assert_schedule_exercised(result, schedule)
    check_table(model, result)


@pytest.mark.parametrize("method", ["importance", "base"])
def test_table_baselines(method):
    model, result = run_table(FKConfig(num_particles=PARTICLES, lmbda=TABLE_LAMBDA), 6, method)
    check_table(model, result, lmbda=TABLE_LAMBDA if method == "importance" else 0.0)


# -- the checks can fail: known bugs are rejected -------------------------------------------------


class _DropsSkippedWeights(ParticleSystem):
    """The reference code's bug: log-weights reset at every scoring step, resampled or not."""

    def _resample_where_due(self, step, record):
        record, ancestors = super()._resample_where_due(step, record)
        self.log_weights = torch.zeros_like(self.log_weights)
        return record, ancestors


class _CorrectsFromTheRunningMax(ParticleSystem):
    """The reference code's bug: the final potential uses the running max, not r(x_0)."""

    def finish(self, decoded, **kwargs):
        original = self._rewards

        def final_rewards(decoded, rewards=None, per_particle=1, **kwargs):
            running = self.potential_state["running_max"]
            return torch.maximum(running, original(decoded, rewards, per_particle, **kwargs))

        self._rewards = final_rewards
        return super().finish(decoded, **kwargs)


@pytest.mark.parametrize(
    "mutant, potential",
    [(_DropsSkippedWeights, "difference"), (_CorrectsFromTheRunningMax, "max")],
)
def test_known_bugs_fail_the_exactness_check(monkeypatch, mutant, potential):
    monkeypatch.setattr(engine_module, "ParticleSystem", mutant)
    config = FKConfig(num_particles=PARTICLES, potential=potential, lmbda=MIXTURE_LAMBDA,
                      ess_threshold=0.5)
    model, result = run_mixture(config, seed=3)
    with pytest.raises(AssertionError):
        check_mixture(model, result)


def test_a_wrong_lambda_fails_the_exactness_check():
    config = FKConfig(num_particles=PARTICLES, lmbda=1.2 * MIXTURE_LAMBDA)
    model, result = run_mixture(config, seed=4)
    with pytest.raises(AssertionError):
        check_mixture(model, result)


# -- FK is not importance sampling in disguise ----------------------------------------------------


def test_fk_beats_importance_sampling_on_a_rare_target():
    """Importance sampling dressed up as FK would fail this: at equal K (equal NFE) FK must find
    the rare high-reward component that the prior almost never proposes.

    rare_mode: the component with 1% prior mass holds 88% of the tilted target. Measured at this
    seed: FK's mean |occupancy error| 0.14 and final ESS 31.5 of 32; importance 0.61 and 8.0.
    """
    problem = GaussianMixtureDiffusion.rare_mode(num_steps=25, dtype=torch.float64)
    reward = LinearReward(problem.direction)
    target = problem.model.tilted(problem.direction, problem.lmbda)
    config = FKConfig(num_particles=32, lmbda=problem.lmbda)

    def run(method):
        result = steer(problem.model, reward, config, prompts=list(range(50)),
                       generator=torch.Generator().manual_seed(8), method=method)
        rare = target.responsibilities(result.samples.reshape(-1, 2))[:, 2].reshape(50, 32)
        occupancy = (result.weights * rare).sum(dim=1)  # (G,) per-run rare-mode mass
        return float((occupancy - target.weights[2]).abs().mean()), float(result.ess.mean())

    (fk_error, fk_ess), (is_error, is_ess) = run("fk"), run("importance")
    assert fk_error < is_error / 3, (fk_error, is_error)
    assert fk_ess > 3 * is_ess, (fk_ess, is_ess)


# -- several clean predictions per particle -------------------------------------------------------


class _SeveralDraws:
    """The table fixture predicting M draws from p(x_0 | x_t) per particle (num_predictions=M).

    The first draw drives the move, all M feed the soft reward. The potentials then depend on
    extra randomness of the path, which leaves the target unchanged.
    """

    def __init__(self, model, num_predictions):
        self.model = model
        self.num_steps = model.num_steps
        self.num_predictions = num_predictions

    def __getattr__(self, name):
        return getattr(self.model, name)

    def predict(self, state, step, generator):
        draws = [self.model.predict(state, step, generator)[1] for _ in range(self.num_predictions)]
        stacked = torch.stack(draws, dim=1)  # (B, M, L)
        return draws[0], stacked.reshape(-1, stacked.shape[-1])  # (B*M, L) particle-major


@pytest.mark.parametrize("potential", POTENTIALS)
def test_table_with_several_predictions_per_particle(potential):
    model = _SeveralDraws(TabularMaskedDiffusion.default(num_steps=4), num_predictions=3)
    config = FKConfig(num_particles=particles_for(potential), potential=potential,
                      lmbda=TABLE_LAMBDA, **dict(SCHEDULES["adaptive"], resample_start=0))
    result = steer(model, count_of_token_two, config, prompts=list(range(GROUPS)),
                   generator=torch.Generator().manual_seed(55))
    scored = [step for step in result.trace[:-1] if step.scored]
    assert result.samples_scored == GROUPS * config.num_particles * (3 * len(scored) + 1)
    check_table(model.model, result)
