"""Statistical tests of the tabular masked-diffusion fixture against its table.

Distribution checks use the total-variation distance between the empirical distribution p_hat of
n exact draws and the table p. Its tolerance, derived here once:

- mean: E|p_hat_i - p_i| <= sqrt(Var p_hat_i) = sqrt(p_i (1 - p_i) / n) (Jensen), so
  E[TV] <= 0.5 * sum_i sqrt(p_i (1 - p_i) / n);
- deviation: TV is a function of the n independent draws that changes by at most 1/n when one
  draw changes, so by McDiarmid P(TV > E[TV] + eps) <= exp(-2 n eps^2); eps =
  sqrt(log(1 / delta) / (2 n)) with delta = 1e-6.

So a correct sampler exceeds ``tv_tolerance(p, n)`` with probability below 1e-6 (and the seeds
are fixed). Each test also checks that the error it guards against (sampling positions
independently, i.e. the product of the marginals) is several tolerances away.

Proportions of Bernoulli events are compared with their exact values at 5 standard errors
(false-failure probability ~6e-7 per check by the CLT at these sample sizes).
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from fksteer.models.tabular_masked import TabularMaskedDiffusion

DELTA = 1e-6


def tv_distance(p: torch.Tensor, q: torch.Tensor) -> float:
    return 0.5 * float((p - q).abs().sum())


def tv_tolerance(p: torch.Tensor, n: int) -> float:
    expected_bound = 0.5 * float((p * (1 - p) / n).sqrt().sum())
    return expected_bound + math.sqrt(math.log(1 / DELTA) / (2 * n))


def product_of_marginals(model: TabularMaskedDiffusion) -> torch.Tensor:
    """The distribution a sampler drawing positions independently would produce, (N,)."""
    dims = range(model.seq_len)
    marginals = [model.probs.sum(dim=[d for d in dims if d != j]) for j in dims]  # L x (V,)
    product = marginals[0]
    for marginal in marginals[1:]:
        product = torch.outer(product, marginal).reshape(-1)
    return product


def run_chain(model: TabularMaskedDiffusion, num_particles: int, seed: int) -> list[torch.Tensor]:
    """States at every step plus the final one, checking the invariants of absorbing diffusion."""
    generator = torch.Generator().manual_seed(seed)
    state = model.init([None], num_particles, generator)
    assert (state == model.mask_id).all()
    states = [state]
    for step in range(model.num_steps):
        draw, clean = model.predict(state, step, generator)
        unmasked = state != model.mask_id
        # The x_0 draw agrees with every unmasked token.
        assert torch.equal(draw[unmasked], state[unmasked]) and torch.equal(draw, clean)
        new_state = model.move(state, draw, step, generator)
        # Unmasked tokens never change, masks never reappear, new tokens come from the draw.
        assert torch.equal(new_state[unmasked], state[unmasked])
        assert torch.equal(new_state[new_state != model.mask_id], draw[new_state != model.mask_id])
        state = new_state
        states.append(state)
    assert (state != model.mask_id).all()
    return states


@pytest.mark.parametrize("num_steps", [1, 2, 7])
def test_final_samples_are_the_table(num_steps):
    # With L = 4, num_steps 1 and 2 unmask several positions in one step (all 4 at once for 1).
    model = TabularMaskedDiffusion.default(num_steps=num_steps)
    n = 20000
    final = model.final_sample(run_chain(model, n, seed=num_steps)[-1])
    assert final.shape == (n, 4) and final.dtype == torch.int64
    tolerance = tv_tolerance(model.flat_probs, n)  # ~0.035 here
    assert tv_distance(model.histogram(final), model.flat_probs) < tolerance
    assert tv_distance(product_of_marginals(model), model.flat_probs) > 3 * tolerance


def test_masks_follow_the_schedule():
    # At time t every position is masked independently (of each other and of x_0) with
    # probability 1 - alpha(t) = t, so the masked fraction over n * L positions has standard
    # error sqrt(t (1 - t) / (n L)), and positions 0 and 1 are both masked with probability t^2.
    model = TabularMaskedDiffusion.default(num_steps=5)
    n = 20000
    states = run_chain(model, n, seed=3)
    for index, state in enumerate(states):
        t = float(model.times[index])
        masked = (state == model.mask_id).double()  # (n, L)
        fraction = float(masked.mean())
        standard_error = math.sqrt(t * (1 - t) / masked.numel())
        assert abs(fraction - t) <= 5 * standard_error, (index, fraction, t)
        both = float((masked[:, 0] * masked[:, 1]).mean())
        assert abs(both - t**2) <= 5 * math.sqrt(t**2 * (1 - t**2) / n) + 1e-12, (index, both)


def test_prediction_is_the_conditional_of_the_table():
    model = TabularMaskedDiffusion.default()
    mask = model.mask_id
    n = 20000
    state = torch.tensor([[2, mask, 1, mask]]).expand(n, 4)
    draw, _ = model.predict(state, 2, torch.Generator().manual_seed(5))
    assert (draw[:, 0] == 2).all() and (draw[:, 2] == 1).all()
    conditional = torch.zeros_like(model.probs)
    conditional[2, :, 1, :] = model.probs[2, :, 1, :] / model.probs[2, :, 1, :].sum()
    conditional = conditional.reshape(-1)  # (N,)
    assert tv_distance(model.histogram(draw), conditional) < tv_tolerance(conditional, n)
    # The unconditional table is far from this conditional: a draw ignoring x_t would fail.
    assert tv_distance(model.flat_probs, conditional) > 0.5


def test_prediction_with_no_compatible_sequence_is_an_error():
    model = TabularMaskedDiffusion.default()
    mask = model.mask_id
    state = torch.tensor([[0, mask, mask, 0], [2, mask, mask, 2]])  # default: 2...2 has p = 0
    with pytest.raises(ValueError, match="particle 1 at step 1"):
        model.predict(state, 1, torch.Generator().manual_seed(0))


def test_sample_index_of_and_histogram():
    model = TabularMaskedDiffusion.default()
    sequences = model.sequences()
    assert sequences.shape == (81, 4)
    torch.testing.assert_close(model.index_of(sequences), torch.arange(81))
    assert float(model.probs[1, 0, 2, 2]) == float(
        model.flat_probs[model.index_of(torch.tensor([[1, 0, 2, 2]]))]
    )
    n = 20000
    samples = model.sample(n, torch.Generator().manual_seed(9))
    assert tv_distance(model.histogram(samples), model.flat_probs) < tv_tolerance(
        model.flat_probs, n
    )
    weighted = model.histogram(
        torch.tensor([[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]]),
        weights=torch.tensor([1.0, 2.0, 1.0]),
    )
    assert float(weighted[0]) == 0.5 and float(weighted[1]) == 0.5 and float(weighted.sum()) == 1
    with pytest.raises(ValueError, match="clean"):
        model.index_of(model.init([None], 1, torch.Generator()))


def count_of_ones(samples, prompts):
    return (samples == 1).sum(-1).double()


def test_tilted_matches_brute_force_enumeration():
    model = TabularMaskedDiffusion.default()
    lmbda = 0.7

    def reward(samples, prompts):  # -inf for sequences starting with 0
        values = count_of_ones(samples, prompts)
        return torch.where(samples[:, 0] == 0, -math.inf, values)

    for reward_function in (count_of_ones, reward):
        tilted, log_normaliser = model.tilted(reward_function, lmbda)
        unnormalised = []
        for sequence in itertools.product(range(3), repeat=4):
            r = float(reward_function(torch.tensor([sequence]), None)[0])
            p = float(model.probs[sequence])
            unnormalised.append(0.0 if r == -math.inf else p * math.exp(lmbda * r))
        expected = torch.tensor(unnormalised, dtype=torch.float64)
        torch.testing.assert_close(tilted, expected / expected.sum(), rtol=1e-12, atol=1e-15)
        assert log_normaliser == pytest.approx(math.log(expected.sum()), abs=1e-12)
    tilted, log_normaliser = model.tilted(count_of_ones, 0.0)
    torch.testing.assert_close(tilted, model.flat_probs, rtol=1e-12, atol=1e-15)
    assert log_normaliser == pytest.approx(0.0, abs=1e-12)


def test_tilted_errors():
    model = TabularMaskedDiffusion.default()
    with pytest.raises(ValueError, match="no mass"):
        model.tilted(lambda samples, prompts: torch.full((len(samples),), -math.inf), 1.0)
    with pytest.raises(ValueError, match=r"\+inf"):
        model.tilted(lambda samples, prompts: torch.full((len(samples),), math.inf), 1.0)
    with pytest.raises(ValueError, match="one number per sequence"):
        model.tilted(lambda samples, prompts: torch.zeros(3), 1.0)


def test_permute_and_determinism():
    model = TabularMaskedDiffusion.default(num_steps=3)
    first, second = run_chain(model, 16, seed=4), run_chain(model, 16, seed=4)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    generator = torch.Generator().manual_seed(0)
    state = model.init(["a", "b"], 3, generator)
    draw, _ = model.predict(state, 0, generator)
    state = model.move(state, draw, 0, generator)
    draw, clean = model.predict(state, 1, generator)
    ancestors = torch.tensor([2, 2, 0, 5, 3, 3])
    permuted_state, permuted_output = model.permute(state, draw, ancestors)
    assert torch.equal(permuted_state, state[ancestors])
    assert torch.equal(permuted_output, draw[ancestors])
    assert model.decode(clean, final=True) is clean


@pytest.mark.parametrize(
    ("arguments", "name"),
    [
        (dict(probs=torch.full((3, 3), 1 / 9), vocab_size=3, seq_len=3), "probs"),
        (dict(probs=torch.full((3, 3), 1 / 8), vocab_size=3, seq_len=2), "sum to 1"),
        (dict(probs=torch.tensor([[0.5, 0.6], [-0.1, 0.0]]), vocab_size=2, seq_len=2), "negative"),
        (dict(probs=torch.ones(1), vocab_size=0, seq_len=1), "vocab_size"),
        (dict(probs=torch.ones(1), vocab_size=1, seq_len=0), "seq_len"),
        (dict(probs=torch.ones(1), vocab_size=1, seq_len=1, num_steps=0), "num_steps"),
    ],
)
def test_constructor_errors_name_the_argument(arguments, name):
    arguments = {"num_steps": 2, **arguments}
    with pytest.raises(ValueError, match=name):
        TabularMaskedDiffusion(**arguments)
