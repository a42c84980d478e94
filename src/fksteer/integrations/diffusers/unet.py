"""A StepModel over a diffusers ``UNet2DModel`` and a scheduler: `UNetStepModel`.

    from fksteer.diffusers import UNetStepModel
    model = UNetStepModel(unet, DDPMScheduler.from_config(...), num_inference_steps=50)
    result = fksteer.steer(model, reward, FKConfig(num_particles=8), generator=g)

For unconditional and class-conditional pixel-space UNets (``DDPMPipeline``/``DDIMPipeline``
models), run by :func:`fksteer.steer`. With ``method="base"`` it reproduces ``DDPMPipeline`` /
``DDIMPipeline`` for the same generator: same initial draw, same scheduler calls, same noise.

``predict`` evaluates the UNet (optionally in micro-batches) and the clean-sample prediction of
the scheduler's parameterisation; ``move`` is the scheduler's ``step`` with the run's generator;
its particle rows are the sample, the class labels, the model output and the scheduler's
per-particle history (:func:`~fksteer.integrations.diffusers.schedulers.scheduler_rows`), from
which ``permute`` and the distributed drivers' exchanges derive. The scheduler object is the
model's state between steps, so one UNetStepModel runs one ``steer`` at a time; ``replicate``
gives a copy with its own scheduler for another shard of particles.
"""

from __future__ import annotations

import copy
import inspect
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

from fksteer.integrations.diffusers.decoding import check_resolution, reduced_resolution
from fksteer.integrations.diffusers.noise import randn_tensor
from fksteer.integrations.diffusers.schedulers import (
    DeterministicSamplerWarning,
    clean_prediction,
    deterministic_reason,
    gaussian_step,
    scheduler_rows,
    scheduler_spec,
    with_scheduler_rows,
)
from fksteer.smc.guidance import shift_gaussian_step
from fksteer.smc.rows import PermuteByRows

__all__ = ["UNetStepModel"]


class UNetStepModel(PermuteByRows):
    """StepModel for a ``UNet2DModel`` (unconditional or class-conditional) and a scheduler.

    Args:
        unet: a diffusers ``UNet2DModel`` (or the embedded models'
            :class:`~fksteer.embedded.unet.EmbeddedUNet`); its device and dtype are used.
        scheduler: any scheduler of
            :data:`~fksteer.integrations.diffusers.schedulers.SUPPORTED_SCHEDULERS`.
        num_inference_steps: passed to ``scheduler.set_timesteps``.
        step_kwargs: extra arguments of ``scheduler.step`` (e.g. ``{"eta": 1.0}`` for DDIM,
            ``{"s_churn": ...}`` for Euler); the run's generator is passed when ``step`` takes
            one.
        decoder: clean samples -> reward input; default ``(x / 2 + 0.5).clamp(0, 1)`` (images in
            [0, 1], as the pipelines output).
        denoiser_batch_size: evaluate the UNet on at most this many particles at a time.
        decode_batch_size: decode at most this many samples at a time.
        intermediate_resolution: a latent scale s in (0, 1] at which intermediate predictions
            are decoded for the reward (resized by s, decoded, resized back:
            :func:`~fksteer.integrations.diffusers.decoding.reduced_resolution`); ``"auto"``
            (default) and ``"full"`` decode them at full resolution (a pixel-space decode costs
            next to nothing). The final samples are always decoded at full resolution.
        progress: show a progress bar over the steps (needs tqdm).

    Prompts are class labels (ints) for a class-conditional UNet (``num_class_embeds`` set), and
    are ignored otherwise (``[None]`` is one group).
    """

    def __init__(
        self,
        unet: Any,
        scheduler: Any,
        num_inference_steps: int = 50,
        *,
        step_kwargs: dict[str, Any] | None = None,
        decoder: Callable[[torch.Tensor], torch.Tensor] | None = None,
        denoiser_batch_size: int | None = None,
        decode_batch_size: int | None = None,
        intermediate_resolution: str | float = "auto",
        progress: bool = False,
    ) -> None:
        scheduler_spec(scheduler)  # refuses unsupported schedulers
        check_resolution(intermediate_resolution, "UNetStepModel")
        for name, value in (
            ("num_inference_steps", num_inference_steps),
            ("denoiser_batch_size", denoiser_batch_size),
            ("decode_batch_size", decode_batch_size),
        ):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValueError(f"{name}={value!r} is invalid: pass a positive int.")
        self.unet = unet
        self.scheduler = scheduler
        self.num_inference_steps = num_inference_steps
        self.step_kwargs = dict(step_kwargs or {})
        self.decoder = decoder
        self.denoiser_batch_size = denoiser_batch_size
        self.decode_batch_size = decode_batch_size
        self.intermediate_resolution = intermediate_resolution
        self.progress = progress
        self._bar = None
        parameters = inspect.signature(scheduler.step).parameters
        self._step_takes_generator = "generator" in parameters
        unknown = set(self.step_kwargs) - set(parameters)
        if unknown:
            raise ValueError(
                f"step_kwargs {sorted(unknown)} are not arguments of "
                f"{type(scheduler).__name__}.step."
            )
        scheduler.set_timesteps(num_inference_steps)
        self.num_steps = len(scheduler.timesteps)
        reason = deterministic_reason(scheduler, self.step_kwargs)
        if reason is not None:
            warnings.warn(
                "the sampler is deterministic after its first draw, so resampled copies of a "
                f"particle stay identical: {reason}",
                DeterministicSamplerWarning,
                stacklevel=2,
            )

    @property
    def device(self) -> torch.device:
        """The UNet's device."""
        return self.unet.device

    def init(self, prompts: Sequence[Any], num_particles: int, generator: torch.Generator):
        """Initial noise latents for G prompts x K particles, as the stock pipelines draw them."""
        config = self.unet.config
        n = len(prompts) * num_particles
        labels = None
        if config.get("num_class_embeds") is not None or config.get("class_embed_type"):
            if any(p is None for p in prompts):
                raise ValueError(
                    "this UNet is class-conditional: pass prompts=[class ids], one per group."
                )
            labels = torch.as_tensor(list(prompts), device=self.device).repeat_interleave(
                num_particles
            )
        size = config.sample_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        shape = (n, config.in_channels, *size)
        self.scheduler.set_timesteps(self.num_inference_steps)  # also resets the history
        # As DDPMPipeline/DDIMPipeline: one draw of the whole batch from the generator
        # (diffusers' randn_tensor, reproduced without importing diffusers).
        sample = randn_tensor(shape, generator=generator, device=self.device, dtype=self.unet.dtype)
        sample = sample * getattr(self.scheduler, "init_noise_sigma", 1.0)
        if self.progress:
            try:
                from tqdm.auto import tqdm

                self._bar = tqdm(total=self.num_steps, desc="steer", unit="step")
            except ImportError:
                self._bar = None
        return {"sample": sample, "labels": labels}

    def _denoise(self, sample: torch.Tensor, timestep: Any, labels: Any) -> torch.Tensor:
        size = self.denoiser_batch_size or sample.shape[0]
        outputs = []
        for start in range(0, sample.shape[0], size):
            rows = slice(start, start + size)
            chunk_labels = None if labels is None else labels[rows]
            outputs.append(
                self.unet(sample[rows], timestep, class_labels=chunk_labels, return_dict=False)[0]
            )
        return torch.cat(outputs)

    def predict(self, state: dict, step: int, generator: torch.Generator):
        """The UNet's output at ``step`` and the scheduler's clean-sample prediction."""
        timestep = self.scheduler.timesteps[step]
        sample = state["sample"]
        scale = getattr(self.scheduler, "scale_model_input", None)  # flow schedulers have none
        model_input = sample if scale is None else scale(sample, timestep)
        output = self._denoise(model_input, timestep, state["labels"])
        return output, clean_prediction(self.scheduler, output, timestep, sample)

    def move(self, state: dict, model_output: torch.Tensor, step: int, generator):
        """The scheduler's step from ``state`` with ``model_output``, using its own noise."""
        timestep = self.scheduler.timesteps[step]
        kwargs = dict(self.step_kwargs)
        if self._step_takes_generator:
            kwargs["generator"] = generator
        sample = self.scheduler.step(model_output, timestep, state["sample"], **kwargs).prev_sample
        if self._bar is not None:
            self._bar.update(1)
            if step == self.num_steps - 1:
                self._bar.close()
                self._bar = None
        return {**state, "sample": sample}

    def decode(self, clean: torch.Tensor, final: bool) -> torch.Tensor:
        """Images in [0, 1] from clean samples, through the decoder if any, in chunks."""
        size = self.decode_batch_size or max(clean.shape[0], 1)
        decode = self.decoder or (lambda x: (x.float() / 2 + 0.5).clamp(0, 1))
        if not final and not isinstance(self.intermediate_resolution, str):
            decode = reduced_resolution(decode, float(self.intermediate_resolution))
        return torch.cat([decode(rows) for rows in clean.split(size)])

    def particle_rows(self, state: dict, model_output: torch.Tensor) -> dict:
        """The state (sample, class labels), the model output and the scheduler's history."""
        history = scheduler_rows(self.scheduler, model_output.shape[0])
        return {"state": state, "output": model_output, "history": history}

    def with_particle_rows(self, state: dict, model_output: torch.Tensor, rows: dict):
        """The state and output of ``rows``; their history written back into the scheduler."""
        with_scheduler_rows(self.scheduler, rows["history"])
        return rows["state"], rows["output"]

    def replicate(self) -> UNetStepModel:
        """A UNetStepModel sharing the UNet, with a fresh scheduler of the same configuration
        (``init`` resets a scheduler's timesteps and history anyway)."""
        replica = copy.copy(self)
        replica.scheduler = type(self.scheduler).from_config(self.scheduler.config)
        replica.scheduler.set_timesteps(self.num_inference_steps)
        return replica

    def final_sample(self, state: dict) -> torch.Tensor:
        """The final latents (decoded by :meth:`decode`)."""
        return state["sample"]

    # -- guided proposals (fksteer.smc.protocol.GuidedStepModel) -----------------------------

    def guidance_input(self, state: dict) -> torch.Tensor:
        """The tensor the guidance gradient is taken with respect to: the current sample."""
        return state["sample"]

    def clean_from(self, state: dict, x: torch.Tensor, rows: slice, step: int) -> torch.Tensor:
        """The UNet's clean prediction for particles ``rows`` at ``x``, differentiable in x."""
        timestep = self.scheduler.timesteps[step]
        scale = getattr(self.scheduler, "scale_model_input", None)
        model_input = x if scale is None else scale(x, timestep)
        labels = state["labels"]
        output = self.unet(
            model_input,
            timestep,
            class_labels=None if labels is None else labels[rows],
            return_dict=False,
        )[0]
        return clean_prediction(self.scheduler, output, timestep, x)

    def guided_move(
        self,
        state: dict,
        model_output: torch.Tensor,
        step: int,
        generator: torch.Generator,
        gradient: torch.Tensor,
    ) -> tuple[dict, torch.Tensor]:
        """The scheduler's step, its Gaussian's mean shifted by std^2 * gradient, and the ratio.

        Needs a scheduler of
        :data:`~fksteer.integrations.diffusers.schedulers.GAUSSIAN_STEP_SCHEDULERS` (DDPM, DDIM
        with eta > 0, Euler ancestral).
        """
        timestep = self.scheduler.timesteps[step]
        sample = state["sample"]
        # before the step: an index-based scheduler advances its index in it
        mean, std = gaussian_step(self.scheduler, model_output, timestep, sample, self.step_kwargs)
        moved = self.move(state, model_output, step, generator)
        shifted, log_ratio = shift_gaussian_step(
            moved["sample"].float(), mean, std, gradient.float()
        )
        return {**moved, "sample": shifted.to(sample.dtype)}, log_ratio
