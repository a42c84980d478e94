"""The two contracts the engine talks to: a model that moves particles, and a reward.

    from fksteer.smc.protocol import StepModel, Reward, call_reward

The engine (`fksteer.smc.engine.steer`) knows nothing of diffusion. It drives any object that
implements :class:`StepModel`, scores with any :class:`Reward`, and keeps the SMC bookkeeping.

Particles are laid out flat and group-major: with G groups (one per prompt) of K particles,
particle ``p`` belongs to group ``p // K``. Every per-particle tensor a model keeps has that flat
leading axis of length G*K.

A step of the chain is split in two halves so that the engine can resample between them:
``predict`` evaluates the model on the current state (its output, and the clean-sample prediction
that the reward scores); ``move`` draws the next state from that output. The engine resamples the
current state *and* the output that belongs to it before ``move``, so duplicated particles
diverge at once through fresh noise and no model evaluation is wasted.

A model also says which of its tensors belong to its particles, once
(:class:`~fksteer.smc.rows.ParticleRows`: ``particle_rows`` and ``with_particle_rows``); the
engine reorders particles from that description, and the distributed drivers move them between
processes with it. A model that cannot describe its rows may implement ``permute`` instead.
:func:`call_reward` is the one way the engine calls a reward: on a flat batch, in chunks of the
reward's ``batch_size``; :func:`step_rewards` shapes one step's rewards (G, K[, M]), called or
given by the driver.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = [
    "StepModel",
    "GuidedStepModel",
    "Reward",
    "call_reward",
    "final_reward",
    "is_step_model",
    "step_rewards",
]


@runtime_checkable
class StepModel(Protocol):
    """A sampler whose chain x_T -> ... -> x_0 the engine can steer.

    Steps are counted ``0 .. num_steps - 1`` from the noisiest. Step ``i`` calls
    ``predict(state, i)``, then (maybe) the engine scores and resamples, then
    ``move(state, output, i)`` gives the state of step ``i + 1``; after step ``num_steps - 1``
    the state holds the final sample, read by ``final_sample``.

    Reordering particles after resampling needs one more thing, either of: ``particle_rows`` and
    ``with_particle_rows`` (:class:`~fksteer.smc.rows.ParticleRows`; mix in
    :class:`~fksteer.smc.rows.PermuteByRows` to get ``permute`` from them), or
    ``permute(state, model_output, ancestors) -> (state, model_output)`` reordering every
    per-particle tensor (state, model output, scheduler history, caches) so that particle ``p``
    becomes old particle ``ancestors[p]`` (a flat ``(G*K,)`` int64 index on the CPU that never
    crosses groups).

    Optional attribute ``num_predictions`` (default 1): a model whose ``predict`` returns M > 1
    clean predictions per particle (e.g. M draws from p(x_0 | x_t)), laid out particle-major
    (G*K*M rows), sets it to M; the engine then scores all of them in one reward call and uses
    the soft reward (1/lambda) log mean_j exp(lambda r_j) of each particle
    (:func:`fksteer.smc.weights.soft_reward`).
    """

    num_steps: int

    def init(
        self, prompts: Sequence[Any], num_particles: int, generator: torch.Generator
    ) -> Any:
        """Start ``len(prompts) * num_particles`` particles, group-major.

        ``prompts`` has one entry per group (``[None]`` when the user gave none); a model without
        conditioning ignores the values but still makes that many groups.
        """
        ...

    def predict(self, state: Any, step: int, generator: torch.Generator) -> tuple[Any, Any]:
        """Evaluate the model at ``step``: return ``(model_output, clean_prediction)``.

        ``clean_prediction`` (flat leading axis G*K) is what ``decode`` turns into reward input,
        for instance E[x_0 | x_t] or a draw from p(x_0 | x_t). ``generator`` serves models whose
        prediction is random.
        """
        ...

    def move(
        self, state: Any, model_output: Any, step: int, generator: torch.Generator
    ) -> Any:
        """Draw the state of step ``step + 1`` from the current state and its model output."""
        ...

    def decode(self, clean: Any, final: bool) -> Any:
        """Turn a clean sample (or prediction) into what the reward reads, as a flat batch.

        ``final`` is True for the final sample; an adapter may use a cheaper decoder for
        intermediate predictions (any positive potential leaves the target unchanged, since the
        final potential scores the exact final sample).
        """
        ...

    def final_sample(self, state: Any) -> Any:
        """The clean samples x_0 held by the state after the last ``move`` (flat, G*K)."""
        ...


@runtime_checkable
class GuidedStepModel(StepModel, Protocol):
    """A StepModel whose move is Gaussian (or a Gaussian mixture) given the state.

    Such a model can draw its move from a proposal whose mean is shifted along a reward
    gradient, and return the exact density ratio that keeps the target unchanged
    (``FKConfig.guidance``; :mod:`fksteer.smc.guidance` has the shared pieces).
    """

    def guidance_input(self, state: Any) -> torch.Tensor:
        """x_t: the tensor (flat leading axis G*K) in which the next state's mean moves."""
        ...

    def clean_from(self, state: Any, x: torch.Tensor, rows: slice, step: int) -> Any:
        """The clean prediction of particles ``rows`` at step ``step``, evaluated at ``x``.

        ``x`` holds those particles' rows of :meth:`guidance_input` and may require grad: the
        result must be differentiable in it (same layout as ``predict``'s clean prediction).
        """
        ...

    def guided_move(
        self,
        state: Any,
        model_output: Any,
        step: int,
        generator: torch.Generator,
        gradient: torch.Tensor,
    ) -> tuple[Any, torch.Tensor]:
        """Draw the next state from the kernel with each Gaussian's mean shifted by its
        covariance times ``gradient`` (shaped like :meth:`guidance_input`).

        Returns the new state and log p(x' | x) - log q(x' | x) per particle (flat G*K), with p
        the model's kernel and q the shifted one. A zero gradient must give ``move``'s draw.
        """
        ...


class Reward(Protocol):
    """Any callable scoring a flat batch of decoded samples: higher is better.

    ``reward(samples, prompts)`` gets B samples (a tensor with leading dim B, or a list of B
    items) and ``prompts``, a list of B prompts or None, and returns B floats (tensor, array or
    list). A reward may declare ``batch_size`` (an int attribute): the engine then calls it on
    chunks of at most that many samples. It may also declare ``final_reward`` (another reward):
    the engine then scores the final samples with that one, and the intermediate predictions
    with this one (e.g. an image reward's fast preprocessing at intermediate steps and the
    original package's exact one at the end). The target is p(x_0) exp(lambda r(x_0)) with r
    the final reward, whatever the intermediate one is: the final potential divides out the
    intermediate potentials actually applied.
    """

    def __call__(self, samples: Any, prompts: Sequence[Any] | None) -> Any:
        """B rewards for B samples (``prompts``: one per sample, or None)."""


_STEP_MODEL_MEMBERS = ("num_steps", "init", "predict", "move", "decode", "final_sample")


def is_step_model(model: Any) -> bool:
    """``isinstance(model, StepModel)``: the common answer (every member there, none None) is
    read directly, without the protocol check's walk of its members on every call."""
    if all(getattr(model, name, None) is not None for name in _STEP_MODEL_MEMBERS):
        return True
    return isinstance(model, StepModel)


def final_reward(reward: Reward) -> Reward:
    """The reward of the final samples: ``reward.final_reward`` if declared, else ``reward``."""
    final = getattr(reward, "final_reward", None)
    return reward if final is None else final


def call_reward(
    reward: Reward, samples: Any, prompts: Sequence[Any] | None, batch_size: int | None = None
) -> torch.Tensor:
    """``reward`` on a flat batch, in chunks of its ``batch_size``: (B,) float64 on the CPU.

    ``prompts`` has one entry per sample, or is None; ``batch_size`` overrides the reward's
    (each chunk is one call of this function with its own size). Raises a ValueError when the
    reward does not return one value per sample.
    """
    total = samples.shape[0] if isinstance(samples, torch.Tensor) else len(samples)
    if batch_size is None:
        batch_size = getattr(reward, "batch_size", None) or max(total, 1)
    if batch_size < total:
        return torch.cat([
            call_reward(
                reward,
                samples[start : min(start + batch_size, total)],
                None if prompts is None else prompts[start : start + batch_size],
                batch_size,
            )
            for start in range(0, total, batch_size)
        ])
    # one call: a tensor is passed as it is, anything else sliced
    whole = samples if isinstance(samples, torch.Tensor) else samples[0:total]
    out = reward(whole, None if prompts is None else list(prompts))
    # the output as (B,) float64 on the CPU
    if not isinstance(out, torch.Tensor):
        out = torch.as_tensor(out)
    if out.requires_grad:
        out = out.detach()
    if not out.is_cpu:
        out = out.to(device="cpu", dtype=torch.float64)
    elif out.dtype != torch.float64:
        out = out.double()
    if out.dim() != 1:
        out = out.reshape(-1)
    if out.numel() != total:
        raise ValueError(
            f"the reward returned {out.numel()} values for {total} samples: "
            "it must return one float per sample."
        )
    return out


def step_rewards(
    reward: Reward,
    decoded: Any,
    rewards: Any,
    shape: tuple[int, ...],
    prompts: Sequence[Any] | None,
) -> torch.Tensor:
    """The rewards of one step of G groups of K particles, float64 on the CPU, ``shape`` (G, K)
    or (G, K, M): ``reward`` on ``decoded`` (``prompts``: one per sample, or None), or the
    ``rewards`` a driver computed itself (copied: the caller may reuse its tensor).

    ``decoded`` holds G*K*M samples for M predictions per particle, laid out particle-major
    (the M predictions of particle p are rows p*M .. p*M + M - 1). A ValueError says when the
    counts do not match.
    """
    total = math.prod(shape)
    if rewards is None:
        if decoded is None:
            raise ValueError("pass the decoded samples or their rewards.")
        count = decoded.shape[0] if isinstance(decoded, torch.Tensor) else len(decoded)
        if count != total:
            per_particle = shape[2] if len(shape) > 2 else 1
            raise ValueError(
                f"the model decoded {count} samples but the run expects {total} "
                f"({shape[0]} groups x {shape[1]} particles x {per_particle} prediction(s) each)."
            )
        rewards = call_reward(reward, decoded, prompts)
    else:
        rewards = torch.as_tensor(rewards).detach().to("cpu", torch.float64, copy=True)
    if rewards.numel() != total:
        raise ValueError(
            f"got {rewards.numel()} rewards but the run expects {total} "
            f"({' x '.join(map(str, shape))})."
        )
    return rewards.reshape(shape)
