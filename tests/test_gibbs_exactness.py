"""Particle Gibbs against closed-form targets: the kept samples' law is the tilted target.

Method. One call runs G = 100 independent chains (groups) of S sweeps with K = 4 or 8 particles
per sweep; the first B sweeps are dropped (burn-in: sweep 0 is FK steering's single draw,
biased at small K, and the chain forgets it geometrically). A target expectation E[f] is
estimated by the mean of f over the G (S - B) kept samples.

Tolerances from the chain's effective sample size. Kept samples are autocorrelated, so the
standard error of that mean is sqrt(Var f / ESS_f), with ESS_f the multi-chain effective
sample size of f (:func:`fksteer.smc.chains.effective_sample_size`: split chains, the
autocorrelation combined over the G chains, Geyer's initial monotone sequence), and Var f the
pooled variance of f over the kept samples. Each check allows 5 standard errors (two-sided
normal tail 6e-7 per check; seeds fixed, so a pass is reproducible).

- Mixture: f_k(x) = p_target(k | x), the tilted responsibilities (a Rao-Blackwellised
  occupancy indicator), whose target expectation is exactly the tilted weight of component k.
  At lambda = 1 the smallest component holds 2.2% of the tilted mass. The standard error comes
  from the chain's own variance, which says nothing for a component the chain almost never
  visits (at lambda = 2.5 two components hold 0.002% and 0.06%, and 4,000 kept samples see
  them about twice): such a target would need a tolerance from the target's variance instead.
- Table: total variation between the kept samples' histogram and the tilted table. Cell i's
  frequency has se_i = sqrt(p_i (1 - p_i) / ESS_i), ESS_i from the chain of cell i's indicator
  (where that chain is constant, e.g. a cell never visited, the smallest ESS of the other cells,
  which is conservative); the TV bound is as in tests/test_exactness.py: the mean of
  0.5 sum |e_i| plus 5 standard deviations, cells treated as independent.

Sharpness: a variant whose reference can be resampled away (plain resampling, the reference
written only into the first step) keeps one draw of a K-particle SMC per sweep, whose law at
K = 4 is off by 0.1-0.2 in occupancy (measured: z-scores of 20-30): the checks reject it.
"""

from __future__ import annotations

import math

import pytest
import torch

from fksteer import FKConfig
from fksteer.models import GaussianMixtureDiffusion, LinearReward, TabularMaskedDiffusion
from fksteer.smc import particle_gibbs as gibbs_module
from fksteer.smc.chains import effective_sample_size
from fksteer.smc.potentials import POTENTIALS
from fksteer.smc.resampling import RESAMPLING_SCHEMES
from fksteer.smc.rows import select_rows
from fksteer.smc.tempering import AdaptiveTilt

SIGMAS = 5.0
CHAINS, SWEEPS, BURN_IN = 100, 50, 10
DIRECTION, LAMBDA = [1.0, 0.0], 1.0
TABLE_LAMBDA = 1.0
# two scoring steps (mixture: 2, 5 of 8; table: 2 of 4): max, sum and immediate stay usable
SCHEDULE = dict(resample_every=3, resample_start=2)


def count_of_token_two(tokens, prompts):
    """Reward: how many positions hold token 2 (rare under the default table)."""
    return (tokens == 2).sum(dim=-1).double()


def _run(model, reward, potential, K, scheme, seed):
    config = FKConfig(
        num_particles=K, potential=potential, lmbda=LAMBDA, resampling=scheme, **SCHEDULE
    )
    return gibbs_module.gibbs(
        model, reward, config, sweeps=SWEEPS, prompts=[None] * CHAINS,
        generator=torch.Generator().manual_seed(seed), burn_in=BURN_IN,
    )


def _by_chain(values):
    """(S', G, ...) -> (G, S', ...): chains first, as the diagnostics take them."""
    return values.transpose(0, 1)


def mixture_z_scores(result, model, lmbda=LAMBDA):
    """(C,) z-scores of the occupancy estimates against the tilted weights."""
    target = model.tilted(DIRECTION, lmbda)
    samples = result.chain()  # (S', G, 2)
    f = target.responsibilities(samples.reshape(-1, 2).double()).reshape(*samples.shape[:2], -1)
    f = _by_chain(f)  # (G, S', C)
    ess = effective_sample_size(f)  # (C,)
    se = torch.sqrt(f.reshape(-1, f.shape[-1]).var(dim=0) / ess)
    return (f.mean(dim=(0, 1)) - target.weights) / se


def table_tv_and_bound(result, model):
    exact, _ = model.tilted(count_of_token_two, TABLE_LAMBDA)
    samples = result.chain()  # (S', G, L)
    index = model.index_of(samples.reshape(-1, model.seq_len)).reshape(samples.shape[:2])
    one_hot = _by_chain(torch.nn.functional.one_hot(index, model.num_sequences).double())
    ess = effective_sample_size(one_hot)  # (N,), NaN for constant cells
    ess = torch.where(torch.isfinite(ess), ess, ess[torch.isfinite(ess)].min())
    se = torch.sqrt(exact * (1 - exact) / ess)
    tv = 0.5 * float((one_hot.mean(dim=(0, 1)) - exact).abs().sum())
    mean = 0.5 * math.sqrt(2 / math.pi) * se.sum()
    sd = 0.5 * math.sqrt(1 - 2 / math.pi) * se.pow(2).sum().sqrt()
    return tv, float(mean + SIGMAS * sd)


@pytest.mark.parametrize("K", [4, 8])
@pytest.mark.parametrize("potential", list(POTENTIALS))
def test_mixture_chain_reaches_the_tilted_occupancy(potential, K):
    model = GaussianMixtureDiffusion.default(num_steps=8)
    result = _run(model, LinearReward(DIRECTION), potential, K, "systematic", seed=K)
    z = mixture_z_scores(result, model)
    assert bool((z.abs() <= SIGMAS).all()), f"z-scores {z.tolist()}"
    assert float(result.acceptance_rate().mean()) > 0.3  # the chain moves


@pytest.mark.parametrize("K", [4, 8])
@pytest.mark.parametrize("potential", list(POTENTIALS))
def test_table_chain_reaches_the_tilted_table(potential, K):
    model = TabularMaskedDiffusion.default(num_steps=4)
    result = _run(model, count_of_token_two, potential, K, "multinomial", seed=10 + K)
    tv, bound = table_tv_and_bound(result, model)
    assert tv <= bound, f"TV {tv:.4f} > bound {bound:.4f}"


class ReferenceResampledAway(gibbs_module.Reference):
    """The broken variant: the reference is written into the first step only, and plain
    resampling may drop it; the final samples are never restored."""

    def restore(self, state, output, prediction, step):
        if step == 0:
            return super().restore(state, output, prediction, step)
        return state, output, prediction

    def final_sample(self, sample):
        self.final = select_rows(sample, self.everyone)
        return sample


@pytest.fixture
def reference_resampled_away(monkeypatch):
    monkeypatch.setattr(gibbs_module, "Reference", ReferenceResampledAway)
    monkeypatch.setattr(gibbs_module, "get_conditional_scheme", RESAMPLING_SCHEMES.__getitem__)


def test_a_reference_resampled_away_fails_the_mixture_check(reference_resampled_away):
    model = GaussianMixtureDiffusion.default(num_steps=8)
    result = _run(model, LinearReward(DIRECTION), "difference", 4, "systematic", seed=4)
    z = mixture_z_scores(result, model)
    assert bool((z.abs() > SIGMAS).any()), f"z-scores {z.tolist()}"


def test_a_reference_resampled_away_fails_the_table_check(reference_resampled_away):
    model = TabularMaskedDiffusion.default(num_steps=4)
    result = _run(model, count_of_token_two, "difference", 4, "multinomial", seed=14)
    tv, bound = table_tv_and_bound(result, model)
    assert tv > bound, f"TV {tv:.4f} <= bound {bound:.4f}"


@pytest.mark.parametrize("lmbda, options", [
    (LAMBDA, dict(ess_threshold=0.5, resample_every=1)),  # the rule sees the reference
    (LAMBDA, dict(lmbda=AdaptiveTilt(target=LAMBDA, ess=0.7), resample_start=1)),  # frozen
])
def test_mixture_chain_with_adaptive_resampling_or_tilt(lmbda, options):
    model = GaussianMixtureDiffusion.default(num_steps=8)
    config = FKConfig(num_particles=4, **{"lmbda": lmbda, **options})
    result = gibbs_module.gibbs(
        model, LinearReward(DIRECTION), config, sweeps=SWEEPS, prompts=[None] * CHAINS,
        generator=torch.Generator().manual_seed(21), burn_in=BURN_IN,
    )
    if isinstance(config.lmbda, AdaptiveTilt):  # the schedule was chosen, not given
        assert len({v for row in result.sweep_config.lmbda.values for v in row}) > 2
    z = mixture_z_scores(result, model, lmbda)
    assert bool((z.abs() <= SIGMAS).all()), f"z-scores {z.tolist()}"


# -- ancestor sampling ------------------------------------------------------------------------


def _run_ancestor_sampling(model, reward, potential, scheme, seed, ancestor_sampling=True):
    config = FKConfig(num_particles=4, potential=potential, lmbda=LAMBDA, resampling=scheme,
                      resample_every=1)
    return gibbs_module.gibbs(
        model, reward, config, sweeps=SWEEPS, prompts=[None] * CHAINS,
        generator=torch.Generator().manual_seed(seed), burn_in=BURN_IN,
        ancestor_sampling=ancestor_sampling,
    )


@pytest.mark.parametrize("potential", ["difference", "max"])
def test_mixture_chain_with_ancestor_sampling(potential):
    model = GaussianMixtureDiffusion.default(num_steps=8)
    result = _run_ancestor_sampling(model, LinearReward(DIRECTION), potential, "systematic", 4)
    z = mixture_z_scores(result, model)
    assert bool((z.abs() <= SIGMAS).all()), f"z-scores {z.tolist()}"
    plain = _run_ancestor_sampling(model, LinearReward(DIRECTION), potential, "systematic", 4,
                                   ancestor_sampling=False)
    # the point of it: the first steps of the kept path change far more often (measured:
    # 0.93-0.94 against 0.05-0.21 at step 0)
    assert float(result.update_rate()[0]) > 2 * float(plain.update_rate()[0])


def test_table_chain_with_ancestor_sampling():
    model = TabularMaskedDiffusion.default(num_steps=4)
    result = _run_ancestor_sampling(model, count_of_token_two, "difference", "multinomial", 14)
    tv, bound = table_tv_and_bound(result, model)
    assert tv <= bound, f"TV {tv:.4f} > bound {bound:.4f}"


def test_ancestor_sampling_without_the_transition_density_fails(monkeypatch):
    def by_weight_only(self, log_weights, potential_state):
        return torch.multinomial(torch.softmax(log_weights, -1), 1, generator=self.generator)[:, 0]

    monkeypatch.setattr(gibbs_module.Reference, "ancestor", by_weight_only)
    model = GaussianMixtureDiffusion.default(num_steps=8)
    result = _run_ancestor_sampling(model, LinearReward(DIRECTION), "difference", "systematic", 4)
    z = mixture_z_scores(result, model)
    assert bool((z.abs() > SIGMAS).any()), f"z-scores {z.tolist()}"
