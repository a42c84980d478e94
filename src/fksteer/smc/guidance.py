"""Reward-gradient guided proposals: the gradient, and the exact weight of a shifted Gaussian step.

    from fksteer.smc.guidance import reward_gradient, shift_gaussian_step

FK steering needs no gradients, but with a differentiable reward a proposal that moves each
particle's next-step mean along grad_x lambda r(x0_hat(x)) (as DPS, universal guidance, TDS and
DAS do) puts particles where the potentials want them. Inside sequential Monte Carlo such a
proposal q stays exact when each particle's weight carries p(x' | x) / q(x' | x), with p the
model's kernel (Wu et al. 2023, "Practical and asymptotically exact conditional sampling in
diffusion models", sec. 3). For a Gaussian step p = N(mu, sigma^2 I) the guided proposal is
q = N(mu + sigma^2 g, sigma^2 I) (a first-order approximation of the locally optimal proposal
p(x' | x) exp(g . x')), and the ratio is in closed form (:func:`shift_gaussian_step`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from fksteer.smc.protocol import Reward

__all__ = ["reward_gradient", "shift_gaussian_step"]


def reward_gradient(
    x: torch.Tensor,
    clean_of: Callable[[torch.Tensor, slice], Any],
    decode: Callable[[Any], Any],
    reward: Reward,
    prompts: Sequence[Any] | None,
    strength: float | torch.Tensor,
    batch_size: int | None = None,
) -> torch.Tensor:
    """grad_x of ``strength * r(decode(clean_of(x)))`` for every particle, shaped like ``x``.

    ``strength`` is one float, or one per particle (a tensor with x's leading length) when the
    particles' groups follow different tilts.
    ``x`` holds the particles' states (flat leading axis); ``clean_of(x_rows, rows)`` is the
    differentiable clean prediction of particles ``rows`` at ``x_rows``; ``prompts`` is one per
    particle (or None). A reward with a ``differentiable()`` method (the catalogue's
    :class:`~fksteer.rewards.base.RewardModel`, which scores under no_grad) is called through
    it. Particles go through the backward pass in chunks of ``batch_size`` (default: the
    reward's ``batch_size``, else all at once), which bounds the memory of the activations kept
    for it. Each particle's reward depends only on its own state, so the
    gradient of a chunk's sum is each particle's own gradient.
    """
    total = x.shape[0]
    batch_size = batch_size or getattr(reward, "batch_size", None) or total
    # a reward that runs under no_grad by default may offer a differentiable variant
    score = reward.differentiable() if hasattr(reward, "differentiable") else reward
    gradient = torch.empty_like(x)
    for start in range(0, total, batch_size):
        rows = slice(start, min(start + batch_size, total))
        with torch.enable_grad():
            leaf = x[rows].detach().requires_grad_(True)
            values = score(
                decode(clean_of(leaf, rows)), None if prompts is None else list(prompts[rows])
            )
            if not isinstance(values, torch.Tensor) or not values.requires_grad:
                raise ValueError(
                    f"guidance needs a reward differentiable in torch; {reward!r} returned "
                    f"{type(values).__name__} without a gradient. Set FKConfig.guidance=0 to "
                    "steer without gradients."
                )
            if values.numel() != rows.stop - rows.start:
                raise ValueError(
                    f"the reward returned {values.numel()} values for "
                    f"{rows.stop - rows.start} samples: it must return one float per sample."
                )
            if isinstance(strength, torch.Tensor):
                weights = strength[rows].to(device=values.device, dtype=values.dtype)
                objective = (weights * values.reshape(-1)).sum()
            else:
                objective = strength * values.sum()
            (chunk,) = torch.autograd.grad(objective, leaf)
        gradient[rows] = chunk
    if not bool(torch.isfinite(gradient).all()):
        raise ValueError("the reward's gradient is not finite.")
    return gradient


def shift_gaussian_step(
    sample: torch.Tensor, mean: torch.Tensor, std: torch.Tensor | float, gradient: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn a draw of the model's step into a draw of the guided proposal, with its weight.

    ``sample = mean + std * z`` is the model's draw from p = N(mean, std^2) (``std`` broadcasts
    against it: a float, per particle or per element). Returns ``x' = sample + std^2 * gradient``,
    a draw from q = N(mean + std^2 gradient, std^2) with the same noise z, and per particle
    (summed over the other axes, in float64)

        log p(x') - log q(x') = [|x' - mean - std^2 g|^2 - |x' - mean|^2] / (2 std^2)
                              = -std z . g - std^2 |g|^2 / 2.

    Where ``std`` is 0 the step is deterministic: no shift and a ratio of 1.
    """
    std = torch.as_tensor(std, dtype=sample.dtype, device=sample.device)
    variance = std**2
    shift = variance * gradient
    shifted = sample + shift
    noise_term = (sample - mean).double() * gradient.double()  # std z . g, elementwise
    log_ratio = -noise_term - 0.5 * variance.double() * gradient.double() ** 2
    log_ratio = torch.broadcast_to(log_ratio, sample.shape)
    return shifted, log_ratio.reshape(sample.shape[0], -1).sum(dim=1).cpu()
