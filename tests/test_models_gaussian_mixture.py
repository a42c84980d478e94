"""Statistical tests of the Gaussian-mixture fixture against its closed forms.

Tolerances: every Monte Carlo check compares a sample mean with its exact value at Z_MAX = 5
standard errors, the standard error being the sample standard deviation over sqrt(n). For a
sample mean of n >= 20000 draws with finite third moment the CLT holds closely, so a correct
implementation fails one check with probability about 2 * Phi(-5) = 5.7e-7; a few hundred checks
keep the chance of any false failure below 1e-4, and the seeds are fixed anyway. The tests are
sized so that the errors they guard against (wrong gain, wrong variance, a kernel that ignores
x_t, a wrong tilt) move the statistic by tens of standard errors.
"""

from __future__ import annotations

import math

import pytest
import torch

from fksteer.models.gaussian_mixture import (
    GaussianMixtureDiffusion,
    LinearReward,
    cosine_alphabar,
)

Z_MAX = 5.0


def assert_mean_is(values: torch.Tensor, expected: torch.Tensor | float, what: str) -> None:
    """Each column mean of ``values`` (n, m) is within Z_MAX standard errors of ``expected``."""
    values = values.to(torch.float64).reshape(values.shape[0], -1)  # (n, m)
    expected = torch.as_tensor(expected, dtype=torch.float64).reshape(-1).expand(values.shape[1])
    n = values.shape[0]
    standard_errors = values.std(dim=0) / math.sqrt(n)  # (m,)
    z_scores = (values.mean(dim=0) - expected) / standard_errors.clamp_min(1e-300)
    assert z_scores.abs().max() < Z_MAX, f"{what}: z-scores {z_scores.tolist()}"


def run_chain(model: GaussianMixtureDiffusion, num_particles: int, seed: int) -> list[torch.Tensor]:
    """The states x at every time tau_0 .. tau_T (T + 1 tensors of shape (B, d))."""
    generator = torch.Generator().manual_seed(seed)
    state = model.init([None, None], num_particles // 2, generator)
    states = [state]
    for step in range(model.num_steps):
        output, _ = model.predict(state, step, generator)
        state = model.move(state, output, step, generator)
        states.append(state)
    return states


def second_moments(mixture) -> torch.Tensor:
    """E[x_j^2] for each coordinate: sum_k pi_k (mu_kj^2 + sigma_k^2), shape (d,)."""
    return mixture.weights @ (mixture.means**2 + mixture.stds[:, None] ** 2)


# -- schedule ---------------------------------------------------------------------------------


def test_schedule_runs_from_pure_noise_to_clean_data():
    model = GaussianMixtureDiffusion.default(num_steps=25)
    assert model.alphabars[0] == 0.0 and model.alphabars[-1] == 1.0
    assert (model.alphabars.diff() > 0).all()
    assert model.times[0] == 1.0 and model.times[-1] == 0.0
    assert float(cosine_alphabar(0.5)) == pytest.approx(
        math.cos(0.5 * math.pi * 0.508 / 1.008) ** 2 / math.cos(0.5 * math.pi * 0.008 / 1.008) ** 2
    )


# -- exact sampling ---------------------------------------------------------------------------


@pytest.mark.parametrize("num_steps", [1, 3, 25])
def test_final_samples_are_the_mixture(num_steps):
    # n = 20000: the standard error of each checked mean is at most ~0.02 (coordinate std
    # ~1.8 / 141); using the variance of the last step's prior instead of sigma_k^2 would
    # shift E[x^2] by O(1), i.e. > 50 standard errors.
    model = GaussianMixtureDiffusion.default(num_steps=num_steps)
    mixture = model.mixture
    final = model.final_sample(run_chain(model, 20000, seed=num_steps)[-1])  # (n, d)
    assert final.shape == (20000, 2) and final.dtype == torch.float32
    assert_mean_is(final, mixture.mean(), "mean")
    assert_mean_is(final.double() ** 2, second_moments(mixture), "second moment")
    # Occupancy: E_p[p(k | x)] = pi_k exactly for draws x ~ p.
    assert_mean_is(model.responsibilities(final), mixture.weights, "component occupancy")
    # A third-moment check catches mixtures with the right first two moments.
    third = mixture.weights @ (mixture.means**3 + 3 * mixture.means * mixture.stds[:, None] ** 2)
    assert_mean_is(final.double() ** 3, third, "third moment")


def test_every_step_is_the_exact_reverse_kernel():
    # Each state must follow the noised marginal at its time, and each pair (x_t, x_s) must
    # satisfy the forward relation x_t = c x_s + sqrt(1 - c^2) eps with eps independent of x_s:
    # the residual r = x_t - c x_s has mean 0, variance 1 - c^2 and no correlation with x_s
    # (or x_s^2). A kernel that ignored x_t would match every marginal but fail the residual
    # correlation at steps with c > 0, by ~c * Var(x_s) / SE ~ 100 standard errors here.
    model = GaussianMixtureDiffusion.default(num_steps=4)
    states = run_chain(model, 20000, seed=7)
    for index, state in enumerate(states):
        marginal = model.noised_marginal(index)
        x = state.double()
        assert_mean_is(x, marginal.mean(), f"mean at time index {index}")
        assert_mean_is(x**2, second_moments(marginal), f"second moment at time index {index}")
    for step in range(model.num_steps):
        x_t, x_s = states[step].double(), states[step + 1].double()
        c_squared = float(model.alphabars[step] / model.alphabars[step + 1])
        residual = x_t - math.sqrt(c_squared) * x_s  # (n, d)
        assert_mean_is(residual, 0.0, f"residual mean at step {step}")
        assert_mean_is(residual**2, 1 - c_squared, f"residual variance at step {step}")
        for feature in (x_s, x_s**2):
            centred = feature - feature.mean(0)
            products = (residual[:, :, None] * centred[:, None, :]).reshape(len(x_t), -1)
            assert_mean_is(products, 0.0, f"residual correlation at step {step}")


# -- E[x_0 | x_t] -----------------------------------------------------------------------------


def test_clean_prediction_of_one_gaussian_is_the_closed_form_posterior_mean():
    model = GaussianMixtureDiffusion([1.0], [[1.5, -0.5]], [0.7], num_steps=5, dtype=torch.float64)
    x_t = torch.tensor([[0.0, 0.0], [3.0, -2.0], [-1.0, 4.0]], dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    for step in range(model.num_steps):
        log_responsibilities, clean = model.predict(x_t, step, generator)
        a = math.sqrt(float(model.alphabars[step]))
        mean, variance = torch.tensor([1.5, -0.5], dtype=torch.float64), 0.49
        expected = mean + a * variance / (a**2 * variance + 1 - a**2) * (x_t - a * mean)
        torch.testing.assert_close(clean, expected, rtol=1e-12, atol=1e-12)
        assert (log_responsibilities == 0).all()


def test_clean_prediction_is_the_conditional_expectation():
    # m(x_t) = E[x_0 | x_t] is the unique function of x_t whose residual x_0 - m(x_t) is
    # orthogonal to every function of x_t; likewise p(k | x_t) for the indicator 1[k_0 = k].
    # We check orthogonality to the features 1, x_t, x_t^2 and p(k | x_t) on draws
    # (k_0, x_0, x_t) from the forward process. Dropping the factor a_t in the gain, or using
    # sigma^2 for v_t, shows up as a residual-feature correlation of tens of standard errors.
    model = GaussianMixtureDiffusion.default(num_steps=5, dtype=torch.float64)
    mixture = model.mixture
    generator = torch.Generator().manual_seed(11)
    n = 20000
    components = torch.multinomial(mixture.weights, n, replacement=True, generator=generator)
    x_0 = mixture.means[components] + mixture.stds[components, None] * torch.randn(
        (n, 2), generator=generator, dtype=torch.float64
    )  # (n, d)
    for step in range(model.num_steps):
        alphabar = float(model.alphabars[step])
        noise = torch.randn((n, 2), generator=generator, dtype=torch.float64)
        x_t = math.sqrt(alphabar) * x_0 + math.sqrt(1 - alphabar) * noise  # (n, d)
        log_responsibilities, clean = model.predict(x_t, step, generator)
        responsibilities = log_responsibilities.exp()  # (n, C)
        features = torch.cat(
            [torch.ones(n, 1, dtype=torch.float64), x_t, x_t**2, responsibilities], dim=1
        )  # (n, F)
        residuals = torch.cat(
            [x_0 - clean, torch.nn.functional.one_hot(components, 3) - responsibilities], dim=1
        )  # (n, d + C)
        products = (residuals[:, :, None] * features[:, None, :]).reshape(n, -1)
        assert_mean_is(products, 0.0, f"residual orthogonality at step {step}")


# -- the tilted target ------------------------------------------------------------------------


def test_tilt_matches_importance_sampling():
    # Brute force: x_i ~ p, w_i = exp(lmbda b . x_i). log Z ~ log mean(w) with delta-method
    # standard error sd(w) / (mean(w) sqrt(n)); the tilted mean is sum w x / sum w with
    # standard error sqrt(sum w^2 (x - m)^2) / sum w, and tilted component weights are
    # sum w p(k | x) / sum w (E[1[k] | x] = p(k | x)), with the same form of standard error.
    model = GaussianMixtureDiffusion.default(dtype=torch.float64)
    direction, lmbda = torch.tensor([1.0, -0.5], dtype=torch.float64), 0.6
    target = model.tilted(direction, lmbda)
    samples = model.sample(200000, torch.Generator().manual_seed(3))  # (n, d)
    weights = torch.exp(lmbda * LinearReward(direction)(samples, None))  # (n,)
    n = samples.shape[0]

    standard_error = float(weights.std() / (weights.mean() * math.sqrt(n)))
    assert abs(math.log(weights.mean()) - target.log_normaliser) < Z_MAX * standard_error

    def check_weighted_mean(values: torch.Tensor, expected: torch.Tensor, what: str) -> None:
        estimate = (weights[:, None] * values).sum(0) / weights.sum()  # (m,)
        errors = ((weights[:, None] ** 2 * (values - estimate) ** 2).sum(0)).sqrt() / weights.sum()
        z_scores = (estimate - expected) / errors
        assert z_scores.abs().max() < Z_MAX, f"{what}: z-scores {z_scores.tolist()}"

    check_weighted_mean(samples, target.mean(), "tilted mean")
    check_weighted_mean(model.responsibilities(samples), target.weights, "tilted weights")
    # The tilt must move mass: the tilted mean is many standard errors from the prior mean.
    assert (target.mean() - model.mixture.mean()).abs().max() > 0.5


def test_tilt_matches_quadrature_in_one_dimension():
    # Trapezoid rule on a 1e-3 grid over [-15, 20] (> 10 sd beyond every tilted component): its
    # error on these smooth integrands is ~h^2 * max|f''| / 12 * 35 < 1e-6, and the tails cut
    # off hold < 1e-20 of the mass.
    model = GaussianMixtureDiffusion([0.3, 0.7], [[-1.0], [2.0]], [0.5, 1.2], num_steps=3)
    direction, lmbda = torch.tensor([1.5], dtype=torch.float64), 0.8
    target = model.tilted(direction, lmbda)
    grid = torch.linspace(-15.0, 20.0, 35001, dtype=torch.float64)[:, None]  # (M, 1)
    log_unnormalised = model.log_prob(grid) + lmbda * 1.5 * grid[:, 0]  # (M,)
    unnormalised = log_unnormalised.exp()
    normaliser = torch.trapezoid(unnormalised, grid[:, 0])
    assert target.log_normaliser == pytest.approx(math.log(normaliser), abs=1e-6)
    tilted_mean = torch.trapezoid(unnormalised * grid[:, 0], grid[:, 0]) / normaliser
    assert float(target.mean()[0]) == pytest.approx(float(tilted_mean), abs=1e-6)
    # Pointwise: the tilted density is p(x) exp(lmbda b.x) / Z (checks stds and means exactly).
    torch.testing.assert_close(
        target.log_prob(grid), log_unnormalised - target.log_normaliser, rtol=0, atol=1e-10
    )
    torch.testing.assert_close(
        target.responsibilities(grid).sum(-1), torch.ones(len(grid), dtype=torch.float64)
    )


def test_tilt_with_zero_lambda_is_the_mixture():
    model = GaussianMixtureDiffusion.default()
    target = model.tilted([0.3, -2.0], 0.0)
    torch.testing.assert_close(target.weights, model.mixture.weights, rtol=0, atol=1e-15)
    torch.testing.assert_close(target.means, model.mixture.means, rtol=0, atol=0)
    torch.testing.assert_close(target.stds, model.mixture.stds, rtol=0, atol=0)
    assert target.log_normaliser == pytest.approx(0.0, abs=1e-15)


def test_rare_mode_is_rare_under_the_prior_and_dominant_under_the_tilt():
    model, direction, lmbda = GaussianMixtureDiffusion.rare_mode(num_steps=10)
    assert model.num_steps == 10
    target = model.tilted(direction, lmbda)
    assert 0.01 <= float(model.mixture.weights[2]) <= 0.02
    assert 0.8 <= float(target.weights[2]) <= 0.95
    assert float(target.weights[2]) == pytest.approx(0.8846662, abs=1e-6)
    assert target.log_normaliser == pytest.approx(2.9001872, abs=1e-6)
    # Prior draws land in the rare component's high-reward region (x_1 > 3) about 1% of the time.
    samples = model.sample(20000, torch.Generator().manual_seed(0))
    fraction = float((samples[:, 0] > 3).double().mean())
    assert 0.005 < fraction < 0.015


# -- protocol plumbing ------------------------------------------------------------------------


def test_shapes_permute_decode_and_determinism():
    model = GaussianMixtureDiffusion.default(num_steps=3)
    states = [run_chain(model, 8, seed=5)[-1] for _ in range(2)]
    torch.testing.assert_close(states[0], states[1], rtol=0, atol=0)

    generator = torch.Generator().manual_seed(1)
    state = model.init(["a", "b", "c"], 4, generator)  # 3 groups of 4
    assert state.shape == (12, 2)
    output, clean = model.predict(state, 1, generator)
    assert output.shape == (12, 3) and clean.shape == (12, 2)
    assert model.decode(clean, final=False) is clean and model.final_sample(state) is state
    ancestors = torch.tensor([3, 3, 0, 1, 4, 4, 4, 7, 8, 8, 11, 9])
    permuted_state, permuted_output = model.permute(state, output, ancestors)
    torch.testing.assert_close(permuted_state, state[ancestors])
    torch.testing.assert_close(permuted_output, output[ancestors])
    # Identical particles diverge at once through fresh noise.
    moved = model.move(permuted_state, permuted_output, 1, generator)
    assert not torch.equal(moved[0], moved[1])


def test_linear_reward():
    reward = LinearReward([2.0, -1.0])
    samples = torch.tensor([[1.0, 1.0], [0.5, 3.0]])
    torch.testing.assert_close(reward(samples, None), torch.tensor([1.0, -2.0]))
    assert reward.batch_size is None


@pytest.mark.parametrize(
    ("arguments", "name"),
    [
        (dict(weights=[0.5, 0.6], means=[[0.0], [1.0]], stds=[1.0, 1.0]), "weights"),
        (dict(weights=[1.5, -0.5], means=[[0.0], [1.0]], stds=[1.0, 1.0]), "weights"),
        (dict(weights=[0.5, 0.5], means=[0.0, 1.0], stds=[1.0, 1.0]), "means"),
        (dict(weights=[0.5, 0.5], means=[[0.0], [1.0], [2.0]], stds=[1.0, 1.0]), "means"),
        (dict(weights=[0.5, 0.5], means=[[0.0], [1.0]], stds=[1.0, 0.0]), "stds"),
        (dict(weights=[0.5, 0.5], means=[[0.0], [float("nan")]], stds=[1.0, 1.0]), "means"),
        (dict(weights=[1.0], means=[[0.0]], stds=[1.0], num_steps=0), "num_steps"),
        (dict(weights=[1.0], means=[[0.0]], stds=[1.0], dtype=torch.int64), "dtype"),
    ],
)
def test_constructor_errors_name_the_argument(arguments, name):
    arguments = {"num_steps": 3, **arguments}
    with pytest.raises(ValueError, match=name):
        GaussianMixtureDiffusion(**arguments)


def test_tilt_and_reward_errors_name_the_argument():
    model = GaussianMixtureDiffusion.default()
    with pytest.raises(ValueError, match="direction"):
        model.tilted([1.0, 0.0, 0.0], 1.0)
    with pytest.raises(ValueError, match="lmbda"):
        model.tilted([1.0, 0.0], float("inf"))
    with pytest.raises(ValueError, match="direction"):
        LinearReward([[1.0]])
    with pytest.raises(ValueError, match="num_particles"):
        model.init([None], 0, torch.Generator())
