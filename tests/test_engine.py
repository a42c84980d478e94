"""Engine bookkeeping: configuration, weights, permutation, randomness, baselines, dead particles.

The exact-target tests live in test_exactness.py; these pin the mechanics with a toy random walk
whose state checks its own consistency (tests/toy_models.py).
"""

from __future__ import annotations

import math

import pytest
import torch
from toy_models import RandomWalk, first_coordinate

from fksteer import AllParticlesDeadError, FKConfig, LinearRamp, steer
from fksteer.smc.potentials import POTENTIALS
from fksteer.smc.resampling import RESAMPLING_SCHEMES
from fksteer.smc.weights import log_mean_exp

# -- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("num_particles", 0),
        ("num_particles", 2.5),
        ("potential", "maximum"),
        ("lmbda", math.inf),
        ("lmbda", "ten"),
        ("resampling", "ssytematic"),
        ("ess_threshold", 0.0),
        ("ess_threshold", 1.5),
        ("resample_every", 0),
        ("resample_start", -1),
        ("resample_end", -2),
    ],
)
def test_config_errors_name_the_field_and_value(field, value):
    with pytest.raises(ValueError) as error:
        FKConfig(**{field: value})
    assert f"FKConfig.{field}={value!r}" in str(error.value)


def test_config_lists_valid_choices():
    with pytest.raises(ValueError, match="multinomial, stratified, systematic, residual"):
        FKConfig(resampling="nope")
    with pytest.raises(ValueError, match="difference, max, sum, immediate"):
        FKConfig(potential="nope")


def test_scoring_schedule_follows_the_window_and_stride():
    assert FKConfig().scoring_steps(4) == [0, 1, 2, 3]
    config = FKConfig(resample_every=3, resample_start=2, resample_end=10)
    assert config.scoring_steps(20) == [2, 5, 8]
    assert config.scoring_steps(6) == [2, 5]
    with pytest.raises(ValueError, match="resample_start"):
        FKConfig(resample_start=5).scoring_steps(5)


def test_config_is_frozen_and_serialisable():
    config = FKConfig(lmbda=LinearRamp(0.0, 4.0))
    with pytest.raises(AttributeError):
        config.num_particles = 3  # type: ignore[misc]
    assert config.to_dict()["lmbda"] == {"schedule": "LinearRamp", "start": 0.0, "end": 4.0}


# -- weights without resampling equal importance weights ----------------------------------------

NEVER = 1e-12  # an ESS threshold no group falls below: adaptive mode that never resamples


@pytest.mark.parametrize("potential", POTENTIALS)
@pytest.mark.parametrize("lmbda", [1.5, LinearRamp(0.0, 2.0), LinearRamp(3.0, -1.0)])
def test_weights_carried_over_skipped_resampling_telescope_to_the_final_reward(potential, lmbda):
    """With no resampling, every potential's path product must be exactly exp(lambda r(x_0)).

    This catches weights dropped on steps that do not resample, and a final correction computed
    from the running max/sum instead of the final reward.
    """
    config = FKConfig(num_particles=16, potential=potential, lmbda=lmbda, ess_threshold=NEVER)
    fk = steer(RandomWalk(), first_coordinate, config, prompts=["a", "b"],
               generator=torch.Generator().manual_seed(3))
    importance = steer(RandomWalk(), first_coordinate, config, prompts=["a", "b"],
                       generator=torch.Generator().manual_seed(3), method="importance")
    assert torch.equal(fk.samples, importance.samples)  # the model's noise is untouched
    assert not any(step.resampled.any() for step in fk.trace)
    torch.testing.assert_close(fk.log_weights, importance.log_weights, rtol=0, atol=1e-10)
    torch.testing.assert_close(fk.log_evidence, importance.log_evidence, rtol=0, atol=1e-10)
    final_lambda = lmbda if isinstance(lmbda, float) else lmbda.end
    expected = torch.log_softmax(final_lambda * fk.rewards, dim=1)
    torch.testing.assert_close(fk.log_weights, expected, rtol=0, atol=1e-10)


def test_log_weights_are_float64_whatever_the_reward_dtype():
    def half_reward(samples, prompts):
        return samples[:, 0].half()

    result = steer(RandomWalk(), half_reward, FKConfig(num_particles=4),
                   generator=torch.Generator().manual_seed(0))
    for tensor in (result.weights, result.log_weights, result.rewards, result.log_evidence):
        assert tensor.dtype == torch.float64
    assert all(step.ess.dtype == torch.float64 for step in result.trace)


def test_huge_rewards_do_not_overflow():
    """Linear-space weights overflow at lambda * r ~ 710; log space must not."""

    def huge(samples, prompts):
        return 1e6 * samples[:, 0]

    result = steer(RandomWalk(), huge, FKConfig(num_particles=8, lmbda=10.0),
                   generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(result.log_evidence).all()
    torch.testing.assert_close(result.weights.sum(1), torch.ones(1, dtype=torch.float64))


# -- resampling permutes everything, within groups ----------------------------------------------


def _composed_ancestors(result, num_steps, after_step):
    """Flat ancestor map applied by every resampling at steps > after_step."""
    G, K = result.weights.shape
    offsets = torch.arange(G)[:, None] * K
    composed = torch.arange(G * K)
    for step in result.trace[after_step + 1 : num_steps]:
        if step.ancestors is not None:
            composed = composed[(step.ancestors + offsets).reshape(-1)]
    return composed


@pytest.mark.parametrize("scheme", sorted(RESAMPLING_SCHEMES))
def test_every_state_tensor_and_the_output_are_permuted_together(scheme):
    model = RandomWalk(num_steps=6, dim=2)
    config = FKConfig(num_particles=8, lmbda=3.0, resampling=scheme)
    generator = torch.Generator().manual_seed(1)
    state_seen = {}
    original_final = model.final_sample

    def keep_state(state):
        state_seen.update(state)
        return original_final(state)

    model.final_sample = keep_state
    # RandomWalk.move raises if the output was not permuted like the state.
    result = steer(model, first_coordinate, config, prompts=["p", "q", "r"], generator=generator)
    assert sum(int(step.resampled.any()) for step in result.trace) == model.num_steps
    G, K = 3, 8
    # identity of each final particle = composition of the ancestors recorded in the trace
    assert torch.equal(state_seen["identity"], _composed_ancestors(result, model.num_steps, -1))
    # ancestors never cross groups
    assert torch.equal(state_seen["identity"] // K, torch.arange(G * K) // K)
    # the history buffer was permuted with x: each recorded position plus the noise drawn at that
    # move (carried through later resamplings) gives the next recorded position
    history = state_seen["history"]
    for j in range(model.num_steps - 1):
        noise = model.noise_draws[j][_composed_ancestors(result, model.num_steps, j)]
        torch.testing.assert_close(history[:, j + 1], history[:, j] + noise)
    torch.testing.assert_close(state_seen["x"], history[:, -1] + model.noise_draws[-1])


def test_distinct_ancestor_count_matches_the_ancestors():
    result = steer(RandomWalk(), first_coordinate, FKConfig(num_particles=8, lmbda=5.0),
                   prompts=["a", "b"], generator=torch.Generator().manual_seed(2))
    for step in result.trace[:-1]:
        expected = [len(set(row.tolist())) for row in step.ancestors]
        assert step.num_distinct.tolist() == expected


# -- randomness ---------------------------------------------------------------------------------


def test_same_seed_same_result_and_different_seed_differs():
    def run(seed):
        return steer(RandomWalk(), first_coordinate, FKConfig(num_particles=8, lmbda=2.0),
                     prompts=["a", "b"], generator=torch.Generator().manual_seed(seed))

    first, again, other = run(5), run(5), run(6)
    assert torch.equal(first.samples, again.samples)
    assert torch.equal(first.log_weights, again.log_weights)
    assert torch.equal(first.log_evidence, again.log_evidence)
    assert all(
        (a.ancestors is None and b.ancestors is None) or torch.equal(a.ancestors, b.ancestors)
        for a, b in zip(first.trace, again.trace, strict=True)
    )
    assert not torch.equal(first.samples, other.samples)


def test_the_engine_never_draws_from_the_model_generator():
    plain_model, steered_model = RandomWalk(), RandomWalk()
    plain_gen = torch.Generator().manual_seed(11)
    steered_gen = torch.Generator().manual_seed(11)
    steer(plain_model, first_coordinate, FKConfig(num_particles=8), generator=plain_gen,
          method="base")
    steer(steered_model, first_coordinate, FKConfig(num_particles=8, lmbda=4.0),
          generator=steered_gen)
    for a, b in zip(plain_model.noise_draws, steered_model.noise_draws, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(plain_gen.get_state(), steered_gen.get_state())


# -- rewards: chunking, prompts, bad values -----------------------------------------------------


def test_reward_is_chunked_to_its_batch_size_and_gets_one_prompt_per_sample():
    calls = []

    class Chunked:
        batch_size = 3

        def __call__(self, samples, prompts):
            calls.append((samples.shape[0], list(prompts)))
            return samples[:, 0]

    config = FKConfig(num_particles=4, resample_every=2)  # scores steps 0, 2, 4 of 5
    result = steer(RandomWalk(num_steps=5), Chunked(), config, prompts=["a", "b"],
                   generator=torch.Generator().manual_seed(0))
    assert all(size <= 3 for size, _ in calls)
    per_pass = [prompt for _, prompts in calls[:3] for prompt in prompts]
    assert per_pass == ["a"] * 4 + ["b"] * 4
    assert result.samples_scored == 4 * 8  # three scoring steps and the final one
    assert result.nfe == 5 * 8


def test_samples_scored_counts_samples_and_reward_calls_is_its_deprecated_name():
    calls = []

    def reward(samples, prompts):
        calls.append(len(samples))
        return samples[:, 0]

    reward.batch_size = 5  # several calls per scoring step: the count is of samples, not calls
    config = FKConfig(num_particles=4, resample_every=2)  # scores steps 0, 2, 4 of 5, and x_0
    result = steer(RandomWalk(num_steps=5), reward, config, prompts=["a", "b"],
                   generator=torch.Generator().manual_seed(0))
    assert result.samples_scored == sum(calls) == 4 * 8 and len(calls) == 4 * 2
    with pytest.deprecated_call(match="samples_scored"):
        assert result.reward_calls == result.samples_scored
    summary = result.summary()
    assert summary["samples_scored"] == summary["reward_calls"] == 32  # the old key, one release


def test_reward_gets_none_without_prompts():
    seen = []

    def reward(samples, prompts):
        seen.append(prompts)
        return samples[:, 0]

    steer(RandomWalk(), reward, FKConfig(num_particles=2), generator=torch.Generator())
    assert seen and all(prompts is None for prompts in seen)


def test_reward_of_wrong_length_is_an_error():
    with pytest.raises(ValueError, match="one float per sample"):
        steer(RandomWalk(), lambda s, p: s[:1, 0], FKConfig(num_particles=4),
              generator=torch.Generator())


def test_plus_infinity_is_an_error_naming_the_step():
    def reward(samples, prompts):
        return torch.full((samples.shape[0],), math.inf)

    with pytest.raises(ValueError, match=r"\+inf at step 0 for group 0"):
        steer(RandomWalk(), reward, FKConfig(num_particles=4), generator=torch.Generator())


@pytest.mark.parametrize("bad", [math.nan, -math.inf])
def test_non_finite_intermediate_reward_kills_the_particle(bad):
    """Particles whose first prediction scores NaN/-inf keep weight 0 to the end."""
    killed = {}

    def reward(samples, prompts):
        values = samples[:, 0].clone()
        if "mask" not in killed:  # first call: step 0
            killed["mask"] = samples[:, 0] < 0
            values[killed["mask"]] = bad
        return values

    config = FKConfig(num_particles=32, ess_threshold=NEVER, lmbda=0.5)
    result = steer(RandomWalk(), reward, config, generator=torch.Generator().manual_seed(4))
    mask = killed["mask"].reshape(1, 32)
    assert 0 < int(mask.sum()) < 32
    assert torch.all(result.weights[mask] == 0)
    assert torch.all(result.weights[~mask] > 0)
    assert int(result.trace[0].num_dead[0]) == int(mask.sum())
    assert int(result.trace[1].num_dead[0]) == 0


def test_dead_particles_are_never_resampled():
    seen = []

    def reward(samples, prompts):
        values = samples[:, 0].clone()
        values[samples[:, 0] < 0] = math.nan
        seen.append(values.reshape(2, 16))
        return values

    result = steer(RandomWalk(num_steps=4), reward, FKConfig(num_particles=16, lmbda=0.1),
                   prompts=["a", "b"], generator=torch.Generator().manual_seed(0))
    assert sum(int(step.num_dead.sum()) for step in result.trace) > 0
    for step, rewards in zip(result.trace[:-1], seen, strict=False):
        chosen_rewards = rewards.gather(1, step.ancestors)
        assert torch.isfinite(chosen_rewards).all()
    assert torch.all(torch.isfinite(result.rewards) | (result.weights == 0))


def test_a_group_with_every_particle_dead_is_an_error_naming_group_and_step():
    calls = []

    def reward(samples, prompts):
        calls.append(1)
        values = samples[:, 0].clone()
        if len(calls) == 2:  # step 1: kill every particle of group 1
            values[4:8] = math.nan
        return values

    with pytest.raises(AllParticlesDeadError, match=r"group 1 \(prompt 'b'\).*step 1"):
        steer(RandomWalk(), reward, FKConfig(num_particles=4), prompts=["a", "b"],
              generator=torch.Generator())


# -- baselines and evidence ---------------------------------------------------------------------


def test_baselines_weights_and_evidence():
    config = FKConfig(num_particles=16, lmbda=0.7)

    def run(method):
        return steer(RandomWalk(), first_coordinate, config, prompts=["a", "b", "c"],
                     generator=torch.Generator().manual_seed(9), method=method)

    base, best, importance = run("base"), run("best_of_n"), run("importance")
    assert torch.equal(base.samples, best.samples) and torch.equal(base.samples, importance.samples)
    for result in (base, best, importance):
        assert result.samples_scored == 3 * 16  # the final rewards only
        torch.testing.assert_close(result.log_evidence, log_mean_exp(0.7 * result.rewards))
    torch.testing.assert_close(base.weights, torch.full((3, 16), 1 / 16, dtype=torch.float64))
    assert torch.equal(best.best, best.rewards.argmax(1))
    assert torch.equal(best.weights, torch.nn.functional.one_hot(best.best, 16).double())
    torch.testing.assert_close(importance.weights, torch.softmax(0.7 * importance.rewards, 1))


def test_fk_result_fields_and_trace():
    model = RandomWalk(num_steps=6)
    config = FKConfig(num_particles=8, resample_start=1, resample_every=2)
    result = steer(model, first_coordinate, config, prompts=["a", "b"],
                   generator=torch.Generator().manual_seed(0))
    assert result.samples.shape == (2, 8, 2)
    assert result.weights.shape == result.rewards.shape == (2, 8)
    assert result.log_evidence.shape == (2,)
    assert [step.scored for step in result.trace] == [False, True, False, True, False, True, True]
    assert result.trace[-1].step == 6
    assert result.samples_scored == 4 * 16
    best = result.best_samples()
    assert best.shape == (2, 2)
    drawn = result.draw(torch.Generator().manual_seed(0))
    assert drawn.shape == (2, 2)
    summary = result.summary()
    assert summary["num_resampling_steps"] == 3 and summary["nfe"] == 6 * 16


def test_unknown_method_and_bad_model_are_errors():
    with pytest.raises(ValueError, match="method='greedy' is unknown"):
        steer(RandomWalk(), first_coordinate, FKConfig(), method="greedy")
    with pytest.raises(ValueError, match="StepModel protocol"):
        steer(object(), first_coordinate, FKConfig())
    with pytest.raises(ValueError, match="prompts is empty"):
        steer(RandomWalk(), first_coordinate, FKConfig(), prompts=[])


# -- soft reward for several predictions per particle -------------------------------------------


def test_soft_reward_is_the_log_mean_exp_of_lambda_r():
    from fksteer.smc.weights import soft_reward

    rewards = torch.tensor([[0.0, 1.0, 3.0]], dtype=torch.float64)
    expected = math.log((1 + math.e**2 + math.e**6) / 3) / 2
    torch.testing.assert_close(soft_reward(rewards, 2.0), torch.tensor([expected]).double())
    # lambda -> 0 is the mean, continuously
    torch.testing.assert_close(soft_reward(rewards, 0.0), torch.tensor([4 / 3]).double())
    torch.testing.assert_close(soft_reward(rewards, 1e-7), torch.tensor([4 / 3]).double())
    # a dead draw contributes weight 0 (but still counts in the mean); all dead -> NaN
    with_dead = torch.tensor([[0.0, math.nan], [-math.inf, math.nan]], dtype=torch.float64)
    soft = soft_reward(with_dead, 1.0)
    assert soft[0] == pytest.approx(math.log(0.5)) and torch.isnan(soft[1])
    assert soft_reward(with_dead, -1.0)[0] == pytest.approx(math.log(0.5) / -1.0)


def test_model_with_several_predictions_gets_one_reward_call_for_all_of_them():
    class TwoPredictions(RandomWalk):
        num_predictions = 2

        def predict(self, state, step, generator):
            output, x = super().predict(state, step, generator)
            return output, torch.stack([x, x + 1.0], dim=1).reshape(-1, x.shape[1])

    calls = []

    def reward(samples, prompts):
        calls.append((samples.shape[0], list(prompts)))
        return samples[:, 0]

    result = steer(TwoPredictions(num_steps=2), reward, FKConfig(num_particles=3),
                   prompts=["a", "b"], generator=torch.Generator().manual_seed(0))
    assert calls[0] == (12, ["a"] * 6 + ["b"] * 6)  # step 0: 2 groups x 3 particles x 2
    assert calls[-1][0] == 6  # the final sample: one per particle
    assert result.samples_scored == 12 + 12 + 6

    class DecodesOnePerParticle(TwoPredictions):
        def decode(self, clean, final):
            return clean if final else clean[::2]

    with pytest.raises(ValueError, match="2 prediction"):
        steer(DecodesOnePerParticle(), first_coordinate, FKConfig(num_particles=3),
              prompts=["a", "b"], generator=torch.Generator())


# -- the push-style ParticleSystem that drivers call -------------------------------------------


def test_particle_system_driven_by_hand():
    from fksteer.smc.particles import ParticleSystem
    from fksteer.smc.plan import StepTimes

    config = FKConfig(num_particles=4, resample_start=1, lmbda=1.0)
    system = ParticleSystem(first_coordinate, config, num_steps=3, prompts=["a", "b"],
                            generator=torch.Generator().manual_seed(0))
    assert [system.is_scoring_step(step) for step in range(3)] == [False, True, True]
    system.record(0, StepTimes(model=0.5), evaluations=16)  # e.g. classifier-free guidance: 2 x 8
    with pytest.raises(ValueError, match="not a scoring step"):
        system.weigh_and_resample(0, torch.zeros(8, 2))
    rewards = torch.tensor([[0.0, 0, 0, 9], [0, 0, 0, 0]]).reshape(8, 1).expand(8, 2)
    ancestors = system.weigh_and_resample(1, rewards.clone())
    assert ancestors.shape == (8,) and ancestors.dtype == torch.int64
    assert torch.all(ancestors[:4] == 3)  # group a: all mass on its 4th particle (weight e^9)
    assert torch.all(ancestors[4:] // 4 == 1)  # group b stays in group b
    system.record(1, StepTimes(model=0.5, decode=0.25))
    assert system.weigh_and_resample(2, torch.zeros(8, 2)) is not None
    system.record(2)
    result = system.finish(torch.zeros(8, 2))
    assert result.nfe == 16 + 8 + 8
    assert [step.scored for step in result.trace] == [False, True, True, True]
    assert result.trace[0].model_seconds == 0.5 and result.trace[1].reward_seconds >= 0.25
    with pytest.raises(RuntimeError, match="already called"):
        system.finish(torch.zeros(8, 2))


def test_particle_system_takes_rewards_computed_by_the_driver():
    """Given the same rewards, score(rewards=...) and finish(rewards=...) behave exactly as when
    the system calls the reward itself (a distributed driver scores its own particles)."""
    from fksteer.smc.particles import ParticleSystem

    config = FKConfig(num_particles=4, lmbda=1.0, resampling="multinomial")
    states = torch.randn(3, 8, 2, generator=torch.Generator().manual_seed(1))
    results = []
    for given in (False, True):
        system = ParticleSystem(first_coordinate, config, num_steps=2, prompts=["a", "b"],
                                generator=torch.Generator().manual_seed(0))
        for step in range(2):
            rewards = first_coordinate(states[step], None) if given else None
            decoded = None if given else states[step]
            ancestors = system.weigh_and_resample(step, decoded, rewards=rewards)
            results.append(ancestors)
            system.record(step)
        rewards = first_coordinate(states[2], None) if given else None
        results.append(system.finish(states[2], rewards=rewards))
    first, second = results[:3], results[3:]
    assert all(torch.equal(a, b) for a, b in zip(first[:2], second[:2], strict=True))
    assert torch.equal(first[2].log_weights, second[2].log_weights)
    assert torch.equal(first[2].log_evidence, second[2].log_evidence)
    assert first[2].samples_scored == second[2].samples_scored == 24
    system = ParticleSystem(first_coordinate, config, num_steps=2,
                            generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="expects 4"):
        system.weigh_and_resample(0, rewards=torch.zeros(3))
    with pytest.raises(ValueError, match="decoded samples or their rewards"):
        system.weigh_and_resample(0)


def test_lambda_at_evaluates_fixed_tilts_and_refuses_run_time_ones():
    """``smc.config.lambda_at`` (public): a number is itself at every step, a ramp is linear in
    the step, and a tilt chosen during the run has no single value to give."""
    from fksteer.smc.config import LinearRamp, lambda_at
    from fksteer.smc.tempering import AdaptiveTilt

    assert lambda_at(10.0, 3, 8) == 10.0
    assert lambda_at(LinearRamp(0.0, 8.0), 2, 8) == pytest.approx(2.0)
    assert lambda_at(LinearRamp(0.0, 8.0), 8, 8) == pytest.approx(8.0)
    with pytest.raises(ValueError, match="no single lambda per step"):
        lambda_at(AdaptiveTilt(10.0), 1, 8)
