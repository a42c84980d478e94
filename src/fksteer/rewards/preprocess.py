"""Image preprocessing of the image rewards: the originals' exact transforms and a fast torch path.

    from fksteer.rewards.preprocess import ImageTransform, preprocess_images
    transform = ImageTransform.torchvision_clip(224)              # ImageReward, LAION aesthetic
    pixels = preprocess_images(images, transform, "exact")        # (B, 3, 224, 224), normalised
    pixels = preprocess_images(images, transform, "fast")         # the same in torch, on floats

Every image reward of the catalogue turns ``(B, 3, H, W)`` images in [0, 1] into the square,
normalised pixels its network reads, in one of two ways:

- ``"exact"``: what the original package does to an 8-bit image (a PNG, or a diffusers pipeline's
  PIL output). The images are first rounded to 8 bits as diffusers' ``numpy_to_pil`` does, then
  transformed as the original does: PIL's bicubic resize (8-bit, with its own rounding) for
  ImageReward and the LAION aesthetic predictor (torchvision ``Resize`` and ``CenterCrop`` on a
  PIL image, as in OpenAI's CLIP), and for CLIP score and PickScore (transformers'
  ``CLIPImageProcessor``, whose centre crop floors where torchvision rounds); HPS v2.1's
  evaluation transform converts to a float tensor first, then resizes the long side to the input
  size in torch (antialiased bicubic, as torchvision >= 0.17 resizes tensors) and pads the short
  side with black to a square. Scores from this path are the ones to compare with papers. It runs
  on the CPU, one image at a time through PIL (HPS: batched in torch).
- ``"fast"``: the same geometry (sizes, crop offsets, padding) in batched torch on the reward's
  device, on the float images, without the 8-bit rounding; the resize is torch's antialiased
  bicubic, which differs from PIL's by a fraction of a grey level. It is faster and
  differentiable (reward-gradient guidance uses it).

Steering runs use ``"fast"`` for the intermediate potentials and ``"exact"`` for the final reward
(the reward's :attr:`~fksteer.rewards.base.RewardModel.final_reward`), so the reported rewards
and the tilted target are the originals' score; a reward built with ``preprocessing="exact"``
uses it everywhere but in guidance.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fksteer.rewards.base import RewardModel, require

__all__ = [
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "PREPROCESSING",
    "ImageRewardModel",
    "ImageTransform",
    "check_preprocessing",
    "preprocess_images",
    "quantise",
]

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: the two preprocessing paths of the image rewards
PREPROCESSING = ("fast", "exact")


def check_preprocessing(preprocessing: str) -> str:
    """``preprocessing`` if it names a path, else a ValueError listing them."""
    if preprocessing not in PREPROCESSING:
        raise ValueError(
            f"preprocessing={preprocessing!r}: pass 'exact' (the original package's transform, "
            "8-bit PIL or torchvision; the scores papers report) or 'fast' (the same geometry in "
            "torch on the float images)."
        )
    return preprocessing


@dataclass(frozen=True)
class ImageTransform:
    """One original's image transform, as geometry plus normalisation.

    Attributes:
        size: side of the square input.
        mean, std: per-channel normalisation of [0, 1] pixels.
        fit: ``"crop"``: resize the short side to ``size`` (the long side to
            ``int(size * long / short)``, truncated), then crop the centre; ``"pad"``: resize
            the long side to ``size`` (the short side rounded), then pad both sides of the short
            one with zeros (black) to a square, the extra pixel after.
        crop_offset: where the centre crop starts, from the margin m = new side - size:
            ``"round"`` = round(m / 2), halves to even (torchvision), or ``"floor"`` = m // 2
            (transformers).
        resampler: what the exact path resizes with: ``"pil"`` (PIL bicubic on the 8-bit image)
            or ``"torch"`` (antialiased bicubic on the float tensor of the 8-bit image, no clamp).
    """

    size: int
    mean: tuple[float, ...] = OPENAI_CLIP_MEAN
    std: tuple[float, ...] = OPENAI_CLIP_STD
    fit: str = "crop"
    crop_offset: str = "round"
    resampler: str = "pil"

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"size={self.size!r}: pass a positive int.")
        for name, value, allowed in (
            ("fit", self.fit, ("crop", "pad")),
            ("crop_offset", self.crop_offset, ("round", "floor")),
            ("resampler", self.resampler, ("pil", "torch")),
        ):
            if value not in allowed:
                raise ValueError(f"{name}={value!r}: pass one of {allowed}.")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std need 3 channels: got {self.mean}, {self.std}.")

    @classmethod
    def torchvision_clip(
        cls,
        size: int,
        mean: Sequence[float] = OPENAI_CLIP_MEAN,
        std: Sequence[float] = OPENAI_CLIP_STD,
    ) -> ImageTransform:
        """OpenAI CLIP's transform (ImageReward, the LAION aesthetic predictor): torchvision
        ``Resize(size, BICUBIC)`` and ``CenterCrop(size)`` on a PIL image."""
        return cls(size, tuple(mean), tuple(std), "crop", "round", "pil")

    @classmethod
    def transformers_clip(
        cls,
        size: int,
        mean: Sequence[float] = OPENAI_CLIP_MEAN,
        std: Sequence[float] = OPENAI_CLIP_STD,
    ) -> ImageTransform:
        """transformers' ``CLIPImageProcessor`` on PIL images (CLIP score, PickScore): PIL
        bicubic resize of the short side, centre crop from the floored margin."""
        return cls(size, tuple(mean), tuple(std), "crop", "floor", "pil")

    @classmethod
    def hps_evaluation(cls, size: int) -> ImageTransform:
        """HPS v2.1's evaluation transform (its open_clip fork, ``ResizeMaxSize``): ToTensor,
        the long side resized to ``size`` in torch, black padding to a square."""
        return cls(size, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, "pad", "round", "torch")

    def resized_shape(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) after the resize, before the crop or the padding."""
        if self.fit == "crop":
            short, long = min(height, width), max(height, width)
            new_long = int(self.size * long / short)  # truncated, as torchvision and transformers
            return (self.size, new_long) if height <= width else (new_long, self.size)
        scale = self.size / max(height, width)
        if scale == 1.0:
            return height, width
        return round(height * scale), round(width * scale)  # Python's round, as ResizeMaxSize

    def fit_square(self, images: torch.Tensor) -> torch.Tensor:
        """The resized images ``(B, 3, h, w)`` cropped or padded to ``(B, 3, size, size)``."""
        height, width = images.shape[-2:]
        size = self.size
        if self.fit == "pad":
            pad_h, pad_w = max(size - height, 0), max(size - width, 0)
            padding = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
            return torch.nn.functional.pad(images, padding, value=0.0)
        if self.crop_offset == "round":
            top, left = round((height - size) / 2), round((width - size) / 2)
        else:
            top, left = (height - size) // 2, (width - size) // 2
        return images[..., top : top + size, left : left + size]

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """``(images - mean) / std`` per channel."""
        mean = torch.tensor(self.mean, device=images.device, dtype=images.dtype)[:, None, None]
        std = torch.tensor(self.std, device=images.device, dtype=images.dtype)[:, None, None]
        return (images - mean) / std


def quantise(images: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] -> uint8, rounded as diffusers' ``numpy_to_pil`` does."""
    return _quantised_levels(images).to(torch.uint8)


def _quantised_levels(images: torch.Tensor) -> torch.Tensor:
    """float32 ``round(255 * clamp(images, 0, 1))``: the 8-bit values, still as floats."""
    levels = images.detach().to(torch.float32, copy=True)
    return levels.clamp_(0.0, 1.0).mul_(255.0).round_()


def _torch_resize(images: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    if tuple(images.shape[-2:]) == shape:
        return images
    return torch.nn.functional.interpolate(
        images, size=shape, mode="bicubic", align_corners=False, antialias=True
    )


def _pil_resize(images: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """uint8 ``(B, 3, H, W)`` -> float ``(B, 3, h, w)`` in [0, 1], each image resized by PIL."""
    import numpy as np

    Image = require("PIL.Image", "rewards-hf", what="the exact image preprocessing")
    arrays = images.cpu().permute(0, 2, 3, 1).contiguous().numpy()  # (B, H, W, 3), as PIL
    out = []
    for array in arrays:
        image = Image.fromarray(array)  # uint8 (H, W, 3): RGB
        if image.size != (shape[1], shape[0]):
            image = image.resize((shape[1], shape[0]), resample=Image.Resampling.BICUBIC)
        out.append(np.asarray(image))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255.0


def preprocess_images(
    images: torch.Tensor,
    transform: ImageTransform,
    preprocessing: str = "fast",
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Images ``(B, 3, H, W)`` in [0, 1] -> normalised float32 ``(B, 3, size, size)`` on
    ``device`` (default: the images' device), by the ``"fast"`` or ``"exact"`` path."""
    check_preprocessing(preprocessing)
    device = images.device if device is None else torch.device(device)
    shape = transform.resized_shape(*images.shape[-2:])
    if preprocessing == "fast":
        resized = _torch_resize(images.to(device, torch.float32), shape)
        if transform.resampler == "pil" and shape != tuple(images.shape[-2:]):
            resized = resized.clamp(0.0, 1.0)  # PIL's 8-bit output cannot overshoot
    elif transform.resampler == "pil":
        resized = _pil_resize(quantise(images), shape).to(device)
    else:  # ToTensor of the 8-bit image: level / 255 in float32
        resized = _torch_resize(_quantised_levels(images.to(device)).div_(255.0), shape)
    return transform.normalise(transform.fit_square(resized))


class ImageRewardModel(RewardModel):
    """Base of the image rewards: a ``preprocessing`` path and the exact path for the final reward.

    ``preprocessing`` (``"fast"``, the default, or ``"exact"``) is what :meth:`pixels`, hence
    every call, uses. :attr:`final_reward` is this reward with ``"exact"`` preprocessing (the
    same loaded model), which the engine applies to the final samples; :meth:`differentiable`
    always uses ``"fast"`` (the exact path rounds to 8 bits, which has no gradient).
    """

    def __init__(
        self,
        *,
        preprocessing: str = "fast",
        batch_size: int | None = None,
        device: str | torch.device | None = None,
    ):
        super().__init__(batch_size=batch_size, device=device)
        self.preprocessing = check_preprocessing(preprocessing)
        self._twins: dict[str, ImageRewardModel] = {self.preprocessing: self}

    def with_preprocessing(self, preprocessing: str) -> ImageRewardModel:
        """This reward with the other path (the model is loaded once for both)."""
        check_preprocessing(preprocessing)
        if preprocessing not in self._twins:
            twin = copy.copy(self)
            twin.preprocessing = preprocessing
            twin._twins = self._twins
            self._twins[preprocessing] = twin
        return self._twins[preprocessing]

    @property
    def model(self) -> Any:
        """The loaded network, shared with the twin of the other preprocessing path."""
        if self._loaded is None:  # a twin may hold it already
            loaded = [t._loaded for t in self._twins.values() if t._loaded is not None]
            self._loaded = loaded[0] if loaded else self.load()
        return self._loaded

    @property
    def final_reward(self) -> ImageRewardModel:
        """The reward that scores the final samples: the same model, exact preprocessing."""
        return self.with_preprocessing("exact")

    def differentiable(self) -> Callable[[Any, Sequence[Any] | None], torch.Tensor]:
        """The reward for gradient guidance: fast preprocessing (8-bit rounding has no
        gradient)."""
        twin = self.with_preprocessing("fast")
        return RewardModel.differentiable(twin)

    def pixels(self, images: torch.Tensor, transform: ImageTransform) -> torch.Tensor:
        """The network's input for ``images`` ``(B, 3, H, W)`` in [0, 1], on the reward's
        device, by this reward's path."""
        return preprocess_images(images, transform, self.preprocessing, self.device)

    def __repr__(self) -> str:
        text = super().__repr__()
        return f"{text[:-1]}, preprocessing='{self.preprocessing}')"
