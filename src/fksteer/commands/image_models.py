"""Load what `fksteer sample --model` names: an embedded model, a local folder or a hub id.

    from fksteer.commands.image_models import load_image_runner
    runner = load_image_runner("embedded-weak", steps=50, guidance_scale=1.0, device, dtype)
    result = runner.run(reward, config, prompts, generator, method)   # samples (G, K, C, H, W)

- ``embedded-weak`` / ``embedded-strong``: the embedded Fashion-MNIST models (prompts are class
  names; the default reward is the embedded steering classifier);
- a folder with ``model_index.json``: a diffusers pipeline, run by ``steer_pipeline``;
- a folder with a ``UNet2DModel`` ``config.json``: ``UNetStepModel`` with the folder's scheduler
  (``scheduler_config.json`` or ``scheduler/``; DDPM otherwise); prompts of a class-conditional
  UNet are class ids;
- anything else that does not look like a path: a hub id for ``DiffusionPipeline``.
"""

from __future__ import annotations

import inspect
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "EMBEDDED_IMAGE_MODELS", "ImageRunner", "load_image_runner", "locate_image_model",
    "looks_like_path",
]

logger = logging.getLogger(__name__)

EMBEDDED_IMAGE_MODELS = {"embedded-weak": "weak", "embedded-strong": "strong"}


def looks_like_path(name: str) -> bool:
    """Whether ``name`` was meant as a local path rather than a hub id ``org/name``."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


@dataclass
class ImageRunner:
    """A loaded image model and how to run it; ``kind`` is embedded, pipeline or unet."""

    kind: str
    model: Any
    description: str
    steps: int
    guidance_scale: float

    @property
    def embedded(self) -> bool:
        """Whether the model is one of the embedded Fashion-MNIST models."""
        return self.kind == "embedded"

    def check_prompts(self, prompts: list[Any]) -> list[Any]:
        """Prompts as the model reads them; a ValueError names a bad one."""
        if self.kind == "embedded":
            return [self.model.class_names[self.model.class_id(p)] for p in prompts]
        if self.kind == "unet" and self.model.unet.config.get("num_class_embeds") is not None:
            ids = []
            for prompt in prompts:
                if not str(prompt).isdigit():
                    raise ValueError(
                        f"prompt {prompt!r}: this UNet is class-conditional; pass class ids "
                        f"0 .. {self.model.unet.config.num_class_embeds - 1}."
                    )
                ids.append(int(prompt))
            return ids
        if self.kind == "pipeline" and "prompt" not in self._call_parameters():
            if any(prompt is not None for prompt in prompts):
                logger.warning("%s takes no prompt: running one unconditional group",
                               type(self.model).__name__)
            return [None]
        return list(prompts)

    def _call_parameters(self):
        return inspect.signature(self.model.__call__).parameters

    def run(self, reward, config, prompts, generator, method):
        """Steer ``prompts`` with this model (``steer`` or ``steer_pipeline``) and return the
        result."""
        from fksteer.smc.engine import steer

        if self.kind == "pipeline":
            from fksteer.diffusers import steer_pipeline

            parameters = self._call_parameters()
            kwargs: dict[str, Any] = {"num_inference_steps": self.steps}
            if "prompt" in parameters:
                kwargs["prompt"] = list(prompts)
            if "guidance_scale" in parameters:
                kwargs["guidance_scale"] = self.guidance_scale
            return steer_pipeline(self.model, reward, config, method=method, generator=generator,
                                  **kwargs)
        return steer(self.model, reward, config, prompts=prompts, generator=generator,
                     method=method)


_FIX = ("pass embedded-weak, embedded-strong, a diffusers model id, or a local folder with "
        "model_index.json (a pipeline) or a UNet2DModel config.json")


def locate_image_model(name: str) -> str:
    """What ``--model name`` is, read without loading anything: ``embedded``, ``pipeline``
    (a local folder or a hub id) or ``unet``; ValueError/FileNotFoundError name --model."""
    if name in EMBEDDED_IMAGE_MODELS:
        return "embedded"
    path = Path(name).expanduser()
    if path.is_dir():
        if (path / "model_index.json").is_file():
            return "pipeline"
        config = path / "config.json"
        if config.is_file() and json.loads(config.read_text()).get("_class_name") == "UNet2DModel":
            return "unet"
        raise ValueError(f"--model {name}: the folder has no model_index.json or UNet2DModel "
                         f"config.json; {_FIX}.")
    if path.exists() or looks_like_path(name):
        raise FileNotFoundError(f"--model {name}: no such directory; {_FIX}.")
    return "pipeline"


def load_image_runner(
    name: str, steps: int, guidance_scale: float, device: torch.device, dtype: torch.dtype
) -> ImageRunner:
    """The runner for ``--model name``; ValueError/FileNotFoundError name --model and the fix."""
    kind = locate_image_model(name)
    if kind == "embedded":
        from fksteer.embedded.image_model import load_image_model

        try:
            model = load_image_model(EMBEDDED_IMAGE_MODELS[name], num_inference_steps=steps,
                                     guidance_scale=guidance_scale, progress=True)
        except FileNotFoundError as error:
            raise FileNotFoundError(f"--model {name}: {error}") from None
        model.model.unet.to(device=device, dtype=dtype)
        return ImageRunner("embedded", model, name, steps, guidance_scale)
    path = Path(name).expanduser()
    if kind == "unet":
        return _unet(path, steps, guidance_scale, device, dtype)
    source = str(path) if path.is_dir() else name
    return _pipeline(source, name, steps, guidance_scale, device, dtype)


def _pipeline(source, name, steps, guidance_scale, device, dtype) -> ImageRunner:
    try:
        from diffusers import DiffusionPipeline
    except ImportError:
        raise ImportError(
            "--model: diffusers models need pip install 'fksteer[diffusers]'"
        ) from None
    from fksteer.rewards.hub import WeightsNotFoundError, load_pretrained

    try:  # the local cache first, the hub only when it answers: one message when neither has it
        pipe = load_pretrained(DiffusionPipeline.from_pretrained, source, what=f"--model {name}")
    except WeightsNotFoundError:
        raise
    except Exception as error:  # format errors of what was found: cannot load it
        raise ValueError(
            f"--model {name}: cannot load a diffusers pipeline ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); check the id or path."
        ) from None
    pipe.to(device=device, dtype=dtype)
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(desc="steer")
    return ImageRunner("pipeline", pipe, name, steps, guidance_scale)


def _unet(path: Path, steps, guidance_scale, device, dtype) -> ImageRunner:
    from diffusers import DDPMScheduler, UNet2DModel

    from fksteer.diffusers import UNetStepModel

    unet = UNet2DModel.from_pretrained(path).eval().to(device=device, dtype=dtype)
    scheduler = DDPMScheduler()
    for folder in (path, path / "scheduler", path.parent / "scheduler"):
        if (folder / "scheduler_config.json").is_file():
            scheduler = _scheduler(folder)
            break
    model = UNetStepModel(unet, scheduler, steps, progress=True)
    return ImageRunner("unet", model, str(path), steps, guidance_scale)


def _scheduler(folder: Path) -> Any:
    import diffusers

    config = json.loads((folder / "scheduler_config.json").read_text())
    scheduler_class = getattr(diffusers, config.get("_class_name", "DDPMScheduler"), None)
    if scheduler_class is None:
        scheduler_class = diffusers.DDPMScheduler
    return scheduler_class.from_pretrained(folder)
