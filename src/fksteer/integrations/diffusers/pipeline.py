"""Steer a stock diffusers pipeline from inside its own sampling loop: `steer_pipeline`.

    from fksteer.diffusers import steer_pipeline, DiffusersOptions   # the public facade

No pipeline code is copied. For the length of one call, the pipeline's scheduler is replaced by a
thin proxy (:class:`~fksteer.integrations.diffusers.run.SteeringScheduler`) that forwards
everything to the real scheduler except ``step(model_output, timestep, sample, ...)``, where it
drives a :class:`~fksteer.smc.particles.ParticleSystem` (:mod:`.run`):

1. at a scoring step, compute the clean-sample prediction x0_hat from the (guided) model output
   (:func:`~fksteer.integrations.diffusers.schedulers.clean_prediction`), decode it (the
   pipeline's own VAE, or a cheaper decoder such as ``AutoencoderTiny``: :mod:`.decoding`) chunk
   by chunk as the reward asks for it, and let the particle system weigh and resample;
2. reorder the current latents, the model output and the scheduler's per-particle history by the
   ancestors (within groups only: group g holds the K particles of prompt g, so the prompt
   embeddings, pooled embeddings and time ids the pipeline holds, identical within a group, stay
   consistent with every particle);
3. take the real scheduler's step, whose noise comes from the pipeline's generator exactly as in
   the stock pipeline (the engine's draws come from a generator derived from the user's seed
   without drawing from it).

The pipeline runs with ``num_images_per_prompt = K`` (or ``batch_size = K`` for unconditional
pipelines) and ``output_type="pt"`` (:mod:`.arguments`); its own decoder and post-processing
give the final images, which the final potential scores (:mod:`.result`). The original scheduler
(and denoiser, when a stand-in replaced it: :mod:`.proxies`) is put back afterwards, also on
error. With ``method="base"``, or a reward that leaves the weights uniform under systematic
resampling, the output equals the stock pipeline's for the same generator.

Supported: pipelines that call ``scheduler.step`` once per denoising step on the G*K latents
(text-to-image SD 1.x/2.x, SDXL, SD3, Flux, DDPM/DDIM unconditional pipelines and their kin),
with the schedulers of :data:`~fksteer.integrations.diffusers.schedulers.SUPPORTED_SCHEDULERS`.
A pipeline that passes a different batch to ``step`` (e.g. DiT, which steps the doubled CFG batch)
is refused with an error. Pipelines that carry other per-particle tensors outside the scheduler
(inpainting's fixed noise for the known region) run, but that tensor is not resampled.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from fksteer.integrations.diffusers.arguments import check_scheduler, pipeline_arguments
from fksteer.integrations.diffusers.decoding import intermediate_decoder, latent_decoder
from fksteer.integrations.diffusers.guidance import PipelineGuidance
from fksteer.integrations.diffusers.options import DiffusersOptions
from fksteer.integrations.diffusers.proxies import (
    MicroBatchedDenoiser,
    RecordingDenoiser,
    swapped_components,
)
from fksteer.integrations.diffusers.result import (
    PipelineSteeringResult,
    output_images,
    pipeline_result,
)
from fksteer.integrations.diffusers.run import PipelineRun, SteeringScheduler
from fksteer.smc.config import FKConfig
from fksteer.smc.plan import check_method
from fksteer.smc.protocol import Reward

__all__ = ["steer_pipeline"]

logger = logging.getLogger(__name__)

#: Pipeline components that hold the denoiser, in the order they are looked for.
DENOISERS = ("unet", "transformer")


def steer_pipeline(
    pipe: Any,
    reward: Reward,
    config: FKConfig,
    *,
    method: str = "fk",
    generator: torch.Generator | list[torch.Generator] | None = None,
    options: DiffusersOptions | None = None,
    **pipeline_kwargs: Any,
) -> PipelineSteeringResult:
    """Run a stock diffusers pipeline with FK steering: K particles per prompt.

    Args:
        pipe: a diffusers pipeline object (``StableDiffusionPipeline``,
            ``StableDiffusionXLPipeline``, ``StableDiffusion3Pipeline``, ``FluxPipeline``,
            ``DDPMPipeline``, ...), unchanged: it is restored after the call, also on error.
        reward: ``reward(images, prompts)`` -> one float per image, higher is better. ``images``
            is a flat float batch (B, C, H, W) in [0, 1] on the pipeline's device; ``prompts``
            a list of B prompts (None for unconditional pipelines). A ``batch_size`` attribute
            makes the engine call it in chunks.
        config: :class:`~fksteer.smc.config.FKConfig`; ``num_particles`` is K, the images per
            prompt. Steps are the pipeline's ``scheduler.step`` calls, 0 .. n-1 from the noisiest.
        method: ``"fk"``, or a baseline through the same path: ``"base"`` (the stock pipeline's
            sampling), ``"best_of_n"``, ``"importance"``.
        generator: the pipeline's generator (or list of G*K generators); ``None`` seeds a fresh
            CPU generator. The engine's resampling uses a generator derived from its seed
            without drawing from it, so the pipeline's noise is the stock pipeline's.
        options: :class:`~fksteer.integrations.diffusers.options.DiffusersOptions`
            (intermediate decoder, chunk sizes, flow re-noising).
        **pipeline_kwargs: what you would pass to ``pipe(...)``: prompt, guidance_scale,
            num_inference_steps, height, width, eta, prompt_embeds, ... Not ``output_type`` or
            ``return_dict`` (set here), nor ``num_images_per_prompt``/``batch_size`` unless equal
            to ``config.num_particles``.

    Returns:
        a :class:`~fksteer.integrations.diffusers.result.PipelineSteeringResult`: ``samples``
        (G, K, C, H, W) in [0, 1], ``images`` (G lists of K PIL images), weights, rewards,
        log-evidence and the per-step trace.

    Raises:
        ValueError: unsupported scheduler or pipeline loop, conflicting arguments.
    """
    options = DiffusersOptions() if options is None else options
    if not isinstance(options, DiffusersOptions):
        raise ValueError(f"options must be a DiffusersOptions, got {type(options).__name__}.")
    check_method(method)
    if not isinstance(config, FKConfig):
        raise ValueError(f"config must be an FKConfig, got {type(config).__name__}.")
    scheduler = pipe.scheduler
    if isinstance(scheduler, SteeringScheduler):
        raise ValueError("this pipeline is already being steered (re-entrant call).")
    check_scheduler(scheduler, config, options)
    if generator is None:
        generator = torch.Generator()
        generator.seed()
    kwargs, prompts = pipeline_arguments(pipe, config, options, pipeline_kwargs, generator)
    decode = latent_decoder(
        pipe, options.decoder, height=kwargs.get("height"), width=kwargs.get("width")
    )
    run = PipelineRun(
        reward=reward,
        config=config,
        method=method,
        options=options,
        generator=generator,
        seed_generator=generator[0] if isinstance(generator, (list, tuple)) else generator,
        prompts=prompts,
        decode=decode,
        intermediate_decode=intermediate_decoder(
            pipe, options.decoder, options.intermediate_resolution, reward, decode
        ),
        pipeline_name=type(pipe).__name__,
    )
    stand_ins = {"scheduler": SteeringScheduler(scheduler, run), **_denoisers(pipe, run)}
    with swapped_components(pipe, stand_ins), torch.no_grad():
        run.last_time = time.perf_counter()
        output = pipe(**kwargs)
    if run.system is None:
        raise ValueError(f"{type(pipe).__name__} never called scheduler.step: nothing to steer.")
    images = output_images(output)
    start = time.perf_counter()
    result = run.system.finish(images)
    logger.debug("final potential in %.3f s", time.perf_counter() - start)
    return pipeline_result(result, images, output)


def _denoisers(pipe: Any, run: PipelineRun) -> dict[str, Any]:
    """Stand-ins for the pipeline's denoiser: micro-batched (``denoiser_batch_size``) and, with
    guidance, recording its calls so that :class:`PipelineGuidance` can replay them."""
    options, guided = run.options, run.config.guidance != 0
    stand_ins = {}
    for name in DENOISERS:
        module = getattr(pipe, name, None)
        if module is None or not (options.denoiser_batch_size or guided):
            continue
        wrapped = module
        if options.denoiser_batch_size is not None:
            wrapped = MicroBatchedDenoiser(module, options.denoiser_batch_size)
        if guided and run.guidance is None:
            wrapped = RecordingDenoiser(wrapped)
            run.guidance = PipelineGuidance(
                pipe, wrapped, module, run.decode, options.denoiser_batch_size
            )
        stand_ins[name] = wrapped
    if guided and run.guidance is None:
        raise ValueError(
            f"FKConfig.guidance needs the pipeline's denoiser ({' or '.join(DENOISERS)}); "
            f"{type(pipe).__name__} has neither. Set guidance=0."
        )
    return stand_ins
