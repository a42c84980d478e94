"""Reward-gradient guidance inside a stock diffusers pipeline: `PipelineGuidance`.

    from fksteer.integrations.diffusers.guidance import PipelineGuidance

With ``FKConfig.guidance`` > 0, `steer_pipeline` moves each particle's next-step mean along
grad_x lambda r(decode(x0_hat(x))) and weights it by the exact density ratio
(:mod:`fksteer.smc.guidance`). The gradient needs the denoiser's output as a function of the
latents, which the pipeline computed under ``no_grad``. So the denoiser is wrapped in a
:class:`~fksteer.integrations.diffusers.proxies.RecordingDenoiser`, and at a guided step its last
call is replayed with the latents replaced by a leaf that requires grad, the way the pipeline
built its input: ``scheduler.scale_model_input`` where the scheduler has one, the batch doubled
for classifier-free guidance (unconditional half first) and recombined with the pipeline's
``guidance_scale``. Every other per-row argument (text embeddings, SD3's per-row timesteps,
SDXL's added conditions) is taken from the recorded call for the particles concerned, following
the ancestors when the step resampled.

Before the first guided step the replay is checked against the output the pipeline itself
computed; a pipeline whose loop builds the denoiser input or combines its output otherwise
(e.g. a guidance rescale, true CFG with a separate negative pass) is refused with an error
rather than guided with a wrong gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from fksteer.integrations.diffusers.proxies import RecordingDenoiser, select_batch_rows
from fksteer.integrations.diffusers.schedulers import clean_prediction
from fksteer.smc.guidance import reward_gradient
from fksteer.smc.protocol import Reward

__all__ = ["PipelineGuidance"]

#: Where pipelines pass the latents to their denoiser (positional argument 0 otherwise).
MODEL_INPUT_NAMES = ("sample", "hidden_states")


class PipelineGuidance:
    """Replays the pipeline's denoiser call with gradients; one per `steer_pipeline` call.

    Args:
        pipe: the pipeline (read for ``guidance_scale``).
        recorder: the RecordingDenoiser installed in place of the pipeline's denoiser.
        denoiser: the module to call with gradients (the recorder's inner module).
        decode: clean latents -> images in [0, 1], differentiable (the intermediate decoder).
        batch_size: particles per backward pass (None: the reward's ``batch_size``, else all).
    """

    def __init__(
        self,
        pipe: Any,
        recorder: RecordingDenoiser,
        denoiser: Any,
        decode: Callable[[torch.Tensor], torch.Tensor],
        batch_size: int | None,
    ) -> None:
        self.pipe = pipe
        self.recorder = recorder
        self.denoiser = denoiser
        self.decode = decode
        self.batch_size = batch_size
        self.checked = False

    def gradient(
        self,
        scheduler: Any,
        timestep: Any,
        sample: torch.Tensor,
        sources: torch.Tensor,
        reward: Reward,
        prompts: Sequence[Any] | None,
        strength: float | torch.Tensor,
    ) -> torch.Tensor:
        """grad of ``strength * r(decode(x0_hat(x)))`` at the (resampled) latents ``sample``.

        ``sources[p]`` is the row of the recorded call that particle p came from (its ancestor
        at this step, or p).
        """

        def clean_of(x: torch.Tensor, rows: slice) -> torch.Tensor:
            output = self._denoise(scheduler, timestep, x, sources[rows], sample.shape[0])
            return clean_prediction(scheduler, output, timestep, x)

        return reward_gradient(
            sample, clean_of, self.decode, reward, prompts, strength, self.batch_size
        )

    def check(
        self, scheduler: Any, timestep: Any, sample: torch.Tensor, model_output: torch.Tensor
    ) -> None:
        """Refuse a pipeline whose denoiser call the replay does not reproduce (first rows)."""
        if self.checked:
            return
        self.checked = True
        rows = torch.arange(min(sample.shape[0], 2))
        with torch.no_grad():
            replayed = self._denoise(scheduler, timestep, sample[rows], rows, sample.shape[0])
        expected = model_output[rows].float()
        tolerance = 1e-3 if model_output.dtype == torch.float32 else 3e-2
        scale = float(expected.abs().max()) + 1e-6
        difference = float((replayed.float() - expected).abs().max())
        if difference > tolerance * scale:
            raise ValueError(
                f"guidance could not reproduce {type(self.pipe).__name__}'s denoiser output from "
                f"its recorded call (max difference {difference:.3g} of {scale:.3g}): this "
                "pipeline's loop builds the model input or combines classifier-free guidance in "
                "a way guidance does not follow. Set FKConfig.guidance=0 for it."
            )

    def _denoise(
        self,
        scheduler: Any,
        timestep: Any,
        x: torch.Tensor,
        sources: torch.Tensor,
        batch: int,
    ) -> torch.Tensor:
        """The denoiser output (after CFG) for latents ``x`` of recorded rows ``sources``."""
        if self.recorder.last_call is None:
            raise ValueError(
                f"{type(self.pipe).__name__} called scheduler.step before its denoiser: "
                "guidance needs the denoiser call of each step."
            )
        args, kwargs = self.recorder.last_call
        position, model_input = _model_input(args, kwargs)
        recorded = model_input.shape[0]
        if recorded not in (batch, 2 * batch):
            raise ValueError(
                f"{type(self.pipe).__name__} called its denoiser on {recorded} rows for {batch} "
                "latents: guidance supports one row per latent, or two with classifier-free "
                "guidance."
            )
        doubled = recorded == 2 * batch
        scale = getattr(scheduler, "scale_model_input", None)
        x_in = x if scale is None else scale(x, timestep)
        index = sources.to(torch.int64)
        if doubled:
            x_in = torch.cat([x_in, x_in])
            index = torch.cat([index, index + batch])
        x_in = x_in.to(model_input.dtype)
        args = select_batch_rows(tuple(args), index, recorded)
        kwargs = {
            name: select_batch_rows(value, index, recorded, name) for name, value in kwargs.items()
        }
        if isinstance(position, int):
            args = (*args[:position], x_in, *args[position + 1 :])
        else:
            kwargs[position] = x_in
        output = self.denoiser(*args, **kwargs)
        output = output[0] if isinstance(output, (tuple, list)) else output.sample
        if doubled:
            unconditional, conditional = output.chunk(2)
            weight = float(getattr(self.pipe, "guidance_scale", 1.0))
            output = unconditional + weight * (conditional - unconditional)
        return output


def _model_input(args: tuple, kwargs: dict) -> tuple[int | str, torch.Tensor]:
    for name in MODEL_INPUT_NAMES:
        if isinstance(kwargs.get(name), torch.Tensor):
            return name, kwargs[name]
    if args and isinstance(args[0], torch.Tensor):
        return 0, args[0]
    raise ValueError("the denoiser's call has no latent input (sample / hidden_states).")
