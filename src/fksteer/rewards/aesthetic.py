"""The LAION aesthetic predictor: an MLP on CLIP ViT-L/14 image embeddings (about 1-10).

    from fksteer.rewards.aesthetic import LAIONAesthetic
    reward = LAIONAesthetic()                                  # weights from the hub cache
    reward = LAIONAesthetic(head="/models/sac+logos+ava1-l14-linearMSE.pth",
                            clip="/models/clip-vit-large-patch14")

The improved aesthetic predictor (C. Schuhmann, LAION) regresses human aesthetic ratings (SAC,
LAION-Logos, AVA) on the unit-normalised CLIP ViT-L/14 image embedding with an MLP
768-1024-128-64-16-1 (state-dict keys ``layers.{0,2,4,6,7}``); the first LAION predictor was one
linear layer (keys ``weight``, ``bias``): both load. The default head is the copy that TRL's
DDPO example uses (hub ``trl-lib/ddpo-aesthetic-predictor``, file ``aesthetic-model.pth``), which
is the ``sac+logos+ava1-l14-linearMSE.pth`` file. The prompt is not used. ``rewards-hf`` extra.

Images are preprocessed as the predictor's own script does with OpenAI's ``clip`` package
(torchvision ``Resize`` and ``CenterCrop`` on a PIL image): ``preprocessing="fast"`` (default) in
torch on the float images, ``"exact"`` with PIL on 8-bit images, the path a steering run's final
reward takes (:mod:`fksteer.rewards.preprocess`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from fksteer.rewards.base import as_image_batch
from fksteer.rewards.cache import cached_model
from fksteer.rewards.clip import load_clip_encoder
from fksteer.rewards.hub import resolve_file
from fksteer.rewards.preprocess import ImageRewardModel, ImageTransform

__all__ = ["LAIONAesthetic", "aesthetic_head"]


class _AestheticMLP(torch.nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(width, 1024),
            torch.nn.Dropout(0.2),
            torch.nn.Linear(1024, 128),
            torch.nn.Dropout(0.2),
            torch.nn.Linear(128, 64),
            torch.nn.Dropout(0.1),
            torch.nn.Linear(64, 16),
            torch.nn.Linear(16, 1),
        )

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.layers(embeddings)


def aesthetic_head(state: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    """The predictor's MLP (or linear layer) holding ``state``."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if set(state) == {"weight", "bias"}:
        head: torch.nn.Module = torch.nn.Linear(state["weight"].shape[1], 1)
    elif "layers.0.weight" in state:
        head = _AestheticMLP(state["layers.0.weight"].shape[1])
    else:
        raise ValueError(
            "this is not a LAION aesthetic predictor state dict (expected keys 'layers.0.weight' "
            f"... or 'weight' and 'bias'); it has {sorted(state)[:6]}."
        )
    head.load_state_dict(state)
    return head.eval()


class LAIONAesthetic(ImageRewardModel):
    """Predicted aesthetic rating of each image (prompts ignored)."""

    name = "aesthetic"

    def __init__(
        self,
        head: str | os.PathLike = "trl-lib/ddpo-aesthetic-predictor",
        *,
        head_file: str = "aesthetic-model.pth",
        clip: str | os.PathLike = "openai/clip-vit-large-patch14",
        dtype: torch.dtype | None = None,
        preprocessing: str = "fast",
        batch_size: int | None = 32,
        device: str | torch.device | None = None,
    ):
        super().__init__(preprocessing=preprocessing, batch_size=batch_size, device=device)
        self.head_source, self.head_file = str(head), head_file
        self.clip_source = str(clip)
        self.dtype = dtype

    def _load(self) -> tuple[Any, torch.nn.Module]:
        path = resolve_file(self.head_source, self.head_file, what="the aesthetic reward's head")
        state = torch.load(path, map_location="cpu", weights_only=True)
        head = aesthetic_head(state.get("state_dict", state)).to(self.device)
        encoder = load_clip_encoder(self.clip_source, None, self.device, self.dtype)
        return encoder, head

    def load(self) -> Any:
        """The CLIP image encoder and the aesthetic head (cached by source and device)."""
        key = (
            "laion-aesthetic",
            self.head_source,
            self.head_file,
            self.clip_source,
            str(self.device),
            str(self.dtype),
        )
        return cached_model(key, self._load)

    def score(self, samples: Any, prompts: Sequence[Any] | None) -> torch.Tensor:
        """The LAION aesthetic score of each image."""
        encoder, head = self.model
        transform = ImageTransform.torchvision_clip(encoder.size, encoder.mean, encoder.std)
        images = as_image_batch(samples, self.name, size=encoder.size)
        features = encoder.images(self.pixels(images, transform))  # (B, 768), unit norm
        return head(features.float())[:, 0]
