"""The particle system's checks of rewards and weights, and the error of a group that died.

    from fksteer.smc.checks import AllParticlesDeadError, check_alive, check_no_plus_inf

A reward of +inf is an error (rewards are finite, or NaN / -inf to discard a sample); a group
whose particles all have weight zero stops the run with an error naming the group, the step and
what the reward returned. Each check reads its tensors once and synchronises once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["AllParticlesDeadError", "argmax_finite", "check_alive", "check_no_plus_inf"]


class AllParticlesDeadError(RuntimeError):
    """Every particle of a group has weight zero: the reward gave NaN or -inf to all of them."""


def check_no_plus_inf(rewards: torch.Tensor, step: int, prompts: Sequence[Any]) -> None:
    """A ValueError naming the step and the group when a reward (G, K[, M]) is +inf."""
    bad = rewards == math.inf
    if bool(bad.any()):
        group = int(bad.reshape(len(prompts), -1).any(dim=1).nonzero()[0])
        raise ValueError(
            f"the reward returned +inf at step {step} for group {group} "
            f"(prompt {prompts[group]!r}): rewards must be finite, or NaN/-inf "
            "to discard a sample."
        )


def check_alive(
    log_weights: torch.Tensor,
    rewards: torch.Tensor,
    step: int,
    num_steps: int,
    prompts: Sequence[Any],
) -> None:
    """An :class:`AllParticlesDeadError` when every log-weight (G, K) of a group is -inf."""
    all_dead = torch.isneginf(log_weights).all(dim=1)
    if bool(all_dead.any()):
        group = int(all_dead.nonzero()[0])
        raise AllParticlesDeadError(
            f"every particle of group {group} (prompt {prompts[group]!r}) has "
            f"weight zero at step {step} of {num_steps}: the reward returned "
            f"{rewards[group].tolist()}. Rewards must be finite for at least one particle."
        )


def argmax_finite(rewards: torch.Tensor) -> torch.Tensor:
    """(G,) index of the largest reward per group, NaN counted as -inf."""
    return torch.nan_to_num(rewards, nan=-math.inf).argmax(dim=1)
