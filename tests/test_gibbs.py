"""Particle Gibbs: the reference is restored in slot 0, the chain is reproducible, budgets stop
where they say, Ctrl-C keeps the finished sweeps, and bad input is refused by name."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from toy_models import RandomWalk

from fksteer import FKConfig, steer
from fksteer.models import (
    GaussianMixtureDiffusion,
    LinearReward,
    TableDenoiser,
    TabularMaskedDiffusion,
)
from fksteer.smc.chains import autocorrelation, effective_sample_size, split_rhat
from fksteer.smc.particle_gibbs import Budget, gibbs
from fksteer.smc.rows import flatten_rows
from fksteer.smc.tempering import AdaptiveTilt, GroupSchedule

MIXTURE_REWARD = LinearReward([1.0, 0.0])


def count_of_token_two(tokens, prompts):
    return (tokens == 2).sum(dim=-1).double()


def mixture(num_steps=6):
    return GaussianMixtureDiffusion.default(num_steps=num_steps)


def masked_sampler():
    from fksteer.integrations.masked import MaskedDiffusionModel

    table = TabularMaskedDiffusion.default()
    return MaskedDiffusionModel(TableDenoiser(table), seq_len=table.seq_len, num_steps=4,
                                num_x0_samples=2)


def unet_model():
    diffusers = pytest.importorskip("diffusers")
    from tiny_builds import tiny_unet2d

    from fksteer.diffusers import DeterministicSamplerWarning, UNetStepModel

    scheduler = diffusers.DPMSolverMultistepScheduler(solver_order=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeterministicSamplerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return UNetStepModel(tiny_unet2d(num_class_embeds=2), scheduler, 4)


def embedded_text_model():
    from fksteer.embedded.text_model import load_text_model

    return load_text_model(seq_len=6, num_steps=4, num_x0_samples=2)


def text_length(texts, prompts):
    return torch.tensor([float(len(str(text))) for text in texts])


def brightness(samples, prompts):
    return samples.mean(dim=(1, 2, 3))


MODELS = {
    "mixture": (mixture, MIXTURE_REWARD, [None] * 3, "systematic"),
    "table": (lambda: TabularMaskedDiffusion.default(num_steps=4), count_of_token_two,
              [None] * 3, "multinomial"),
    "masked-sampler": (masked_sampler, count_of_token_two, [None] * 3, "systematic"),
    "unet-dpm-solver": (unet_model, brightness, [0, 1], "systematic"),
    "embedded-text": (embedded_text_model, text_length, ["You will", "Life is"] * 3,
                      "systematic"),
}


def _leaves_equal(first, second):
    a, b = flatten_rows(first)[0], flatten_rows(second)[0]
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_reference_is_restored_at_every_step_and_traced_back(name):
    """Sweep 1 of a run continues sweep 0's kept path R in slot 0. Its kept path R' shares R's
    first T - new_steps steps (rows, predictions) exactly, all of them when the reference is
    kept; and slot 0's final sample and reward in sweep 1 are R's."""
    build, reward, prompts, scheme = MODELS[name]
    model = build()
    config = FKConfig(num_particles=3, lmbda=2.0, resampling=scheme, resample_every=1)
    seed = torch.Generator().manual_seed(7)
    first = gibbs(model, reward, config, sweeps=1, prompts=prompts, generator=seed)
    second = gibbs(model, reward, config, sweeps=2, prompts=prompts,
                   generator=torch.Generator().manual_seed(7))
    assert torch.equal(_ids(second.samples[0]), _ids(first.samples[0]))
    assert torch.equal(_ids([row[0] for row in second.sweeps[1].samples]), _ids(first.samples[0]))
    assert torch.equal(second.sweeps[1].rewards[:, 0], first.rewards[0])
    old, new = first.reference, second.reference
    num_steps = len(old.rows)
    for g in range(len(prompts)):
        shared = num_steps + 1 - int(second.new_steps[1, g])  # of the T steps and the final
        assert bool(second.accepted[1, g]) == (shared <= num_steps)
        row = torch.tensor([g])
        for step in range(min(shared, num_steps)):
            assert _leaves_equal(_row(old.rows[step], row), _row(new.rows[step], row)), step
        for step in old.predictions:
            if step < shared:
                M = len(flatten_rows(old.predictions[step])[0][0]) // len(prompts)
                rows = torch.arange(g * M, (g + 1) * M)
                assert _leaves_equal(_row(old.predictions[step], rows),
                                     _row(new.predictions[step], rows)), step
        if not bool(second.accepted[1, g]):
            assert torch.equal(_ids([second.samples[1][g]]), _ids([first.samples[0][g]]))
            assert _leaves_equal(_row(old.final, row), _row(new.final, row))
    assert bool(second.accepted[1].any()), "no new path at all: the test shows nothing"


def _ids(samples):
    """A batch of samples as one tensor: decoded texts by their token ids."""
    if isinstance(samples, torch.Tensor):
        return samples
    return torch.stack([torch.as_tensor(getattr(item, "token_ids", item)) for item in samples])


def _row(tree, index):
    from fksteer.smc.rows import select_rows

    return select_rows(tree, index)


def test_the_chain_is_reproducible_under_a_seed_and_differs_across_seeds():
    config = FKConfig(num_particles=4, lmbda=1.0)
    runs = [
        gibbs(mixture(), MIXTURE_REWARD, config, sweeps=4, prompts=[None] * 2,
              generator=torch.Generator().manual_seed(seed))
        for seed in (3, 3, 4)
    ]
    assert torch.equal(runs[0].samples, runs[1].samples)
    assert torch.equal(runs[0].kept, runs[1].kept)
    assert not torch.equal(runs[0].samples, runs[2].samples)
    # sweep 0 is FK steering with a fresh generator of the seed
    fk = steer(mixture(), MIXTURE_REWARD, config, prompts=[None] * 2,
               generator=torch.Generator().manual_seed(3))
    assert torch.equal(runs[0].sweeps[0].samples, fk.samples)
    # the sweeps draw different noise
    assert not torch.equal(runs[0].sweeps[1].samples[:, 1:], runs[0].sweeps[2].samples[:, 1:])


def test_an_nfe_budget_runs_the_whole_sweeps_it_pays_for():
    model, config = mixture(num_steps=5), FKConfig(num_particles=4, lmbda=1.0)
    per_sweep = 5 * 2 * 4
    result = gibbs(model, MIXTURE_REWARD, config, budget=Budget(nfe=3 * per_sweep + 7),
                   prompts=[None] * 2, generator=torch.Generator().manual_seed(0))
    assert result.num_sweeps == 3 and result.nfe == 3 * per_sweep
    assert result.stop_reason == "budget-nfe"
    capped = gibbs(model, MIXTURE_REWARD, config, sweeps=2, budget=Budget(nfe=10 * per_sweep),
                   prompts=[None] * 2, generator=torch.Generator().manual_seed(0))
    assert capped.num_sweeps == 2 and capped.stop_reason == "sweeps"
    with pytest.raises(ValueError, match="pays for no sweep"):
        gibbs(model, MIXTURE_REWARD, config, budget=Budget(nfe=per_sweep - 1),
              prompts=[None] * 2)


def test_a_time_budget_finishes_the_sweep_in_progress_and_replays_with_its_sweep_count():
    model, config = mixture(), FKConfig(num_particles=4, lmbda=1.0)
    result = gibbs(model, MIXTURE_REWARD, config, budget=Budget(seconds=0.3),
                   prompts=[None] * 2, generator=torch.Generator().manual_seed(5))
    assert result.stop_reason == "budget-seconds" and result.num_sweeps >= 1
    per_sweep = result.seconds / result.num_sweeps
    assert result.seconds < 0.3 + 3 * per_sweep + 0.2  # at most the sweep in progress over
    replay = gibbs(model, MIXTURE_REWARD, config, sweeps=result.num_sweeps,
                   prompts=[None] * 2, generator=torch.Generator().manual_seed(5))
    assert torch.equal(replay.samples, result.samples)
    assert result.summary()["seed"] == 5


class InterruptAt:
    """A reward that raises KeyboardInterrupt (as Ctrl-C does) at its n-th call."""

    def __init__(self, reward, call):
        self.reward, self.call, self.calls = reward, call, 0

    def __call__(self, samples, prompts):
        self.calls += 1
        if self.calls == self.call:
            raise KeyboardInterrupt
        return self.reward(samples, prompts)


def test_ctrl_c_keeps_the_finished_sweeps():
    model = mixture(num_steps=4)
    config = FKConfig(num_particles=3, lmbda=1.0)  # 5 reward calls per sweep (4 steps + final)
    reward = InterruptAt(MIXTURE_REWARD, call=5 * 2 + 3)  # inside sweep 2
    result = gibbs(model, reward, config, sweeps=10, prompts=[None] * 2,
                   generator=torch.Generator().manual_seed(1))
    assert result.stop_reason == "interrupted" and result.num_sweeps == 2
    clean = gibbs(model, MIXTURE_REWARD, config, sweeps=2, prompts=[None] * 2,
                  generator=torch.Generator().manual_seed(1))
    assert torch.equal(result.samples, clean.samples)
    with pytest.raises(KeyboardInterrupt):  # nothing finished: nothing to keep
        gibbs(model, InterruptAt(MIXTURE_REWARD, call=2), config, sweeps=3)


def test_an_adaptive_lambda_is_frozen_after_the_first_sweep():
    config = FKConfig(num_particles=4, lmbda=AdaptiveTilt(target=2.0, ess=0.5))
    result = gibbs(mixture(), MIXTURE_REWARD, config, sweeps=3, prompts=[None] * 2,
                   generator=torch.Generator().manual_seed(2))
    assert isinstance(result.sweep_config.lmbda, GroupSchedule)
    assert result.sweep_config.lmbda == result.sweeps[0].tilt_schedule()
    for sweep in result.sweeps[1:]:
        assert sweep.tilt_schedule() == result.sweeps[0].tilt_schedule()


def test_diagnostics_agree_with_the_chain():
    result = gibbs(mixture(), MIXTURE_REWARD, FKConfig(num_particles=3, lmbda=1.5), sweeps=12,
                   prompts=["a", "a", "b", "b"], generator=torch.Generator().manual_seed(0),
                   burn_in=4, thin=2)
    assert result.chain().shape == (4, 4, 2)
    stayed = ~result.accepted[1:]
    assert torch.equal(result.new_steps[1:][stayed], torch.zeros(int(stayed.sum()),
                                                                 dtype=torch.int64))
    assert bool((result.new_steps[1:][~stayed] >= 1).all())
    assert bool((result.new_steps[0] == 7).all())  # sweep 0: 6 steps and the final, all new
    same = (result.samples[1:] == result.samples[:-1]).all(dim=-1)
    assert torch.equal(same, stayed)  # a chain stays put exactly when it keeps the reference
    rates = result.update_rate()
    assert rates.shape == (7,) and bool((rates.diff() >= 0).all())  # later steps change more
    assert float(rates[-1]) == float(result.accepted[1:].double().mean())
    assert set(result.rhat()) == {"'a'", "'b'"} and set(result.ess()) == {"'a'", "'b'"}
    best_reward, best = result.best()
    assert bool((best_reward >= result.rewards.max(dim=0).values).all())
    assert torch.allclose(MIXTURE_REWARD(best).double(), best_reward, atol=1e-5)
    summary = result.summary()
    assert summary["num_sweeps"] == 12 and summary["path_bytes"]["kept_path"] > 0
    assert summary["path_bytes"]["sweep"] == 3 * summary["path_bytes"]["kept_path"]


@pytest.mark.parametrize("scheme", ["stratified", "residual"])
def test_schemes_without_a_conditional_version_are_refused(scheme):
    with pytest.raises(ValueError, match=f"{scheme!r} has no conditional version"):
        gibbs(mixture(), MIXTURE_REWARD, FKConfig(resampling=scheme), sweeps=2)


def test_models_it_cannot_run_and_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="guidance"):
        gibbs(mixture(), MIXTURE_REWARD, FKConfig(guidance=0.5), sweeps=2)
    with pytest.raises(ValueError, match="particle_rows"):
        gibbs(RandomWalk(), MIXTURE_REWARD, FKConfig(), sweeps=2)  # permute only
    with pytest.raises(ValueError, match="steer_pipeline"):
        gibbs(object(), MIXTURE_REWARD, FKConfig(), sweeps=2)
    with pytest.raises(ValueError, match="sweeps=S, a budget"):
        gibbs(mixture(), MIXTURE_REWARD, FKConfig())
    with pytest.raises(ValueError, match="sweeps must be a positive int"):
        gibbs(mixture(), MIXTURE_REWARD, FKConfig(), sweeps=0)
    for bad in (dict(), dict(nfe=0), dict(seconds=-1.0), dict(seconds=math.inf)):
        with pytest.raises(ValueError, match="Budget"):
            Budget(**bad)


def _ar1(phi, chains, draws, seed):
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(chains, draws, generator=generator, dtype=torch.float64)
    values = torch.empty_like(noise)
    values[:, 0] = noise[:, 0] / math.sqrt(1 - phi**2)
    for t in range(1, draws):
        values[:, t] = phi * values[:, t - 1] + noise[:, t]
    return values


def test_chain_diagnostics_on_an_autoregressive_chain():
    """AR(1) with coefficient phi: rho_t = phi^t and ESS = C N (1 - phi) / (1 + phi)."""
    phi, chains, draws = 0.6, 16, 4000
    values = _ar1(phi, chains, draws, seed=0)
    rho = autocorrelation(values)
    assert torch.allclose(rho[:4], phi ** torch.arange(4.0, dtype=torch.float64), atol=0.02)
    expected = chains * draws * (1 - phi) / (1 + phi)
    assert abs(float(effective_sample_size(values)) / expected - 1) < 0.1
    assert abs(float(split_rhat(values)) - 1) < 0.01
    shifted = values + torch.arange(chains, dtype=torch.float64)[:, None] * 0.5
    assert float(split_rhat(shifted)) > 1.2
    trend = values + torch.linspace(0, 3, draws, dtype=torch.float64)  # within-chain drift
    assert float(split_rhat(trend)) > 1.1
    assert math.isnan(float(split_rhat(torch.ones(4, 10))))
    with pytest.raises(ValueError, match="at least 4 draws"):
        split_rhat(torch.randn(3, 3))


def test_ancestor_sampling_needs_the_transition_density():
    with pytest.raises(ValueError, match="transition_log_prob"):
        gibbs(masked_sampler(), count_of_token_two, FKConfig(), sweeps=2, ancestor_sampling=True)


def test_the_table_transition_density_is_normalised_over_next_states():
    model = TabularMaskedDiffusion.default(num_steps=4)
    state = torch.tensor([[3, 0, 3, 3]])  # mask id 3
    draw = torch.tensor([[1, 0, 2, 2]])
    for step in range(4):
        masked = [j for j in range(4) if int(state[0, j]) == 3]
        total = 0.0
        for pattern in range(2 ** len(masked)):  # every position kept masked or unmasked
            after = state.clone()
            for bit, j in enumerate(masked):
                if pattern >> bit & 1:
                    after[0, j] = draw[0, j]
            total += float(model.transition_log_prob(state, draw, step, after).exp())
        assert abs(total - 1.0) < 1e-12, step
    changed = torch.tensor([[1, 1, 3, 3]])  # an unmasked token changed: impossible
    assert float(model.transition_log_prob(state, draw, 0, changed)) == -math.inf


def test_the_mixture_transition_density_integrates_to_one():
    model = mixture(num_steps=4)
    state = torch.tensor([[0.3, -0.4]], dtype=torch.float64)
    model64 = GaussianMixtureDiffusion.default(num_steps=4, dtype=torch.float64)
    for step in (0, 2, 3):
        output, _ = model64.predict(state, step, None)
        grid = torch.linspace(-7, 7, 561, dtype=torch.float64)
        points = torch.cartesian_prod(grid, grid)  # (n, 2)
        log_p = model.transition_log_prob(state.expand(len(points), 2),
                                          output.expand(len(points), -1), step, points)
        mass = float(log_p.exp().sum()) * float(grid[1] - grid[0]) ** 2
        assert abs(mass - 1.0) < 1e-3, (step, mass)
