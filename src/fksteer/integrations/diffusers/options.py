"""How `steer_pipeline` runs a pipeline: `DiffusersOptions`.

    from fksteer.diffusers import DiffusersOptions

Everything else a steered call takes is the pipeline's own arguments (prompt, guidance_scale,
num_inference_steps, ...) and the engine's :class:`~fksteer.smc.config.FKConfig`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fksteer.integrations.diffusers.decoding import check_resolution
from fksteer.integrations.diffusers.schedulers import FLOW_NOISE

__all__ = ["DiffusersOptions"]


@dataclass(frozen=True)
class DiffusersOptions:
    """How `steer_pipeline` runs the pipeline (everything else is the pipeline's own arguments).

    Attributes:
        decoder: what decodes the clean-latent predictions at intermediate scoring steps.
            ``None``: the pipeline's own VAE (or, for pixel-space pipelines, ``x / 2 + 0.5``).
            A VAE-like module with ``decode`` and ``config.scaling_factor`` (e.g.
            ``AutoencoderTiny``, TAESD): decoded like the pipeline's VAE (Flux latents unpacked,
            scaling and shift factors applied). Any other callable: ``decoder(latents)`` gets the
            clean latents as the pipeline holds them (packed for Flux) and returns images in
            [0, 1]. The final potential always uses the pipeline's own decoder on the final
            latents, so a cheap intermediate decoder changes efficiency, never the target.
        intermediate_resolution: the resolution intermediate predictions are decoded at
            (:mod:`~fksteer.integrations.diffusers.decoding`). ``"auto"`` (default): with the
            pipeline's own VAE, half the latents' height and width (a quarter of the decode),
            the images resized back to full size; at the reward's ``input_size`` when it
            declares one; full resolution with any other decoder. A float in (0, 1]: that
            latent scale, images resized back. ``"full"``: full resolution. The final potential
            always reads the pipeline's own full decode, so this changes cost and the
            intermediate potentials, never the target.
        decode_batch_size: decode intermediate predictions in chunks of at most this many
            latents (peak memory: the pipeline's plus one chunk); ``None`` decodes the chunk the
            reward asks for (its ``batch_size``, or everything) at once.
        denoiser_batch_size: call the denoiser (``pipe.unet`` / ``pipe.transformer``) on at most
            this many rows at a time (a row is one particle, or one CFG half of one), so that a
            K that does not fit one forward pass still runs; the result is the same as one batch
            (up to the float nondeterminism of batched kernels). With ``FKConfig.guidance`` it
            also bounds the particles per backward pass of the reward gradient.
        flow_eta: for flow-matching pipelines (SD3, Flux) with FlowMatchEulerDiscreteScheduler:
            replace the Euler ODE step by the DDIM-style re-noising step
            x_s = (1 - s) x0_hat + sqrt(s^2 - sigma^2) eps_hat + sigma z, with z from the
            pipeline's generator and sigma set by ``flow_noise``
            (:func:`~fksteer.integrations.diffusers.schedulers.flow_renoise_step`), so that
            resampled copies diverge. eta = 0 is the ODE; eta > 0 changes the base law (it is no
            longer the stock ODE's): compare with ``method="base"`` at the same setting.
        flow_noise: ``"ddpm"`` (default): sigma = eta times the DDPM posterior std, so eta = 1
            is the ancestral sampler of the same model, a consistent discretisation of its law.
            ``"fraction"``: sigma = eta * s, i.e. x_s = (1 - s) x0_hat + s (sqrt(1 - eta^2)
            eps_hat + eta z) (diffusers' ``stochastic_sampling`` at eta = 1); for eta near 1 it
            shrinks the samples' spread at any number of steps (measured with an exact velocity
            in benchmarks/flow_renoise_quality.py).
        reward_prompts: the prompts the reward receives, one per group, when the pipeline gets
            precomputed ``prompt_embeds`` instead of text (the text the embeddings encode);
            default: the pipeline's ``prompt`` (None with embeddings only).

    Precomputed embeddings (``prompt_embeds``, ``pooled_prompt_embeds``, ``negative_...``) are
    given one row per prompt (group); `steer_pipeline` repeats them for the K particles.
    """

    decoder: Any = None
    intermediate_resolution: str | float = "auto"
    decode_batch_size: int | None = None
    denoiser_batch_size: int | None = None
    flow_eta: float | None = None
    flow_noise: str = "ddpm"
    reward_prompts: Sequence[Any] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.reward_prompts, str):
            raise ValueError(
                f"DiffusersOptions.reward_prompts={self.reward_prompts!r}: pass a list, one "
                "prompt per group."
            )
        for name in ("decode_batch_size", "denoiser_batch_size"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValueError(
                    f"DiffusersOptions.{name}={value!r} is invalid: pass a positive int or None."
                )
        check_resolution(self.intermediate_resolution, "DiffusersOptions")
        if self.flow_eta is not None:
            if isinstance(self.flow_eta, bool) or not isinstance(self.flow_eta, (int, float)) or (
                not 0.0 <= self.flow_eta <= 1.0
            ):
                raise ValueError(
                    f"DiffusersOptions.flow_eta={self.flow_eta!r} is invalid: pass a float in "
                    "[0, 1] (1.0: the ancestral step) or None for the stock ODE step."
                )
        if self.flow_noise not in FLOW_NOISE:
            raise ValueError(
                f"DiffusersOptions.flow_noise={self.flow_noise!r} is invalid: choose one of "
                f"{', '.join(FLOW_NOISE)}."
            )
        if self.decoder is not None and not callable(self.decoder) and not hasattr(
            self.decoder, "decode"
        ):
            raise ValueError(
                f"DiffusersOptions.decoder={self.decoder!r} is invalid: pass a VAE-like module "
                "(with .decode), a callable latents -> images in [0, 1], or None."
            )

