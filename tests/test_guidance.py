"""Reward-gradient guided proposals: exact weights, the closed-form ratio, the no-gradient path.

The exactness checks reuse the pooled evidence-weighted estimator and the 5-standard-error
tolerances of test_exactness (derivation in its docstring): 200 replicas x 64 particles.
"""

from __future__ import annotations

import math

import pytest
import torch
from test_exactness import (
    MIXTURE_DIRECTION,
    MIXTURE_LAMBDA,
    PARTICLES,
    SCHEDULES,
    check_mixture,
    particles_for,
    run_mixture,
)
from toy_models import RandomWalk, first_coordinate

from fksteer import FKConfig, LinearRamp, steer
from fksteer.models.gaussian_mixture import GaussianMixtureDiffusion, LinearReward
from fksteer.smc import engine as engine_module
from fksteer.smc.guidance import reward_gradient, shift_gaussian_step
from fksteer.smc.particles import ParticleSystem
from fksteer.smc.potentials import POTENTIALS

GUIDANCE = 1.0


@pytest.mark.parametrize("potential", POTENTIALS)
def test_fk_with_guidance_matches_the_exact_tilted_target(potential):
    config = FKConfig(num_particles=particles_for(potential), potential=potential,
                      lmbda=MIXTURE_LAMBDA, guidance=GUIDANCE, **SCHEDULES["fixed"])
    model, result = run_mixture(config, seed=300 + list(POTENTIALS).index(potential))
    check_mixture(model, result)


def test_guidance_with_adaptive_resampling_and_schedules_is_exact():
    config = FKConfig(num_particles=PARTICLES, lmbda=LinearRamp(0.0, MIXTURE_LAMBDA),
                      guidance=LinearRamp(2.0, 0.5), **SCHEDULES["adaptive"])
    model, result = run_mixture(config, seed=310)
    check_mixture(model, result)


def test_guided_importance_sampling_is_exact():
    config = FKConfig(num_particles=PARTICLES, lmbda=MIXTURE_LAMBDA, guidance=GUIDANCE)
    model, result = run_mixture(config, seed=311, method="importance")
    check_mixture(model, result)


class _DropsTheProposalCorrection(ParticleSystem):
    """Guidance alone: the shifted proposal without its density ratio."""

    def reweight(self, step, log_ratio):
        pass


@pytest.mark.parametrize("strength", [GUIDANCE, 3.0])
def test_guidance_without_the_weight_correction_fails_the_check(monkeypatch, strength):
    monkeypatch.setattr(engine_module, "ParticleSystem", _DropsTheProposalCorrection)
    config = FKConfig(num_particles=PARTICLES, lmbda=MIXTURE_LAMBDA, guidance=strength,
                      **SCHEDULES["fixed"])
    model, result = run_mixture(config, seed=312)
    with pytest.raises(AssertionError, match="occupancy"):
        check_mixture(model, result)


def test_guided_sampling_alone_is_biased_and_base_uses_the_guided_proposal():
    """method="base" with guidance is plain guided sampling: it leaves the untilted mixture
    (the check at lambda = 0 fails) without reaching the tilted target either."""
    config = FKConfig(num_particles=PARTICLES, lmbda=MIXTURE_LAMBDA, guidance=3.0)
    model, result = run_mixture(config, seed=313, method="base")
    for lmbda in (0.0, MIXTURE_LAMBDA):
        with pytest.raises(AssertionError, match="occupancy"):
            check_mixture(model, result, lmbda=lmbda)


def test_guidance_raises_the_effective_sample_size_on_the_mixture():
    """The point of guidance: particles land where the target is, so the final weights are more
    even. Averaged over 200 replicas the final ESS rises (measured 58 -> 63 of 64)."""
    final_ess = []
    for strength in (0.0, GUIDANCE):
        config = FKConfig(num_particles=PARTICLES, lmbda=MIXTURE_LAMBDA, guidance=strength,
                          **SCHEDULES["fixed"])
        _, result = run_mixture(config, seed=314)
        final_ess.append(float(result.trace[-1].ess.mean()))
    assert final_ess[1] > final_ess[0] + 2.0, final_ess


# -- the pieces --------------------------------------------------------------------------------


def test_shift_gaussian_step_ratio_is_the_difference_of_normal_log_densities():
    generator = torch.Generator().manual_seed(0)
    mean = torch.randn(5, 3, 4, generator=generator, dtype=torch.float64)
    std = torch.rand(5, 1, 1, generator=generator, dtype=torch.float64) + 0.1
    gradient = torch.randn(5, 3, 4, generator=generator, dtype=torch.float64)
    sample = mean + std * torch.randn(5, 3, 4, generator=generator, dtype=torch.float64)
    shifted, log_ratio = shift_gaussian_step(sample, mean, std, gradient)
    torch.testing.assert_close(shifted, sample + std**2 * gradient)
    p = torch.distributions.Normal(mean, std.expand_as(mean))
    q = torch.distributions.Normal(mean + std**2 * gradient, std.expand_as(mean))
    expected = (p.log_prob(shifted) - q.log_prob(shifted)).sum(dim=(1, 2))
    torch.testing.assert_close(log_ratio, expected)
    # a deterministic step (std 0: the sample is the mean) is left alone
    shifted, log_ratio = shift_gaussian_step(mean, mean, 0.0, gradient)
    assert torch.equal(shifted, mean) and torch.equal(log_ratio, torch.zeros(5).double())


def test_mixture_guided_move_with_zero_gradient_is_the_models_move():
    model = GaussianMixtureDiffusion.default(num_steps=6)
    state = model.init([None], 32, torch.Generator().manual_seed(0))
    output, _ = model.predict(state, 2, None)
    plain = model.move(state, output, 2, torch.Generator().manual_seed(1))
    guided, log_ratio = model.guided_move(state, output, 2, torch.Generator().manual_seed(1),
                                          torch.zeros_like(state))
    assert torch.equal(plain, guided)
    assert torch.equal(log_ratio, torch.zeros(32, dtype=torch.float64))


def test_mixture_guided_move_ratio_against_a_monte_carlo_normaliser():
    """E_q[p/q] = 1 for any proposal: the closed-form ratio averaged over many draws is 1."""
    model = GaussianMixtureDiffusion.default(num_steps=6, dtype=torch.float64)
    state = model.init([None], 1, torch.Generator().manual_seed(0)).expand(200_000, 2)
    output, _ = model.predict(state, 3, None)
    gradient = torch.tensor([[0.8, -0.5]], dtype=torch.float64).expand_as(state)
    _, log_ratio = model.guided_move(state, output, 3, torch.Generator().manual_seed(2), gradient)
    ratios = log_ratio.exp()
    standard_error = float(ratios.std()) / math.sqrt(len(ratios))
    assert abs(float(ratios.mean()) - 1.0) < 5 * standard_error, (ratios.mean(), standard_error)
    assert float(ratios.std()) > 0.1  # the proposal really differs from the kernel


def test_reward_gradient_is_chunked_without_changing_it():
    model = GaussianMixtureDiffusion.default(num_steps=6, dtype=torch.float64)
    state = model.init([None], 10, torch.Generator().manual_seed(0))
    reward = LinearReward(MIXTURE_DIRECTION)

    def clean_of(x, rows):
        return model.clean_from(state, x, rows, 1)

    def gradient(**kwargs):
        return reward_gradient(state, clean_of, lambda clean: clean, reward, None, 0.7, **kwargs)

    whole, chunked = gradient(), gradient(batch_size=3)
    torch.testing.assert_close(whole, chunked)
    # against the analytic gradient of 0.7 * b . E[x_0 | x_t] by finite differences
    step = 1e-6
    shifted = state.clone()
    shifted[:, 0] += step
    difference = (reward(model.predict(shifted, 1, None)[1])
                  - reward(model.predict(state, 1, None)[1])) * 0.7 / step
    torch.testing.assert_close(whole[:, 0], difference, atol=1e-5, rtol=1e-4)


def test_without_guidance_nothing_is_differentiated():
    seen = []

    def reward(samples, prompts):
        seen.append(torch.is_grad_enabled() or samples.requires_grad)
        return samples[:, 0]

    model = GaussianMixtureDiffusion.default(num_steps=4)
    steer(model, reward, FKConfig(num_particles=4), generator=torch.Generator().manual_seed(0))
    assert seen and not any(seen)


def test_guidance_errors_name_the_problem():
    generator = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="GuidedStepModel"):
        steer(RandomWalk(num_steps=3), first_coordinate, FKConfig(guidance=1.0),
              generator=generator)

    def not_differentiable(samples, prompts):
        return samples[:, 0].detach().tolist()

    with pytest.raises(ValueError, match="differentiable"):
        steer(GaussianMixtureDiffusion.default(num_steps=3), not_differentiable,
              FKConfig(guidance=1.0), generator=generator)
    with pytest.raises(ValueError, match="FKConfig.guidance"):
        FKConfig(guidance=-1.0)
    assert FKConfig(guidance=LinearRamp(1.0, 0.0)).to_dict()["guidance"] == {
        "schedule": "LinearRamp", "start": 1.0, "end": 0.0}


def test_a_model_wrapper_offers_guidance_exactly_when_the_wrapped_model_does():
    from fksteer.models import TabularMaskedDiffusion
    from fksteer.smc.protocol import GuidedStepModel, StepModel
    from fksteer.smc.wrapper import ModelWrapper

    mixture = ModelWrapper(GaussianMixtureDiffusion.default(num_steps=4))
    table = ModelWrapper(TabularMaskedDiffusion.default(num_steps=4))
    assert isinstance(mixture, GuidedStepModel) and isinstance(table, StepModel)
    assert not isinstance(table, GuidedStepModel)
    config = FKConfig(num_particles=4, lmbda=MIXTURE_LAMBDA, guidance=1.0)
    wrapped = steer(mixture, LinearReward(MIXTURE_DIRECTION), config,
                    generator=torch.Generator().manual_seed(0))
    direct = steer(mixture.model, LinearReward(MIXTURE_DIRECTION), config,
                   generator=torch.Generator().manual_seed(0))
    assert torch.equal(wrapped.samples, direct.samples)
    assert torch.equal(wrapped.log_weights, direct.log_weights)
