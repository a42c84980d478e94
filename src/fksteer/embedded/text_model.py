"""The embedded masked diffusion language model: a small bidirectional transformer on fortunes.

    from fksteer.embedded.text_model import load_text_model
    model = load_text_model(seq_len=32, num_steps=32)        # a MaskedDiffusionModel
    result = fksteer.steer(model, reward, config, prompts=["You will"])

`MaskedLanguageDenoiser` maps token ids (B, N) to logits (B, N, V) with no time input (MDLM
shows absorbing-state denoisers need none, and it lets the sampler cache logits). It was trained
by scripts/train_text_model.py on the English entries of Debian's ``fortunes`` package with the
MDLM objective (Sahoo et al. 2024, eq. 10: cross-entropy on masked tokens weighted by
-alpha'(t) / (1 - alpha(t)) = 1/t under the log-linear schedule), with a byte-level BPE
tokenizer of 2,048 tokens trained on the same text. Each training sequence is one fortune: its
tokens, an end-of-text token, then padding, so samples are whole short fortunes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["MaskedLanguageDenoiser", "load_text_model", "TEXT_MODEL_DIR"]

TEXT_MODEL_DIR = Path(__file__).resolve().parent / "weights" / "fortunes-mdlm"


class MaskedLanguageDenoiser(nn.Module):
    """Token embeddings + learned positions -> pre-norm transformer encoder -> tied output.

    Takes an attention mask, so prompts of different lengths run in one batch: the sampler
    right-pads the shorter rows, and their real positions get the logits they would get alone.
    """

    #: the masked sampler passes ``attention_mask`` when prompts of different lengths made padding
    accepts_attention_mask = True

    def __init__(
        self,
        vocab_size: int,
        max_len: int,
        mask_id: int,
        dim: int = 128,
        depth: int = 4,
        heads: int = 4,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.mask_id = mask_id
        self.max_len = max_len
        self.token_embedding = nn.Embedding(vocab_size, dim)
        self.position_embedding = nn.Parameter(torch.zeros(max_len, dim))
        layer = nn.TransformerEncoderLayer(
            dim, heads, 4 * dim, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        nn.init.normal_(self.position_embedding, std=0.02)
        nn.init.normal_(self.token_embedding.weight, std=0.02)

    @property
    def device(self) -> torch.device:
        """The device of the model's weights."""
        return self.token_embedding.weight.device

    def forward(
        self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits (B, N, V) for token ids (B, N), N <= max_len.

        ``attention_mask`` (B, N), True on real tokens: padded positions are hidden from every
        query (their own logits are meaningless), so each row's real positions get the logits of
        that row without its padding.
        """
        if tokens.shape[1] > self.max_len:
            raise ValueError(
                f"sequences of {tokens.shape[1]} tokens exceed the model's {self.max_len}: "
                "shorten the prompt or seq_len."
            )
        padding = None
        if attention_mask is not None:
            if attention_mask.shape != tokens.shape:
                raise ValueError(
                    f"attention_mask {tuple(attention_mask.shape)} must match the tokens "
                    f"{tuple(tokens.shape)}."
                )
            padding = ~attention_mask.to(device=tokens.device, dtype=torch.bool)  # True: hidden
        hidden = self.token_embedding(tokens) + self.position_embedding[: tokens.shape[1]]
        hidden = self.norm(self.encoder(hidden, src_key_padding_mask=padding))  # (B, N, D)
        return hidden @ self.token_embedding.weight.T  # (B, N, V), tied embeddings


def load_tokenizer(directory: Path = TEXT_MODEL_DIR) -> Any:
    """The model's BPE tokenizer as a transformers fast tokenizer (needs the ``text`` extra)."""
    try:
        from transformers import PreTrainedTokenizerFast
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the embedded text model needs transformers: pip install 'fksteer[text]'"
        ) from error
    special = json.loads((directory / "config.json").read_text())["special_tokens"]
    return PreTrainedTokenizerFast(
        tokenizer_file=str(directory / "tokenizer.json"),
        mask_token=special["mask"],
        pad_token=special["pad"],
        eos_token=special["eos"],
    )


def load_denoiser(directory: Path = TEXT_MODEL_DIR) -> MaskedLanguageDenoiser:
    """The trained denoiser in eval mode on the CPU."""
    from safetensors.torch import load_file

    if not (directory / "model.safetensors").exists():
        raise FileNotFoundError(
            f"{directory}/model.safetensors not found: train it with "
            "`python scripts/train_text_model.py`."
        )
    config = json.loads((directory / "config.json").read_text())
    model = MaskedLanguageDenoiser(**config["architecture"])
    weights = load_file(directory / "model.safetensors")  # stored in float16
    state = {name: tensor.float() for name, tensor in weights.items()}
    model.load_state_dict(state)
    return model.eval()


def load_text_model(
    seq_len: int = 32,
    num_steps: int = 32,
    num_x0_samples: int = 1,
    directory: Path = TEXT_MODEL_DIR,
    **options: Any,
):
    """A MaskedDiffusionModel over the embedded denoiser and tokenizer, ready for `steer`.

    Generated text stops at the first end-of-text token; the special tokens (mask, pad,
    end-of-text) decode to nothing. ``options`` go to
    :class:`~fksteer.integrations.masked.MaskedDiffusionModel`.
    """
    from fksteer.integrations.masked import MaskedDiffusionModel

    denoiser = load_denoiser(directory)
    tokenizer = load_tokenizer(directory)
    return MaskedDiffusionModel(
        denoiser,
        seq_len=seq_len,
        num_steps=num_steps,
        num_x0_samples=num_x0_samples,
        mask_id=denoiser.mask_id,
        tokenizer=tokenizer,
        **options,
    )
