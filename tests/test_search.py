"""The search baselines (SVDD-PM, CoDe, beam search) through the steering path.

Pinned: the denoiser and reward evaluations every method makes, counted by the model and the
reward themselves, against each method's definition; SVDD with one candidate is base sampling
draw for draw; CoDe with one block over all steps is best-of-N; each selection rule's law; the
model's state and output are copied together (the RandomWalk checks it at every move).
"""

from __future__ import annotations

import math

import pytest
import torch
from toy_models import RandomWalk, first_coordinate

from fksteer import FKConfig, steer
from fksteer.smc.config import SEARCH_METHODS, SearchConfig
from fksteer.smc.particles import ParticleSystem
from fksteer.smc.search import keep_best, keep_softmax, keep_top

STEPS, GROUPS = 5, 3


class CountingWalk(RandomWalk):
    """A RandomWalk that counts the rows it evaluates in ``predict``."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.rows_predicted = 0

    def predict(self, state, step, generator):
        self.rows_predicted += state["x"].shape[0]
        return super().predict(state, step, generator)


class CountingReward:
    """first_coordinate, counting the samples it scores."""

    def __init__(self):
        self.scored = 0

    def __call__(self, samples, prompts):
        self.scored += len(samples)
        return samples[:, 0]


def run(method, num_particles=4, seed=0, model=None, reward=first_coordinate, **kwargs):
    model = model or RandomWalk(num_steps=STEPS)
    return steer(model, reward, FKConfig(num_particles=num_particles, lmbda=1.0, **kwargs),
                 prompts=[f"p{g}" for g in range(GROUPS)],
                 generator=torch.Generator().manual_seed(seed), method=method)


@pytest.mark.parametrize("method, expected_nfe, expected_rewards", [
    # K = 4 particles, G = 3 groups, T = 5 steps; searches with M = 3 candidates
    ("fk", STEPS * GROUPS * 4, (STEPS + 1) * GROUPS * 4),  # scored at every step and the end
    ("base", STEPS * GROUPS * 4, GROUPS * 4),  # the final rewards only
    ("best_of_n", STEPS * GROUPS * 4, GROUPS * 4),
    ("importance", STEPS * GROUPS * 4, GROUPS * 4),
    # searches: T * K * M rows predicted; K * M rewards at steps 1 .. 4 and the end
    (SearchConfig("svdd", candidates=3, temperature=0.5), STEPS * GROUPS * 12,
     STEPS * GROUPS * 12),
    (SearchConfig("beam", candidates=3), STEPS * GROUPS * 12, STEPS * GROUPS * 12),
    # CoDe with blocks of 2 steps: chosen at steps 2 and 4 and the end
    (SearchConfig("code", candidates=3, block=2), STEPS * GROUPS * 12, 3 * GROUPS * 12),
    # one block over all steps: the final choice only
    (SearchConfig("code", candidates=3, block=STEPS), STEPS * GROUPS * 12, GROUPS * 12),
])
def test_denoiser_and_reward_evaluations_match_each_definition(
    method, expected_nfe, expected_rewards
):
    model, reward = CountingWalk(num_steps=STEPS), CountingReward()
    result = run(method, model=model, reward=reward)
    assert model.rows_predicted == result.nfe == expected_nfe
    assert reward.scored == result.samples_scored == expected_rewards
    summary = result.summary()
    assert (summary["nfe"], summary["samples_scored"]) == (expected_nfe, expected_rewards)
    assert result.samples.shape == (GROUPS, 4, 2) and result.rewards.shape == (GROUPS, 4)


@pytest.mark.parametrize("temperature", [0.0, 2.0])
def test_svdd_with_one_candidate_is_base_sampling(temperature):
    base = run("base", num_particles=6, seed=3)
    svdd = run(SearchConfig("svdd", candidates=1, temperature=temperature), num_particles=6,
               seed=3)
    assert torch.equal(svdd.samples, base.samples)
    assert torch.equal(svdd.rewards, base.rewards)
    torch.testing.assert_close(svdd.weights, base.weights)
    assert svdd.nfe == base.nfe
    assert not any(bool(step.resampled.any()) for step in svdd.trace)


def test_code_with_one_block_over_all_steps_is_best_of_n():
    n = 8
    best_of_n = run("best_of_n", num_particles=n, seed=5)
    code = run(SearchConfig("code", candidates=n, block=STEPS), num_particles=1, seed=5)
    groups = torch.arange(GROUPS)
    assert torch.equal(code.samples[:, 0], best_of_n.samples[groups, best_of_n.best])
    assert torch.equal(code.rewards[:, 0], best_of_n.rewards.amax(dim=1))
    assert code.nfe == best_of_n.nfe
    assert code.samples_scored == best_of_n.samples_scored


def test_beam_keeps_the_top_k_of_the_final_candidates():
    """With one choice at the end (block = T) beam search is the top K of K * M independent
    chains: the same chains as base sampling with K * M particles."""
    base = run("base", num_particles=12, seed=1)
    beam = run(SearchConfig("beam", candidates=3, block=STEPS), num_particles=4, seed=1)
    top = base.rewards.topk(4, dim=1)
    assert torch.equal(beam.rewards, top.values)
    assert torch.equal(beam.samples, base.samples[torch.arange(GROUPS)[:, None], top.indices])


def test_beam_keeps_distinct_beams_when_the_last_move_is_deterministic():
    """A sampler whose last step adds no noise (as DDPM's) makes the M copies of each beam kept
    at the last step identical: the final choice must not keep two copies of one beam."""

    class QuietLastStep(RandomWalk):
        def move(self, state, output, step, generator):
            moved = super().move(state, output, step, generator)
            if step == self.num_steps - 1:  # undo the noise: a deterministic last step
                moved["x"] = state["x"] + output["drift"]
            return moved

    result = run(SearchConfig("beam", candidates=3), num_particles=4, model=QuietLastStep(STEPS))
    for g in range(GROUPS):
        assert len(set(result.rewards[g].tolist())) == 4, result.rewards[g]
        assert result.rewards[g].tolist() == sorted(result.rewards[g].tolist(), reverse=True)


@pytest.mark.parametrize("method", SEARCH_METHODS)
def test_searches_raise_the_reward_over_base_sampling(method):
    """The walk's reward is its final first coordinate: choosing the best of 4 candidates at
    each step adds the expected max of 4 increments each time; base sampling's mean is 0 with
    standard deviation sqrt(T + 1) ~ 2.4 per particle."""
    options = {"temperature": 0.5} if method == "svdd" else {}
    search = run(SearchConfig(method, candidates=4, **options), num_particles=4, seed=2)
    base = run("base", num_particles=4, seed=2)
    assert float(search.rewards.mean()) > float(base.rewards.mean()) + 3.0
    assert torch.isnan(search.log_evidence).all()
    torch.testing.assert_close(search.weights, torch.full((GROUPS, 4), 0.25, dtype=torch.float64))
    assert torch.equal(search.best, search.rewards.argmax(dim=1))


def test_trace_and_summary_of_a_search():
    result = run(SearchConfig("code", candidates=2, block=2), num_particles=3)
    assert [step.step for step in result.trace] == list(range(STEPS + 1))
    assert [step.scored for step in result.trace] == [False, False, True, False, True, True]
    chosen = [step for step in result.trace if step.scored]
    assert all(bool(step.resampled.all()) for step in chosen)
    assert all(step.num_distinct.le(3).all() and step.num_distinct.ge(1).all() for step in chosen)
    summary = result.summary()
    assert summary["method"] == "code"
    assert summary["search"] == {"method": "code", "candidates": 2, "temperature": 0.0,
                                 "block": 2}
    assert all(math.isnan(value) for value in summary["log_evidence"])


def test_a_model_that_decodes_to_lists_keeps_its_items():
    class ListWalk(RandomWalk):
        def decode(self, clean, final):
            return [tuple(row.tolist()) for row in clean]

    def reward(samples, prompts):
        return [sample[0] for sample in samples]

    result = run(SearchConfig("beam", candidates=2), num_particles=3, model=ListWalk(STEPS),
                 reward=reward)
    assert len(result.samples) == GROUPS and all(len(row) == 3 for row in result.samples)
    for g in range(GROUPS):
        assert [row[0] for row in result.samples[g]] == result.rewards[g].tolist()


# -- the selection rules ------------------------------------------------------------------------


def test_keep_best_and_keep_top_pick_the_largest_values_and_never_nan():
    values = torch.tensor([[[0.1, 3.0, math.nan], [-1.0, -math.inf, -0.5]]], dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    config = SearchConfig("code", candidates=3)
    assert keep_best(values, config, generator).tolist() == [[1, 5]]  # rows k * M + m
    assert keep_top(values, config, generator).tolist() == [[1, 0]]  # 3.0, then 0.1
    copies = torch.tensor([[[2.0, 2.0, 2.0], [1.0, 0.5, 1.0]]], dtype=torch.float64)
    assert keep_top(copies, config, generator).tolist() == [[0, 3]]  # 2.0, then 1.0 (not 2.0)


def test_keep_softmax_draws_by_softmax_of_value_over_temperature():
    """20,000 draws for one particle of 3 candidates: each frequency within 5 binomial standard
    deviations (sqrt(p (1 - p) / n) <= 0.0036) of softmax(v / 0.5); a NaN candidate is never
    kept."""
    n, temperature = 20_000, 0.5
    values = torch.tensor([0.0, 0.5, 1.0, math.nan], dtype=torch.float64).expand(1, n, 4)
    config = SearchConfig("svdd", candidates=4, temperature=temperature)
    kept = keep_softmax(values, config, torch.Generator().manual_seed(1))  # (1, n)
    chosen = kept[0] - torch.arange(n) * 4
    frequencies = torch.bincount(chosen, minlength=4).double() / n
    expected = torch.softmax(torch.tensor([0.0, 0.5, 1.0]) / temperature, 0).double()
    tolerance = 5 * torch.sqrt(expected * (1 - expected) / n)
    assert frequencies[3] == 0
    assert ((frequencies[:3] - expected).abs() <= tolerance).all(), (frequencies, expected)


# -- configuration and refusals -----------------------------------------------------------------


@pytest.mark.parametrize("fields, message", [
    ({"method": "greedy"}, "SearchConfig.method='greedy'.*svdd, code, beam"),
    ({"candidates": 0}, "SearchConfig.candidates=0"),
    ({"block": 1.5}, "SearchConfig.block=1.5"),
    ({"temperature": -1.0}, "SearchConfig.temperature=-1.0"),
    ({"method": "beam", "temperature": 0.1}, "invalid for method 'beam'"),
])
def test_search_config_errors_name_the_field(fields, message):
    with pytest.raises(ValueError, match=message):
        SearchConfig(**fields)


def test_a_search_name_runs_with_the_default_options_and_guidance_is_refused():
    result = run("svdd", num_particles=2)
    assert result.search == SearchConfig("svdd") and result.nfe == STEPS * GROUPS * 2 * 4
    with pytest.raises(ValueError, match="guidance=1.0 must be 0"):
        run("beam", guidance=1.0)


def test_the_particle_system_refuses_a_search_method():
    with pytest.raises(ValueError, match="method='svdd' is a search"):
        ParticleSystem(first_coordinate, FKConfig(), num_steps=3, method="svdd")
