"""What the masked sampler calls: the `Denoiser` protocol and `TransformersDenoiser`.

    from fksteer.integrations.masked.denoisers import Denoiser, TransformersDenoiser

A denoiser maps token ids (B, N) (plus the time, if it wants it) to logits (B, N, V). A plain
function works; :class:`TransformersDenoiser` wraps a transformers model (a masked LM, or remote
code such as LLaDA, Dream, MDLM) and its tokenizer. ``transformers`` is imported only there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["Denoiser", "TransformersDenoiser"]


@runtime_checkable
class Denoiser(Protocol):
    """What :class:`MaskedDiffusionModel` calls: token ids (B, N) -> logits (B, N, V).

    ``denoiser(tokens)``, or ``denoiser(tokens, times)`` with ``times`` (B,) float32 in [0, 1]
    when the denoiser is time-conditioned; ``attention_mask=`` (B, N) bool (True on real tokens)
    is passed as a keyword only when prompts of different lengths made padding. A plain function
    works as a denoiser; these optional attributes tell the model more (or pass them to it):
    ``mask_id`` (int), ``time_conditioned`` (bool, default False), ``accepts_attention_mask``
    (bool, default False), ``tokenizer`` (decodes texts, tokenises text prompts), ``device``.
    """

    def __call__(self, tokens: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Logits (B, N, V) for token ids (B, N), plus the time or a mask where declared."""


class TransformersDenoiser:
    """A transformers model (and its tokenizer) as a :class:`Denoiser`.

    Calls ``model(input_ids=tokens, **extra).logits`` (a plain tensor or tuple output works too),
    with ``attention_mask`` when there is padding and the time under ``time_keyword`` when set.

    Args:
        model: a transformers model returning per-position logits over the vocabulary (put it
            in eval mode on its device; ``from_pretrained`` does).
        tokenizer: its tokenizer, for text prompts and decoding (optional).
        mask_id: the mask token id; default ``tokenizer.mask_token_id``.
        shift_logits: Dream-style models trained from autoregressive ones predict token j from
            position j - 1; ``True`` shifts the logits right by one (as Dream's sampler does).
        time_keyword: pass the time to the model under this keyword (MDLM: ``"timesteps"``).
        time_transform: map t in [0, 1] to what the model expects (MDLM: ``LogLinearSchedule().
            sigma``).
        time_conditioned: whether the output depends on the time (turns caching off); default
            ``time_keyword is not None``. MDLM's released checkpoints ignore the time
            (``config.time_conditioning`` False): pass False there to keep caching.

    How the known checkpoints plug in (download needs the hub; nothing here is tested on them):

    - MDLM (``kuleshov-group/mdlm-owt``): ``from_pretrained("kuleshov-group/mdlm-owt",
      tokenizer="gpt2", mask_id=50257, trust_remote_code=True, time_keyword="timesteps",
      time_transform=LogLinearSchedule().sigma, time_conditioned=False)``; no prompt, 1024 tokens.
    - LLaDA (``GSAI-ML/LLaDA-8B-Base`` / ``-Instruct``): ``from_pretrained(name,
      auto_class="AutoModel", mask_id=126336, trust_remote_code=True, dtype=torch.bfloat16)``;
      ``unmasking="fixed-count"`` is its random-remasking sampler without blocks.
    - Dream (``Dream-org/Dream-v0-Base-7B``): ``from_pretrained(name, auto_class="AutoModel",
      trust_remote_code=True, shift_logits=True, dtype=torch.bfloat16)`` (mask id from its
      tokenizer); the default ancestral sampler is its ``alg="origin"``. Give it prompts of equal
      length (its remote code wants its own 4-D attention mask for padding).
    """

    accepts_attention_mask = True

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        mask_id: int | None = None,
        shift_logits: bool = False,
        time_keyword: str | None = None,
        time_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        time_conditioned: bool | None = None,
    ):
        if mask_id is None:
            mask_id = getattr(tokenizer, "mask_token_id", None)
        if isinstance(mask_id, bool) or not isinstance(mask_id, int) or mask_id < 0:
            raise ValueError(
                f"mask_id={mask_id!r}: the tokenizer has no mask token; pass mask_id= (LLaDA: "
                "126336; MDLM with the GPT-2 tokenizer: 50257)."
            )
        self.model = model
        self.tokenizer = tokenizer
        self.mask_id = mask_id
        self.shift_logits = bool(shift_logits)
        self.time_keyword = time_keyword
        self.time_transform = time_transform
        self.time_conditioned = (
            time_keyword is not None if time_conditioned is None else bool(time_conditioned)
        )

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        *,
        auto_class: str = "AutoModelForMaskedLM",
        tokenizer: Any = None,
        mask_id: int | None = None,
        shift_logits: bool = False,
        time_keyword: str | None = None,
        time_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        time_conditioned: bool | None = None,
        device: str | torch.device | None = None,
        trust_remote_code: bool = False,
        **model_kwargs: Any,
    ) -> TransformersDenoiser:
        """Load a model with ``transformers.<auto_class>.from_pretrained`` and its tokenizer.

        ``tokenizer`` is a tokenizer, a name or path for ``AutoTokenizer`` (MDLM: ``"gpt2"``), or
        None to load it from ``name_or_path``. ``model_kwargs`` go to the model's
        ``from_pretrained`` (e.g. ``dtype=torch.bfloat16``).
        """
        try:
            import transformers
        except ImportError as error:  # pragma: no cover - exercised only without the extra
            raise ImportError(
                "TransformersDenoiser needs transformers: pip install 'fksteer[text]'"
            ) from error
        model_class = getattr(transformers, auto_class, None)
        if model_class is None or not hasattr(model_class, "from_pretrained"):
            raise ValueError(
                f"auto_class={auto_class!r} is not a transformers model class: use e.g. "
                "'AutoModelForMaskedLM' (BERT-like, MDLM) or 'AutoModel' (LLaDA, Dream)."
            )
        model = model_class.from_pretrained(
            name_or_path, trust_remote_code=trust_remote_code, **model_kwargs
        )
        model.eval()
        if device is not None:
            model.to(device)
        if tokenizer is None or isinstance(tokenizer, str):
            tokenizer = transformers.AutoTokenizer.from_pretrained(
                tokenizer or name_or_path, trust_remote_code=trust_remote_code
            )
        return cls(
            model,
            tokenizer,
            mask_id=mask_id,
            shift_logits=shift_logits,
            time_keyword=time_keyword,
            time_transform=time_transform,
            time_conditioned=time_conditioned,
        )

    @property
    def device(self) -> torch.device:
        """The device of the model's parameters (CPU for a model without any)."""
        parameter = next(iter(self.model.parameters()), None)
        return torch.device("cpu") if parameter is None else parameter.device

    def __call__(
        self,
        tokens: torch.Tensor,
        times: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (B, N, V) of the masked LM for token ids (B, N)."""
        kwargs: dict[str, Any] = {}
        if attention_mask is not None:
            kwargs["attention_mask"] = attention_mask.long()
        if self.time_keyword is not None:
            if times is None:
                times = torch.zeros(tokens.shape[0], device=tokens.device)
            kwargs[self.time_keyword] = (
                times if self.time_transform is None else self.time_transform(times)
            )
        output = self.model(input_ids=tokens, **kwargs)
        if hasattr(output, "logits"):
            logits = output.logits
        elif isinstance(output, (tuple, list)):
            logits = output[0]
        else:
            logits = output
        if self.shift_logits:
            # Dream: the logit at position j - 1 predicts token j; position 0 keeps its own.
            logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
        return logits
