"""Any Hugging Face sequence classifier as a text reward (toxicity, CoLA, sentiment, NLI...).

    from fksteer.rewards.hf_classifier import SequenceClassifierReward
    reward = SequenceClassifierReward("s-nlp/roberta_toxicity_classifier", label="toxic")
    reward = SequenceClassifierReward("textattack/roberta-base-CoLA", label=1)
    reward = SequenceClassifierReward("cross-encoder/nli-deberta-v3-small",
                                      label="entailment", pair_with_prompt=True)

The reward is log p(label | text) (``output="log_prob"``, the default), p itself, or the raw
logit. A multi-label model (``problem_type="multi_label_classification"``) uses a sigmoid per
label, others a softmax. ``label`` is a name from the model's ``id2label`` (case-insensitive) or
an index; for a two-class model it defaults to index 1. With ``pair_with_prompt=True`` the
classifier reads (prompt, text) pairs. Weights by hub id or local folder (``rewards-hf`` extra).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from fksteer.rewards.base import RewardModel, as_texts, require
from fksteer.rewards.cache import cached_model
from fksteer.rewards.hub import dtype_kwargs, load_pretrained

__all__ = ["SequenceClassifierReward"]

_OUTPUTS = ("log_prob", "prob", "logit")


def _load_classifier(source: str, device: torch.device, dtype: Any) -> tuple[Any, Any]:
    transformers = require("transformers", "rewards-hf", what="the hf-classifier reward")
    what = f"the hf-classifier reward ({source})"
    tokenizer = load_pretrained(transformers.AutoTokenizer.from_pretrained, source, what=what)
    model = load_pretrained(
        transformers.AutoModelForSequenceClassification.from_pretrained,
        source,
        what=what,
        **dtype_kwargs(dtype),
    )
    model.to(device).eval()
    model.requires_grad_(False)
    return model, tokenizer


class SequenceClassifierReward(RewardModel):
    """log p(``label`` | text) under a ``AutoModelForSequenceClassification`` checkpoint."""

    name = "hf-classifier"

    def __init__(
        self,
        model: str | os.PathLike,
        *,
        label: str | int | None = None,
        output: str = "log_prob",
        pair_with_prompt: bool = False,
        max_length: int = 512,
        dtype: torch.dtype | None = None,
        batch_size: int | None = 32,
        device: str | torch.device | None = None,
    ):
        if output not in _OUTPUTS:
            raise ValueError(f"output={output!r}: pass one of {_OUTPUTS}.")
        super().__init__(batch_size=batch_size, device=device)
        self.source = str(model)
        self.label = label
        self.output = output
        self.pair_with_prompt = pair_with_prompt
        self.max_length = max_length
        self.dtype = dtype
        self._label_index: int | None = None

    def load(self) -> Any:
        """The tokenizer and sequence classifier (cached by source, device and dtype)."""
        key = ("sequence-classifier", self.source, str(self.device), str(self.dtype))
        return cached_model(key, lambda: _load_classifier(self.source, self.device, self.dtype))

    def label_index(self) -> int:
        """The index of ``label`` in the model's output."""
        if self._label_index is None:
            config = self.model[0].config
            names = {int(i): str(n) for i, n in config.id2label.items()}
            count = config.num_labels
            if self.label is None:
                if count != 2:
                    raise ValueError(
                        f"{self.source} has {count} labels {names}: pass label=... (a name or an "
                        "index)."
                    )
                index = 1
            elif isinstance(self.label, int):
                index = self.label
            else:
                matches = [i for i, n in names.items() if n.lower() == self.label.lower()]
                if not matches:
                    raise ValueError(
                        f"label={self.label!r} is not a label of {self.source}: its labels are "
                        f"{names}."
                    )
                index = matches[0]
            if not 0 <= index < count:
                raise ValueError(f"label index {index} is out of range for {count} labels.")
            self._label_index = index
        return self._label_index

    def score(self, samples: Any, prompts: Sequence[Any] | None) -> torch.Tensor:
        """log p(label | text) of each text under the classifier."""
        texts = as_texts(samples, "the hf-classifier reward")
        if not texts:
            return torch.zeros(0, dtype=torch.float64)
        model, tokenizer = self.model
        index = self.label_index()
        if self.pair_with_prompt:
            if prompts is None:
                raise ValueError("pair_with_prompt=True needs prompts: the run gave none.")
            encoded = tokenizer(
                [str(p) for p in prompts],
                texts,
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
        else:
            encoded = tokenizer(
                texts,
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
        encoded = {k: v.to(self.device) for k, v in encoded.items()}
        logits = model(**encoded).logits.double()  # (B, num_labels)
        if self.output == "logit":
            return logits[:, index]
        if model.config.problem_type == "multi_label_classification":
            log_probs = torch.nn.functional.logsigmoid(logits)
        else:
            log_probs = torch.log_softmax(logits, dim=1)
        values = log_probs[:, index]
        return values.exp() if self.output == "prob" else values
