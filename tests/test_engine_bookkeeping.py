"""The engine's per-step shortcuts give exactly what the plain computation gives.

- systematic ancestors by one binary search (up to 1024 particles) equal those of the offspring
  counts, bit for bit;
- a run that draws all its systematic uniforms at the first scoring step gets the numbers (and
  leaves the generator in the state) of one draw per step;
- the trace, built when first read, is the trace;
- the difference potential's final correction from its carried last tilt equals the one from a
  running sum of its log-potentials.
"""

from __future__ import annotations

import math
import pickle

import pytest
import torch
from toy_models import RandomWalk, first_coordinate

import fksteer.smc.result as result_module
from fksteer import FKConfig, steer
from fksteer.models import GaussianMixtureDiffusion, LinearReward
from fksteer.smc.engine import run_system
from fksteer.smc.particles import ParticleSystem
from fksteer.smc.potentials import APPLIED, Difference
from fksteer.smc.resampling import (
    _systematic_by_counts,
    systematic,
    systematic_from_uniform,
    uniforms_far_from_one,
)
from fksteer.smc.result import StepTrace, Trace


def _random_rows(generator: torch.Generator, kind: int, rows: int, size: int) -> torch.Tensor:
    """Weights with inner, leading and trailing zeros, huge spreads, float32 rows."""
    weights = torch.rand(rows, size, generator=generator, dtype=torch.float64)
    if kind == 1:  # scattered zeros
        weights = weights * (torch.rand(rows, size, generator=generator) < 0.3)
    elif kind == 2:  # a spread of e^300: most weights absorbed by the running sum
        weights = torch.exp(30 * torch.randn(rows, size, generator=generator, dtype=torch.float64))
    elif kind == 3:  # mostly zeros, in float32
        weights = (weights * (torch.rand(rows, size, generator=generator) < 0.05)).float()
    elif kind == 4:  # the second half zero (trailing zeros)
        weights[:, size // 2 :] = 0
    weights[weights.sum(dim=1) == 0, 0] = 1.0
    return weights


def test_systematic_search_equals_the_offspring_counts_bit_for_bit():
    generator = torch.Generator().manual_seed(1)
    checked = 0
    for trial in range(1500):
        rows = int(torch.randint(1, 5, (1,), generator=generator))
        size = int(torch.randint(1, 300, (1,), generator=generator))
        num_samples = int(torch.randint(1, 300, (1,), generator=generator))
        weights = _random_rows(generator, trial % 5, rows, size)
        for uniform in (
            torch.rand(rows, 1, generator=generator, dtype=torch.float64),
            torch.zeros(rows, 1, dtype=torch.float64),
            torch.full((rows, 1), 1.0 - 2.0**-53, dtype=torch.float64),
        ):
            expected = _systematic_by_counts(weights, num_samples, uniform)
            searched = systematic_from_uniform(weights, num_samples, -uniform, negated=True)
            assert torch.equal(searched, expected)
            checked += 1
    assert checked == 4500


def test_search_without_the_mask_equals_the_offspring_counts_for_uniforms_far_from_one():
    generator = torch.Generator().manual_seed(2)
    checked = 0
    for trial in range(1500):
        rows = int(torch.randint(1, 5, (1,), generator=generator))
        size = int(torch.randint(1, 1025, (1,), generator=generator))
        num_samples = int(torch.randint(1, 1025, (1,), generator=generator))
        weights = _random_rows(generator, trial % 5, rows, size)  # positive totals
        # the largest uniform the bound admits, zero, and a random one
        edge = torch.nextafter(
            torch.tensor(1.0 - num_samples * 2.0**-46, dtype=torch.float64),
            torch.tensor(0.0, dtype=torch.float64),
        )
        for uniform in (
            edge.expand(rows, 1),
            torch.zeros(rows, 1, dtype=torch.float64),
            torch.rand(rows, 1, generator=generator, dtype=torch.float64),
        ):
            assert uniforms_far_from_one(uniform, num_samples)
            expected = _systematic_by_counts(weights, num_samples, uniform)
            searched = systematic_from_uniform(weights, num_samples, -uniform, True, True)
            assert torch.equal(searched, expected)
            checked += 1
        # a NaN total: the mask is empty, and leaving it out changes nothing
        nan_rows = weights.double().clone()
        nan_rows[:, -1] = math.nan
        assert torch.equal(
            systematic_from_uniform(nan_rows, num_samples, -edge.expand(rows, 1), True, True),
            systematic_from_uniform(nan_rows, num_samples, -edge.expand(rows, 1), True),
        )
    assert checked == 4500
    # at the edges of [0, 1) the bound fails, and the mask is what keeps the ancestors exact
    uniform = torch.full((1, 1), 1.0 - 2.0**-53, dtype=torch.float64)
    assert not uniforms_far_from_one(uniform, 1)
    weights = torch.tensor([[1.0, 2.0, 0.0, 0.0]], dtype=torch.float64)
    expected = _systematic_by_counts(weights, 4, uniform)
    assert torch.equal(systematic_from_uniform(weights, 4, -uniform, True), expected)
    assert not torch.equal(systematic_from_uniform(weights, 4, -uniform, True, True), expected)


@pytest.mark.parametrize("size", [7, 1024, 1500])
def test_systematic_draws_one_uniform_per_row_and_negated_uniforms_agree(size):
    weights = _random_rows(torch.Generator().manual_seed(size), 4, 3, size)
    ancestors = systematic(weights, size, torch.Generator().manual_seed(5))
    uniform = torch.rand((3, 1), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert torch.equal(ancestors, _systematic_by_counts(weights, size, uniform))
    assert torch.equal(systematic_from_uniform(weights, size, -uniform, negated=True), ancestors)
    batched = weights.reshape(3, 1, size)  # not 2-D: the inverse-CDF lookup, same law
    assert torch.equal(
        systematic_from_uniform(batched, size, -uniform[:, None], negated=True),
        systematic_from_uniform(batched, size, uniform[:, None]),
    )


def _per_step_systematic(weights, num_samples, generator):
    """The systematic scheme, but not the registered function: the system draws per step."""
    return systematic(weights, num_samples, generator)


@pytest.mark.parametrize("num_particles, prompts", [(16, None), (8, ["a", "b", "c"]), (1100, None)])
def test_uniforms_drawn_at_once_are_those_of_one_draw_per_step(num_particles, prompts):
    config = FKConfig(num_particles=num_particles, lmbda=2.0, resampling="systematic")
    runs = []
    for scheme in (None, _per_step_systematic):
        model = RandomWalk(num_steps=6)
        system = ParticleSystem(
            first_coordinate,
            config,
            num_steps=6,
            prompts=prompts,
            generator=torch.Generator().manual_seed(3),
            scheme=scheme,
        )
        result = run_system(model, system)
        after = torch.rand(4, generator=system.engine_generator, dtype=torch.float64)
        runs.append((result, after))
    (pooled, pooled_after), (plain, plain_after) = runs
    assert torch.equal(pooled.samples, plain.samples)
    assert torch.equal(pooled.log_weights, plain.log_weights)
    assert torch.equal(pooled.log_evidence, plain.log_evidence)
    for a, b in zip(pooled.trace, plain.trace, strict=True):
        assert (a.ancestors is None) == (b.ancestors is None)
        assert a.ancestors is None or torch.equal(a.ancestors, b.ancestors)
    assert torch.equal(pooled_after, plain_after)  # the generator ends in the same state


def test_the_trace_is_built_when_first_read_and_is_the_trace(monkeypatch):
    built = []
    build_trace = result_module.build_trace
    monkeypatch.setattr(
        result_module, "build_trace", lambda records, k: built.append(1) or build_trace(records, k)
    )
    config = FKConfig(num_particles=8, lmbda=1.0, ess_threshold=0.5)
    result = steer(
        RandomWalk(num_steps=4),
        first_coordinate,
        config,
        prompts=["a", "b"],
        generator=torch.Generator().manual_seed(0),
    )
    assert isinstance(result.trace, Trace) and len(result.trace) == 5 and built == []
    steps = result.trace.steps()
    assert built == [1] and all(isinstance(step, StepTrace) for step in steps)
    assert result.trace == steps and list(result.trace) == list(steps)
    assert result.trace[-1] is steps[-1] and result.trace[1:3] == steps[1:3]
    assert built == [1]  # built once
    copy = pickle.loads(pickle.dumps(result.trace))
    assert type(copy) is tuple and len(copy) == 5
    for a, b in zip(copy, steps, strict=True):
        assert a.step == b.step and torch.equal(a.ess, b.ess)
        assert torch.equal(a.resampled, b.resampled)


class _RunningSumDifference(Difference):
    """The difference potential with the generic running sum of its log-potentials."""

    applied_log_potential = APPLIED


@pytest.mark.parametrize("ess_threshold", [None, 0.5])
def test_difference_correction_from_the_last_tilt_equals_the_running_sum(ess_threshold):
    problem = GaussianMixtureDiffusion.rare_mode(num_steps=20)
    config = FKConfig(num_particles=64, lmbda=problem.lmbda, ess_threshold=ess_threshold)
    results = []
    for potential in (Difference(), _RunningSumDifference()):
        system = ParticleSystem(
            LinearReward(problem.direction),
            config,
            num_steps=20,
            generator=torch.Generator().manual_seed(2),
        )
        system.potential = potential
        system.potential_state = potential.initial_state(system.log_weights)
        results.append(run_system(problem.model, system))
    assert APPLIED not in Difference().initial_state(torch.zeros(1, 2))
    carried, summed = results
    assert torch.equal(carried.samples, summed.samples)
    assert torch.allclose(carried.log_weights.exp(), summed.log_weights.exp(), atol=1e-12)
    assert torch.allclose(carried.log_evidence, summed.log_evidence, rtol=0, atol=1e-10)
    assert math.isfinite(float(carried.log_evidence))


def _trace_fields(result) -> list[tuple]:
    fields = (
        "ess",
        "resampled",
        "ancestors",
        "num_distinct",
        "reward_mean",
        "reward_max",
        "num_dead",
        "lmbda",
    )
    return [tuple(getattr(step, name) for name in fields) for step in result.trace]


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return torch.equal(torch.nan_to_num(a.double(), nan=7.0), torch.nan_to_num(b.double(), nan=7.0))


@pytest.mark.parametrize("potential", ["difference", "max", "sum", "immediate"])
@pytest.mark.parametrize("prompts", [None, ["a", "b", "c"]])
def test_the_plain_step_equals_the_general_one(monkeypatch, potential, prompts):
    config = FKConfig(num_particles=12, lmbda=1.5, potential=potential)
    runs = []
    for plain in (True, False):
        if not plain:
            monkeypatch.setattr(ParticleSystem, "_runs_plain", lambda self: False)
        runs.append(
            steer(
                RandomWalk(num_steps=5),
                first_coordinate,
                config,
                prompts=prompts,
                generator=torch.Generator().manual_seed(4),
            )
        )
    plain, general = runs
    assert torch.equal(plain.samples, general.samples)
    assert torch.equal(plain.log_weights, general.log_weights)
    assert torch.equal(plain.log_evidence, general.log_evidence)
    for a, b in zip(_trace_fields(plain), _trace_fields(general), strict=True):
        assert all(_same(x, y) for x, y in zip(a, b, strict=True))
