"""Scheduler adapters of the diffusers integration: clean predictions, history, noise, refusals.

No model is needed: the "denoiser" is a fixed per-sample function, so these run in a second.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from fksteer.integrations.diffusers.schedulers import (  # noqa: E402
    SUPPORTED_SCHEDULERS,
    clean_prediction,
    deterministic_reason,
    flow_renoise_std,
    flow_renoise_step,
    permute_scheduler_state,
    scheduler_spec,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy 2 in diffusers


SHAPE = (6, 2, 4, 4)


def make(name: str, **config):
    return getattr(diffusers, name)(**config)


def fake_model(sample: torch.Tensor, timestep) -> torch.Tensor:
    """A deterministic per-sample 'denoiser': no mixing across the batch."""
    t = float(timestep) / 1000.0
    return 0.5 * torch.tanh(sample) * math.cos(3 * t) + 0.1 * sample.flip(-1)


def step_kwargs(scheduler, generator=None):
    kwargs = {}
    if "generator" in __import__("inspect").signature(scheduler.step).parameters:
        kwargs["generator"] = generator
    return kwargs


# -- clean-sample prediction ---------------------------------------------------------------------

VP_DISCRETE = ["DDPMScheduler", "DDIMScheduler", "PNDMScheduler", "LCMScheduler", "TCDScheduler"]
VP_SIGMA = [
    "DPMSolverMultistepScheduler",
    "DPMSolverSinglestepScheduler",
    "UniPCMultistepScheduler",
    "DEISMultistepScheduler",
]
KARRAS = [
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "HeunDiscreteScheduler",
    "LMSDiscreteScheduler",
    "KDPM2DiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler",
]


@pytest.mark.parametrize("name", VP_DISCRETE + VP_SIGMA + KARRAS)
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_clean_prediction_inverts_the_forward_process(name, prediction_type):
    """x_t built by the scheduler's own add_noise from (x0, eps); the exact model output must give
    back x0, whatever the parameterisation."""
    config = {"clip_sample": False} if name in ("DDPMScheduler", "DDIMScheduler") else {}
    scheduler = make(name, prediction_type=prediction_type, **config)
    scheduler.set_timesteps(8)
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(SHAPE, generator=generator)
    eps = torch.randn(SHAPE, generator=generator)
    t = scheduler.timesteps[0]
    x_t = scheduler.add_noise(x0, eps, t.reshape(1))
    # v = alpha eps - sigma x0 in VP coordinates (alpha^2 + sigma^2 = 1) of x_t.
    if name in VP_DISCRETE:
        alpha_bar = float(scheduler.alphas_cumprod[int(t)])
        alpha, sigma = math.sqrt(alpha_bar), math.sqrt(1 - alpha_bar)
    elif name in VP_SIGMA:
        alpha, sigma = (float(v) for v in scheduler._sigma_to_alpha_sigma_t(scheduler.sigmas[0]))
    else:  # karras: x_t = x0 + s eps, read by the model as x_t / sqrt(1 + s^2)
        s = float(scheduler.sigmas[0])
        alpha, sigma = 1 / math.sqrt(1 + s**2), s / math.sqrt(1 + s**2)
    output = {"epsilon": eps, "sample": x0, "v_prediction": alpha * eps - sigma * x0}[
        prediction_type
    ]
    clean = clean_prediction(scheduler, output, t, x_t)
    assert torch.allclose(clean, x0, atol=2e-3, rtol=1e-3), (clean - x0).abs().max()


@pytest.mark.parametrize(
    "name", ["DDPMScheduler", "DDIMScheduler", *KARRAS]
)
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_clean_prediction_matches_the_schedulers_own_at_every_step(name, prediction_type):
    """Oracle: the pred_original_sample the scheduler's step itself computes, at every step
    (Heun's and KDPM2's second stages use another sigma)."""
    scheduler = make(name, prediction_type=prediction_type)
    scheduler.set_timesteps(5)
    generator = torch.Generator().manual_seed(1)
    sample = torch.randn(SHAPE, generator=generator) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(sample, t)
        output = fake_model(model_input, t)
        ours = clean_prediction(scheduler, output, t, sample)
        theirs = copy.deepcopy(scheduler).step(output, t, sample, **step_kwargs(scheduler))
        assert torch.allclose(ours, theirs.pred_original_sample, atol=1e-4, rtol=1e-4)
        sample = scheduler.step(output, t, sample, **step_kwargs(scheduler, generator)).prev_sample


@pytest.mark.parametrize("name", ["DPMSolverMultistepScheduler", "UniPCMultistepScheduler"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "flow_prediction"])
def test_clean_prediction_matches_dpm_solver_conversion(name, prediction_type):
    """Oracle: DPM-Solver++ / UniPC convert the model output to x0 themselves."""
    config = {"prediction_type": prediction_type}
    if prediction_type == "flow_prediction":
        config["use_flow_sigmas"] = True
    scheduler = make(name, **config)
    scheduler.set_timesteps(6)
    sample = torch.randn(SHAPE, generator=torch.Generator().manual_seed(2))
    for t in scheduler.timesteps[:4]:
        output = fake_model(sample, t)
        ours = clean_prediction(scheduler, output, t, sample)
        theirs = scheduler.convert_model_output(output, sample=sample)
        assert torch.allclose(ours, theirs, atol=1e-5)
        sample = scheduler.step(output, t, sample).prev_sample


@pytest.mark.parametrize(
    "name", ["FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler"]
)
def test_flow_clean_prediction_inverts_the_interpolation(name):
    scheduler = make(name)
    scheduler.set_timesteps(6)
    generator = torch.Generator().manual_seed(3)
    x0 = torch.randn(SHAPE, generator=generator)
    eps = torch.randn(SHAPE, generator=generator)
    for index in range(3):
        t = scheduler.timesteps[index]
        sigma = float(scheduler.sigmas[index])
        x_t = (1 - sigma) * x0 + sigma * eps
        assert abs(float(t) / 1000 - sigma) < 1e-4  # the model is evaluated at sigma
        scheduler._step_index = index
        clean = clean_prediction(scheduler, eps - x0, t, x_t)  # the exact velocity
        assert torch.allclose(clean, x0, atol=1e-5)


# -- history permutation -------------------------------------------------------------------------

DETERMINISTIC = [
    ("DDIMScheduler", {}),
    ("PNDMScheduler", {"skip_prk_steps": True}),
    ("PNDMScheduler", {}),
    ("DPMSolverMultistepScheduler", {}),
    ("DPMSolverMultistepScheduler", {"solver_order": 3}),
    ("DPMSolverSinglestepScheduler", {}),
    ("UniPCMultistepScheduler", {}),
    ("DEISMultistepScheduler", {}),
    ("EulerDiscreteScheduler", {}),
    ("HeunDiscreteScheduler", {}),
    ("LMSDiscreteScheduler", {}),
    ("KDPM2DiscreteScheduler", {}),
    ("FlowMatchEulerDiscreteScheduler", {}),
    ("FlowMatchHeunDiscreteScheduler", {}),
]
ANCESTORS = torch.tensor([0, 0, 2, 2, 5, 3])


def run_chain(scheduler, start, resample_at=None, permute_history=True, num_steps=6):
    """Run the chain; at step ``resample_at`` (before stepping) reorder by ANCESTORS."""
    scheduler.set_timesteps(num_steps)
    sample = start * getattr(scheduler, "init_noise_sigma", 1.0)
    for i, t in enumerate(scheduler.timesteps):
        scale = getattr(scheduler, "scale_model_input", lambda x, t: x)
        output = fake_model(scale(sample, t), t)
        if i == resample_at:
            sample, output = sample[ANCESTORS], output[ANCESTORS]
            if permute_history:
                permute_scheduler_state(scheduler, ANCESTORS, len(ANCESTORS))
        sample = scheduler.step(output, t, sample).prev_sample
    return sample


@pytest.mark.parametrize("name, config", DETERMINISTIC)
def test_resampled_particles_continue_exactly_as_their_ancestors(name, config):
    """Deterministic sampler: after resampling at a step where the history is full, particle p
    ends exactly where ancestors[p] would have ended without resampling."""
    start = torch.randn(SHAPE, generator=torch.Generator().manual_seed(4))
    reference = run_chain(make(name, **config), start)
    for resample_at in (2, 3):
        resampled = run_chain(make(name, **config), start, resample_at=resample_at)
        assert torch.allclose(resampled, reference[ANCESTORS], atol=1e-5), (name, resample_at)


@pytest.mark.parametrize(
    "name", ["DPMSolverMultistepScheduler", "UniPCMultistepScheduler", "LMSDiscreteScheduler"]
)
def test_history_left_unpermuted_is_caught(name):
    """Control: the continuation test fails if only the latents are permuted."""
    start = torch.randn(SHAPE, generator=torch.Generator().manual_seed(4))
    reference = run_chain(make(name), start)
    wrong = run_chain(make(name), start, resample_at=3, permute_history=False)
    assert not torch.allclose(wrong, reference[ANCESTORS], atol=1e-3)


def test_every_supported_scheduler_is_a_diffusers_class():
    for name, spec in SUPPORTED_SCHEDULERS.items():
        scheduler = make(name)
        assert scheduler_spec(scheduler) is spec


def test_unknown_scheduler_error_lists_the_supported():
    class Mystery:
        config = {}

    with pytest.raises(ValueError, match="Mystery is not supported.*DDPMScheduler"):
        scheduler_spec(Mystery())
    sde = type("DPMSolverSDEScheduler", (), {})()
    with pytest.raises(ValueError, match="algorithm_type='sde-dpmsolver\\+\\+'"):
        scheduler_spec(sde)


def test_subclasses_inherit_the_spec():
    class MyDDPM(diffusers.DDPMScheduler):
        pass

    assert scheduler_spec(MyDDPM()) is SUPPORTED_SCHEDULERS["DDPMScheduler"]


# -- determinism and the flow re-noising step ----------------------------------------------------


def test_deterministic_samplers_are_named_with_an_alternative():
    assert "eta=1.0" in deterministic_reason(make("DDIMScheduler"), {"eta": 0.0})
    assert deterministic_reason(make("DDIMScheduler"), {"eta": 1.0}) is None
    dpm = make("DPMSolverMultistepScheduler")
    assert "sde-dpmsolver++" in deterministic_reason(dpm, {})
    sde = make("DPMSolverMultistepScheduler", algorithm_type="sde-dpmsolver++")
    assert deterministic_reason(sde, {}) is None
    assert "EulerAncestral" in deterministic_reason(make("EulerDiscreteScheduler"), {})
    assert deterministic_reason(make("EulerAncestralDiscreteScheduler"), {}) is None
    assert deterministic_reason(make("DDPMScheduler"), {}) is None
    assert "flow_eta" in deterministic_reason(make("FlowMatchEulerDiscreteScheduler"), {})


def test_flow_renoise_with_eta_zero_is_the_euler_step():
    sample = torch.randn(SHAPE, generator=torch.Generator().manual_seed(5))
    ours, theirs = make("FlowMatchEulerDiscreteScheduler"), make("FlowMatchEulerDiscreteScheduler")
    ours.set_timesteps(4)
    theirs.set_timesteps(4)
    a = b = sample
    for t in ours.timesteps:
        a = flow_renoise_step(ours, fake_model(a, t), t, a, 0.0, torch.Generator())
        b = theirs.step(fake_model(b, t), t, b).prev_sample
        assert torch.allclose(a, b, atol=1e-5)
    assert ours.step_index == theirs.step_index == 4


@pytest.mark.parametrize("noise", ["ddpm", "fraction"])
def test_flow_renoise_has_the_stated_gaussian_law(noise):
    """x_s = (1 - s) x0_hat + sqrt(s^2 - sigma^2) eps_hat + sigma z: residual N(0, sigma^2)."""
    scheduler = make("FlowMatchEulerDiscreteScheduler")
    scheduler.set_timesteps(4)
    x = torch.randn(200_000, generator=torch.Generator().manual_seed(6))
    v = 0.3 * x
    t, s = float(scheduler.sigmas[1]), float(scheduler.sigmas[2])
    scheduler._step_index = 1
    eta = 0.6
    out = flow_renoise_step(
        scheduler, v, scheduler.timesteps[1], x, eta, torch.Generator().manual_seed(7), noise
    )
    sigma = flow_renoise_std(t, s, eta, noise)
    if noise == "fraction":
        assert sigma == pytest.approx(eta * s)
    else:  # DDPM posterior std of the path x_t = (1 - t) x0 + t eps, times eta
        forward = (1 - t) / (1 - s)  # x_t = forward x_s + sqrt(t^2 - forward^2 s^2) w
        posterior = s**2 * (t**2 - forward**2 * s**2) / t**2
        assert sigma == pytest.approx(eta * math.sqrt(posterior))
        assert 0 < sigma < eta * s
    mean = (1 - s) * (x - t * v) + math.sqrt(s**2 - sigma**2) * (x + (1 - t) * v)
    residual = out - mean
    assert abs(float(residual.mean())) < 0.01 * s
    assert abs(float(residual.std()) / sigma - 1) < 0.01
    assert scheduler.step_index == 2
    with pytest.raises(ValueError, match="flow_eta"):
        flow_renoise_step(scheduler, v, scheduler.timesteps[2], x, 1.5, torch.Generator())
    with pytest.raises(ValueError, match="unknown"):
        flow_renoise_std(t, s, 0.5, "loud")


def test_flow_ddpm_renoising_recovers_an_exact_gaussian_law():
    """With the exact velocity of x_0 ~ N(m, c^2), the ancestral step (eta=1, "ddpm") converges
    to the right law (std 0.490 at 200 steps, 0.500 at 1000); the "fraction" parameterisation
    at eta=1 shrinks the spread whatever the steps (0.348 at 200, 0.351 at 1000)."""
    m, c = 1.5, 0.5

    def velocity(x, t):  # E[eps - x0 | x_t] for Gaussian data
        variance = (1 - t) ** 2 * c**2 + t**2
        clean = m + (1 - t) * c**2 / variance * (x - (1 - t) * m)
        return (x - (1 - t) * clean) / t - clean

    stds = {}
    for noise in ("ddpm", "fraction"):
        scheduler = make("FlowMatchEulerDiscreteScheduler", shift=1.0)
        scheduler.set_timesteps(200)
        generator = torch.Generator().manual_seed(8)
        x = torch.randn(40_000, generator=generator)
        for index, t in enumerate(scheduler.timesteps):
            v = velocity(x, float(scheduler.sigmas[index]))
            x = flow_renoise_step(scheduler, v, t, x, 1.0, generator, noise)
        assert abs(float(x.mean()) - m) < 0.02
        stds[noise] = float(x.std())
    assert abs(stds["ddpm"] / c - 1) < 0.03
    assert stds["fraction"] / c < 0.8
