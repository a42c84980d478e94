"""The embedded image models' samplers in plain torch: diffusers' DDPM and DDIM schedulers.

    from fksteer.embedded.schedulers import DDIMScheduler, DDPMScheduler
    scheduler = DDPMScheduler.from_pretrained(folder)    # scheduler_config.json
    scheduler.set_timesteps(50)
    x = scheduler.step(eps, t, x, generator=g).prev_sample

They mirror ``diffusers.DDPMScheduler`` and ``diffusers.DDIMScheduler`` (diffusers 0.42),
operation for operation and with the same noise draws, for the options the embedded models use
and their near neighbours: ``linear``, ``scaled_linear`` and ``squaredcos_cap_v2`` beta
schedules; ``epsilon``, ``sample`` and ``v_prediction``; clipping of the clean prediction; the
``leading``, ``linspace`` and ``trailing`` timestep spacings; the fixed DDPM variances. Other
options (thresholding, learned variances, zero-SNR rescaling, trained betas) are refused with a
ValueError. They carry diffusers' class names on purpose: fksteer's scheduler tables
(:mod:`fksteer.integrations.diffusers.schedulers`) look schedulers up by class name, so these
get exactly the treatment of the diffusers classes (clean prediction, Gaussian step, history).

With ``alpha_bar_t`` the cumulative product of (1 - beta), a DDPM step is the posterior
q(x_{t'} | x_t, x0_hat) (Ho et al. 2020, eqs. 6-7), a DDIM step eq. 12 of Song et al. 2021 with
sigma_t = eta sqrt((1 - abar_t') / (1 - abar_t) (1 - abar_t / abar_t')).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fksteer.embedded.unet import ModelConfig
from fksteer.integrations.diffusers.noise import randn_tensor

__all__ = ["DDPMScheduler", "DDIMScheduler", "SchedulerOutput", "betas_for_alpha_bar"]

_COMMON = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "trained_betas": None,
    "clip_sample": True,
    "prediction_type": "epsilon",
    "thresholding": False,
    "dynamic_thresholding_ratio": 0.995,
    "clip_sample_range": 1.0,
    "sample_max_value": 1.0,
    "timestep_spacing": "leading",
    "steps_offset": 0,
    "rescale_betas_zero_snr": False,
}
_REFUSED = {"trained_betas": None, "thresholding": False, "rescale_betas_zero_snr": False}


@dataclass
class SchedulerOutput:
    """A step's result: the next sample and the clean prediction it used."""

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor


def betas_for_alpha_bar(num_steps: int, max_beta: float = 0.999) -> torch.Tensor:
    """The cosine schedule's betas: beta_i = min(1 - abar((i+1)/T) / abar(i/T), max_beta) with
    abar(t) = cos((t + 0.008) / 1.008 * pi / 2)^2 (Nichol & Dhariwal 2021, eq. 17)."""

    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [
        min(1 - alpha_bar((i + 1) / num_steps) / alpha_bar(i / num_steps), max_beta)
        for i in range(num_steps)
    ]
    return torch.tensor(betas, dtype=torch.float32)


def _betas(config: ModelConfig) -> torch.Tensor:
    steps, schedule = config.num_train_timesteps, config.beta_schedule
    if schedule == "linear":
        return torch.linspace(config.beta_start, config.beta_end, steps, dtype=torch.float32)
    if schedule == "scaled_linear":
        return (
            torch.linspace(config.beta_start**0.5, config.beta_end**0.5, steps, dtype=torch.float32)
            ** 2
        )
    if schedule == "squaredcos_cap_v2":
        return betas_for_alpha_bar(steps)
    raise ValueError(f"beta_schedule={schedule!r} is not implemented here: use diffusers.")


class _VPScheduler:
    """What the two schedulers share: configuration, the noise schedule, the timesteps."""

    _DEFAULTS: dict[str, Any] = _COMMON
    order = 1
    init_noise_sigma = 1.0

    def __init__(self, **config: Any):
        unknown = set(config) - set(self._DEFAULTS)
        config = {**self._DEFAULTS, **{k: v for k, v in config.items() if k not in unknown}}
        for key, value in _REFUSED.items():
            if config[key] != value:
                raise ValueError(
                    f"{type(self).__name__}: {key}={config[key]!r} is not "
                    "implemented here; use the diffusers scheduler."
                )
        self.config = ModelConfig({"_class_name": type(self).__name__, **config})
        self.betas = _betas(self.config)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.num_inference_steps = None
        self.timesteps = torch.arange(config["num_train_timesteps"] - 1, -1, -1)

    @classmethod
    def from_config(cls, config: dict, **overrides: Any):
        """A scheduler of ``config`` (keys it does not know are ignored)."""
        return cls(**{k: v for k, v in {**config, **overrides}.items() if not k.startswith("_")})

    @staticmethod
    def load_config(folder: str | Path) -> dict:
        """The configuration in ``folder``'s ``scheduler_config.json``."""
        return json.loads((Path(folder) / "scheduler_config.json").read_text())

    @classmethod
    def from_pretrained(cls, folder: str | Path):
        """The scheduler of ``folder``'s ``scheduler_config.json``."""
        return cls.from_config(cls.load_config(folder))

    def scale_model_input(self, sample: torch.Tensor, timestep: Any = None) -> torch.Tensor:
        """The model reads x_t unscaled."""
        return sample

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None):
        """``num_inference_steps`` timesteps, descending, spaced as ``timestep_spacing`` says."""
        train = self.config.num_train_timesteps
        if num_inference_steps > train:
            raise ValueError(
                f"`num_inference_steps`: {num_inference_steps} cannot be larger "
                f"than `self.config.train_timesteps`: {train}."
            )
        self.num_inference_steps = num_inference_steps
        spacing = self.config.timestep_spacing
        if spacing == "linspace":
            timesteps = np.linspace(0, train - 1, num_inference_steps).round()[::-1].copy()
        elif spacing == "leading":
            step_ratio = train // num_inference_steps
            timesteps = (np.arange(0, num_inference_steps) * step_ratio).round()[::-1].copy()
            timesteps = timesteps.astype(np.int64) + self.config.steps_offset
        elif spacing == "trailing":
            step_ratio = train / num_inference_steps
            timesteps = np.round(np.arange(train, 0, -step_ratio)).astype(np.int64) - 1
        else:
            raise ValueError(
                f"timestep_spacing={spacing!r} is not supported: choose 'linspace', "
                "'leading' or 'trailing'."
            )
        timesteps = torch.from_numpy(timesteps.astype(np.int64))
        self.timesteps = timesteps.to(device)

    def _clean(self, model_output, sample, alpha_prod_t, beta_prod_t) -> torch.Tensor:
        """x0_hat of the model output (before clipping): x_t = sqrt(abar) x0 + sqrt(1 - abar) eps,
        v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022)."""
        kind = self.config.prediction_type
        if kind == "epsilon":
            return (sample - beta_prod_t ** (0.5) * model_output) / alpha_prod_t ** (0.5)
        if kind == "sample":
            return model_output
        if kind == "v_prediction":
            return (alpha_prod_t**0.5) * sample - (beta_prod_t**0.5) * model_output
        raise ValueError(f"prediction_type={kind!r}: choose epsilon, sample or v_prediction.")

    def _clip(self, clean: torch.Tensor) -> torch.Tensor:
        """x0_hat clipped to [-clip_sample_range, clip_sample_range] when ``clip_sample``."""
        if self.config.clip_sample:
            bound = self.config.clip_sample_range
            return clean.clamp(-bound, bound)
        return clean

    def __len__(self) -> int:
        """The number of training timesteps."""
        return self.config.num_train_timesteps


class DDPMScheduler(_VPScheduler):
    """Ancestral sampling (Ho et al. 2020), as ``diffusers.DDPMScheduler``."""

    _DEFAULTS = {**_COMMON, "variance_type": "fixed_small"}

    def __init__(self, **config: Any):
        super().__init__(**config)
        self.variance_type = self.config.variance_type
        if self.variance_type not in ("fixed_small", "fixed_small_log", "fixed_large"):
            raise ValueError(
                f"DDPMScheduler: variance_type={self.variance_type!r} is not "
                "implemented here; use the diffusers scheduler."
            )
        self.one = torch.tensor(1.0)
        self.custom_timesteps = False

    def previous_timestep(self, timestep: Any) -> Any:
        """The timestep after ``timestep`` in the sampling order (-1 after the last)."""
        if self.num_inference_steps:
            index = (self.timesteps == timestep).nonzero(as_tuple=True)[0][0]
            if index == self.timesteps.shape[0] - 1:
                return torch.tensor(-1)
            return self.timesteps[index + 1]
        return timestep - 1

    def _get_variance(self, t: Any) -> torch.Tensor:
        """The step's variance (its standard deviation for ``fixed_small_log``)."""
        prev_t = self.previous_timestep(t)
        alpha_prod_t = self.alphas_cumprod[t]
        alpha_prod_t_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.one
        current_beta_t = 1 - alpha_prod_t / alpha_prod_t_prev
        # beta~_t = (1 - abar_{t'}) / (1 - abar_t) beta_t, the posterior variance (eq. 7)
        variance = torch.clamp(
            (1 - alpha_prod_t_prev) / (1 - alpha_prod_t) * current_beta_t, min=1e-20
        )
        if self.config.variance_type == "fixed_small_log":
            return torch.exp(0.5 * torch.log(variance))
        if self.config.variance_type == "fixed_large":
            return current_beta_t
        return variance

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ):
        """x_{t'} ~ N(c0 x0_hat + ct x_t, variance) (Ho et al. 2020, eq. 7); no noise at t = 0."""
        t = timestep
        prev_t = self.previous_timestep(t)
        alpha_prod_t = self.alphas_cumprod[t]
        alpha_prod_t_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.one
        beta_prod_t = 1 - alpha_prod_t
        beta_prod_t_prev = 1 - alpha_prod_t_prev
        current_alpha_t = alpha_prod_t / alpha_prod_t_prev
        current_beta_t = 1 - current_alpha_t
        clean = self._clip(self._clean(model_output, sample, alpha_prod_t, beta_prod_t))
        clean_coeff = (alpha_prod_t_prev ** (0.5) * current_beta_t) / beta_prod_t
        sample_coeff = current_alpha_t ** (0.5) * beta_prod_t_prev / beta_prod_t
        prev_sample = clean_coeff * clean + sample_coeff * sample
        variance = 0
        if t > 0:
            noise = randn_tensor(
                model_output.shape,
                generator=generator,
                device=model_output.device,
                dtype=model_output.dtype,
            )
            if self.variance_type == "fixed_small_log":
                variance = self._get_variance(t) * noise
            else:
                variance = (self._get_variance(t) ** 0.5) * noise
        prev_sample = prev_sample + variance
        if not return_dict:
            return (prev_sample, clean)
        return SchedulerOutput(prev_sample=prev_sample, pred_original_sample=clean)


class DDIMScheduler(_VPScheduler):
    """DDIM (Song et al. 2021), stochastic for eta > 0, as ``diffusers.DDIMScheduler``."""

    _DEFAULTS = {**_COMMON, "set_alpha_to_one": True}

    def __init__(self, **config: Any):
        super().__init__(**config)
        self.final_alpha_cumprod = (
            torch.tensor(1.0) if self.config.set_alpha_to_one else self.alphas_cumprod[0]
        )

    def _get_variance(self, timestep: Any, prev_timestep: Any) -> torch.Tensor:
        """(1 - abar_t') / (1 - abar_t) (1 - abar_t / abar_t'): sigma_t^2 at eta = 1."""
        alpha_prod_t = self.alphas_cumprod[timestep]
        alpha_prod_t_prev = (
            self.alphas_cumprod[prev_timestep] if prev_timestep >= 0 else self.final_alpha_cumprod
        )
        beta_prod_t = 1 - alpha_prod_t
        beta_prod_t_prev = 1 - alpha_prod_t_prev
        return (beta_prod_t_prev / beta_prod_t) * (1 - alpha_prod_t / alpha_prod_t_prev)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        eta: float = 0.0,
        use_clipped_model_output: bool = False,
        generator: torch.Generator | None = None,
        variance_noise: Any = None,
        return_dict: bool = True,
    ):
        """x_{t'} = sqrt(abar_t') x0_hat + sqrt(1 - abar_t' - sigma_t^2) eps_hat + sigma_t z."""
        if self.num_inference_steps is None:
            raise ValueError(
                "Number of inference steps is 'None', you need to run "
                "'set_timesteps' after creating the scheduler"
            )
        prev_timestep = timestep - self.config.num_train_timesteps // self.num_inference_steps
        alpha_prod_t = self.alphas_cumprod[timestep]
        alpha_prod_t_prev = (
            self.alphas_cumprod[prev_timestep] if prev_timestep >= 0 else self.final_alpha_cumprod
        )
        beta_prod_t = 1 - alpha_prod_t
        clean = self._clean(model_output, sample, alpha_prod_t, beta_prod_t)
        kind = self.config.prediction_type  # eps_hat from the unclipped x0_hat
        if kind == "epsilon":
            epsilon = model_output
        elif kind == "sample":
            epsilon = (sample - alpha_prod_t ** (0.5) * clean) / beta_prod_t ** (0.5)
        else:  # v_prediction
            epsilon = (alpha_prod_t**0.5) * model_output + (beta_prod_t**0.5) * sample
        clean = self._clip(clean)
        std_dev_t = eta * self._get_variance(timestep, prev_timestep) ** (0.5)
        if use_clipped_model_output:
            epsilon = (sample - alpha_prod_t ** (0.5) * clean) / beta_prod_t ** (0.5)
        direction = (1 - alpha_prod_t_prev - std_dev_t**2) ** (0.5) * epsilon
        prev_sample = alpha_prod_t_prev ** (0.5) * clean + direction
        if eta > 0:
            if variance_noise is not None and generator is not None:
                raise ValueError("Cannot pass both generator and variance_noise.")
            if variance_noise is None:
                variance_noise = randn_tensor(
                    model_output.shape,
                    generator=generator,
                    device=model_output.device,
                    dtype=model_output.dtype,
                )
            prev_sample = prev_sample + std_dev_t * variance_noise
        if not return_dict:
            return (prev_sample, clean)
        return SchedulerOutput(prev_sample=prev_sample, pred_original_sample=clean)
