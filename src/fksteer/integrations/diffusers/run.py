"""One steered pipeline call, step by step: `PipelineRun` and the `SteeringScheduler` proxy.

    from fksteer.integrations.diffusers.run import PipelineRun, SteeringScheduler

For the length of one call the pipeline's scheduler is the proxy :class:`SteeringScheduler`,
which forwards everything to the real scheduler except ``step(model_output, timestep, sample,
...)``, where :meth:`PipelineRun.step` drives a :class:`~fksteer.smc.particles.ParticleSystem`:

1. at a scoring step, compute the clean-sample prediction x0_hat from the (guided) model output
   (:func:`~fksteer.integrations.diffusers.schedulers.clean_prediction`), decode it lazily chunk
   by chunk as the reward asks for it, and let the particle system weigh and resample;
2. reorder the current latents, the model output and the scheduler's per-particle history by the
   ancestors (within groups only: group g holds the K particles of prompt g, so the prompt
   embeddings, pooled embeddings and time ids the pipeline holds, identical within a group, stay
   consistent with every particle);
3. take the real scheduler's step (or the flow re-noising step), whose noise comes from the
   pipeline's generator exactly as in the stock pipeline, and, with reward guidance, shift it to
   the guided proposal and reweight.

Which steps score, the guidance strength and the evaluation count come from the run's
:class:`~fksteer.smc.plan.StepPlan`, as for every driver.
"""

from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from fksteer.integrations.diffusers.decoding import LazyDecoded
from fksteer.integrations.diffusers.guidance import PipelineGuidance
from fksteer.integrations.diffusers.options import DiffusersOptions
from fksteer.integrations.diffusers.proxies import Proxy
from fksteer.integrations.diffusers.schedulers import (
    DeterministicSamplerWarning,
    clean_prediction,
    deterministic_reason,
    flow_renoise_step,
    gaussian_step,
    permute_scheduler_state,
)
from fksteer.smc.config import FKConfig
from fksteer.smc.guidance import shift_gaussian_step
from fksteer.smc.particles import ParticleSystem
from fksteer.smc.plan import StepTimes
from fksteer.smc.protocol import Reward

__all__ = ["PipelineRun", "SteeringScheduler"]


class SteeringScheduler(Proxy):
    """The pipeline's scheduler, with a ``step`` that scores and resamples before stepping.

    Its ``step`` has the wrapped scheduler's signature (pipelines inspect it to decide whether to
    pass ``eta`` and ``generator``).
    """

    def __init__(self, inner: Any, run: PipelineRun) -> None:
        Proxy.__init__(self, inner)
        object.__setattr__(self, "_fk_run", run)

        def step(model_output, timestep, sample, *args, **kwargs):
            return run.step(inner, model_output, timestep, sample, args, kwargs)

        object.__setattr__(self, "step", functools.wraps(inner.step)(step))


@dataclass(kw_only=True)
class PipelineRun:
    """State of one steer_pipeline call: the particle system, built at the first ``step``."""

    reward: Reward
    config: FKConfig
    method: str
    options: DiffusersOptions
    generator: Any
    seed_generator: torch.Generator
    prompts: list | None
    #: clean latents -> images at full resolution (reward-gradient guidance differentiates it)
    decode: Callable[[torch.Tensor], torch.Tensor]
    #: clean latents -> what the intermediate potentials read (``intermediate_resolution``)
    intermediate_decode: Callable[[torch.Tensor], torch.Tensor]
    pipeline_name: str
    guidance: PipelineGuidance | None = None
    system: ParticleSystem | None = None
    batch: int = 0
    step_count: int = 0
    last_time: float = field(default_factory=time.perf_counter)

    def start(self, scheduler: Any, timestep: Any, sample: torch.Tensor, kwargs: dict) -> None:
        """Build the particle system from the first batch the pipeline steps."""
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
        self._warn_if_deterministic(scheduler, kwargs)

    def _warn_if_deterministic(self, scheduler: Any, kwargs: dict) -> None:
        if self.system.plan.scoring_steps and self.options.flow_eta is None:
            reason = deterministic_reason(scheduler, kwargs)
            if reason is not None:
                warnings.warn(
                    f"the sampler is deterministic after its first draw, so resampled copies of "
                    f"a particle stay identical and steering can only select among the initial "
                    f"noises: {reason}",
                    DeterministicSamplerWarning,
                    stacklevel=5,
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
        """The proxy's ``scheduler.step``: score and resample where due, then step."""
        arrived = time.perf_counter()
        if self.system is None:
            self.start(scheduler, timestep, sample, kwargs)
        system, step = self.system, self.step_count
        if sample.shape[0] != self.batch:
            raise ValueError(
                f"{self.pipeline_name} passed {sample.shape[0]} latents to scheduler.step at "
                f"step {step}, {self.batch} at the first: this pipeline's loop is not supported."
            )
        times = StepTimes(model=arrived - self.last_time)  # the denoiser ran since the last step
        strength = system.guidance_strength(step)
        if strength is not None:
            self.guidance.check(scheduler, timestep, sample, model_output)
        sources = torch.arange(self.batch)  # the recorded denoiser row of each particle
        if step < system.num_steps and system.is_scoring_step(step):
            if sample.device.type == "cuda":  # attribute the queued denoiser work to the model
                torch.cuda.synchronize(sample.device)
                times.model = time.perf_counter() - self.last_time
            sample, model_output, sources = self._score(
                scheduler, model_output, timestep, sample, step, times
            )
        start = time.perf_counter()
        output, strength = self._move(
            scheduler, model_output, timestep, sample, args, kwargs, step, strength, sources
        )
        times.add("model", start)
        if step < system.num_steps:
            guided = strength is not None
            system.record(step, times, evaluations=system.plan.evaluations(guided=guided))
        self.step_count += 1
        self.last_time = time.perf_counter()
        return output

    def _score(
        self,
        scheduler: Any,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        step: int,
        times: StepTimes,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Weigh the decoded clean prediction and reorder the particles by the ancestors.

        Returns the (reordered) sample and model output, and the denoiser row each particle's
        model output came from (its ancestor's), for the guidance replay.
        """
        clean = clean_prediction(scheduler, model_output, timestep, sample)
        decoded = LazyDecoded(clean, self.intermediate_decode, self.options.decode_batch_size)
        ancestors = self.system.weigh_and_resample(step, decoded)
        identity = torch.arange(self.batch)
        if ancestors is None or bool(torch.equal(ancestors, identity)):
            return sample, model_output, identity
        start = time.perf_counter()
        index = ancestors.to(sample.device)
        sample = sample.index_select(0, index)
        model_output = model_output.index_select(0, index)
        permute_scheduler_state(scheduler, ancestors, self.batch)
        times.add("permute", start)
        return sample, model_output, ancestors

    def _move(
        self,
        scheduler: Any,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        args: tuple,
        kwargs: dict,
        step: int,
        strength: float | torch.Tensor | None,
        sources: torch.Tensor,
    ) -> tuple[Any, float | torch.Tensor | None]:
        """The scheduler's step (or the flow re-noising step), guided unless ``strength`` is
        None.

        Returns the scheduler output and the strength used (None on a deterministic step).
        """
        if strength is not None:
            mean, std = gaussian_step(
                scheduler, model_output, timestep, sample, kwargs,
                flow_eta=self.options.flow_eta, flow_noise=self.options.flow_noise,
            )
            if not bool(torch.as_tensor(std).any()):  # a deterministic step: nothing to shift
                strength = None
        if strength is not None:
            gradient = self.guidance.gradient(
                scheduler, timestep, sample, sources, self.reward, self.system.reward_prompts,
                strength,
            )
        if self.options.flow_eta is not None:
            previous = flow_renoise_step(
                scheduler, model_output, timestep, sample, self.options.flow_eta,
                self.generator, noise=self.options.flow_noise,
            )
            output = _scheduler_output(previous, kwargs.get("return_dict", True))
        else:
            output = scheduler.step(model_output, timestep, sample, *args, **kwargs)
        if strength is not None:
            output = self._shift(output, mean, std, gradient, step)
        return output, strength

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


def _scheduler_output(previous: torch.Tensor, return_dict: bool) -> Any:
    """What ``scheduler.step`` returns for ``previous``: a SchedulerOutput, or a tuple."""
    if not return_dict:
        return (previous,)
    from diffusers.schedulers.scheduling_utils import SchedulerOutput

    return SchedulerOutput(prev_sample=previous)


def _remaining_steps(scheduler: Any, timestep: Any) -> int:
    """Steps from ``timestep`` (the first the pipeline steps) to the end of the schedule."""
    timesteps = scheduler.timesteps
    begin = getattr(scheduler, "begin_index", None)
    if begin is None:
        matches = (timesteps.to(torch.as_tensor(timestep).device) == timestep).nonzero()
        begin = int(matches[0, 0]) if len(matches) else 0
    return len(timesteps) - int(begin)
