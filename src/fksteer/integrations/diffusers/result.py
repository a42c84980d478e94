"""What `steer_pipeline` returns: `PipelineSteeringResult`, assembled from the pipeline's output.

    from fksteer.diffusers import PipelineSteeringResult
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch

from fksteer.smc.result import SteeringResult

__all__ = ["PipelineSteeringResult", "to_pil", "output_images", "pipeline_result"]


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


def output_images(output: Any) -> torch.Tensor:
    """The pipeline output's images as float (B, C, H, W), also for pipelines that ignore
    ``output_type="pt"`` and return arrays (B, H, W, C)."""
    images = output.images
    if not isinstance(images, torch.Tensor):
        images = torch.as_tensor(images)
        if images.dim() == 4 and images.shape[-1] in (1, 3, 4):
            images = images.permute(0, 3, 1, 2)
    return images.float()


def pipeline_result(result: SteeringResult, images: torch.Tensor, output: Any) -> (
    PipelineSteeringResult
):
    """The engine's result with the images as G lists of K PIL images and the safety flags."""
    G, K = result.num_groups, result.num_particles
    pil = to_pil(images)
    nsfw = getattr(output, "nsfw_content_detected", None)
    if nsfw is not None:
        nsfw = [list(nsfw[g * K : (g + 1) * K]) for g in range(G)]
    return PipelineSteeringResult(
        **{f.name: getattr(result, f.name) for f in fields(SteeringResult)},
        images=[pil[g * K : (g + 1) * K] for g in range(G)],
        nsfw_content_detected=nsfw,
    )
