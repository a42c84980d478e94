"""The embedded image models without diffusers: the same outputs and draws as diffusers' classes.

:class:`fksteer.embedded.unet.EmbeddedUNet` and :mod:`fksteer.embedded.schedulers` stand in for
diffusers' ``UNet2DModel``, ``DDPMScheduler`` and ``DDIMScheduler`` on the embedded models'
path. Each is compared here with the real diffusers class on the embedded weights and
configurations (diffusers is installed for the tests), and a seeded steered run through the
whole engine is compared with the same run on diffusers' objects.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import fksteer
from fksteer.embedded.image_model import IMAGE_MODEL_DIR, GuidedClassUNet, load_image_model
from fksteer.embedded.schedulers import DDIMScheduler, DDPMScheduler
from fksteer.embedded.unet import EmbeddedUNet
from fksteer.integrations.diffusers.noise import randn_tensor

diffusers = pytest.importorskip("diffusers")



def _folder(size: str) -> Path:
    return IMAGE_MODEL_DIR / f"fashion16-{size}"


@pytest.mark.parametrize("size", ["weak", "strong"])
def test_the_unet_gives_diffusers_outputs_on_the_embedded_weights(size):
    reference = diffusers.UNet2DModel.from_pretrained(_folder(size)).eval()
    unet = EmbeddedUNet.from_pretrained(_folder(size))
    assert sorted(unet.state_dict()) == sorted(reference.state_dict())
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(6, 1, 16, 16, generator=generator)
    labels = torch.tensor([0, 3, 5, 7, 9, 10])  # 10: the null class of guidance
    timesteps = [0, 1, 250, 999, torch.tensor(500), torch.tensor(20), torch.arange(6) * 150]
    with torch.no_grad():
        for timestep in timesteps:
            expected = reference(sample, timestep, class_labels=labels, return_dict=False)[0]
            got = unet(sample, timestep, class_labels=labels, return_dict=False)[0]
            assert float((got - expected).abs().max()) <= 1e-5, timestep
        as_dict = unet(sample, 7, class_labels=labels).sample  # return_dict=True, as diffusers
        assert torch.equal(as_dict, unet(sample, 7, class_labels=labels, return_dict=False)[0])
    assert unet.config.sample_size == 16 and unet.config.get("num_class_embeds") == 11


def test_the_unet_gradient_matches_diffusers():
    """Reward guidance differentiates through the UNet: the input gradients agree as well."""
    reference = diffusers.UNet2DModel.from_pretrained(_folder("weak")).eval()
    unet = EmbeddedUNet.from_pretrained(_folder("weak"))
    sample = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([1, 4, 8])
    gradients = []
    for model in (reference, unet):
        x = sample.clone().requires_grad_(True)
        output = model(x, torch.tensor(400), class_labels=labels, return_dict=False)[0]
        (output**2).sum().backward()
        gradients.append(x.grad)
    assert float((gradients[0] - gradients[1]).abs().max()) <= 1e-5


def test_an_unsupported_unet_configuration_is_refused():
    config = json.loads((_folder("weak") / "config.json").read_text())
    with pytest.raises(ValueError, match="down_block_types.*CrossAttnDownBlock2D"):
        EmbeddedUNet({**config, "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"]})
    with pytest.raises(ValueError, match="time_embedding_type='fourier'"):
        EmbeddedUNet({**config, "time_embedding_type": "fourier"})


def _scheduler_configs() -> list[dict]:
    embedded = diffusers.DDPMScheduler.load_config(_folder("weak"))
    return [
        embedded,
        {**embedded, "beta_schedule": "linear", "variance_type": "fixed_large", "steps_offset": 1},
        {
            **embedded,
            "beta_schedule": "scaled_linear",
            "prediction_type": "v_prediction",
            "timestep_spacing": "trailing",
            "variance_type": "fixed_small_log",
        },
        {
            **embedded,
            "prediction_type": "sample",
            "timestep_spacing": "linspace",
            "clip_sample": False,
        },
    ]


@pytest.mark.parametrize("config", _scheduler_configs(), ids=["embedded", "linear", "v", "x0"])
@pytest.mark.parametrize(
    "name, step_kwargs",
    [
        ("DDPMScheduler", {}),
        ("DDIMScheduler", {"eta": 1.0}),
        ("DDIMScheduler", {"eta": 0.5, "use_clipped_model_output": True}),
    ],
)
def test_the_schedulers_step_as_diffusers_with_the_same_draws(config, name, step_kwargs):
    ours = {"DDPMScheduler": DDPMScheduler, "DDIMScheduler": DDIMScheduler}[name]
    reference = getattr(diffusers, name).from_config(config)
    scheduler = ours.from_config(config)
    assert torch.equal(scheduler.alphas_cumprod, reference.alphas_cumprod)
    for steps in (1, 7, 50, 1000):
        reference.set_timesteps(steps)
        scheduler.set_timesteps(steps)
        assert torch.equal(scheduler.timesteps, reference.timesteps), steps
    reference.set_timesteps(20)
    scheduler.set_timesteps(20)
    expected = got = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    draws = [torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)]
    for timestep in reference.timesteps:
        output = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(int(timestep)))
        expected = reference.step(
            output, timestep, expected, generator=draws[0], **step_kwargs
        ).prev_sample
        got = scheduler.step(output, timestep, got, generator=draws[1], **step_kwargs).prev_sample
        assert float((got - expected).abs().max()) <= 1e-6, int(timestep)
    assert torch.equal(draws[0].get_state(), draws[1].get_state())  # the same number of draws
    if name == "DDPMScheduler":
        for t in (int(reference.timesteps[i]) for i in (0, 5, -1)):
            assert int(scheduler.previous_timestep(t)) == int(reference.previous_timestep(t))
            assert float(scheduler._get_variance(t)) == float(reference._get_variance(t))
    else:
        assert float(scheduler._get_variance(500, 450)) == float(reference._get_variance(500, 450))


def test_unsupported_scheduler_options_are_refused():
    with pytest.raises(ValueError, match="thresholding=True"):
        DDPMScheduler(thresholding=True)
    with pytest.raises(ValueError, match="variance_type='learned'"):
        DDPMScheduler(variance_type="learned")
    with pytest.raises(ValueError, match="beta_schedule='sigmoid'"):
        DDIMScheduler(beta_schedule="sigmoid")


def test_the_noise_is_diffusers_randn_tensor():
    from diffusers.utils.torch_utils import randn_tensor as reference

    device = "cpu"

    for shape, dtype in (((4, 1, 16, 16), torch.float32), ((3, 2), torch.float64)):
        expected = reference(
            shape, generator=torch.Generator().manual_seed(5), device=device, dtype=dtype
        )
        got = randn_tensor(
            shape, generator=torch.Generator().manual_seed(5), device=device, dtype=dtype
        )
        assert torch.equal(got, expected)
    generators = [torch.Generator().manual_seed(s) for s in range(3)]
    expected = reference((3, 4), generator=generators, device=torch.device(device))
    generators = [torch.Generator().manual_seed(s) for s in range(3)]
    assert torch.equal(randn_tensor((3, 4), generator=generators, device=device), expected)


def _diffusers_model(steps: int, guidance_scale: float, scheduler: str):
    """The embedded model as it was built on diffusers' classes (the reference run)."""
    from fksteer.embedded.image_model import ClassNameModel
    from fksteer.integrations.diffusers.unet import UNetStepModel

    folder = _folder("weak")
    unet = diffusers.UNet2DModel.from_pretrained(folder).eval()
    config = diffusers.DDPMScheduler.load_config(folder)
    if scheduler == "ddpm":
        noise, kwargs = diffusers.DDPMScheduler.from_config(config), {}
    else:
        noise, kwargs = diffusers.DDIMScheduler.from_config(config), {"eta": 1.0}
    return ClassNameModel(
        UNetStepModel(GuidedClassUNet(unet, guidance_scale), noise, steps, step_kwargs=kwargs)
    )


@pytest.mark.parametrize(
    "scheduler, guidance_scale, reward_guidance",
    [
        ("ddpm", 1.0, 0.0),
        ("ddim", 2.0, 0.0),
        ("ddpm", 1.5, 0.5),
    ],
)
def test_a_seeded_steered_run_is_the_run_on_diffusers_objects(
    scheduler, guidance_scale, reward_guidance
):
    """Resampling, the classifier reward and (last case) reward-gradient guidance included."""
    from fksteer.embedded.classifier import load_classifier
    from fksteer.embedded.fashion import CLASS_NAMES
    from fksteer.rewards.classifier import ClassifierLogProb

    reward = ClassifierLogProb(load_classifier("steering"), labels=CLASS_NAMES)
    config = fksteer.FKConfig(num_particles=3, guidance=reward_guidance)
    results = []
    for model in (
        _diffusers_model(6, guidance_scale, scheduler),
        load_image_model("weak", 6, guidance_scale, scheduler),
    ):
        results.append(
            fksteer.steer(
                model,
                reward,
                config,
                prompts=["sneaker", "bag"],
                generator=torch.Generator().manual_seed(11),
            )
        )
    expected, got = results
    assert float((got.samples - expected.samples).abs().max()) <= 1e-5
    assert torch.equal(got.best, expected.best)
    for ours, theirs in zip(got.trace, expected.trace, strict=True):  # the same resampling
        assert torch.equal(ours.resampled, theirs.resampled)
        assert (ours.ancestors is None) == (theirs.ancestors is None)
        if ours.ancestors is not None:
            assert torch.equal(ours.ancestors, theirs.ancestors)
    torch.testing.assert_close(got.log_evidence, expected.log_evidence, atol=1e-4, rtol=0)
