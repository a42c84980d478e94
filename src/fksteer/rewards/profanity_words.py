"""Profanity by word list (better-profanity): a judge of another kind than the learned ones.

    from fksteer.rewards.profanity_words import ProfanityWords
    reward = ProfanityWords()        # 1.0 when a text contains a listed word (or leetspeak of one)

better-profanity (MIT) matches words and their leetspeak variants against its list of ~800
entries. It is useful as a held-out judge beside :mod:`fksteer.rewards.toxicity` (steer with one,
evaluate with the other). Part of the ``rewards-text`` extra.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from fksteer.rewards.base import RewardModel, as_texts, require
from fksteer.rewards.cache import cached_model

__all__ = ["ProfanityWords"]


def _load_filter() -> Any:
    module = require("better_profanity", "rewards-text", what="the profanity-words reward")
    module.profanity.load_censor_words()
    return module.profanity


class ProfanityWords(RewardModel):
    """1.0 when the text contains a word of better-profanity's list, else 0.0."""

    name = "profanity-words"

    def __init__(self, *, batch_size: int | None = None, device: str | torch.device | None = None):
        # a CPU scorer: `device` is accepted, like every reward's, and ignored
        super().__init__(batch_size=batch_size, device="cpu")

    def load(self) -> Any:
        """better-profanity's word-list filter."""
        return cached_model(("better_profanity",), _load_filter)

    def score(self, samples: Any, prompts: Sequence[Any] | None) -> torch.Tensor:
        """1 for a text holding a listed word, else 0."""
        texts = as_texts(samples, "the profanity-words reward")
        flags = [float(self.model.contains_profanity(text)) for text in texts]
        return torch.tensor(flags, dtype=torch.float64)
