"""Steer stock diffusers pipelines and UNets: the public facade of the diffusers integration.

    from fksteer.diffusers import steer_pipeline, DiffusersOptions, UNetStepModel

    result = steer_pipeline(pipe, reward, FKConfig(num_particles=8), prompt=["a cat", "a dog"],
                            num_inference_steps=50, generator=torch.Generator().manual_seed(0))
    result.samples       # (G, K, C, H, W) in [0, 1]
    result.images        # G lists of K PIL images
    result.best_images() # the highest-reward image per prompt

Needs the ``diffusers`` extra (``pip install "fksteer[diffusers]"``). The implementation is the
package :mod:`fksteer.integrations.diffusers`: ``pipeline`` (the entry point), ``arguments``
(the pipeline's keyword arguments for K particles per prompt), ``run`` (the scheduler proxy that
scores, resamples and steps), ``decoding``, ``result``, ``schedulers`` (clean-sample prediction,
per-particle history, Gaussian step kernels, flow re-noising), ``unet`` (a StepModel for
``UNet2DModel``), ``guidance`` (reward-gradient guidance inside a pipeline) and ``proxies`` (the
component stand-ins).
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

try:
    import diffusers as _diffusers  # noqa: F401  (absolute import: the real library)
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "fksteer.diffusers needs diffusers: pip install 'fksteer[diffusers]'"
    ) from error

from fksteer.integrations.diffusers.options import DiffusersOptions
from fksteer.integrations.diffusers.pipeline import steer_pipeline
from fksteer.integrations.diffusers.result import PipelineSteeringResult
from fksteer.integrations.diffusers.schedulers import (
    SUPPORTED_SCHEDULERS,
    DeterministicSamplerWarning,
)
from fksteer.integrations.diffusers.unet import UNetStepModel

__all__ = [
    "steer_pipeline",
    "DiffusersOptions",
    "PipelineSteeringResult",
    "UNetStepModel",
    "DeterministicSamplerWarning",
    "SUPPORTED_SCHEDULERS",
]

#: Names this facade exported until 0.1, now internal: name -> the module that holds it.
_MOVED = {
    "SteeringScheduler": "run",
    "MicroBatchedDenoiser": "proxies",
    "GAUSSIAN_STEP_SCHEDULERS": "schedulers",
    "gaussian_step": "schedulers",
    "scheduler_spec": "schedulers",
    "clean_prediction": "schedulers",
    "permute_scheduler_state": "schedulers",
    "flow_renoise_step": "schedulers",
    "flow_renoise_std": "schedulers",
    "latent_decoder": "decoding",
    "to_pil": "result",
}


def __getattr__(name: str) -> Any:
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module 'fksteer.diffusers' has no attribute {name!r}")
    path = f"fksteer.integrations.diffusers.{module}"
    warnings.warn(
        f"fksteer.diffusers.{name} is deprecated: import it from {path}.",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(path), name)
