"""The embedded class-conditional image models: Fashion-MNIST 16x16, prompt = class name.

    from fksteer.embedded.image_model import load_image_model
    model = load_image_model("weak")                  # a StepModel for fksteer.steer
    result = fksteer.steer(model, reward, config, prompts=["sneaker", "bag"])

Two diffusers ``UNet2DModel`` trained by scripts/train_image_models.py (epsilon prediction,
cosine beta schedule, 1000 training steps, 10% of labels dropped to a null class for
classifier-free guidance): ``"weak"`` (~0.18M parameters) and ``"strong"`` (~0.70M). Sampling
uses classifier-free guidance, eps = eps(x, null) + w (eps(x, y) - eps(x, null)) (Ho & Salimans
2022, eq. 6), evaluated as one doubled batch.

They run without diffusers: :class:`~fksteer.embedded.unet.EmbeddedUNet` and
:mod:`fksteer.embedded.schedulers` mirror diffusers' ``UNet2DModel``, ``DDPMScheduler`` and
``DDIMScheduler`` for these configurations (same weights, same outputs, same noise draws), so
loading a model costs the import of torch alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fksteer.embedded.fashion import CLASS_NAMES
from fksteer.smc.wrapper import ModelWrapper

__all__ = ["GuidedClassUNet", "ClassNameModel", "load_image_model", "IMAGE_MODEL_DIR"]

IMAGE_MODEL_DIR = Path(__file__).resolve().parent / "weights"
NULL_CLASS = len(CLASS_NAMES)
SIZES = ("weak", "strong")


class GuidedClassUNet(nn.Module):
    """A class-conditional UNet with classifier-free guidance, called like the UNet.

    ``guidance_scale`` w = 1 is plain conditional sampling; w = 0 is unconditional.
    """

    def __init__(self, unet: Any, guidance_scale: float, null_class: int = NULL_CLASS):
        super().__init__()
        self.unet = unet
        self.guidance_scale = float(guidance_scale)
        self.null_class = null_class

    @property
    def config(self) -> Any:
        """The wrapped UNet's config."""
        return self.unet.config

    @property
    def device(self) -> torch.device:
        """The wrapped UNet's device."""
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        """The wrapped UNet's dtype."""
        return self.unet.dtype

    def forward(self, sample, timestep, class_labels=None, return_dict: bool = False):
        """The UNet's output, with classifier-free guidance when ``guidance_scale`` is not 1."""
        if class_labels is None or self.guidance_scale == 1.0:
            return self.unet(sample, timestep, class_labels=class_labels, return_dict=return_dict)
        null = torch.full_like(class_labels, self.null_class)
        doubled = self.unet(
            torch.cat([sample, sample]),
            timestep,
            class_labels=torch.cat([class_labels, null]),
            return_dict=False,
        )[0]  # (2B, C, H, W)
        conditional, unconditional = doubled.chunk(2)
        guided = unconditional + self.guidance_scale * (conditional - unconditional)
        return (guided,)


class ClassNameModel(ModelWrapper):
    """A StepModel whose prompts are class names, mapped to the wrapped model's class ids.

    Everything else (including reward-gradient guidance) is the wrapped model's.
    """

    def __init__(self, model: Any, class_names: Sequence[str] = CLASS_NAMES):
        super().__init__(model)
        self.class_names = tuple(class_names)

    def class_id(self, prompt: Any) -> int:
        """The class index of ``prompt`` (a class name, any case, or an index); a ValueError lists
        them."""
        if isinstance(prompt, int) and 0 <= prompt < len(self.class_names):
            return prompt
        if isinstance(prompt, str) and prompt.strip().lower() in self.class_names:
            return self.class_names.index(prompt.strip().lower())
        raise ValueError(
            f"prompt {prompt!r} is not a class of this model: use one of "
            f"{', '.join(self.class_names)}."
        )

    def init(self, prompts, num_particles, generator):
        """Initial noise for each prompt's particles, conditioned on the prompts' classes."""
        if any(prompt is None for prompt in prompts):
            raise ValueError(
                f"this model needs a class name per prompt: one of {', '.join(self.class_names)}."
            )
        ids = [self.class_id(prompt) for prompt in prompts]
        return self.model.init(ids, num_particles, generator)


def load_unet(size: str = "weak", directory: Path = IMAGE_MODEL_DIR) -> Any:
    """The trained UNet (EMA weights) of ``size`` as an
    :class:`~fksteer.embedded.unet.EmbeddedUNet`, in eval mode on the CPU (the same outputs as
    ``diffusers.UNet2DModel.from_pretrained`` of the folder)."""
    from fksteer.embedded.unet import EmbeddedUNet

    if size not in SIZES:
        raise ValueError(f"size={size!r}: choose one of {', '.join(SIZES)}.")
    folder = directory / f"fashion16-{size}"
    if not (folder / "config.json").exists():
        raise FileNotFoundError(
            f"{folder} not found: train it with `python scripts/train_image_models.py --size "
            f"{size}`."
        )
    return EmbeddedUNet.from_pretrained(folder)


def load_image_model(
    size: str = "weak",
    num_inference_steps: int = 50,
    guidance_scale: float = 1.0,
    scheduler: str = "ddpm",
    directory: Path = IMAGE_MODEL_DIR,
    **options: Any,
) -> ClassNameModel:
    """A StepModel over the embedded UNet: prompts are class names (e.g. ``"sneaker"``).

    ``scheduler`` is ``"ddpm"`` (ancestral) or ``"ddim"`` (with eta = 1, stochastic, so that
    resampled particles diverge). ``options`` go to
    :class:`~fksteer.integrations.diffusers.unet.UNetStepModel` (e.g. ``denoiser_batch_size``).
    The model's NFE counts one guided evaluation per particle and step (two UNet passes).
    """
    from fksteer.embedded.schedulers import DDIMScheduler, DDPMScheduler
    from fksteer.integrations.diffusers.unet import UNetStepModel

    unet = load_unet(size, directory)
    folder = directory / f"fashion16-{size}"
    if scheduler == "ddpm":
        noise_scheduler, step_kwargs = DDPMScheduler.from_pretrained(folder), {}
    elif scheduler == "ddim":
        noise_scheduler = DDIMScheduler.from_config(DDPMScheduler.load_config(folder))
        step_kwargs = {"eta": 1.0}
    else:
        raise ValueError(f"scheduler={scheduler!r}: choose 'ddpm' or 'ddim'.")
    model = UNetStepModel(
        GuidedClassUNet(unet, guidance_scale),
        noise_scheduler,
        num_inference_steps,
        step_kwargs=step_kwargs,
        **options,
    )
    return ClassNameModel(model)
