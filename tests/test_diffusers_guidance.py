"""Reward-gradient guidance through the diffusers integration: Gaussian step kernels, UNet
StepModel, and stock pipelines (SD-style and flow matching), with tiny random-weight models.
"""

from __future__ import annotations

import math

import pytest
import torch
from tiny_builds import tiny_unet2d

diffusers = pytest.importorskip("diffusers")

from diffusers.utils.torch_utils import randn_tensor  # noqa: E402

from fksteer import FKConfig, steer  # noqa: E402
from fksteer.integrations.diffusers.schedulers import (  # noqa: E402
    flow_renoise_step,
    gaussian_step,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy 2 in diffusers

SHAPE = (5, 2, 4, 4)


def fake_model(sample: torch.Tensor, timestep) -> torch.Tensor:
    t = float(timestep) / 1000.0
    return 0.5 * torch.tanh(sample) * math.cos(3 * t) + 0.1 * sample.flip(-1)


KERNELS = [
    ("DDPMScheduler", {}, {}),
    ("DDPMScheduler", {"prediction_type": "v_prediction", "clip_sample": True}, {}),
    ("DDPMScheduler", {"variance_type": "fixed_small_log"}, {}),
    ("DDPMScheduler", {"variance_type": "fixed_large", "thresholding": True}, {}),
    ("DDIMScheduler", {}, {"eta": 1.0}),
    ("DDIMScheduler", {"prediction_type": "v_prediction"}, {"eta": 0.5}),
    ("DDIMScheduler", {"clip_sample": True}, {"eta": 1.0, "use_clipped_model_output": True}),
    ("EulerAncestralDiscreteScheduler", {}, {}),
    ("EulerAncestralDiscreteScheduler", {"prediction_type": "v_prediction"}, {}),
]


@pytest.mark.parametrize("name, config, kwargs", KERNELS)
def test_gaussian_step_is_the_schedulers_step_without_its_noise(name, config, kwargs):
    """At every step, scheduler.step(...) == mean + std * z with z the noise the scheduler drew
    (replayed from a copy of its generator)."""
    scheduler = getattr(diffusers, name)(**config)
    scheduler.set_timesteps(8)
    sample = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    sample = sample * getattr(scheduler, "init_noise_sigma", 1.0)
    generator = torch.Generator().manual_seed(1)
    stds = []
    for t in scheduler.timesteps:
        scaled = scheduler.scale_model_input(sample, t)
        output = fake_model(scaled, t)
        mean, std = gaussian_step(scheduler, output, t, sample, kwargs)
        replay = torch.Generator().set_state(generator.get_state())
        previous = scheduler.step(output, t, sample, generator=generator, **kwargs).prev_sample
        noise = randn_tensor(output.shape, generator=replay, dtype=output.dtype)
        torch.testing.assert_close(previous, mean + std * noise, atol=2e-5, rtol=1e-4)  # float32
        stds.append(float(std))
        sample = previous
    assert stds[0] > 0 and stds[-1] == pytest.approx(0.0, abs=1e-6 if name != "DDIMScheduler"
                                                     else 1.0)


@pytest.mark.parametrize("noise", ["ddpm", "fraction"])
def test_gaussian_step_of_the_flow_renoising_step(noise):
    ours = diffusers.FlowMatchEulerDiscreteScheduler()
    ours.set_timesteps(6)
    sample = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(1)
    for t in ours.timesteps:
        output = fake_model(sample, t)
        mean, std = gaussian_step(ours, output, t, sample, flow_eta=0.7, flow_noise=noise)
        replay = torch.Generator().set_state(generator.get_state())
        previous = flow_renoise_step(ours, output, t, sample, 0.7, generator, noise)
        noise_draw = randn_tensor(output.shape, generator=replay, dtype=torch.float32)
        torch.testing.assert_close(previous, mean + std * noise_draw)
        sample = previous


def test_gaussian_step_refuses_deterministic_or_unknown_kernels():
    for scheduler in (diffusers.DPMSolverMultistepScheduler(), diffusers.EulerDiscreteScheduler(),
                      diffusers.FlowMatchEulerDiscreteScheduler()):
        scheduler.set_timesteps(4)
        t = scheduler.timesteps[0]
        with pytest.raises(ValueError, match="Gaussian"):
            gaussian_step(scheduler, torch.zeros(SHAPE), t, torch.zeros(SHAPE))
    learned = diffusers.DDPMScheduler(variance_type="learned_range")
    learned.set_timesteps(4)
    with pytest.raises(ValueError, match="fixed variance"):
        gaussian_step(learned, torch.zeros(SHAPE), learned.timesteps[0], torch.zeros(SHAPE))


# -- UNetStepModel --------------------------------------------------------------------------------


def brightness(images, prompts):
    return images.mean(dim=(1, 2, 3))


def flat(images, prompts):
    """Differentiable with a zero gradient."""
    return 0.0 * images.sum(dim=(1, 2, 3))


@pytest.mark.parametrize("scheduler, step_kwargs", [
    ("DDPMScheduler", {}), ("DDIMScheduler", {"eta": 1.0}),
    ("EulerAncestralDiscreteScheduler", {}),
])
def test_unet_guidance_moves_samples_up_the_reward_and_a_zero_gradient_changes_nothing(
    scheduler, step_kwargs
):
    from fksteer.diffusers import UNetStepModel

    # unclamped decoder: the default clamp to [0, 1] zeroes the gradient of saturated pixels
    model = UNetStepModel(tiny_unet2d(), getattr(diffusers, scheduler)(), 5,
                          step_kwargs=step_kwargs, decoder=lambda x: x.float())
    runs = {}
    for name, reward, strength in [("plain", brightness, 0.0), ("flat", flat, 1.0),
                                   ("guided", brightness, 1.0)]:
        config = FKConfig(num_particles=8, lmbda=30.0, guidance=strength)
        runs[name] = steer(model, reward, config, method="base",
                           generator=torch.Generator().manual_seed(3))
    assert torch.equal(runs["plain"].samples, runs["flat"].samples)
    plain, guided = (float(runs[n].rewards.mean()) for n in ("plain", "guided"))
    assert guided > plain + 0.2 * float(runs["plain"].rewards.std()), (plain, guided)


def test_unet_gradient_matches_finite_differences():
    from fksteer.diffusers import UNetStepModel
    from fksteer.smc.guidance import reward_gradient

    model = UNetStepModel(tiny_unet2d().double(), diffusers.DDPMScheduler(), 5,
                          decoder=lambda x: x)  # float64 throughout
    state = model.init([None], 3, torch.Generator().manual_seed(0))
    step = 2

    def clean_of(x, rows):
        return model.clean_from(state, x, rows, step)

    def decode(clean):
        return model.decode(clean, final=False)

    gradient = reward_gradient(state["sample"], clean_of, decode, brightness, None, 2.0,
                               batch_size=2)
    direction = torch.randn(state["sample"].shape, generator=torch.Generator().manual_seed(1),
                            dtype=torch.float64)
    epsilon = 1e-5

    def value(x):
        return 2.0 * brightness(decode(clean_of(x, slice(0, 3))), None)

    with torch.no_grad():
        slope = (value(state["sample"] + epsilon * direction)
                 - value(state["sample"] - epsilon * direction)) / (2 * epsilon)
    torch.testing.assert_close((gradient * direction).sum(dim=(1, 2, 3)), slope, rtol=1e-4,
                               atol=1e-7)
    assert float(gradient.abs().sum()) > 0


# -- stock pipelines ------------------------------------------------------------------------------


class _RecordsCorrections:
    """Wraps ParticleSystem.reweight to keep the log density ratios it receives."""

    def __init__(self, monkeypatch):
        from fksteer.smc.particles import ParticleSystem

        self.ratios = []
        original = ParticleSystem.reweight

        def reweight(system, step, log_ratio):
            self.ratios.append(torch.as_tensor(log_ratio).clone())
            return original(system, step, log_ratio)

        monkeypatch.setattr(ParticleSystem, "reweight", reweight)


@pytest.mark.parametrize("name", ["sd", "sdxl", "sd3", "flux", "ddpm"])
def test_pipeline_guidance_reaches_the_latents(pipes, name, monkeypatch):
    """SD (DDIM eta=1, CFG), SDXL (Euler ancestral, CFG, added conditions), SD3 (flow matching,
    CFG, per-row timesteps), Flux (flow matching, packed latents), DDPM (pixel space): the replayed
    denoiser call reproduces the pipeline's (checked inside), the gradient is non-zero and moves
    the images up the reward, and the weights carry a non-trivial density ratio."""
    from test_diffusers_pipelines import call_kwargs

    from fksteer.diffusers import DiffusersOptions, steer_pipeline

    pipe = pipes(name)
    options = DiffusersOptions(flow_eta=1.0 if name in ("sd3", "flux") else None)
    corrections = _RecordsCorrections(monkeypatch)
    runs = {}
    for strength in (0.0, 1.0):
        runs[strength] = steer_pipeline(
            pipe, brightness, FKConfig(num_particles=3, lmbda=400.0, guidance=strength),
            method="base", generator=torch.Generator().manual_seed(0), options=options,
            **call_kwargs(name),
        )
    assert float(runs[1.0].rewards.mean()) > float(runs[0.0].rewards.mean())
    steps = call_kwargs(name)["num_inference_steps"]
    assert steps - 1 <= len(corrections.ratios) <= steps  # a last step without noise is skipped
    assert all(torch.isfinite(r).all() for r in corrections.ratios)
    assert float(corrections.ratios[0].abs().max()) > 0
    fk = steer_pipeline(
        pipe, brightness, FKConfig(num_particles=3, lmbda=400.0, guidance=1.0),
        generator=torch.Generator().manual_seed(0), options=options, **call_kwargs(name),
    )
    assert torch.isfinite(fk.log_evidence).all()


def test_pipeline_guidance_refuses_what_it_cannot_follow(pipes):
    from test_diffusers_pipelines import call_kwargs

    from fksteer.diffusers import steer_pipeline

    config = FKConfig(num_particles=2, guidance=1.0)
    sd = pipes("sd")
    with pytest.raises(ValueError, match="could not reproduce"):  # CFG rescaled by the pipeline
        steer_pipeline(sd, brightness, config, generator=torch.Generator().manual_seed(0),
                       guidance_rescale=0.7, **call_kwargs("sd"))
    with pytest.raises(ValueError, match="flow_eta"):  # the flow ODE step is not Gaussian
        steer_pipeline(pipes("sd3"), brightness, config, **call_kwargs("sd3"))
    original = sd.scheduler
    sd.scheduler = diffusers.DPMSolverMultistepScheduler.from_config(original.config)
    try:
        with pytest.raises(ValueError, match="Gaussian"):
            steer_pipeline(sd, brightness, config, **call_kwargs("sd"))
    finally:
        sd.scheduler = original
    with pytest.raises(ValueError, match="differentiable"):
        steer_pipeline(sd, lambda images, prompts: images.mean(dim=(1, 2, 3)).tolist(), config,
                       generator=torch.Generator().manual_seed(0), **call_kwargs("sd"))
