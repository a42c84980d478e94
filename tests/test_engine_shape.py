"""The engine's extension points and the drivers' shared plan.

- A potential or a resampling rule is one registered entry: a new one plugs in without any
  change to the particle system, and a new potential still hits the exact target (its final
  correction is the generic one).
- Every driver records every step it scores (an error otherwise), counts evaluations and time
  the same way (StepPlan, StepTimes); the particle-parallel driver no longer counts its
  bookkeeping twice and takes guidance_batch_size.
- A model's per-particle state is declared once (particle rows): permute derives from it, for
  the exact fixtures, the masked sampler and wrappers alike.
- Size limits of the layers that must stay readable (smc, integrations, distributed).
"""

from __future__ import annotations

import ast
import time
from pathlib import Path

import pytest
import torch
from test_exactness import MIXTURE_LAMBDA, PARTICLES, check_mixture, run_mixture

from fksteer import FKConfig, steer
from fksteer.distributed import steer_particle_parallel
from fksteer.models import GaussianMixtureDiffusion
from fksteer.smc import potentials, resampling, rules
from fksteer.smc.particles import ParticleSystem
from fksteer.smc.plan import StepPlan, StepTimes
from fksteer.smc.rows import permute_particles
from fksteer.smc.wrapper import ModelWrapper

SRC = Path(__file__).resolve().parents[1] / "src" / "fksteer"


def first_coordinate(samples, prompts):
    return samples[:, 0]


# -- registries -------------------------------------------------------------------------------


class HalfStep(potentials.Potential):
    """A potential no one ships: G_i = exp(lambda_i r_i / 2), a half-strength immediate tilt."""

    name = "half-step"

    def log_potential(self, state, rewards, lmbda):
        return 0.5 * lmbda * rewards, {}


def test_a_new_potential_is_one_class_and_hits_the_exact_target(monkeypatch):
    monkeypatch.setitem(potentials.POTENTIALS, HalfStep.name, HalfStep)
    config = FKConfig(num_particles=PARTICLES, potential="half-step", lmbda=MIXTURE_LAMBDA,
                      resample_every=2)
    model, result = run_mixture(config, seed=17)
    check_mixture(model, result)


def test_registries_refuse_unknown_names_and_list_the_valid_ones():
    with pytest.raises(ValueError, match="difference, max, sum, immediate"):
        potentials.get_potential("differences")
    with pytest.raises(ValueError, match="always, ess"):
        rules.get_rule("sometimes")
    with pytest.raises(ValueError, match="resampling_rule='sometimes'"):
        FKConfig(resampling_rule="sometimes")
    with pytest.raises(ValueError, match="ess_threshold too"):
        FKConfig(resampling_rule="ess")
    with pytest.raises(ValueError, match="already registered"):

        @potentials.register_potential
        class Clash(potentials.Potential):
            name = "difference"

    assert FKConfig().rule == "always" and FKConfig(ess_threshold=0.5).rule == "ess"


def test_a_new_resampling_rule_plugs_in_without_touching_the_particle_system(monkeypatch):
    calls = []

    def every_other(ess, num_particles, config):
        calls.append(ess.clone())
        return torch.full_like(ess, len(calls) % 2 == 0, dtype=torch.bool)

    monkeypatch.setitem(rules.RESAMPLING_RULES, "every-other", every_other)
    config = FKConfig(num_particles=8, lmbda=1.0, resampling_rule="every-other")
    model = GaussianMixtureDiffusion.default(num_steps=4)
    result = steer(model, first_coordinate, config, prompts=["a", "b"],
                   generator=torch.Generator().manual_seed(0))
    resampled = [bool(step.resampled.all()) for step in result.trace[:-1]]
    assert resampled == [False, True, False, True] and len(calls) == 4
    assert all(torch.equal(c, step.ess) for c, step in zip(calls, result.trace, strict=False))


def test_the_registries_names_load_without_torch():
    import subprocess
    import sys

    code = ("import sys; from fksteer.smc.config import FKConfig, POTENTIALS; "
            "from fksteer.smc.resampling import RESAMPLING_SCHEMES; "
            "from fksteer.smc.rules import RESAMPLING_RULES; import fksteer; "
            "FKConfig(potential='max', resampling='residual', ess_threshold=0.5); "
            "print(list(POTENTIALS), list(RESAMPLING_SCHEMES), list(RESAMPLING_RULES), "
            "'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("False"), out.stdout


def test_keep_in_place_is_a_deprecated_alias():
    with pytest.deprecated_call():
        alias = resampling.keep_in_place
    assert alias is resampling.survivors_in_place


# -- the drivers' contract ----------------------------------------------------------------------


def test_a_driver_that_scores_without_recording_gets_an_error():
    config = FKConfig(num_particles=4, lmbda=1.0)
    system = ParticleSystem(first_coordinate, config, num_steps=3, prompts=["a"])
    system.weigh_and_resample(0, torch.zeros(4, 2))
    with pytest.raises(RuntimeError, match="step 0 was scored but never recorded"):
        system.weigh_and_resample(1, torch.zeros(4, 2))
    with pytest.raises(RuntimeError, match="step 0 was scored but never recorded"):
        system.record(1)
    with pytest.raises(RuntimeError, match="record\\(\\) before you finish"):
        system.finish(torch.zeros(4, 2))
    system.record(0)
    with pytest.raises(RuntimeError, match="step 1 is a scoring step but was never scored"):
        system.record(1)


def test_the_plan_counts_guided_steps_twice_and_never_scores_baselines():
    config = FKConfig(num_particles=4, lmbda=2.0, guidance=0.5, resample_start=1)
    plan = StepPlan(config, num_steps=4, method="fk", num_particles=8)
    assert [plan.is_scoring_step(i) for i in range(4)] == [False, True, True, True]
    assert plan.guidance_scale(0) == 0.5 and plan.guidance_scale(4) == 0.0
    assert plan.evaluations(guided=True) == 16 and plan.evaluations(guided=False) == 8
    assert not StepPlan(config, 4, "best_of_n", 8).scoring_steps
    with pytest.raises(ValueError, match="method='greedy' is unknown"):
        StepPlan(config, 4, "greedy", 8)


def test_step_times_add_what_the_driver_measured_beside_the_systems_own():
    config = FKConfig(num_particles=2, lmbda=1.0)
    system = ParticleSystem(first_coordinate, config, num_steps=1, prompts=["a"])
    system.weigh_and_resample(0, torch.zeros(2, 2))
    system.record(0, StepTimes(model=1.0, decode=0.5, reward=0.25, permute=2.0))
    step = system.finish(torch.zeros(2, 2)).trace[0]
    assert step.model_seconds == 1.0
    assert 0.75 <= step.reward_seconds < 0.75 + 0.1
    assert 2.0 <= step.engine_seconds < 2.0 + 0.1


def test_particle_parallel_counts_its_bookkeeping_once(monkeypatch):
    """A resampling scheme that takes 0.2 s: each resampling step's engine time is 0.2 s (it was
    counted twice when the driver timed the particle system's call as its own)."""
    delay = 0.2

    def slow_systematic(weights, num_samples, generator):
        time.sleep(delay)
        return resampling.systematic(weights, num_samples, generator)

    monkeypatch.setitem(resampling.RESAMPLING_SCHEMES, "slow", slow_systematic)
    model = GaussianMixtureDiffusion.default(num_steps=3)
    config = FKConfig(num_particles=4, lmbda=1.0, resampling="slow")
    result = steer_particle_parallel(model, first_coordinate, config, prompts=["a"], seed=0,
                                     num_shards=2)
    engine = [step.engine_seconds for step in result.trace[:-1]]
    assert all(delay <= seconds < 1.5 * delay for seconds in engine), engine


def test_particle_parallel_takes_guidance_batch_size():
    sizes = []

    def reward(samples, prompts):
        if samples.requires_grad:
            sizes.append(samples.shape[0])
        return samples[:, 0]

    model = GaussianMixtureDiffusion.default(num_steps=2, dtype=torch.float64)
    config = FKConfig(num_particles=8, lmbda=1.0, guidance=1.0)
    steer_particle_parallel(model, reward, config, prompts=["a"], seed=0, num_shards=2,
                            guidance_batch_size=3)
    assert sizes and set(sizes) <= {3, 1}  # shards of 4 particles in chunks of 3


# -- one description of the per-particle state --------------------------------------------------


def test_permute_derives_from_the_rows_for_the_fixtures_and_wrappers():
    model = GaussianMixtureDiffusion.default(num_steps=2)
    generator = torch.Generator().manual_seed(0)
    state = model.init([None, None], 3, generator)
    output, _ = model.predict(state, 0, generator)
    ancestors = torch.tensor([2, 2, 0, 5, 3, 3])
    permuted, permuted_output = model.permute(state, output, ancestors)
    assert torch.equal(permuted, state[ancestors])
    assert torch.equal(permuted_output, output[ancestors])
    wrapped = ModelWrapper(model)
    assert all(torch.equal(a, b) for a, b in zip(
        wrapped.permute(state, output, ancestors), (permuted, permuted_output), strict=True))
    assert wrapped.replicate().model is model  # no run state: the model serves every shard


def test_a_model_that_cannot_reorder_its_particles_is_refused():
    class NoRows:
        num_steps = 1

        def init(self, prompts, num_particles, generator):
            return torch.zeros(len(prompts) * num_particles, 1)

        def predict(self, state, step, generator):
            return state, state

        def move(self, state, output, step, generator):
            return state

        def decode(self, clean, final):
            return clean

        def final_sample(self, state):
            return state

    with pytest.raises(ValueError, match="cannot reorder its particles"):
        steer(NoRows(), first_coordinate, FKConfig(num_particles=2))
    with pytest.raises(ValueError, match="cannot reorder its particles"):
        permute_particles(NoRows(), None, None, torch.arange(2))


def test_masked_sampler_runs_particle_parallel_and_hits_its_exact_law():
    """The masked sampler declares its rows, so its particles shard: 2 shards in one process,
    ancestral unmasking (several positions per step), against the sampler's exact tilted law."""
    from test_masked_diffusion_exactness import LAMBDA, check, count_of_token_two, make_model, tilt

    table, model = make_model("ancestral", num_steps=3)
    target, log_z = tilt(model.exact_law(3), table.sequences())
    config = FKConfig(num_particles=64, lmbda=LAMBDA)
    result = steer_particle_parallel(model, count_of_token_two, config, prompts=[None] * 200,
                                     seed=3, num_shards=2)
    check(result, table, target, log_z)


# -- readable layers ----------------------------------------------------------------------------


def _code_lines(lines: list[str], node: ast.AST) -> int:
    body = node.body
    start = body[0].lineno
    if isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        start = body[0].end_lineno + 1  # the docstring does not count
    code = (lines[i - 1].strip() for i in range(start, node.end_lineno + 1))
    return sum(1 for line in code if line and not line.startswith("#"))


@pytest.mark.parametrize("layer", ["smc", "integrations", "distributed"])
def test_no_function_over_60_lines_and_no_module_over_600(layer):
    too_long = []
    for path in sorted((SRC / layer).rglob("*.py")):
        lines = path.read_text().splitlines()
        if len(lines) > 600:
            too_long.append(f"{path.name}: {len(lines)} lines")
        for node in ast.walk(ast.parse("\n".join(lines))):
            for child in ast.iter_child_nodes(node):
                # top-level and method definitions; nested functions count in their parent
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) and isinstance(
                    node, (ast.Module, ast.ClassDef)
                ):
                    count = _code_lines(lines, child)
                    if count > 60:
                        too_long.append(f"{path.name}:{child.lineno} {child.name}: {count}")
    assert not too_long, too_long


def test_the_old_masked_diffusion_module_warns_and_still_exports_its_names():
    import importlib
    import sys

    sys.modules.pop("fksteer.integrations.masked_diffusion", None)
    with pytest.warns(DeprecationWarning, match="fksteer.integrations.masked"):
        old = importlib.import_module("fksteer.integrations.masked_diffusion")
    from fksteer.integrations.masked import MaskedDiffusionModel
    from fksteer.models.masked_exact import TableDenoiser

    assert old.MaskedDiffusionModel is MaskedDiffusionModel and old.TableDenoiser is TableDenoiser
