"""Rewards by name: the catalogue's registry, and ``package.module:function`` specs.

    from fksteer.rewards import load_reward, available_rewards, register_reward

    reward = load_reward("sentiment")
    reward = load_reward("lm-likelihood", model="HuggingFaceTB/SmolLM2-135M", device="cuda")
    reward = load_reward("mypackage.rewards:brightness")      # any importable callable
    reward = load_reward({"sentiment": 1.0, "toxicity": -1.0})  # a weighted sum

The top of the rewards' layers, the public entry point: names resolve in
:mod:`fksteer.rewards.names` (a name maps to a constructor, imported only when that reward is
loaded, so one missing optional package never breaks the others; a ``package.module:attribute``
spec is found on ``sys.path`` or in the working directory), a mapping of weights becomes a
:class:`fksteer.rewards.compose.WeightedSum`, and whatever was built goes through
:func:`fksteer.rewards.compose.as_reward`: plain callables are wrapped in
:class:`fksteer.rewards.base.FunctionReward`, so every loaded reward chunks, runs under no_grad and
composes. Imports point down only: ``registry`` -> ``compose`` -> ``names`` -> ``base``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fksteer.rewards.base import RewardModel
from fksteer.rewards.compose import WeightedSum, as_reward
from fksteer.rewards.names import available_rewards, build_named, register_reward, reward_modality

__all__ = ["as_reward", "available_rewards", "load_reward", "register_reward", "reward_modality"]


def load_reward(spec: str | Mapping[Any, float] | Any, **kwargs: Any) -> RewardModel:
    """Load a reward by registry name, ``package.module:attribute``, or ``{reward: weight}``.

    Keyword arguments go to the reward's constructor (e.g. ``device``, ``batch_size``, ``model``).
    """
    if isinstance(spec, Mapping):
        if kwargs:
            raise TypeError("load_reward({reward: weight}) takes no keyword arguments.")
        return WeightedSum(spec)
    if not isinstance(spec, str):
        if kwargs:
            raise TypeError(f"keyword arguments {sorted(kwargs)} need a reward name or spec.")
        return as_reward(spec)
    return as_reward(build_named(spec, **kwargs))
