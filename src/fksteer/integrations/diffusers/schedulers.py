"""diffusers schedulers seen by the FK engine: clean-sample prediction, history permutation, noise.

    from fksteer.integrations.diffusers.schedulers import (
        scheduler_spec, clean_prediction, permute_scheduler_state, deterministic_reason,
        flow_renoise_step, gaussian_step, SUPPORTED_SCHEDULERS, GAUSSIAN_STEP_SCHEDULERS,
    )

Steering needs three things from a scheduler beyond its own ``step``:

1. the clean-sample prediction x0_hat = E[x_0 | x_t] implied by the model output at the current
   step, which the reward scores. It depends on how the scheduler writes x_t (its "space") and on
   what the model predicts (``prediction_type``):

   - ``vp_discrete`` (DDPM, DDIM, PNDM, LCM, TCD): x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps
     with abar_t = ``alphas_cumprod[t]`` (Ho et al. 2020, eq. 4);
   - ``vp_sigma`` (DPM-Solver(++) multistep and singlestep, UniPC, DEIS): x_t = alpha_t x_0 +
     sigma_t eps with (alpha_t, sigma_t) from the scheduler's ``sigmas[step_index]`` (Lu et al.
     2022, eq. 2.1; flow sigmas give alpha_t = 1 - sigma_t);
   - ``karras`` (Euler, Euler ancestral, Heun, LMS, KDPM2, KDPM2 ancestral): x = x_0 + sigma eps,
     the model reading x / sqrt(sigma^2 + 1) (Karras et al. 2022, table 1). sigma is read back
     from the scheduler's own ``scale_model_input``, so two-stage schedulers (Heun, KDPM2) get
     the sigma at which the model was actually evaluated;
   - ``flow`` (flow-matching Euler and Heun): x_t = (1 - t) x_0 + t eps, the model predicting the
     velocity v = eps - x_0 (Lipman et al. 2023; Esser et al. 2024), so x0_hat = x_t - t v.

   Then epsilon: x0 = (x_t - sigma_t eps) / alpha_t; v: x0 = alpha_t x_t - sigma_t v (Salimans &
   Ho 2022); sample: x0 = output; flow: x0 = x_t - sigma_t v.

   The prediction only feeds intermediate potentials, which may be any positive function of the
   state without changing the target (the final potential scores the exact final sample): an
   approximate x0_hat costs efficiency, never correctness.

2. every per-particle tensor the scheduler keeps between steps (its "history": DPM-Solver's
   ``model_outputs``, UniPC's ``last_sample``, PNDM's ``ets``, LMS's ``derivatives``, Heun's
   ``prev_derivative`` and ``sample``...), so that a resampled particle continues exactly as its
   ancestor would have. Schedulers are listed explicitly; an unknown scheduler is refused with an
   error naming the supported ones, rather than risking a history left unpermuted.

3. whether the sampler is deterministic after its first draw (DDIM eta=0, Euler with
   s_churn=0, the ODE solvers, flow-matching Euler): then resampled copies stay identical
   forever and steering degenerates into picking among the initial draws. ``deterministic_reason``
   says so and names the stochastic alternative; ``flow_renoise_step`` is the stochastic option
   for flow models.

Reward-gradient guidance (``FKConfig.guidance``) also needs, for the schedulers whose step is
Gaussian given the current sample (:data:`GAUSSIAN_STEP_SCHEDULERS`), that step's mean and
standard deviation: :func:`gaussian_step`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from fksteer.smc.rows import select_rows

__all__ = [
    "SchedulerSpec",
    "SUPPORTED_SCHEDULERS",
    "scheduler_spec",
    "clean_prediction",
    "permute_scheduler_state",
    "scheduler_rows",
    "with_scheduler_rows",
    "deterministic_reason",
    "DeterministicSamplerWarning",
    "flow_renoise_step",
    "flow_renoise_std",
    "FLOW_NOISE",
    "ensure_step_index",
    "gaussian_step",
    "GAUSSIAN_STEP_SCHEDULERS",
]

SPACES = ("vp_discrete", "vp_sigma", "karras", "flow")


@dataclass(frozen=True)
class SchedulerSpec:
    """How the engine treats one scheduler class.

    Attributes:
        space: how x_t is written (see the module docstring): ``"vp_discrete"``, ``"vp_sigma"``,
            ``"karras"`` or ``"flow"``.
        history: names of attributes that hold per-particle tensors (or lists of them) between
            steps; they are reordered with the particles.
        deterministic: ``(scheduler, step_kwargs) -> reason or None``: why the chain is
            deterministic after its first draw, with the stochastic alternative, or None.
    """

    space: str
    history: tuple[str, ...]
    deterministic: Callable[[Any, Mapping[str, Any]], str | None]


def _never(scheduler: Any, step_kwargs: Mapping[str, Any]) -> str | None:
    return None


def _always(alternative: str) -> Callable[[Any, Mapping[str, Any]], str | None]:
    def reason(scheduler: Any, step_kwargs: Mapping[str, Any]) -> str | None:
        return f"{type(scheduler).__name__} is an ODE solver (no noise after the first draw); " + (
            alternative
        )

    return reason


def _ddim(scheduler: Any, step_kwargs: Mapping[str, Any]) -> str | None:
    if float(step_kwargs.get("eta", 0.0) or 0.0) == 0.0:
        return (
            "DDIMScheduler with eta=0 is deterministic; pass eta=1.0 (the pipeline's `eta` "
            "argument) for DDPM-like ancestral sampling."
        )
    return None


def _euler(scheduler: Any, step_kwargs: Mapping[str, Any]) -> str | None:
    if float(step_kwargs.get("s_churn", 0.0) or 0.0) == 0.0:
        return (
            "EulerDiscreteScheduler with s_churn=0 is deterministic; use "
            "EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)."
        )
    return None


def _dpm(scheduler: Any, step_kwargs: Mapping[str, Any]) -> str | None:
    if not str(scheduler.config.algorithm_type).startswith("sde-"):
        name = type(scheduler).__name__
        return (
            f"{name} with algorithm_type={scheduler.config.algorithm_type!r} is deterministic; "
            f"use {name}.from_config(pipe.scheduler.config, algorithm_type='sde-dpmsolver++')."
        )
    return None


def _tcd(scheduler: Any, step_kwargs: Mapping[str, Any]) -> str | None:
    if float(step_kwargs.get("eta", 0.3) or 0.0) == 0.0:
        return "TCDScheduler with eta=0 is deterministic; pass eta > 0 (e.g. the default 0.3)."
    return None


def _flow_euler(scheduler: Any, step_kwargs: Mapping[str, Any]) -> str | None:
    if not scheduler.config.get("stochastic_sampling", False):
        return (
            "FlowMatchEulerDiscreteScheduler integrates the flow ODE (no noise after the first "
            "draw); pass options=DiffusersOptions(flow_eta=1.0) for the DDIM-style "
            "re-noising step (eta = 1: the ancestral sampler; its base law is not the ODE's)."
        )
    return None


_ODE_VP = _always(
    "use DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, "
    "algorithm_type='sde-dpmsolver++') or EulerAncestralDiscreteScheduler."
)
_ODE_FLOW = _always(
    "use FlowMatchEulerDiscreteScheduler with options=DiffusersOptions(flow_eta=1.0)."
)

#: Scheduler class name -> how it is treated. Subclasses inherit their parent's entry.
SUPPORTED_SCHEDULERS: dict[str, SchedulerSpec] = {
    "DDPMScheduler": SchedulerSpec("vp_discrete", (), _never),
    "DDIMScheduler": SchedulerSpec("vp_discrete", (), _ddim),
    "PNDMScheduler": SchedulerSpec(
        "vp_discrete", ("ets", "cur_sample", "cur_model_output"), _ODE_VP
    ),
    "LCMScheduler": SchedulerSpec("vp_discrete", (), _never),
    "TCDScheduler": SchedulerSpec("vp_discrete", (), _tcd),
    "DPMSolverMultistepScheduler": SchedulerSpec("vp_sigma", ("model_outputs",), _dpm),
    "DPMSolverSinglestepScheduler": SchedulerSpec(
        "vp_sigma", ("model_outputs", "sample"), _dpm
    ),
    "UniPCMultistepScheduler": SchedulerSpec(
        "vp_sigma", ("model_outputs", "last_sample"), _ODE_VP
    ),
    "DEISMultistepScheduler": SchedulerSpec("vp_sigma", ("model_outputs",), _ODE_VP),
    "EulerDiscreteScheduler": SchedulerSpec("karras", (), _euler),
    "EulerAncestralDiscreteScheduler": SchedulerSpec("karras", (), _never),
    "HeunDiscreteScheduler": SchedulerSpec("karras", ("prev_derivative", "sample"), _ODE_VP),
    "LMSDiscreteScheduler": SchedulerSpec("karras", ("derivatives",), _ODE_VP),
    "KDPM2DiscreteScheduler": SchedulerSpec("karras", ("sample",), _ODE_VP),
    "KDPM2AncestralDiscreteScheduler": SchedulerSpec("karras", ("sample",), _never),
    "FlowMatchEulerDiscreteScheduler": SchedulerSpec("flow", (), _flow_euler),
    "FlowMatchHeunDiscreteScheduler": SchedulerSpec(
        "flow", ("prev_derivative", "sample"), _ODE_FLOW
    ),
}


def scheduler_spec(scheduler: Any) -> SchedulerSpec:
    """The :class:`SchedulerSpec` of ``scheduler`` (looked up along its class hierarchy).

    Raises:
        ValueError: the scheduler is not supported; the message lists the supported ones.
    """
    for cls in type(scheduler).__mro__:
        spec = SUPPORTED_SCHEDULERS.get(cls.__name__)
        if spec is not None:
            return spec
    name = type(scheduler).__name__
    hint = ""
    if name == "DPMSolverSDEScheduler":
        hint = (
            " Its Brownian-tree noise is drawn for the whole batch at once; use "
            "DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, "
            "algorithm_type='sde-dpmsolver++') instead."
        )
    raise ValueError(
        f"scheduler {name} is not supported by fksteer: steering must know its per-sample "
        f"history to resample particles.{hint} Supported: {', '.join(SUPPORTED_SCHEDULERS)}; "
        "switch with e.g. pipe.scheduler = DDPMScheduler.from_config(pipe.scheduler.config)."
    )


def _prediction_type(scheduler: Any, spec: SchedulerSpec) -> str:
    prediction_type = scheduler.config.get("prediction_type", None)
    if prediction_type is None:
        return "flow_prediction" if spec.space == "flow" else "epsilon"
    return str(prediction_type)


def ensure_step_index(scheduler: Any, timestep: Any) -> None:
    """Initialise the step index the way the scheduler's own ``step`` would, if not yet done.

    Index-based schedulers set ``step_index`` from the timestep on their first ``step`` (or
    ``scale_model_input``) call; the clean prediction needs it one moment earlier. Doing it here
    is exactly what the inner ``step`` would do, so sampling is unchanged.
    """
    if getattr(scheduler, "step_index", 0) is None and hasattr(scheduler, "_init_step_index"):
        scheduler._init_step_index(timestep)


def _karras_sigma(scheduler: Any, timestep: Any, like: torch.Tensor) -> float:
    """sigma at which the model was evaluated, read back from ``scale_model_input``.

    The scheduler scales the model input by c = 1 / sqrt(sigma^2 + 1), so sigma =
    sqrt(1 / c^2 - 1); this follows each scheduler's own choice of sigma (Heun and KDPM2 use a
    different one in their second stage).
    """
    probe = torch.ones(1, dtype=torch.float64, device=like.device)
    scale = float(scheduler.scale_model_input(probe, timestep).reshape(-1)[0])
    return math.sqrt(max(1.0 / (scale * scale) - 1.0, 0.0))


def _alpha_sigma(scheduler: Any, spec: SchedulerSpec, timestep: Any, sample: torch.Tensor):
    """(alpha_t, sigma_t, input_scale): x_model = input_scale * x = alpha_t x0 + sigma_t eps."""
    if spec.space == "vp_discrete":
        t = int(timestep.reshape(-1)[0]) if isinstance(timestep, torch.Tensor) else int(timestep)
        alpha_bar = float(scheduler.alphas_cumprod[t])
        return math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar), 1.0
    if spec.space == "karras":
        sigma = _karras_sigma(scheduler, timestep, sample)
        scale = 1.0 / math.sqrt(sigma * sigma + 1.0)
        return scale, sigma * scale, scale
    ensure_step_index(scheduler, timestep)
    sigma = scheduler.sigmas[scheduler.step_index]
    if spec.space == "flow":
        sigma = float(sigma)
        return 1.0 - sigma, sigma, 1.0
    alpha_t, sigma_t = scheduler._sigma_to_alpha_sigma_t(sigma)  # vp_sigma
    return float(alpha_t), float(sigma_t), 1.0


def clean_prediction(
    scheduler: Any, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor
) -> torch.Tensor:
    """E[x_0 | x_t] implied by ``model_output`` at ``timestep`` for the current ``sample``.

    Clipped or thresholded as the scheduler's own step does (``clip_sample``, ``thresholding``).
    Computed in float32 (float64 for float64 inputs) and returned in ``sample``'s dtype, with
    ``sample``'s shape. Does not change the scheduler's state beyond what its own next ``step``
    would (step-index initialisation). Differentiable in ``model_output`` and ``sample`` (for
    guidance); callers that need no gradient run it under ``torch.no_grad``.
    """
    spec = scheduler_spec(scheduler)
    prediction_type = _prediction_type(scheduler, spec)
    alpha, sigma, scale = _alpha_sigma(scheduler, spec, timestep, sample)
    dtype = torch.promote_types(sample.dtype, torch.float32)
    x = sample.to(dtype) * scale  # what the model read (up to the model's own input scaling)
    out = model_output.to(dtype)
    if prediction_type == "epsilon":
        if alpha == 0.0:
            raise ValueError(
                f"{type(scheduler).__name__}: an epsilon prediction at alpha_t = 0 (terminal "
                "SNR zero) does not determine x_0; use v_prediction with zero-SNR schedules."
            )
        clean = (x - sigma * out) / alpha
    elif prediction_type == "v_prediction":
        clean = alpha * x - sigma * out
    elif prediction_type in ("sample", "original_sample"):
        clean = out
    elif prediction_type == "flow_prediction":
        clean = x - sigma * out
    else:
        raise ValueError(
            f"{type(scheduler).__name__}.config.prediction_type={prediction_type!r} is not "
            "supported: fksteer knows epsilon, v_prediction, sample and flow_prediction."
        )
    config = scheduler.config
    if config.get("thresholding", False) and hasattr(scheduler, "_threshold_sample"):
        clean = scheduler._threshold_sample(clean)
    elif config.get("clip_sample", False):  # as the scheduler's own step clips it
        bound = float(config.get("clip_sample_range", 1.0))
        clean = clean.clamp(-bound, bound)
    return clean.to(sample.dtype)


def scheduler_rows(scheduler: Any, batch: int) -> dict[str, Any]:
    """The per-particle rows of the scheduler's history, by attribute name.

    ``batch`` is the number of particles (G*K): only tensors with that leading length are
    particle rows; anything else in the history (None placeholders, scalars, global buffers)
    becomes None here and is left alone by :func:`with_scheduler_rows`.
    """
    return {
        name: _per_particle(getattr(scheduler, name), batch)
        for name in scheduler_spec(scheduler).history
        if hasattr(scheduler, name)
    }


def with_scheduler_rows(scheduler: Any, rows: dict[str, Any]) -> None:
    """Write rows read by :func:`scheduler_rows` (reordered, or received) back into the history."""
    for name, value in rows.items():
        setattr(scheduler, name, _merge(getattr(scheduler, name), value))


def permute_scheduler_state(scheduler: Any, ancestors: torch.Tensor, batch: int) -> None:
    """Reorder the scheduler's per-particle history in place: particle p takes ancestors[p]'s."""
    rows = scheduler_rows(scheduler, batch)
    with_scheduler_rows(scheduler, select_rows(rows, ancestors))


def _per_particle(value: Any, batch: int) -> Any:
    """The per-particle tensors of a history value (lists and tuples kept; others None)."""
    if isinstance(value, torch.Tensor):
        return value if value.dim() > 0 and value.shape[0] == batch else None
    if isinstance(value, (list, tuple)):
        return type(value)(_per_particle(item, batch) for item in value)
    return None


def _merge(old: Any, new: Any) -> Any:
    """``old`` with its per-particle tensors replaced by ``new`` (None in ``new``: keep old)."""
    if new is None:
        return old
    if isinstance(new, torch.Tensor):
        return new
    return type(old)(_merge(o, n) for o, n in zip(old, new, strict=True))


class DeterministicSamplerWarning(UserWarning):
    """The sampler draws no noise after its first draw: resampled copies stay identical."""


def deterministic_reason(scheduler: Any, step_kwargs: Mapping[str, Any]) -> str | None:
    """Why the scheduler (with these ``step`` arguments) draws no noise after the start, or None."""
    return scheduler_spec(scheduler).deterministic(scheduler, step_kwargs)


#: Noise conventions of :func:`flow_renoise_step`.
FLOW_NOISE = ("ddpm", "fraction")


def flow_renoise_std(t: float, s: float, eta: float, noise: str = "ddpm") -> float:
    """Standard deviation of the fresh noise in one re-noising step from flow time t to s < t.

    ``"ddpm"``: eta times the DDPM posterior std of x_s given (x_t, x_0) on the path
    x_t = (1 - t) x_0 + t eps, sigma^2 = s^2 (1 - ((1 - t) s / ((1 - s) t))^2) (Ho et al. 2020,
    eq. 7, for a general Gaussian path): eta = 1 is the ancestral (reverse-SDE) step, which
    converges to the model's law as the steps shrink. ``"fraction"``: eta * s, the
    parameterisation x_s = (1 - s) x0_hat + s (sqrt(1 - eta^2) eps_hat + eta z) (diffusers'
    ``stochastic_sampling`` at eta = 1); for eta near 1 it re-noises far more than the posterior
    allows and, with the posterior mean x0_hat in place of x_0, shrinks the spread of the samples
    whatever the number of steps (see benchmarks/flow_renoise_quality.py).
    """
    if noise not in FLOW_NOISE:
        raise ValueError(f"flow noise={noise!r} is unknown: choose one of {', '.join(FLOW_NOISE)}.")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"flow_eta={eta!r} must lie in [0, 1].")
    if noise == "fraction" or s <= 0.0:
        return eta * s
    ratio = (1.0 - t) * s / ((1.0 - s) * t)
    return eta * s * math.sqrt(max(1.0 - ratio * ratio, 0.0))


def _flow_renoise_kernel(
    scheduler: Any,
    model_output: torch.Tensor,
    timestep: Any,
    sample: torch.Tensor,
    eta: float,
    noise: str,
) -> tuple[torch.Tensor, float]:
    """(mean, std) in float32 of the re-noising step of :func:`flow_renoise_step`."""
    ensure_step_index(scheduler, timestep)
    index = scheduler.step_index
    t = float(scheduler.sigmas[index])
    s = float(scheduler.sigmas[index + 1])
    sigma = flow_renoise_std(t, s, eta, noise)
    x = sample.float()
    v = model_output.float()
    clean = x - t * v
    noise_hat = x + (1.0 - t) * v
    mean = (1.0 - s) * clean + math.sqrt(max(s * s - sigma * sigma, 0.0)) * noise_hat
    return mean, sigma


@torch.no_grad()
def flow_renoise_step(
    scheduler: Any,
    model_output: torch.Tensor,
    timestep: Any,
    sample: torch.Tensor,
    eta: float,
    generator: Any,
    noise: str = "ddpm",
) -> torch.Tensor:
    """One DDIM-style stochastic step of a flow-matching Euler scheduler.

    With x_t = (1 - t) x_0 + t eps and the velocity v = eps - x_0, the predictions are
    x0_hat = x_t - t v and eps_hat = x_t + (1 - t) v, and the next state is

        x_s = (1 - s) x0_hat + sqrt(s^2 - sigma^2) eps_hat + sigma z,    z ~ N(0, I),

    Gaussian given x_t with variance sigma^2, sigma = :func:`flow_renoise_std` (t, s, eta,
    noise) (Song et al. 2021, DDIM eq. 12, in flow coordinates). eta = 0 is the scheduler's Euler
    ODE step exactly. For eta > 0 the base law is not the ODE's: with ``noise="ddpm"`` and
    eta = 1 it is the ancestral sampler of the same model (another discretisation of the same
    law); ``noise="fraction"`` is the parameterisation
    x_s = (1 - s) x0_hat + s (sqrt(1 - eta^2) eps_hat + eta z). ``z`` comes from ``generator``
    (the pipeline's). The scheduler's step index advances as its own ``step`` would.
    """
    from diffusers.utils.torch_utils import randn_tensor

    mean, sigma = _flow_renoise_kernel(scheduler, model_output, timestep, sample, eta, noise)
    z = randn_tensor(mean.shape, generator=generator, device=mean.device, dtype=torch.float32)
    scheduler._step_index += 1
    return (mean + sigma * z).to(model_output.dtype)


#: Schedulers whose step draws the next sample from a Gaussian given the current one, and how
#: :func:`gaussian_step` gets its mean. FlowMatchEulerDiscreteScheduler qualifies only with the
#: re-noising step (``flow_eta``).
GAUSSIAN_STEP_SCHEDULERS = (
    "DDPMScheduler",
    "DDIMScheduler",
    "EulerAncestralDiscreteScheduler",
    "FlowMatchEulerDiscreteScheduler",
)


def gaussian_step(
    scheduler: Any,
    model_output: torch.Tensor,
    timestep: Any,
    sample: torch.Tensor,
    step_kwargs: Mapping[str, Any] | None = None,
    *,
    flow_eta: float | None = None,
    flow_noise: str = "ddpm",
) -> tuple[torch.Tensor, torch.Tensor | float]:
    """(mean, std) of the next sample drawn by ``scheduler.step``: x_prev = mean + std z.

    ``step_kwargs`` are the arguments given to ``scheduler.step`` (DDIM reads ``eta`` and
    ``use_clipped_model_output``); ``flow_eta`` and ``flow_noise`` select the re-noising step of
    :func:`flow_renoise_step`. The mean (float32) is the step's own arithmetic without the noise
    term:

    - DDPM: the posterior mean c_0 x0_hat + c_t x_t (Ho et al. 2020, eq. 7), std the
      ``variance_type``'s (fixed_small, fixed_small_log, fixed_large; 0 at t = 0);
    - DDIM: the scheduler's own step with zero ``variance_noise`` (its step is stateless), std
      eta * sqrt(variance) (Song et al. 2021, eq. 16);
    - Euler ancestral: x + (x - x0_hat) / sigma * (sigma_down - sigma), std sigma_up
      (Karras et al. 2022; k-diffusion's ``get_ancestral_step``).

    The scheduler's state is unchanged (apart from the step-index initialisation its own next
    step would make).
    """
    names = {cls.__name__ for cls in type(scheduler).__mro__}
    if flow_eta is not None and "FlowMatchEulerDiscreteScheduler" in names:
        return _flow_renoise_kernel(scheduler, model_output, timestep, sample, flow_eta, flow_noise)
    if "DDPMScheduler" in names:
        return _ddpm_kernel(scheduler, model_output, timestep, sample)
    if "DDIMScheduler" in names:
        step_kwargs = step_kwargs or {}
        eta = float(step_kwargs.get("eta", 0.0))
        use_clipped_model_output = bool(step_kwargs.get("use_clipped_model_output", False))
        t = int(timestep)
        previous_t = t - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
        mean = scheduler.step(
            model_output, timestep, sample, eta=eta,
            use_clipped_model_output=use_clipped_model_output,
            variance_noise=torch.zeros_like(model_output), return_dict=False,
        )[0]
        variance = float(scheduler._get_variance(t, previous_t))
        return mean.float(), eta * math.sqrt(max(variance, 0.0))
    if "EulerAncestralDiscreteScheduler" in names:
        x = sample.float()
        clean = clean_prediction(scheduler, model_output, timestep, sample).float()
        ensure_step_index(scheduler, timestep)
        sigma_from = float(scheduler.sigmas[scheduler.step_index])
        sigma_to = float(scheduler.sigmas[scheduler.step_index + 1])
        sigma_up = math.sqrt(sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2)
        sigma_down = math.sqrt(max(sigma_to**2 - sigma_up**2, 0.0))
        mean = x + (x - clean) / sigma_from * (sigma_down - sigma_from)
        return mean, sigma_up
    raise ValueError(
        f"guidance needs a scheduler whose step is Gaussian given the current sample: "
        f"{', '.join(GAUSSIAN_STEP_SCHEDULERS[:3])}, or FlowMatchEulerDiscreteScheduler with "
        f"DiffusersOptions.flow_eta; {type(scheduler).__name__} is not one. Set "
        "FKConfig.guidance=0 or switch schedulers."
    )


def _ddpm_kernel(
    scheduler: Any, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor
) -> tuple[torch.Tensor, float]:
    variance_type = scheduler.config.variance_type
    if variance_type not in ("fixed_small", "fixed_small_log", "fixed_large"):
        raise ValueError(
            f"guidance with DDPMScheduler needs a fixed variance (fixed_small, fixed_small_log, "
            f"fixed_large); this one has variance_type={variance_type!r}."
        )
    t = int(timestep)
    previous_t = int(scheduler.previous_timestep(t))
    alpha_prod_t = float(scheduler.alphas_cumprod[t])
    alpha_prod_prev = float(scheduler.alphas_cumprod[previous_t]) if previous_t >= 0 else 1.0
    current_alpha = alpha_prod_t / alpha_prod_prev
    clean = clean_prediction(scheduler, model_output, timestep, sample).float()
    clean_coefficient = math.sqrt(alpha_prod_prev) * (1 - current_alpha) / (1 - alpha_prod_t)
    sample_coefficient = math.sqrt(current_alpha) * (1 - alpha_prod_prev) / (1 - alpha_prod_t)
    mean = clean_coefficient * clean + sample_coefficient * sample.float()
    if t == 0:
        return mean, 0.0
    variance = float(scheduler._get_variance(t))
    std = variance if variance_type == "fixed_small_log" else math.sqrt(variance)
    return mean, std
