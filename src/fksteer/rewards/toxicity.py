"""Toxicity of texts by alt-profanity-check's trained linear model (offline, in its wheel).

    from fksteer.rewards.toxicity import Toxicity
    reward = Toxicity()                        # P(toxic) in [0, 1]
    reward = Toxicity(label="clean", output="log_prob")   # log P(not toxic)

alt-profanity-check (MIT) ships a TF-IDF vectoriser and a linear SVM calibrated to probabilities,
trained on labelled toxic comments; it runs on the CPU at tens of thousands of texts per second.
It pins scikit-learn and joblib exactly, so it lives in the ``rewards-text`` extra (Python >= 3.11).
Steering *towards* toxicity (red-teaming, as in the FK steering paper) uses ``label="toxic"``;
steering away uses ``label="clean"`` or a negative weight.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fksteer.rewards.base import RewardModel, as_texts, require
from fksteer.rewards.cache import cached_model

__all__ = ["Toxicity"]

_LABELS = ("toxic", "clean")
_OUTPUTS = ("prob", "log_prob")


class Toxicity(RewardModel):
    """P(label | text) (or its log) under alt-profanity-check; ``label`` is "toxic" or "clean"."""

    name = "toxicity"

    def __init__(
        self,
        *,
        label: str = "toxic",
        output: str = "prob",
        batch_size: int | None = 1024,
        device: str | torch.device | None = None,
    ):
        if label not in _LABELS:
            raise ValueError(f"label={label!r}: pass one of {_LABELS}.")
        if output not in _OUTPUTS:
            raise ValueError(f"output={output!r}: pass one of {_OUTPUTS}.")
        # a CPU scorer: `device` is accepted, like every reward's, and ignored
        super().__init__(batch_size=batch_size, device="cpu")
        self.label, self.output = label, output

    def load(self) -> Any:
        """alt-profanity-check's trained model."""
        return cached_model(
            ("profanity_check",),
            lambda: require("profanity_check", "rewards-text", what="the toxicity reward"),
        )

    def score(self, samples: Any, prompts: Sequence[Any] | None) -> torch.Tensor:
        """P(toxic) of each text."""
        texts = as_texts(samples, "the toxicity reward")
        if not texts:
            return torch.zeros(0, dtype=torch.float64)
        p_toxic = np.asarray(self.model.predict_prob(texts), dtype=np.float64)
        p = p_toxic if self.label == "toxic" else 1.0 - p_toxic
        out = torch.from_numpy(p)
        return torch.log(out) if self.output == "log_prob" else out
