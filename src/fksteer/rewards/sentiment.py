"""Sentiment of texts by VADER, a rule-based lexicon (offline, in the vaderSentiment wheel).

    from fksteer.rewards.sentiment import Sentiment
    reward = Sentiment()                       # compound score in [-1, 1], positive is high
    reward = Sentiment(target="negative")      # -compound: steer towards negative texts

VADER (Hutto and Gilbert 2014) sums the valences of lexicon words with rules for negation,
intensifiers, punctuation and emoji, and squashes the sum to the compound score
x / sqrt(x^2 + 15). Part of the ``rewards-text`` extra.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from fksteer.rewards.base import RewardModel, as_texts, require
from fksteer.rewards.cache import cached_model

__all__ = ["Sentiment"]

_TARGETS = ("positive", "negative")
_OUTPUTS = ("compound", "pos", "neg", "neu")


def _load_analyzer() -> Any:
    module = require("vaderSentiment.vaderSentiment", "rewards-text", what="the sentiment reward")
    return module.SentimentIntensityAnalyzer()


class Sentiment(RewardModel):
    """VADER's ``compound`` score (or one of "pos", "neg", "neu"); ``target`` flips the sign."""

    name = "sentiment"

    def __init__(
        self,
        *,
        target: str = "positive",
        output: str = "compound",
        batch_size: int | None = None,
        device: str | torch.device | None = None,
    ):
        if target not in _TARGETS:
            raise ValueError(f"target={target!r}: pass one of {_TARGETS}.")
        if output not in _OUTPUTS:
            raise ValueError(f"output={output!r}: pass one of {_OUTPUTS}.")
        # a CPU scorer: `device` is accepted, like every reward's, and ignored
        super().__init__(batch_size=batch_size, device="cpu")
        self.target, self.output = target, output

    def load(self) -> Any:
        """VADER's sentiment analyser."""
        return cached_model(("vader",), _load_analyzer)

    def score(self, samples: Any, prompts: Sequence[Any] | None) -> torch.Tensor:
        """VADER's ``output`` score (the compound score by default) of each text."""
        texts = as_texts(samples, "the sentiment reward")
        values = [self.model.polarity_scores(text)[self.output] for text in texts]
        out = torch.tensor(values, dtype=torch.float64)
        return -out if self.target == "negative" else out
