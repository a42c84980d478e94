"""Steer a stock diffusers pipeline from inside its own sampling loop: `steer_pipeline`.

    from fksteer.diffusers import steer_pipeline, DiffusersOptions   # the public facade

No pipeline code is copied. For the length of one call, the pipeline's scheduler is replaced by a
thin proxy (:class:`SteeringScheduler`) that forwards everything to the real scheduler except
``step(model_output, timestep, sample, ...)``, where it drives a
:class:`~fksteer.smc.particles.ParticleSystem`:

1. at a scoring step, compute the clean-sample prediction x0_hat from the (guided) model output
   (:func:`~fksteer.integrations.diffusers_schedulers.clean_prediction`), decode it (the
   pipeline's own VAE, or a cheaper decoder such as ``AutoencoderTiny``) chunk by chunk as the
   reward asks for it, and let the particle system weigh and resample;
2. reorder the current latents, the model output and the scheduler's per-particle history by the
   ancestors (within groups only: group g holds the K particles of prompt g, so the prompt
   embeddings, pooled embeddings and time ids the pipeline holds, identical within a group, stay
   consistent with every particle);
3. take the real scheduler's step, whose noise comes from the pipeline's generator exactly as in
   the stock pipeline (the engine's draws come from a generator derived from the user's seed
   without drawing from it).

The pipeline runs with ``num_images_per_prompt = K`` (or ``batch_size = K`` for unconditional
pipelines) and ``output_type="pt"``; its own decoder and post-processing give the final images,
which the final potential scores. The original scheduler (and a micro-batched denoiser, if any)
is put back afterwards, also on error. With ``method="base"``, or a reward that leaves the
weights uniform under systematic resampling, the output equals the stock pipeline's for the same
generator.

Supported: pipelines that call ``scheduler.step`` once per denoising step on the G*K latents
(text-to-image SD 1.x/2.x, SDXL, SD3, Flux, DDPM/DDIM unconditional pipelines and their kin),
with the schedulers of :data:`~fksteer.integrations.diffusers_schedulers.SUPPORTED_SCHEDULERS`.
A pipeline that passes a different batch to ``step`` (e.g. DiT, which steps the doubled CFG batch)
is refused with an error. Pipelines that carry other per-particle tensors outside the scheduler
(inpainting's fixed noise for the known region) run, but that tensor is not resampled.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from fksteer.integrations.diffusers_guidance import PipelineGuidance
from fksteer.integrations.diffusers_proxies import MicroBatchedDenoiser, Proxy, RecordingDenoiser
from fksteer.integrations.diffusers_schedulers import (
    FLOW_NOISE,
    GAUSSIAN_STEP_SCHEDULERS,
    clean_prediction,
    deterministic_reason,
    flow_renoise_step,
    gaussian_step,
    permute_scheduler_state,
    scheduler_spec,
)
from fksteer.smc.config import METHODS, FKConfig, guidance_strength
from fksteer.smc.guidance import shift_gaussian_step
from fksteer.smc.particles import ParticleSystem
from fksteer.smc.protocol import Reward
from fksteer.smc.result import SteeringResult

__all__ = [
    "DiffusersOptions",
    "PipelineSteeringResult",
    "DeterministicSamplerWarning",
    "SteeringScheduler",
    "MicroBatchedDenoiser",
    "steer_pipeline",
    "latent_decoder",
    "to_pil",
]

logger = logging.getLogger(__name__)

#: Keyword arguments ending so hold one row per prompt (repeated K times when precomputed).
PROMPT_TENSOR_SUFFIXES = ("prompt_embeds", "prompt_embeds_mask", "prompt_attention_mask")

#: Pipeline components that hold the denoiser, in the order they are looked for.
DENOISERS = ("unet", "transformer")


class DeterministicSamplerWarning(UserWarning):
    """The sampler draws no noise after its first draw: resampled copies stay identical."""


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
            (:func:`~fksteer.integrations.diffusers_schedulers.flow_renoise_step`), so that
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


@dataclass(frozen=True)
class PipelineSteeringResult(SteeringResult):
    """A :class:`~fksteer.smc.result.SteeringResult` with the pipeline's images.

    ``samples`` is a float32 tensor in [0, 1] shaped (G, K, C, H, W) on the pipeline's device
    (what the pipeline gives with ``output_type="pt"``), ``weights``/``rewards``/``trace`` are the
    engine's, and:

    Attributes:
        images: G lists of K PIL images, particle for particle.
        nsfw_content_detected: the pipeline's safety-checker flags as G lists of K, or None.
    """

    images: list = field(default_factory=list)
    nsfw_content_detected: list | None = None

    def best_images(self) -> list:
        """The highest-reward PIL image of each group."""
        return [row[int(k)] for row, k in zip(self.images, self.best, strict=True)]


def to_pil(images: torch.Tensor) -> list:
    """(B, C, H, W) floats in [0, 1] -> B PIL images, as the pipelines' ``output_type="pil"``."""
    from diffusers.image_processor import VaeImageProcessor

    return VaeImageProcessor.numpy_to_pil(VaeImageProcessor.pt_to_numpy(images.detach().cpu()))


# -- proxies ------------------------------------------------------------------------------------


class SteeringScheduler(Proxy):
    """The pipeline's scheduler, with a ``step`` that scores and resamples before stepping.

    Its ``step`` has the wrapped scheduler's signature (pipelines inspect it to decide whether to
    pass ``eta`` and ``generator``).
    """

    def __init__(self, inner: Any, run: _PipelineRun) -> None:
        Proxy.__init__(self, inner)
        object.__setattr__(self, "_fk_run", run)

        def step(model_output, timestep, sample, *args, **kwargs):
            return run.step(inner, model_output, timestep, sample, args, kwargs)

        object.__setattr__(self, "step", functools.wraps(inner.step)(step))


# -- decoding -----------------------------------------------------------------------------------


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


class _LazyDecoded:
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


# -- the run ------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class _PipelineRun:
    """State of one steer_pipeline call: the particle system, built at the first ``step``."""

    reward: Reward
    config: FKConfig
    method: str
    options: DiffusersOptions
    generator: Any
    seed_generator: torch.Generator
    prompts: list | None
    decode: Callable[[torch.Tensor], torch.Tensor]
    pipeline_name: str
    guidance: PipelineGuidance | None = None
    system: ParticleSystem | None = None
    batch: int = 0
    step_count: int = 0
    last_time: float = field(default_factory=time.perf_counter)

    def start(self, scheduler: Any, timestep: Any, sample: torch.Tensor, kwargs: dict) -> None:
        K = self.config.num_particles
        batch = sample.shape[0]
        if batch % K:
            raise ValueError(
                f"{self.pipeline_name} passed a batch of {batch} latents to scheduler.step, not "
                f"a multiple of num_particles={K}: this pipeline's loop is not supported "
                "(it must step the G*K latents, after classifier-free guidance)."
            )
        num_groups = batch // K
        prompts = self.prompts
        if prompts is not None and len(prompts) != num_groups:
            raise ValueError(
                f"{self.pipeline_name} passed {batch} latents to scheduler.step for "
                f"{len(prompts)} prompt(s) x {K} particles: this pipeline's loop is not supported "
                "(it must step one latent per particle, after classifier-free guidance)."
            )
        if prompts is None and num_groups > 1:
            prompts = [None] * num_groups
        self.batch = batch
        self.system = ParticleSystem(
            self.reward,
            self.config,
            num_steps=_remaining_steps(scheduler, timestep),
            prompts=prompts,
            generator=self.seed_generator,
            method=self.method,
        )
        if self.method == "fk" and self.system.scoring_steps and self.options.flow_eta is None:
            reason = deterministic_reason(scheduler, kwargs)
            if reason is not None:
                warnings.warn(
                    f"the sampler is deterministic after its first draw, so resampled copies of "
                    f"a particle stay identical and steering can only select among the initial "
                    f"noises: {reason}",
                    DeterministicSamplerWarning,
                    stacklevel=4,
                )

    def step(
        self,
        scheduler: Any,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        args: tuple,
        kwargs: dict,
    ) -> Any:
        arrived = time.perf_counter()
        if self.system is None:
            self.start(scheduler, timestep, sample, kwargs)
        system = self.system
        step = self.step_count
        if sample.shape[0] != self.batch:
            raise ValueError(
                f"{self.pipeline_name} passed {sample.shape[0]} latents to scheduler.step at "
                f"step {step}, {self.batch} at the first: this pipeline's loop is not supported."
            )
        model_seconds = arrived - self.last_time
        engine_seconds = 0.0
        strength = self._guidance_strength(step)
        if strength:
            self.guidance.check(scheduler, timestep, sample, model_output)
        sources = torch.arange(self.batch)  # the recorded denoiser row of each particle
        if step < system.num_steps and system.scores(step):
            if sample.device.type == "cuda":  # attribute the queued denoiser work to the model
                torch.cuda.synchronize(sample.device)
                model_seconds = time.perf_counter() - self.last_time
            clean = clean_prediction(scheduler, model_output, timestep, sample)
            decoded = _LazyDecoded(clean, self.decode, self.options.decode_batch_size)
            ancestors = system.score(step, decoded)
            if ancestors is not None and not bool(
                torch.equal(ancestors, torch.arange(self.batch))
            ):
                start = time.perf_counter()
                index = ancestors.to(sample.device)
                sample = sample.index_select(0, index)
                model_output = model_output.index_select(0, index)
                permute_scheduler_state(scheduler, ancestors, self.batch)
                sources = ancestors
                engine_seconds = time.perf_counter() - start
        start = time.perf_counter()
        if strength:
            mean, std = gaussian_step(
                scheduler, model_output, timestep, sample, kwargs,
                flow_eta=self.options.flow_eta, flow_noise=self.options.flow_noise,
            )
            if not bool(torch.as_tensor(std).any()):  # a deterministic step: nothing to shift
                strength = 0.0
        if strength:
            gradient = self.guidance.gradient(
                scheduler, timestep, sample, sources, self.reward, system.reward_prompts, strength
            )
        if self.options.flow_eta is not None:
            previous = flow_renoise_step(
                scheduler,
                model_output,
                timestep,
                sample,
                self.options.flow_eta,
                self.generator,
                noise=self.options.flow_noise,
            )
            if kwargs.get("return_dict", True):
                from diffusers.schedulers.scheduling_utils import SchedulerOutput

                output = SchedulerOutput(prev_sample=previous)
            else:
                output = (previous,)
        else:
            output = scheduler.step(model_output, timestep, sample, *args, **kwargs)
        if strength:
            output = self._shift(output, mean, std, gradient, step)
        model_seconds += time.perf_counter() - start
        if step < system.num_steps:
            system.record(
                step,
                model_seconds=model_seconds,
                engine_seconds=engine_seconds,
                # a guided step evaluates the denoiser a second time, with gradients
                evaluations=self.batch * (2 if strength else 1),
            )
        self.step_count += 1
        self.last_time = time.perf_counter()
        return output

    def _guidance_strength(self, step: int) -> float:
        """s_i * lambda_{i+1} at this step (0: no guidance), as in :func:`fksteer.steer`."""
        if self.guidance is None or step >= self.system.num_steps:
            return 0.0
        return guidance_strength(self.config, step, self.system.num_steps)

    def _shift(self, output: Any, mean: torch.Tensor, std: Any, gradient: torch.Tensor,
               step: int) -> Any:
        """The scheduler's output with its sample moved to the guided proposal; reweights."""
        previous = output[0] if isinstance(output, tuple) else output.prev_sample
        shifted, log_ratio = shift_gaussian_step(
            previous.float(), mean, std, gradient.float()
        )
        self.system.reweight(step, log_ratio)
        shifted = shifted.to(previous.dtype)
        if isinstance(output, tuple):
            return (shifted, *output[1:])
        output.prev_sample = shifted
        return output


def _remaining_steps(scheduler: Any, timestep: Any) -> int:
    """Steps from ``timestep`` (the first the pipeline steps) to the end of the schedule."""
    timesteps = scheduler.timesteps
    begin = getattr(scheduler, "begin_index", None)
    if begin is None:
        matches = (timesteps.to(torch.as_tensor(timestep).device) == timestep).nonzero()
        begin = int(matches[0, 0]) if len(matches) else 0
    return len(timesteps) - int(begin)


# -- the entry point ----------------------------------------------------------------------------


def _group_prompts(kwargs: dict[str, Any]) -> list | None:
    prompt = kwargs.get("prompt")
    if prompt is None:
        labels = kwargs.get("class_labels")
        if labels is None:
            return None
        return list(labels) if isinstance(labels, (list, tuple)) else [labels]
    return [prompt] if isinstance(prompt, str) else list(prompt)


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
        options: :class:`DiffusersOptions` (intermediate decoder, chunk sizes, flow re-noising).
        **pipeline_kwargs: what you would pass to ``pipe(...)``: prompt, guidance_scale,
            num_inference_steps, height, width, eta, prompt_embeds, ... Not ``output_type`` or
            ``return_dict`` (set here), nor ``num_images_per_prompt``/``batch_size`` unless equal
            to ``config.num_particles``.

    Returns:
        a :class:`PipelineSteeringResult`: ``samples`` (G, K, C, H, W) in [0, 1], ``images`` (G
        lists of K PIL images), weights, rewards, log-evidence and the per-step trace.

    Raises:
        ValueError: unsupported scheduler or pipeline loop, conflicting arguments.
    """
    options = DiffusersOptions() if options is None else options
    if not isinstance(options, DiffusersOptions):
        raise ValueError(f"options must be a DiffusersOptions, got {type(options).__name__}.")
    if method not in METHODS:
        raise ValueError(f"method={method!r} is unknown: choose one of {', '.join(METHODS)}.")
    if not isinstance(config, FKConfig):
        raise ValueError(f"config must be an FKConfig, got {type(config).__name__}.")
    scheduler = pipe.scheduler
    if isinstance(scheduler, SteeringScheduler):
        raise ValueError("this pipeline is already being steered (re-entrant call).")
    scheduler_spec(scheduler)  # refuses unsupported schedulers before any work
    if options.flow_eta is not None and "FlowMatchEulerDiscreteScheduler" not in {
        cls.__name__ for cls in type(scheduler).__mro__
    }:
        raise ValueError(
            f"DiffusersOptions.flow_eta needs FlowMatchEulerDiscreteScheduler; the pipeline has "
            f"{type(scheduler).__name__}. Leave flow_eta=None for it."
        )

    K = config.num_particles
    parameters = inspect.signature(pipe.__call__).parameters
    kwargs = dict(pipeline_kwargs)
    for name in ("output_type", "return_dict"):
        if name in kwargs:
            raise ValueError(
                f"{name}={kwargs[name]!r}: steer_pipeline sets it (the reward reads the "
                "pipeline's output_type='pt' images); PIL images are in result.images."
            )
    if "output_type" not in parameters:
        raise ValueError(f"{type(pipe).__name__} has no output_type argument: not supported.")
    count = next((n for n in ("num_images_per_prompt", "batch_size") if n in parameters), None)
    if count is None:
        raise ValueError(
            f"{type(pipe).__name__} takes neither num_images_per_prompt nor batch_size: "
            "steer_pipeline cannot ask it for K particles per prompt."
        )
    if kwargs.get(count, K) not in (None, K):
        raise ValueError(
            f"{count}={kwargs[count]!r} conflicts with config.num_particles={K}: the particles "
            f"are the images per prompt; drop {count} or set num_particles={kwargs[count]}."
        )
    kwargs[count] = K
    prompts = _group_prompts(kwargs)
    embeds = kwargs.get("prompt_embeds")
    if prompts is None and isinstance(embeds, torch.Tensor):
        # Precomputed embeddings, one row per prompt: SD3 and Flux do not repeat them for
        # num_images_per_prompt, so repeat them here (group-major) and ask for one image each.
        groups = embeds.shape[0]
        for name, value in list(kwargs.items()):
            if (
                isinstance(value, torch.Tensor)
                and name.endswith(PROMPT_TENSOR_SUFFIXES)
                and value.dim() > 0
                and value.shape[0] == groups
            ):
                kwargs[name] = value.repeat_interleave(K, dim=0)
        kwargs[count] = 1
        prompts = [None] * groups
    if options.reward_prompts is not None:
        if prompts is not None and len(options.reward_prompts) != len(prompts):
            raise ValueError(
                f"DiffusersOptions.reward_prompts has {len(options.reward_prompts)} entries for "
                f"{len(prompts)} prompt(s): pass one per prompt."
            )
        prompts = list(options.reward_prompts)
    kwargs["output_type"] = "pt"
    kwargs["return_dict"] = True

    if generator is None:
        generator = torch.Generator()
        generator.seed()
    seed_generator = generator[0] if isinstance(generator, (list, tuple)) else generator
    kwargs["generator"] = generator
    decode = latent_decoder(
        pipe, options.decoder, height=kwargs.get("height"), width=kwargs.get("width")
    )
    guided = config.guidance != 0
    if guided:
        names = {cls.__name__ for cls in type(scheduler).__mro__}
        flow = "FlowMatchEulerDiscreteScheduler" in names
        if not names & set(GAUSSIAN_STEP_SCHEDULERS) or (flow and options.flow_eta is None):
            raise ValueError(
                f"FKConfig.guidance needs a scheduler whose step is Gaussian: DDPMScheduler, "
                f"DDIMScheduler (eta > 0), EulerAncestralDiscreteScheduler, or "
                f"FlowMatchEulerDiscreteScheduler with DiffusersOptions.flow_eta; the pipeline "
                f"has {type(scheduler).__name__}."
            )
    run = _PipelineRun(
        reward=reward,
        config=config,
        method=method,
        options=options,
        generator=generator,
        seed_generator=seed_generator,
        prompts=prompts,
        decode=decode,
        pipeline_name=type(pipe).__name__,
    )

    replaced: dict[str, Any] = {"scheduler": scheduler}
    try:
        object.__setattr__(pipe, "scheduler", SteeringScheduler(scheduler, run))
        for name in DENOISERS:
            module = getattr(pipe, name, None)
            if module is None or not (options.denoiser_batch_size or guided):
                continue
            replaced[name] = module
            wrapped = module
            if options.denoiser_batch_size is not None:
                wrapped = MicroBatchedDenoiser(module, options.denoiser_batch_size)
            if guided and run.guidance is None:
                wrapped = RecordingDenoiser(wrapped)
                run.guidance = PipelineGuidance(
                    pipe, wrapped, module, decode, options.denoiser_batch_size
                )
            object.__setattr__(pipe, name, wrapped)
        run.last_time = time.perf_counter()
        with torch.no_grad():
            output = pipe(**kwargs)
    finally:
        for name, original in replaced.items():
            object.__setattr__(pipe, name, original)

    if run.system is None:
        raise ValueError(f"{type(pipe).__name__} never called scheduler.step: nothing to steer.")
    images = output.images
    if not isinstance(images, torch.Tensor):  # pipelines that ignore output_type="pt"
        images = torch.as_tensor(images)
        if images.dim() == 4 and images.shape[-1] in (1, 3, 4):
            images = images.permute(0, 3, 1, 2)
    images = images.float()
    start = time.perf_counter()
    result = run.system.finish(images)
    logger.debug("final potential in %.3f s", time.perf_counter() - start)
    pil = to_pil(images)
    G = result.num_groups
    nsfw = getattr(output, "nsfw_content_detected", None)
    if nsfw is not None:
        nsfw = [list(nsfw[g * K : (g + 1) * K]) for g in range(G)]
    return PipelineSteeringResult(
        **{f.name: getattr(result, f.name) for f in fields(SteeringResult)},
        images=[pil[g * K : (g + 1) * K] for g in range(G)],
        nsfw_content_detected=nsfw,
    )
