"""Gaussian-mixture diffusion with exact reverse kernels: an exact fixture for the engine.

    from fksteer.models.gaussian_mixture import GaussianMixtureDiffusion, LinearReward

    model = GaussianMixtureDiffusion.default(num_steps=10)         # 2-D, 3 components
    reward = LinearReward([1.0, 0.0])                              # r(x) = b . x
    target = model.tilted([1.0, 0.0], lmbda=0.5)                   # p(x) exp(lmbda r(x)) / Z

What is in it:

- :class:`GaussianMixture`: an isotropic mixture ``sum_k pi_k N(mu_k, sigma_k^2 I)`` (float64)
  with ``mean``, ``log_prob``, ``responsibilities`` and ``sample``.
- :class:`TiltedGaussianMixture`: the same, plus ``log_normaliser`` = log Z; what a linear reward
  makes of a mixture.
- :class:`GaussianMixtureDiffusion`: the mixture under a variance-preserving (DDPM) forward process
  ``x_t = a_t x_0 + sqrt(1 - a_t^2) eps``, ``a_t = sqrt(alphabar(tau))``, implementing the
  :class:`fksteer.smc.protocol.StepModel` protocol with everything in closed form: the noised
  marginal, E[x_0 | x_t], p(k | x_t) and the reverse kernel p(x_s | x_t), itself a Gaussian
  mixture. Sampling with any number of steps therefore gives exact draws from the mixture.
- :class:`LinearReward`: ``r(x) = b . x``, whose tilt of a mixture is again a mixture
  (:meth:`GaussianMixtureDiffusion.tilted`).
- :func:`cosine_alphabar`: the noise schedule.

Time runs over tau in [0, 1]; step ``i`` (0 .. num_steps - 1) is at ``tau_i = 1 - i / num_steps``
and the final sample is at tau = 0, where alphabar = 1 exactly. At tau = 1 alphabar = 0 exactly:
the first state is pure N(0, I) noise and every formula below handles a_t = 0 without special
cases (the forward kernel's coefficient c = a_t / a_s is then 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from fksteer.smc.rows import TensorRows

__all__ = [
    "COSINE_OFFSET",
    "GaussianMixture",
    "GaussianMixtureDiffusion",
    "LinearReward",
    "RareModeProblem",
    "TiltedGaussianMixture",
    "cosine_alphabar",
]

COSINE_OFFSET = 0.008
"""The offset s of the cosine schedule (Nichol & Dhariwal 2021, eq. 17)."""


def cosine_alphabar(tau: torch.Tensor | float) -> torch.Tensor:
    """alphabar(tau) = f(tau) / f(0), f(tau) = cos^2(pi/2 (tau + s) / (1 + s)), in float64.

    Nichol & Dhariwal (2021), "Improved denoising diffusion probabilistic models", eq. 17, with
    s = :data:`COSINE_OFFSET`. The ends are set exactly: alphabar(0) = 1 (clean data) and
    alphabar(1) = 0 (pure noise; the formula gives ~1e-33 there from rounding).
    """
    tau = torch.as_tensor(tau, dtype=torch.float64)
    offset = COSINE_OFFSET
    f = torch.cos(0.5 * math.pi * (tau + offset) / (1 + offset)) ** 2
    alphabar = (f / math.cos(0.5 * math.pi * offset / (1 + offset)) ** 2).clamp(0.0, 1.0)
    alphabar = torch.where(tau >= 1, torch.zeros_like(alphabar), alphabar)
    return torch.where(tau <= 0, torch.ones_like(alphabar), alphabar)


# --------------------------------------------------------------------------------------------
# Mixtures in closed form
# --------------------------------------------------------------------------------------------


def _component_log_likelihoods(
    x: torch.Tensor, means: torch.Tensor, variances: torch.Tensor
) -> torch.Tensor:
    """log N(x; means_k, variances_k I) for every point and component: (B, d) -> (B, C).

    ``means`` is (C, d), or (B, C, d) for means that differ from point to point.
    """
    dimension = x.shape[-1]
    squared_distances = ((x[:, None, :] - means) ** 2).sum(-1)  # (B, C)
    return -0.5 * squared_distances / variances - 0.5 * dimension * torch.log(
        2 * math.pi * variances
    )


def _log_responsibilities(
    x: torch.Tensor, weights: torch.Tensor, means: torch.Tensor, variances: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p(k | x) of shape (B, C), log p(x) of shape (B,)) for a mixture."""
    log_joint = torch.log(weights) + _component_log_likelihoods(x, means, variances)  # (B, C)
    log_density = torch.logsumexp(log_joint, dim=-1)  # (B,)
    return log_joint - log_density[:, None], log_density


def _draw_mixture(
    num_samples: int,
    weights: torch.Tensor,
    means: torch.Tensor,
    scales: torch.Tensor,
    generator: torch.Generator,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Draw k ~ weights, then x ~ N(means_k, scales_k^2 I): (num_samples, d) in ``dtype``."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    components = torch.multinomial(weights, num_samples, replacement=True, generator=generator)
    noise = torch.randn(
        (num_samples, means.shape[1]), generator=generator, dtype=torch.float64
    )  # (n, d)
    samples = means[components] + scales[components, None] * noise  # (n, d)
    return samples.to(dtype)


@dataclass(frozen=True, eq=False)
class GaussianMixture:
    """The isotropic Gaussian mixture ``sum_k weights_k N(means_k, stds_k^2 I)``, in float64.

    ``weights`` (C,), ``means`` (C, d), ``stds`` (C,). Build validated instances through
    :class:`GaussianMixtureDiffusion`; this class only evaluates.
    """

    weights: torch.Tensor  # (C,)
    means: torch.Tensor  # (C, d)
    stds: torch.Tensor  # (C,)

    @property
    def dimension(self) -> int:
        """D, the dimension of the samples."""
        return self.means.shape[1]

    def mean(self) -> torch.Tensor:
        """E[x], shape (d,)."""
        return self.weights @ self.means

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log density at each row of ``x`` (B, d): (B,) float64."""
        x = torch.as_tensor(x, dtype=torch.float64)
        return _log_responsibilities(x, self.weights, self.means, self.stds**2)[1]

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior component probabilities p(k | x) for each row of ``x`` (B, d): (B, C)."""
        x = torch.as_tensor(x, dtype=torch.float64)
        return _log_responsibilities(x, self.weights, self.means, self.stds**2)[0].exp()

    def sample(self, num_samples: int, generator: torch.Generator) -> torch.Tensor:
        """Exact draws, (num_samples, d) float64."""
        return _draw_mixture(
            num_samples, self.weights, self.means, self.stds, generator, torch.float64
        )


@dataclass(frozen=True, eq=False)
class TiltedGaussianMixture(GaussianMixture):
    """A mixture tilted by a linear reward, with ``log_normaliser`` = log E_p[exp(lmbda r(x))].

    See :meth:`GaussianMixtureDiffusion.tilted` for the closed form.
    """

    log_normaliser: float


class LinearReward:
    """The reward ``r(x) = direction . x``: ``reward(samples, prompts)`` -> (B,) float tensor.

    ``samples`` is a (B, d) float tensor; ``prompts`` is ignored. ``batch_size = None``: the
    engine may score any number of samples at once.
    """

    batch_size: int | None = None

    def __init__(self, direction: Sequence[float] | torch.Tensor):
        direction = _float64_tensor(direction, "direction")
        if direction.ndim != 1 or direction.numel() == 0:
            raise ValueError(
                f"direction must be a 1-D vector of length d, got shape {tuple(direction.shape)}"
            )
        self.direction = direction  # (d,)

    def __call__(self, samples: torch.Tensor, prompts: Sequence[Any] | None = None) -> torch.Tensor:
        """r(x) = <direction, x> for each sample (B, D) -> (B,)."""
        samples = torch.as_tensor(samples)
        return samples @ self.direction.to(device=samples.device, dtype=samples.dtype)  # (B,)

    def __repr__(self) -> str:
        return f"LinearReward(direction={self.direction.tolist()})"


class RareModeProblem(NamedTuple):
    """A steering benchmark: ``model``, reward ``LinearReward(direction)`` and ``lmbda``."""

    model: GaussianMixtureDiffusion
    direction: torch.Tensor  # (d,) float64
    lmbda: float


# --------------------------------------------------------------------------------------------
# The diffusion model
# --------------------------------------------------------------------------------------------


class GaussianMixtureDiffusion(TensorRows):
    """An isotropic Gaussian mixture under a DDPM forward process, with exact reverse kernels.

    Implements :class:`fksteer.smc.protocol.StepModel`:

    - state: ``x_t``, a (B, d) tensor of ``dtype``; ``final_sample(state)`` is the state itself.
    - ``predict`` returns ``(log_responsibilities, clean)``: log p(k | x_t) of shape (B, C), and
      E[x_0 | x_t] of shape (B, d) (what the reward scores; ``decode`` passes it through).
    - ``move`` draws x_s from the exact reverse kernel p(x_s | x_t).
    - its particle rows are the state and the output (:class:`~fksteer.smc.rows.TensorRows`).

    Parameters (float64 copies are kept as ``mixture``; the chain runs in ``dtype``):

    - ``weights`` (C,): non-negative, summing to 1 within 1e-6 (then divided by their sum).
    - ``means`` (C, d), ``stds`` (C,): each component is N(means_k, stds_k^2 I), stds_k > 0.
    - ``num_steps``: number of reverse steps, >= 1; any value gives exact final samples.
    """

    def __init__(
        self,
        weights: Sequence[float] | torch.Tensor,
        means: Sequence[Sequence[float]] | torch.Tensor,
        stds: Sequence[float] | torch.Tensor,
        num_steps: int,
        dtype: torch.dtype = torch.float32,
    ):
        weights = _float64_tensor(weights, "weights")
        means = _float64_tensor(means, "means")
        stds = _float64_tensor(stds, "stds")
        if weights.ndim != 1 or weights.numel() == 0:
            raise ValueError(
                f"weights must be a non-empty 1-D tensor of C mixture weights, got shape "
                f"{tuple(weights.shape)}"
            )
        if (weights < 0).any() or abs(weights.sum().item() - 1.0) > 1e-6:
            raise ValueError(
                f"weights must be non-negative and sum to 1, got {weights.tolist()} (sum "
                f"{weights.sum().item():.8g}); divide them by their sum"
            )
        num_components = weights.numel()
        if means.ndim != 2 or means.shape[0] != num_components or means.shape[1] == 0:
            raise ValueError(
                f"means must have shape (C, d) = ({num_components}, dimension) to match "
                f"weights, got shape {tuple(means.shape)}; for 1-D data pass [[m1], [m2], ...]"
            )
        if stds.shape != (num_components,) or (stds <= 0).any():
            raise ValueError(
                f"stds must be {num_components} positive numbers (one isotropic standard "
                f"deviation per component), got {stds.tolist()}"
            )
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating torch dtype, got {dtype!r}")

        self.mixture = GaussianMixture(weights / weights.sum(), means, stds)
        self.num_steps = num_steps
        self.dtype = dtype
        self.times = 1.0 - torch.arange(num_steps + 1, dtype=torch.float64) / num_steps  # (T+1,)
        self.alphabars = cosine_alphabar(self.times)  # (T+1,), alphabars[0] = 0, [-1] = 1

    # -- small conveniences ------------------------------------------------------------------

    @property
    def dimension(self) -> int:
        """D, the dimension of the samples."""
        return self.mixture.dimension

    @property
    def num_components(self) -> int:
        """Components of the data mixture."""
        return self.mixture.weights.numel()

    def __repr__(self) -> str:
        return (
            f"GaussianMixtureDiffusion(weights={self.mixture.weights.tolist()}, "
            f"means={self.mixture.means.tolist()}, stds={self.mixture.stds.tolist()}, "
            f"num_steps={self.num_steps}, dtype={self.dtype})"
        )

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x_0) of the clean mixture at each row of ``x`` (B, d): (B,) float64."""
        return self.mixture.log_prob(x)

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """p(k | x_0) under the clean mixture, (B, C) float64."""
        return self.mixture.responsibilities(x)

    def sample(self, num_samples: int, generator: torch.Generator) -> torch.Tensor:
        """Exact draws from the clean mixture, (num_samples, d) in ``dtype``."""
        return self.mixture.sample(num_samples, generator).to(self.dtype)

    def noised_marginal(self, index: int) -> GaussianMixture:
        """The law of x at ``times[index]``: means a mu_k, variances a^2 sigma_k^2 + 1 - a^2."""
        alphabar = self.alphabars[index]
        variances = alphabar * self.mixture.stds**2 + 1 - alphabar  # (C,)
        return GaussianMixture(
            self.mixture.weights, alphabar.sqrt() * self.mixture.means, variances.sqrt()
        )

    # -- the StepModel protocol --------------------------------------------------------------

    def init(
        self, prompts: Sequence[Any], num_particles: int, generator: torch.Generator
    ) -> torch.Tensor:
        """Exact draws from the noised marginal at tau = 1: (len(prompts) * num_particles, d)."""
        if (
            isinstance(num_particles, bool)
            or not isinstance(num_particles, int)
            or (num_particles < 1)
        ):
            raise ValueError(f"num_particles must be a positive int, got {num_particles!r}")
        return (
            self.noised_marginal(0).sample(len(prompts) * num_particles, generator).to(self.dtype)
        )

    def predict(
        self, state: torch.Tensor, step: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (log p(k | x_t) of shape (B, C), E[x_0 | x_t] of shape (B, d)); no draws."""
        self._check_step(step)
        marginal = self.noised_marginal(step)
        weights, means_t, variances = (
            _like(t, state) for t in (marginal.weights, marginal.means, marginal.stds**2)
        )
        log_responsibilities, _ = _log_responsibilities(state, weights, means_t, variances)
        # Given k, (x_0, x_t) is jointly Gaussian with Cov(x_0, x_t) = a sigma_k^2 I, so
        # E[x_0 | x_t, k] = mu_k + a sigma_k^2 / v_{t,k} (x_t - a mu_k), v_{t,k} = a^2 sigma_k^2
        # + 1 - a^2; E[x_0 | x_t] averages it over p(k | x_t).
        alphabar = self.alphabars[step]
        gains = _like(alphabar.sqrt() * self.mixture.stds**2 / marginal.stds**2, state)  # (C,)
        means = _like(self.mixture.means, state)  # (C, d)
        component_means = means[None] + gains[None, :, None] * (
            state[:, None, :] - means_t[None]
        )  # (B, C, d)
        clean = (log_responsibilities.exp()[:, :, None] * component_means).sum(1)  # (B, d)
        return log_responsibilities, clean

    def move(
        self,
        state: torch.Tensor,
        model_output: torch.Tensor,
        step: int,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """Draw x_s ~ p(x_s | x_t) exactly, s = times[step + 1]; ``model_output`` is (B, C).

        p(x_s | x_t) = sum_k p(k | x_t) N(x_s; m_k(x_t), v_k I) (see :meth:`_reverse_kernel`).
        """
        return self._draw_kernel(state, model_output, step, generator)[0]

    def transition_log_prob(
        self,
        state: torch.Tensor,
        model_output: torch.Tensor,
        step: int,
        next_state: torch.Tensor,
    ) -> torch.Tensor:
        """log p(x_s = next_state | x_t = state) of :meth:`move`, per row: (B,) float64.

        The mixture sum_k p(k | x_t) N(x_s; m_k(x_t), v_k I) in closed form; ``model_output``
        is the (B, C) log p(k | x_t) that ``predict`` returned (particle Gibbs with ancestor
        sampling weighs candidate ancestors with it).
        """
        means, variances = self._reverse_kernel(state, step)
        log_components = _component_log_likelihoods(next_state.double(), means, variances)
        return torch.logsumexp(model_output.double() + log_components, dim=1).cpu()

    # -- guided proposals (fksteer.smc.protocol.GuidedStepModel) ---------------------------------

    def guidance_input(self, state: torch.Tensor) -> torch.Tensor:
        """The tensor the guidance gradient is taken with respect to: the state itself."""
        return state

    def clean_from(
        self, state: torch.Tensor, x: torch.Tensor, rows: slice, step: int
    ) -> torch.Tensor:
        """E[x_0 | x_t = x], differentiable in ``x``."""
        return self.predict(x, step, None)[1]

    def guided_move(
        self,
        state: torch.Tensor,
        model_output: torch.Tensor,
        step: int,
        generator: torch.Generator,
        gradient: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw from q(x_s | x_t) = sum_k p(k | x_t) N(x_s; m_k + v_k g, v_k I), with its weight.

        Every component's mean moves by its own covariance times the gradient ``g`` (B, d); the
        mixture weights stay p(k | x_t). Returns the draw (same random numbers as :meth:`move`,
        so g = 0 gives its draw) and log p(x_s | x_t) - log q(x_s | x_t), both mixtures
        evaluated in closed form (float64).
        """
        sample, means, variances = self._draw_kernel(
            state, model_output, step, generator, gradient
        )
        x = sample.double()
        log_mix = model_output.double()  # (B, C) log p(k | x_t)
        shifted = means + variances[None, :, None] * gradient.double()[:, None, :]
        log_p = torch.logsumexp(log_mix + _component_log_likelihoods(x, means, variances), dim=1)
        log_q = torch.logsumexp(log_mix + _component_log_likelihoods(x, shifted, variances), dim=1)
        return sample, (log_p - log_q).cpu()

    def _reverse_kernel(
        self, state: torch.Tensor, step: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Component means m_k(x_t) (B, C, d) and variances v_k (C,) of p(x_s | x_t, k), float64.

        Given k, the prior is x_s ~ N(a_s mu_k, v_{s,k} I) and the forward kernel
        x_t | x_s ~ N(c x_s, (1 - c^2) I) with c = a_t / a_s, so by Gaussian conditioning
        x_s | x_t, k is normal with precision 1 / v_{s,k} + c^2 / (1 - c^2) and mean
        var * (a_s mu_k / v_{s,k} + c x_t / (1 - c^2)); below both are multiplied through by
        (1 - c^2) so that nothing divides by 1 - c^2. At the last step v_{0,k} = sigma_k^2: the
        draw is exactly p(x_0).
        """
        self._check_step(step)
        alphabar_t, alphabar_s = self.alphabars[step], self.alphabars[step + 1]
        c_squared = alphabar_t / alphabar_s  # alphabar_s > 0 since s < 1
        one_minus_c_squared = 1 - c_squared
        prior_variances = alphabar_s * self.mixture.stds**2 + 1 - alphabar_s  # (C,) v_{s,k}
        denominators = one_minus_c_squared + c_squared * prior_variances  # (C,)
        posterior_variances = prior_variances * one_minus_c_squared / denominators  # (C,)
        prior_terms = (one_minus_c_squared * alphabar_s.sqrt() / denominators)[
            :, None
        ] * self.mixture.means  # (C, d)
        data_gains = c_squared.sqrt() * prior_variances / denominators  # (C,)
        means = prior_terms[None] + data_gains[None, :, None] * state.double()[:, None, :]
        return means, posterior_variances

    def _draw_kernel(
        self,
        state: torch.Tensor,
        model_output: torch.Tensor,
        step: int,
        generator: torch.Generator,
        gradient: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Draw k ~ p(k | x_t), then x_s ~ N(m_k + v_k g, v_k I) (g = 0 without a gradient).

        Returns the draw (in the state's dtype) and the kernel's means (B, C, d) and variances
        (C,) in float64.
        """
        means, variances = self._reverse_kernel(state, step)
        components = torch.multinomial(model_output.exp(), 1, generator=generator)[:, 0]  # (B,)
        noise = torch.randn(
            state.shape, generator=generator, dtype=state.dtype, device=state.device
        )  # (B, d)
        rows = torch.arange(state.shape[0], device=state.device)
        mean = means[rows, components]  # (B, d)
        if gradient is not None:
            mean = mean + variances[components, None] * gradient.double()
        sample = mean.to(state.dtype) + _like(variances.sqrt(), state)[components, None] * noise
        return sample, means, variances

    def decode(self, clean: torch.Tensor, final: bool) -> torch.Tensor:
        """The reward reads points in R^d: ``clean`` (B, d) unchanged."""
        return clean

    def final_sample(self, state: torch.Tensor) -> torch.Tensor:
        """The final state, which is the sample."""
        return state

    def _check_step(self, step: int) -> None:
        if not 0 <= step < self.num_steps:
            raise ValueError(f"step must be in 0 .. {self.num_steps - 1}, got {step!r}")

    # -- the steering target -----------------------------------------------------------------

    def tilted(
        self, direction: Sequence[float] | torch.Tensor, lmbda: float
    ) -> TiltedGaussianMixture:
        """The target p(x) exp(lmbda b . x) / Z of a linear reward, in closed form (float64).

        Each component tilts separately: N(x; mu_k, sigma_k^2 I) exp(lmbda b . x) =
        Z_k N(x; mu_k + lmbda sigma_k^2 b, sigma_k^2 I), with log Z_k = lmbda b . mu_k +
        lmbda^2 sigma_k^2 |b|^2 / 2 (the Gaussian moment generating function). So the target is
        the mixture with shifted means and weights pi_k Z_k / Z, Z = sum_k pi_k Z_k.
        """
        direction = LinearReward(direction).direction  # (d,) float64, validated
        if direction.numel() != self.dimension:
            raise ValueError(
                f"direction must have length d = {self.dimension}, got {direction.numel()}"
            )
        lmbda = float(lmbda)
        if not math.isfinite(lmbda):
            raise ValueError(f"lmbda must be finite, got {lmbda!r}")
        mixture = self.mixture
        variances = mixture.stds**2  # (C,)
        squared_norm = direction @ direction  # |b|^2
        log_partials = (
            lmbda * (mixture.means @ direction) + 0.5 * lmbda**2 * variances * squared_norm
        )  # (C,) log Z_k
        log_joint = torch.log(mixture.weights) + log_partials  # (C,)
        log_normaliser = torch.logsumexp(log_joint, dim=0)
        return TiltedGaussianMixture(
            weights=(log_joint - log_normaliser).exp(),
            means=mixture.means + lmbda * variances[:, None] * direction,
            stds=mixture.stds.clone(),
            log_normaliser=float(log_normaliser),
        )

    # -- ready-made instances ----------------------------------------------------------------

    @classmethod
    def default(
        cls, num_steps: int = 10, dtype: torch.dtype = torch.float32
    ) -> GaussianMixtureDiffusion:
        """A small 2-D, 3-component mixture with unequal weights and stds (used by tests).

        weights (0.5, 0.3, 0.2); means (-2, 0), (2, 0.5), (0, 2.5); stds (0.6, 0.9, 0.4).
        """
        return cls(
            weights=[0.5, 0.3, 0.2],
            means=[[-2.0, 0.0], [2.0, 0.5], [0.0, 2.5]],
            stds=[0.6, 0.9, 0.4],
            num_steps=num_steps,
            dtype=dtype,
        )

    @classmethod
    def rare_mode(cls, num_steps: int = 25, dtype: torch.dtype = torch.float32) -> RareModeProblem:
        """A benchmark whose high-reward region is rare under the prior.

        2-D mixture: weights (0.495, 0.495, 0.01); means (0, 2), (0, -2), (4, 0);
        stds (0.7, 0.7, 0.5); reward direction b = (1, 0); lmbda = 1.75.
        Under the tilt the rare component (index 2, 1% of the prior) holds 88.5% of the mass
        (tilted weights 0.0577, 0.0577, 0.8847; tilted means (0.8575, +-2), (4.4375, 0));
        log Z = log E_p[exp(lmbda x_1)] = 2.9002. Sampling K particles from the prior misses
        the rare component with probability 0.99^K (0.85 for K = 16), and the common components
        put about 1e-5 of their mass beyond x_1 = 3.
        """
        model = cls(
            weights=[0.495, 0.495, 0.01],
            means=[[0.0, 2.0], [0.0, -2.0], [4.0, 0.0]],
            stds=[0.7, 0.7, 0.5],
            num_steps=num_steps,
            dtype=dtype,
        )
        return RareModeProblem(model, torch.tensor([1.0, 0.0], dtype=torch.float64), 1.75)


def _like(tensor: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``tensor`` on ``other``'s device and in its dtype."""
    return tensor.to(device=other.device, dtype=other.dtype)


def _float64_tensor(value: Any, name: str) -> torch.Tensor:
    """``value`` as a finite float64 CPU tensor, or a ValueError naming ``name``."""
    try:
        tensor = torch.as_tensor(value, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"{name} must be numeric (a tensor or nested list), got {value!r}") from (
            error
        )
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} must be finite, got {tensor.tolist()}")
    return tensor
