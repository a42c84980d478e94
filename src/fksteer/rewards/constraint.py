"""Hard constraints as rewards: 0 where a predicate holds, -inf (or a penalty) where it fails.

    from fksteer.rewards.constraint import Constraint
    no_digits = Constraint(lambda text, prompt: not any(c.isdigit() for c in text))
    reward = sentiment + no_digits          # steer by sentiment among texts without digits

With the default ``penalty=-inf`` a failing sample gets weight zero, so the target is the base
distribution restricted to the constraint (tilted by the other rewards); the engine stops with an
error if every particle of a group fails. A finite penalty makes the constraint soft.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from fksteer.rewards.base import RewardModel

__all__ = ["Constraint"]


class Constraint(RewardModel):
    """``0`` when ``predicate(sample, prompt)`` is true, ``penalty`` otherwise (per sample)."""

    name = "constraint"

    def __init__(
        self,
        predicate: Callable[[Any, Any], bool],
        *,
        penalty: float = float("-inf"),
        name: str | None = None,
        batch_size: int | None = None,
    ):
        if not callable(predicate):
            raise TypeError(f"predicate must be callable: got {type(predicate).__name__}.")
        if penalty != penalty or penalty > 0:
            raise ValueError(f"penalty={penalty}: pass a number <= 0 (or -inf).")
        super().__init__(batch_size=batch_size, device="cpu")
        self.predicate, self.penalty = predicate, float(penalty)
        self.name = name or getattr(predicate, "__name__", "constraint")

    def score(self, samples: Any, prompts: Sequence[Any] | None) -> torch.Tensor:
        """0 where a sample satisfies the predicate, ``penalty`` (default -inf) where not."""
        prompts = list(prompts) if prompts is not None else [None] * len(samples)
        ok = [
            bool(self.predicate(sample, prompt))
            for sample, prompt in zip(samples, prompts, strict=True)
        ]
        return torch.tensor([0.0 if good else self.penalty for good in ok], dtype=torch.float64)
