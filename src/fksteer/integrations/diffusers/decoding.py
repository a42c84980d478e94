"""Decoding clean-latent predictions into what the reward reads: `latent_decoder`,
`intermediate_decoder`, `LazyDecoded`.

    from fksteer.integrations.diffusers.decoding import latent_decoder, intermediate_decoder

At an intermediate scoring step the reward reads the decoded clean-sample prediction; the
decoder may be the pipeline's own VAE or a cheaper one, and it may decode at a reduced
resolution (any positive intermediate potential leaves the target unchanged: the final potential
reads the pipeline's own full decode). :func:`intermediate_decoder` applies
``DiffusersOptions.intermediate_resolution``:

- ``"auto"`` (the default): with the pipeline's own VAE on unpacked latents, decode the latents
  resized to half their height and width (a quarter of the decoder's work) and resize the images
  back to the full decode's size, so that every reward, one that declares no input size
  included, gets images of the shape it would get from a full decode. A reward that declares
  ``input_size`` (the short side, in pixels, that it reads; it resizes whatever it gets) is
  given images decoded at the smallest latent size whose decode is at least that large, not
  resized back. Anything else (a decoder of the user's, pixel-space or packed latents) decodes
  at full resolution.
- a float s in (0, 1]: latents resized by s before decoding, images resized back.
- ``"full"``: the decoder at full resolution.

Decoding happens lazily, chunk by chunk, as the engine slices the batch for the reward.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "latent_decoder",
    "intermediate_decoder",
    "reduced_resolution",
    "check_resolution",
    "LazyDecoded",
]

#: the latent scale of ``intermediate_resolution="auto"`` when the reward declares no input size
AUTO_SCALE = 0.5


def latent_decoder(
    pipe: Any, decoder: Any = None, *, height: int | None = None, width: int | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function clean latents (as the pipeline holds them) -> float32 images in [0, 1].

    ``decoder`` as in :class:`DiffusersOptions`. The pipeline's own VAE is used the way the
    pipeline's own final decode uses it: Flux latents unpacked, ``latents_mean``/``latents_std``
    or ``scaling_factor``/``shift_factor`` applied, and SDXL's float32 upcast of a float16 VAE
    with ``force_upcast`` (done and undone around each decode, as the pipeline does).
    """
    if decoder is not None and not hasattr(decoder, "decode"):
        return lambda latents: decoder(latents).float()
    own = decoder is None
    vae = getattr(pipe, "vae", None) if own else decoder
    unpack = getattr(pipe, "_unpack_latents", None)
    if unpack is not None:
        scale_factor = getattr(pipe, "vae_scale_factor", 8)
        default = getattr(pipe, "default_sample_size", 128) * scale_factor
        height, width = height or default, width or default

    def decode(latents: torch.Tensor) -> torch.Tensor:
        if unpack is not None:
            latents = unpack(latents, height, width, scale_factor)
        if vae is None:  # pixel-space model
            return (latents.float() / 2 + 0.5).clamp(0, 1)
        config = vae.config
        mean = getattr(config, "latents_mean", None)
        std = getattr(config, "latents_std", None)
        scaling = getattr(config, "scaling_factor", 1.0) or 1.0
        if mean is not None and std is not None:
            channels = latents.shape[1]
            mean = torch.tensor(mean).view(1, channels, 1, 1).to(latents.device, latents.dtype)
            std = torch.tensor(std).view(1, channels, 1, 1).to(latents.device, latents.dtype)
            latents = latents * std / scaling + mean
        else:
            latents = latents / scaling + (getattr(config, "shift_factor", None) or 0.0)
        upcast = (
            own
            and hasattr(pipe, "upcast_vae")
            and vae.dtype == torch.float16
            and getattr(config, "force_upcast", False)
        )
        if upcast:
            vae.to(dtype=torch.float32)
        try:
            image = vae.decode(latents.to(vae.dtype), return_dict=False)[0]
        finally:
            if upcast:
                vae.to(dtype=torch.float16)
        return (image.float() / 2 + 0.5).clamp(0, 1)

    return decode


def check_resolution(value: Any, owner: str) -> None:
    """A ValueError unless ``value`` is an intermediate resolution: "auto", "full" or (0, 1]."""
    if value in ("auto", "full") and isinstance(value, str):
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
        raise ValueError(
            f"{owner}.intermediate_resolution={value!r} is invalid: pass 'auto', 'full' or a "
            "latent scale in (0, 1] (e.g. 0.5)."
        )


def reduced_resolution(
    decode: Callable[[torch.Tensor], torch.Tensor],
    scale: float | None = None,
    *,
    short_side: int | None = None,
    pixels_per_latent: int = 1,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``decode`` on (B, C, h, w) latents resized first, by ``scale`` (the images are then resized
    back to the full decode's size, ``pixels_per_latent`` times the latents'), or to the smallest
    size whose decode has a short side of at least ``short_side`` pixels (not resized back).

    Latents are resized with antialiased bilinear interpolation (an average over the pixels each
    new one covers), the images back with bilinear interpolation, in the latents' dtype.
    """

    def decode_reduced(latents: torch.Tensor) -> torch.Tensor:
        height, width = latents.shape[-2:]
        if short_side is not None:
            factor = min(1.0, short_side / (pixels_per_latent * min(height, width)))
        else:
            factor = scale
        size = (max(1, math.ceil(height * factor)), max(1, math.ceil(width * factor)))
        if size == (height, width):
            return decode(latents)
        small = F.interpolate(latents, size=size, mode="bilinear", antialias=True,
                              align_corners=False)
        images = decode(small)
        if short_side is not None:
            return images
        full = (height * pixels_per_latent, width * pixels_per_latent)
        return F.interpolate(images, size=full, mode="bilinear", align_corners=False).clamp_(0, 1)

    return decode_reduced


def intermediate_decoder(
    pipe: Any, decoder: Any, resolution: str | float, reward: Any, decode: Callable
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The decoder of intermediate predictions: ``decode`` (:func:`latent_decoder` of ``pipe``
    and ``decoder``) at the resolution ``DiffusersOptions.intermediate_resolution`` asks for."""
    if resolution == "full" or resolution == 1:
        return decode
    vae = getattr(pipe, "vae", None)
    pixels_per_latent = int(getattr(pipe, "vae_scale_factor", 1) or 1) if vae is not None else 1
    packed = getattr(pipe, "_unpack_latents", None) is not None
    if resolution == "auto":
        if decoder is not None or vae is None or packed:
            return decode
        short_side = getattr(reward, "input_size", None)
        if short_side is not None:
            return reduced_resolution(decode, short_side=int(short_side),
                                      pixels_per_latent=pixels_per_latent)
        resolution = AUTO_SCALE
    elif packed:
        raise ValueError(
            f"DiffusersOptions.intermediate_resolution={resolution!r}: {type(pipe).__name__} "
            "holds packed latents, which cannot be resized; use 'auto' or 'full'."
        )
    return reduced_resolution(decode, float(resolution), pixels_per_latent=pixels_per_latent)


class LazyDecoded:
    """The flat batch the reward reads, decoded only when (and as far as) the engine slices it.

    The engine calls the reward on slices of ``reward.batch_size``; each slice is decoded in
    chunks of ``chunk`` latents, so decoding memory is one chunk, and nothing is decoded twice.
    """

    def __init__(self, latents: torch.Tensor, decode: Callable, chunk: int | None) -> None:
        self.latents = latents
        self.decode = decode
        self.chunk = chunk

    def __len__(self) -> int:
        return self.latents.shape[0]

    def __getitem__(self, index: slice) -> torch.Tensor:
        if not isinstance(index, slice):
            return self[index : index + 1][0]
        part = self.latents[index]
        chunk = self.chunk or max(part.shape[0], 1)
        return torch.cat([self.decode(rows) for rows in part.split(chunk)])

