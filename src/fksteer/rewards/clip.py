"""Image-text rewards on a CLIP model: CLIP score, PickScore and HPS v2.1.

    from fksteer.rewards.clip import CLIPScore, PickScore, HPSv2
    reward = CLIPScore()                          # openai/clip-vit-large-patch14
    reward = PickScore(device="cuda")             # yuvalkirstain/PickScore_v1
    reward = HPSv2("/models/HPS_v2.1_compressed.pt")

All three embed each image and its prompt with a ``transformers`` ``CLIPModel`` and score the
cosine of the two unit embeddings, each on its own scale:

- CLIP score (Hessel et al. 2021, as torchmetrics computes it): ``100 * max(cos, 0)``;
- PickScore (Kirstain et al. 2023): ``exp(logit_scale) * cos``, a CLIP-H fine-tuned on Pick-a-Pic
  preferences, published in the transformers format;
- HPS v2.1 (Wu et al. 2023): ``cos`` under an open_clip ViT-H-14 fine-tuned on HPD v2. Its
  checkpoint is in open_clip's layout; :mod:`fksteer.rewards.open_clip_convert` maps it onto the
  equivalent ``CLIPModel`` (hpsv2's own package pins protobuf < 4 and old test tools, so it is
  not used).

Images arrive as ``(B, C, H, W)`` in [0, 1] and are preprocessed as each original does
(:mod:`fksteer.rewards.preprocess`): CLIP score and PickScore as transformers'
``CLIPImageProcessor`` (bicubic resize of the short side, centre crop), HPS v2.1 as its
evaluation transform (long side resized, black padding to a square). ``preprocessing="fast"``
(the default) does it in torch on the float images, ``"exact"`` on 8-bit images with PIL as the
originals; a steering run scores its final samples with the exact path (``final_reward``).
Weights come by hub id or local path (``rewards-hf`` extra); with no hub access, the error says
what to download.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from fksteer.rewards.base import as_image_batch, require
from fksteer.rewards.cache import cached_model
from fksteer.rewards.hub import dtype_kwargs, load_pretrained, resolve_file
from fksteer.rewards.preprocess import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    ImageRewardModel,
    ImageTransform,
)

__all__ = ["CLIPEncoder", "CLIPScore", "HPSv2", "PickScore"]

VIT_H_14 = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"


def _image_settings(source: str, config: Any) -> tuple[int, tuple, tuple]:
    """Crop size, mean and std from a local ``preprocessor_config.json``, else CLIP defaults."""
    size = int(config.vision_config.image_size)
    mean, std = OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
    path = Path(source) / "preprocessor_config.json"
    if path.is_file():
        settings = json.loads(path.read_text())
        crop = settings.get("crop_size", size)
        size = int(crop["height"] if isinstance(crop, dict) else crop)
        mean = tuple(settings.get("image_mean", mean))
        std = tuple(settings.get("image_std", std))
    return size, mean, std


class CLIPEncoder:
    """A ``CLIPModel`` and its tokenizer with unit-norm image and text embeddings."""

    def __init__(self, model: Any, tokenizer: Any, size: int, mean: tuple, std: tuple):
        self.model, self.tokenizer = model, tokenizer
        self.size, self.mean, self.std = size, mean, std
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.max_length = int(model.config.text_config.max_position_embeddings)

    def images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Unit embeddings ``(B, D)`` of preprocessed pixels ``(B, 3, size, size)``."""
        pooled = self.model.vision_model(pixel_values=pixels.to(self.dtype)).pooler_output
        features = self.model.visual_projection(pooled).float()  # (B, D)
        return torch.nn.functional.normalize(features, dim=-1)

    def texts(self, texts: list[str]) -> torch.Tensor:
        """Unit embeddings ``(B, D)`` of texts (truncated to the model's context)."""
        encoded = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        pooled = self.model.text_model(
            input_ids=encoded["input_ids"].to(self.device),
            attention_mask=encoded["attention_mask"].to(self.device),
        ).pooler_output
        features = self.model.text_projection(pooled).float()  # (B, D)
        return torch.nn.functional.normalize(features, dim=-1)

    @property
    def logit_scale(self) -> float:
        """The model's learnt logit scale (its exponential)."""
        return float(self.model.logit_scale.exp())


def _finish(model: Any, device: torch.device) -> Any:
    model.to(device).eval()
    model.requires_grad_(False)
    return model


def load_clip_encoder(
    source: str, tokenizer_source: str | None, device: torch.device, dtype: Any
) -> CLIPEncoder:
    """A :class:`CLIPEncoder` from a transformers CLIP checkpoint (hub id or folder)."""
    transformers = require("transformers", "rewards-hf", what="CLIP rewards")
    what = f"the CLIP reward ({source})"
    model = load_pretrained(
        transformers.CLIPModel.from_pretrained, source, what=what, **dtype_kwargs(dtype)
    )
    tok_source = tokenizer_source or source
    tokenizer = load_pretrained(
        transformers.AutoTokenizer.from_pretrained,
        tok_source,
        what=f"the CLIP reward's tokenizer ({tok_source})",
    )
    size, mean, std = _image_settings(source, model.config)
    return CLIPEncoder(_finish(model, device), tokenizer, size, mean, std)


class _CLIPReward(ImageRewardModel):
    default_model: str = ""
    default_tokenizer: str | None = None

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        *,
        tokenizer: str | os.PathLike | None = None,
        dtype: torch.dtype | None = None,
        preprocessing: str = "fast",
        batch_size: int | None = 32,
        device: str | torch.device | None = None,
    ):
        super().__init__(preprocessing=preprocessing, batch_size=batch_size, device=device)
        self.source = str(model or self.default_model)
        tok = tokenizer or self.default_tokenizer
        self.tokenizer_source = str(tok) if tok is not None else None
        self.dtype = dtype

    def _load_encoder(self) -> CLIPEncoder:
        return load_clip_encoder(self.source, self.tokenizer_source, self.device, self.dtype)

    def load(self) -> CLIPEncoder:
        key = (
            type(self).__name__,
            self.source,
            self.tokenizer_source,
            str(self.device),
            str(self.dtype),
        )
        return cached_model(key, self._load_encoder)

    def transform(self, encoder: CLIPEncoder) -> ImageTransform:
        """The original's image transform: transformers' ``CLIPImageProcessor``."""
        return ImageTransform.transformers_clip(encoder.size, encoder.mean, encoder.std)

    def cosines(self, samples: Any, prompts: Sequence[Any] | None) -> torch.Tensor:
        if prompts is None:
            raise ValueError(f"{self.name} scores images against their prompts: got no prompts.")
        encoder: CLIPEncoder = self.model
        images = as_image_batch(samples, self.name, size=encoder.size)
        image_features = encoder.images(self.pixels(images, self.transform(encoder)))  # (B, D)
        text_features = encoder.texts([str(p) for p in prompts])  # (B, D)
        return (image_features * text_features).sum(dim=-1)  # (B,)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.source!r}, device='{self.device}', "
            f"preprocessing='{self.preprocessing}')"
        )


class CLIPScore(_CLIPReward):
    """``scale * max(cos(image, prompt), 0)`` (CLIP score; ``scale=100`` as in torchmetrics)."""

    name = "clip-score"
    default_model = "openai/clip-vit-large-patch14"

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        *,
        scale: float = 100.0,
        clamp: bool = True,
        **kwargs: Any,
    ):
        super().__init__(model, **kwargs)
        self.scale, self.clamp = float(scale), clamp

    def score(self, samples: Any, prompts: Sequence[Any] | None) -> torch.Tensor:
        """``scale`` times the cosine of each image and its prompt (clamped at 0 when ``clamp``)."""
        cos = self.cosines(samples, prompts)
        return self.scale * (cos.clamp(min=0.0) if self.clamp else cos)


class PickScore(_CLIPReward):
    """``exp(logit_scale) * cos(image, prompt)`` under PickScore_v1 (about 18-23 in practice)."""

    name = "pickscore"
    default_model = "yuvalkirstain/PickScore_v1"
    default_tokenizer = VIT_H_14

    def score(self, samples: Any, prompts: Sequence[Any] | None) -> torch.Tensor:
        """PickScore: the logit scale times the cosine of each image and its prompt."""
        return self.model.logit_scale * self.cosines(samples, prompts)


class HPSv2(_CLIPReward):
    """HPS v2.1: ``cos(image, prompt)`` under the HPS open_clip ViT-H-14 (about 0.2-0.35).

    ``model`` is the checkpoint file (``HPS_v2.1_compressed.pt``), a folder holding it, or the hub
    repository ``xswu/HPSv2``; ``tokenizer`` (default the LAION ViT-H-14 repository) provides the
    CLIP BPE tokenizer. ``heads`` gives the attention heads of the (vision, text) towers, which a
    state dict does not record (ViT-H-14: 16 and 16).

    Images are preprocessed as HPS's own evaluation (``hpsv2.score``) does: the long side resized
    to 224 and the short side padded with black to a square (its ``ResizeMaxSize``), not cropped;
    the resize is antialiased, as torchvision >= 0.17 resizes tensors (older torchvision did not
    antialias tensors, so HPS's own scores of resized images depend on the installed version).
    """

    name = "hpsv2"
    default_model = "xswu/HPSv2"
    default_tokenizer = VIT_H_14
    checkpoint_file = "HPS_v2.1_compressed.pt"

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        *,
        heads: tuple[int, int] = (16, 16),
        hidden_act: str = "gelu",
        **kwargs: Any,
    ):
        super().__init__(model, **kwargs)
        self.heads, self.hidden_act = heads, hidden_act

    def _load_encoder(self) -> CLIPEncoder:
        from fksteer.rewards.open_clip_convert import clip_model_from_open_clip

        transformers = require("transformers", "rewards-hf", what="the HPS v2.1 reward")
        path = resolve_file(self.source, self.checkpoint_file, what="the HPS v2.1 reward")
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        state = checkpoint.get("state_dict", checkpoint)
        model = clip_model_from_open_clip(
            state, vision_heads=self.heads[0], text_heads=self.heads[1], hidden_act=self.hidden_act
        )
        if self.dtype is not None:
            model.to(self.dtype)
        tokenizer = load_pretrained(
            transformers.AutoTokenizer.from_pretrained,
            self.tokenizer_source,
            what="the HPS v2.1 tokenizer",
        )
        size = int(model.config.vision_config.image_size)
        return CLIPEncoder(
            _finish(model, self.device), tokenizer, size, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
        )

    def transform(self, encoder: CLIPEncoder) -> ImageTransform:
        """HPS v2.1's evaluation transform: the long side resized, black padding to a square."""
        return ImageTransform.hps_evaluation(encoder.size)

    def score(self, samples: Any, prompts: Sequence[Any] | None) -> torch.Tensor:
        """HPS v2.1: the cosine of each image and its prompt."""
        return self.cosines(samples, prompts)
