"""Several rewards in one call: weighted sums and other combinations.

    from fksteer.rewards.compose import WeightedSum, Combination, weighted_sum

    reward = weighted_sum({"sentiment": 1.0, "toxicity": -2.0})     # by registry name
    reward = 1.0 * sentiment - 2.0 * toxicity                         # the same, by algebra
    reward = Combination([clip, aesthetic], reduce="min")             # worst of the two

Each component is called once per batch (with its own chunking), so a sum of rewards costs the
sum of their costs and no more. The last values of every component are kept in
``last_components`` (name -> float64 tensor) for diagnostics.

A NaN from any component makes the result NaN, and -inf with a positive weight makes it -inf: the
engine then discards that sample, as the component asked. A zero weight drops the component.

:func:`as_reward` turns whatever a component is given as (a reward, a registry name or spec, a
mapping of weights, a callable) into a reward; it lives here, beside :class:`WeightedSum`, since a
mapping becomes one. :class:`WeightedSum` declares itself the class the operators of
:class:`~fksteer.rewards.base.RewardModel` build (``sums_rewards=True``), so ``base`` needs
nothing from this module: imports point down, ``compose`` -> ``names`` -> ``base``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from fksteer.rewards.base import FunctionReward, RewardModel
from fksteer.rewards.names import build_named

__all__ = ["Combination", "WeightedSum", "as_reward", "weighted_sum"]

_REDUCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sum": lambda v: v.sum(dim=1),
    "mean": lambda v: v.mean(dim=1),
    "min": lambda v: v.min(dim=1).values,
    "max": lambda v: v.max(dim=1).values,
    "product": lambda v: v.prod(dim=1),
}


def _component_name(reward: Any, used: set[str]) -> str:
    base = getattr(reward, "name", None) or getattr(reward, "__name__", type(reward).__name__)
    name, i = str(base), 2
    while name in used:
        name, i = f"{base}_{i}", i + 1
    used.add(name)
    return name


def as_reward(reward: Any) -> RewardModel:
    """Turn a name, a spec, a mapping of weights, or any callable into a :class:`RewardModel`."""
    if isinstance(reward, RewardModel):
        return reward
    if isinstance(reward, str):
        return as_reward(build_named(reward))
    if isinstance(reward, Mapping):
        return WeightedSum(reward)
    if callable(reward):
        return FunctionReward(reward)
    raise TypeError(
        f"a reward is a registry name, a 'package.module:function' spec, a mapping "
        f"{{reward: weight}} or a callable (samples, prompts) -> floats: got "
        f"{type(reward).__name__}."
    )


def _score_all(
    rewards: Sequence[RewardModel], samples: Any, prompts: Sequence[Any] | None
) -> torch.Tensor:
    columns = [reward(samples, prompts) for reward in rewards]  # each (B,) float64
    return torch.stack(columns, dim=1)  # (B, R)


class WeightedSum(RewardModel, sums_rewards=True):
    """``offset + sum_i weight_i * reward_i(samples, prompts)``.

    ``terms``: a mapping ``{reward: weight}`` or a sequence of ``(reward, weight)`` pairs, where a
    reward is a :class:`RewardModel`, any callable ``(samples, prompts) -> floats``, a registry
    name or a ``package.module:function`` spec.
    """

    name = "weighted_sum"

    def __init__(
        self,
        terms: Mapping[Any, float] | Sequence[tuple[Any, float]],
        *,
        offset: float = 0.0,
    ):
        super().__init__(batch_size=None, device="cpu")
        pairs = list(terms.items()) if isinstance(terms, Mapping) else list(terms)
        self.rewards: list[RewardModel] = []
        self.weights: list[float] = []
        for pair in pairs:
            if not (isinstance(pair, tuple) and len(pair) == 2):
                raise TypeError(
                    f"WeightedSum takes (reward, weight) pairs or a {{reward: weight}} mapping: "
                    f"got {pair!r}."
                )
            reward, weight = pair
            weight = float(weight)
            if weight != weight or weight in (float("inf"), float("-inf")):
                raise ValueError(f"the weight of {reward!r} is {weight}: weights must be finite.")
            self.rewards.append(as_reward(reward))
            self.weights.append(weight)
        self.offset = float(offset)
        used: set[str] = set()
        self.names = [_component_name(r, used) for r in self.rewards]
        self.last_components: dict[str, torch.Tensor] = {}

    @classmethod
    def of(cls, reward: Any, weight: float = 1.0) -> WeightedSum:
        """A sum of one term: ``weight`` times ``reward``."""
        return cls([(reward, weight)])

    def __add__(self, other: Any) -> WeightedSum:
        if isinstance(other, WeightedSum):
            terms = list(zip(self.rewards, self.weights, strict=True)) + list(
                zip(other.rewards, other.weights, strict=True)
            )
            return WeightedSum(terms, offset=self.offset + other.offset)
        if isinstance(other, (int, float)):
            return WeightedSum(
                list(zip(self.rewards, self.weights, strict=True)), offset=self.offset + other
            )
        return self + WeightedSum.of(other, 1.0)

    def __mul__(self, weight: float) -> WeightedSum:
        weight = float(weight)
        terms = [(r, w * weight) for r, w in zip(self.rewards, self.weights, strict=True)]
        return WeightedSum(terms, offset=self.offset * weight)

    __rmul__ = __mul__

    @property
    def final_reward(self) -> WeightedSum:
        """The same sum of the components' final rewards (itself when they are all final); built
        once, so its ``last_components`` hold the final values after a run."""
        if getattr(self, "_final", None) is None:
            finals = [r.final_reward for r in self.rewards]
            if all(f is r for f, r in zip(finals, self.rewards, strict=True)):
                self._final = self
            else:
                terms = list(zip(finals, self.weights, strict=True))
                self._final = WeightedSum(terms, offset=self.offset)
                self._final.names = list(self.names)
        return self._final

    def score(self, samples: Any, prompts: Sequence[Any] | None) -> torch.Tensor:
        """The weighted sum of the terms' scores (terms of weight 0 are not called)."""
        active = [
            (n, r, w)
            for n, r, w in zip(self.names, self.rewards, self.weights, strict=True)
            if w != 0
        ]
        values = _score_all([r for _, r, _ in active], samples, prompts)  # (B, R)
        self.last_components = {n: values[:, i] for i, (n, _, _) in enumerate(active)}
        weights = torch.tensor([w for _, _, w in active], dtype=torch.float64)  # (R,)
        return self.offset + (values * weights).sum(dim=1)

    def __repr__(self) -> str:
        terms = " + ".join(f"{w:g} * {n}" for n, w in zip(self.names, self.weights, strict=True))
        return f"WeightedSum({terms}{f' + {self.offset:g}' if self.offset else ''})"


class Combination(RewardModel):
    """Combine several rewards per sample with ``reduce`` over the (weighted) components.

    ``reduce``: "sum", "mean", "min", "max", "product", or a callable mapping the (B, R) tensor
    of component values (each multiplied by its weight) to (B,).
    """

    name = "combination"

    def __init__(
        self,
        rewards: Sequence[Any],
        *,
        reduce: str | Callable[[torch.Tensor], torch.Tensor] = "min",
        weights: Sequence[float] | None = None,
    ):
        super().__init__(batch_size=None, device="cpu")
        self.rewards = [as_reward(r) for r in rewards]
        if not self.rewards:
            raise ValueError("Combination needs at least one reward.")
        if weights is None:
            weights = [1.0] * len(self.rewards)
        if len(weights) != len(self.rewards):
            raise ValueError(
                f"Combination got {len(self.rewards)} rewards but {len(weights)} weights."
            )
        self.weights = [float(w) for w in weights]
        if callable(reduce):
            self.reduce = reduce
        elif reduce in _REDUCTIONS:
            self.reduce = _REDUCTIONS[reduce]
        else:
            raise ValueError(
                f"reduce={reduce!r} is not known: pass one of {sorted(_REDUCTIONS)} or a callable."
            )
        used: set[str] = set()
        self.names = [_component_name(r, used) for r in self.rewards]
        self.last_components: dict[str, torch.Tensor] = {}

    @property
    def final_reward(self) -> Combination:
        """The same combination of the components' final rewards (itself when all are final);
        built once, so its ``last_components`` hold the final values after a run."""
        if getattr(self, "_final", None) is None:
            finals = [r.final_reward for r in self.rewards]
            if all(f is r for f, r in zip(finals, self.rewards, strict=True)):
                self._final = self
            else:
                self._final = copy.copy(self)
                self._final.rewards, self._final.last_components = finals, {}
        return self._final

    def score(self, samples: Any, prompts: Sequence[Any] | None) -> torch.Tensor:
        """The combination of the rewards' scores; each one is kept in ``last_components``."""
        values = _score_all(self.rewards, samples, prompts)  # (B, R)
        self.last_components = {n: values[:, i] for i, n in enumerate(self.names)}
        weights = torch.tensor(self.weights, dtype=torch.float64)
        return self.reduce(values * weights)


def weighted_sum(terms: Mapping[Any, float] | Sequence[tuple[Any, float]], **kwargs: Any):
    """Shorthand for :class:`WeightedSum` (``weighted_sum({"sentiment": 1, "toxicity": -1})``)."""
    return WeightedSum(terms, **kwargs)
