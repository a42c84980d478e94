"""UNetStepModel: a UNet2DModel + scheduler as a StepModel, run by fksteer.steer.

Reproduces DDPMPipeline / DDIMPipeline under method="base"; resampling continues particles
exactly (DPM-Solver++ history, class labels); micro-batching changes nothing.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from tiny_builds import tiny_unet2d

diffusers = pytest.importorskip("diffusers")

from fksteer import FKConfig, steer  # noqa: E402
from fksteer.diffusers import DeterministicSamplerWarning, UNetStepModel  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def zeros(samples, prompts):
    return torch.zeros(len(samples))


def brightness(samples, prompts):
    return samples.mean(dim=(1, 2, 3))


@pytest.mark.parametrize("pipeline, eta", [("DDPMPipeline", None), ("DDIMPipeline", 0.0),
                                           ("DDIMPipeline", 1.0)])
def test_base_and_uniform_weights_reproduce_the_stock_pipeline(pipeline, eta):
    unet = tiny_unet2d()
    pipe = getattr(diffusers, pipeline)(unet=unet, scheduler=diffusers.DDPMScheduler())
    pipe.set_progress_bar_config(disable=True)
    K, steps = 4, 5
    extra = {} if eta is None else {"eta": eta}
    expected = pipe(
        batch_size=K, num_inference_steps=steps, output_type="pt",
        generator=torch.Generator().manual_seed(1), **extra,
    ).images
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeterministicSamplerWarning)
        model = UNetStepModel(unet, pipe.scheduler, steps, step_kwargs=extra)
    for method in ("base", "fk"):
        result = steer(
            model, zeros, FKConfig(num_particles=K), method=method,
            generator=torch.Generator().manual_seed(1),
        )
        assert torch.equal(result.samples[0], expected), method


def test_deterministic_scheduler_warns():
    with pytest.warns(DeterministicSamplerWarning, match="eta=1.0"):
        UNetStepModel(tiny_unet2d(), diffusers.DDIMScheduler(), 4)


def _kill_all_but(survivors):
    calls = []

    def reward(samples, prompts):
        calls.append(prompts)
        if len(calls) == 1:
            values = torch.full((len(samples),), -torch.inf)
            values[survivors] = 0.0
            return values
        return torch.zeros(len(samples))

    return reward, calls


def test_forced_resampling_continues_as_the_ancestor_with_dpm_solver_and_class_labels():
    """Class-conditional UNet, DPM-Solver++ (3rd order), 2 classes x 3 particles: after killing
    all but one particle per group at step 3, every particle ends as its survivor would have,
    so latents, model outputs, scheduler history and class labels all followed it."""
    unet = tiny_unet2d(num_class_embeds=2)
    scheduler = diffusers.DPMSolverMultistepScheduler(solver_order=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeterministicSamplerWarning)
        model = UNetStepModel(unet, scheduler, 6)
    base = steer(model, zeros, FKConfig(num_particles=3), prompts=[0, 1], method="base",
                 generator=torch.Generator().manual_seed(2))
    reward, calls = _kill_all_but([2, 4])
    steered = steer(model, reward, FKConfig(num_particles=3, resample_start=3, resample_end=3),
                    prompts=[0, 1], generator=torch.Generator().manual_seed(2))
    assert calls[0] == [0, 0, 0, 1, 1, 1]
    assert torch.equal(steered.trace[3].ancestors, torch.tensor([[2, 2, 2], [1, 1, 1]]))
    for k in range(3):
        assert torch.allclose(steered.samples[0, k], base.samples[0, 2], atol=1e-5)
        assert torch.allclose(steered.samples[1, k], base.samples[1, 1], atol=1e-5)
    assert not torch.allclose(base.samples[0, 2], base.samples[1, 1], atol=1e-3)


def test_micro_batching_gives_the_same_result():
    unet = tiny_unet2d()
    config = FKConfig(num_particles=5, lmbda=20.0)
    runs = [
        steer(
            UNetStepModel(unet, diffusers.DDPMScheduler(), 4, **options), brightness, config,
            prompts=["a", "b"], generator=torch.Generator().manual_seed(3),
        )
        for options in ({}, {"denoiser_batch_size": 3, "decode_batch_size": 2})
    ]
    assert torch.allclose(runs[0].samples, runs[1].samples, atol=1e-5)
    assert torch.allclose(runs[0].weights, runs[1].weights, atol=1e-6)


def test_brightness_reward_raises_brightness_over_base():
    unet = tiny_unet2d()
    model = UNetStepModel(unet, diffusers.DDPMScheduler(), 5)
    config = FKConfig(num_particles=8, lmbda=50.0)
    gains = []
    for seed in range(3):
        base = steer(model, brightness, config, method="base",
                     generator=torch.Generator().manual_seed(seed))
        fk = steer(model, brightness, config, generator=torch.Generator().manual_seed(seed))
        estimate = float((fk.weights * fk.rewards).sum())
        gains.append((estimate - float(base.rewards.mean())) / float(base.rewards.std()))
    assert min(gains) > 0 and sum(gains) / len(gains) > 0.3, gains


def test_argument_errors():
    with pytest.raises(ValueError, match="not supported"):
        UNetStepModel(tiny_unet2d(), diffusers.EDMEulerScheduler(), 4)
    with pytest.raises(ValueError, match="not arguments of DDPMScheduler.step"):
        UNetStepModel(tiny_unet2d(), diffusers.DDPMScheduler(), 4, step_kwargs={"eta": 1.0})
    with pytest.raises(ValueError, match="class-conditional"):
        model = UNetStepModel(tiny_unet2d(num_class_embeds=2), diffusers.DDPMScheduler(), 2)
        steer(model, zeros, FKConfig(num_particles=2), generator=torch.Generator().manual_seed(0))


def test_intermediate_resolution_reduces_only_intermediate_decodes():
    """A latent scale blurs what the intermediate potentials read (same shape), never the final
    samples; the final potential then reads them in full, so FK still runs to the end."""
    model = UNetStepModel(tiny_unet2d(), diffusers.DDPMScheduler(num_train_timesteps=50), 4,
                          intermediate_resolution=0.5)
    checkerboard = (torch.arange(8)[:, None] + torch.arange(8)[None]) % 2 * 2.0 - 1.0
    clean = checkerboard.expand(3, 1, 8, 8)
    final = model.decode(clean, final=True)
    intermediate = model.decode(clean, final=False)
    assert final.shape == intermediate.shape == (3, 1, 8, 8)
    torch.testing.assert_close(final, (clean / 2 + 0.5).clamp(0, 1))
    # the pixel-scale detail is averaged out (up to the antialiasing kernel's edge effects)
    torch.testing.assert_close(intermediate, torch.full_like(final, 0.5), rtol=0, atol=0.02)
    result = steer(model, brightness, FKConfig(num_particles=3),
                   generator=torch.Generator().manual_seed(0))
    assert result.samples.shape == (1, 3, 1, 8, 8)
    with pytest.raises(ValueError, match="intermediate_resolution"):
        UNetStepModel(tiny_unet2d(), diffusers.DDPMScheduler(num_train_timesteps=50), 4,
                      intermediate_resolution=2.0)
