"""Decoding clean-latent predictions into what the reward reads: `latent_decoder`, `LazyDecoded`.

    from fksteer.integrations.diffusers.decoding import latent_decoder, LazyDecoded

At an intermediate scoring step the reward reads the decoded clean-sample prediction; the
decoder may be the pipeline's own VAE or a cheaper one (any positive intermediate potential
leaves the target unchanged: the final potential reads the pipeline's own decode). Decoding
happens lazily, chunk by chunk, as the engine slices the batch for the reward.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["latent_decoder", "LazyDecoded"]


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

