"""Steer stock diffusers pipelines and UNets: the public facade of the diffusers integration.

    from fksteer.diffusers import steer_pipeline, DiffusersOptions, UNetStepModel

    result = steer_pipeline(pipe, reward, FKConfig(num_particles=8), prompt=["a cat", "a dog"],
                            num_inference_steps=50, generator=torch.Generator().manual_seed(0))
    result.samples       # (G, K, C, H, W) in [0, 1]
    result.images        # G lists of K PIL images
    result.best_images() # the highest-reward image per prompt

Needs the ``diffusers`` extra (``pip install "fksteer[diffusers]"``). The implementation lives in
``fksteer.integrations.diffusers_pipeline`` (pipelines, by wrapping their scheduler),
``fksteer.integrations.diffusers_unet`` (a StepModel for ``UNet2DModel``) and
``fksteer.integrations.diffusers_schedulers`` (clean-sample prediction, history permutation,
Gaussian step kernels), ``fksteer.integrations.diffusers_guidance`` (reward-gradient guidance
inside a pipeline) and ``fksteer.integrations.diffusers_proxies`` (the component stand-ins).
"""

from __future__ import annotations

try:
    import diffusers as _diffusers  # noqa: F401  (absolute import: the real library)
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "fksteer.diffusers needs diffusers: pip install 'fksteer[diffusers]'"
    ) from error

from fksteer.integrations.diffusers_pipeline import (
    DeterministicSamplerWarning,
    DiffusersOptions,
    MicroBatchedDenoiser,
    PipelineSteeringResult,
    SteeringScheduler,
    latent_decoder,
    steer_pipeline,
    to_pil,
)
from fksteer.integrations.diffusers_schedulers import (
    GAUSSIAN_STEP_SCHEDULERS,
    SUPPORTED_SCHEDULERS,
    clean_prediction,
    flow_renoise_std,
    flow_renoise_step,
    gaussian_step,
    permute_scheduler_state,
    scheduler_spec,
)
from fksteer.integrations.diffusers_unet import UNetStepModel

__all__ = [
    "steer_pipeline",
    "DiffusersOptions",
    "PipelineSteeringResult",
    "UNetStepModel",
    "DeterministicSamplerWarning",
    "SteeringScheduler",
    "MicroBatchedDenoiser",
    "SUPPORTED_SCHEDULERS",
    "GAUSSIAN_STEP_SCHEDULERS",
    "gaussian_step",
    "scheduler_spec",
    "clean_prediction",
    "permute_scheduler_state",
    "flow_renoise_step",
    "flow_renoise_std",
    "latent_decoder",
    "to_pil",
]
