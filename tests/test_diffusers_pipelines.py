"""steer_pipeline on stock diffusers pipelines built from tiny random-weight parts, offline.

Families: StableDiffusion (text encoder, tokenizer, CFG), SDXL (two encoders, time ids), SD3 and
Flux (transformers, flow matching, precomputed embeddings), DDPMPipeline (pixel space). Each
pipeline is built once per module; a call takes ~0.1 s at 16x16 with 2-4 steps.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from tiny_builds import tiny_unet2d

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

from fksteer import FKConfig  # noqa: E402
from fksteer.diffusers import (  # noqa: E402
    DeterministicSamplerWarning,
    DiffusersOptions,
    PipelineSteeringResult,
    steer_pipeline,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


# -- tiny pipelines -----------------------------------------------------------------------------


def _tokenizer(directory):
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for letter in "abcdefghijklmnopqrstuvwxyz":
        vocab[letter] = len(vocab)
        vocab[letter + "</w>"] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    return transformers.CLIPTokenizer(
        str(directory / "vocab.json"), str(directory / "merges.txt"), model_max_length=16
    )


def _text_config():
    return transformers.CLIPTextConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        vocab_size=60,
        max_position_embeddings=16,
        projection_dim=16,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )


def _vae(**extra):
    return diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 8),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=4,
        layers_per_block=1,
        sample_size=16,
        **extra,
    )


def _sd_scheduler():
    return diffusers.DDIMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def build_sd(tmp_path_factory):
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    pipe = diffusers.StableDiffusionPipeline(
        vae=_vae(),
        text_encoder=transformers.CLIPTextModel(_text_config()),
        tokenizer=_tokenizer(tmp_path_factory.mktemp("sd-tokenizer")),
        unet=unet,
        scheduler=_sd_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_sdxl(tmp_path_factory):
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=4,
        projection_class_embeddings_input_dim=4 * 6 + 16,
        cross_attention_dim=32,
        norm_num_groups=4,
    )
    scheduler = diffusers.EulerAncestralDiscreteScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1
    )
    directory = tmp_path_factory.mktemp("sdxl-tokenizer")
    pipe = diffusers.StableDiffusionXLPipeline(
        vae=_vae(),
        text_encoder=transformers.CLIPTextModel(_text_config()),
        tokenizer=_tokenizer(directory),
        text_encoder_2=transformers.CLIPTextModelWithProjection(_text_config()),
        tokenizer_2=_tokenizer(directory),
        unet=unet,
        scheduler=scheduler,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_sd3(tmp_path_factory):
    torch.manual_seed(0)
    transformer = diffusers.SD3Transformer2DModel(
        sample_size=8,
        patch_size=1,
        in_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        caption_projection_dim=16,
        joint_attention_dim=16,
        pooled_projection_dim=16,
        out_channels=4,
    )
    pipe = diffusers.StableDiffusion3Pipeline(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(),
        vae=_vae(use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.06,
                 scaling_factor=1.5),
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
        text_encoder_3=None,
        tokenizer_3=None,
        transformer=transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_flux(tmp_path_factory):
    torch.manual_seed(0)
    transformer = diffusers.FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=16,
        pooled_projection_dim=16,
        axes_dims_rope=[2, 2, 4],
    )
    pipe = diffusers.FluxPipeline(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(),
        vae=_vae(use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.06,
                 scaling_factor=1.5),
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
        transformer=transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_ddpm(tmp_path_factory):
    pipe = diffusers.DDPMPipeline(unet=tiny_unet2d(), scheduler=diffusers.DDPMScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


BUILDERS = {
    "sd": build_sd,
    "sdxl": build_sdxl,
    "sd3": build_sd3,
    "flux": build_flux,
    "ddpm": build_ddpm,
}


def _embeds(groups: int):
    generator = torch.Generator().manual_seed(11)
    embeds = torch.randn(groups, 6, 16, generator=generator)
    pooled = torch.randn(groups, 16, generator=generator)
    return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}


def call_kwargs(name: str, groups: int = 2) -> dict:
    """What a user passes to the pipeline (and to steer_pipeline) for ``groups`` prompts."""
    size = {"height": 16, "width": 16}
    prompts = ["a cat", "a dog", "a fox"][:groups]
    if name == "sd":
        return {"prompt": prompts, "num_inference_steps": 3, "guidance_scale": 3.0, "eta": 1.0,
                **size}
    if name == "sdxl":
        return {"prompt": prompts, "num_inference_steps": 3, "guidance_scale": 3.0, **size}
    if name == "sd3":
        embeds = _embeds(groups)
        negative = {f"negative_{k}": torch.zeros_like(v) for k, v in embeds.items()}
        return {"num_inference_steps": 3, "guidance_scale": 3.0, **embeds, **negative, **size}
    if name == "flux":
        return {"num_inference_steps": 3, **_embeds(groups), **size}
    return {"num_inference_steps": 4}  # ddpm: one group


def stock_images(pipe, name: str, K: int, seed: int, **kwargs) -> torch.Tensor:
    """The stock pipeline's output for the same request: (G*K, C, H, W) in [0, 1]."""
    kwargs = {**call_kwargs(name), **kwargs}
    if name in ("sd3", "flux"):  # precomputed embeddings are per image there
        kwargs = {
            k: v.repeat_interleave(K, 0) if k.endswith("prompt_embeds") else v
            for k, v in kwargs.items()
        }
        kwargs["num_images_per_prompt"] = 1
    elif name == "ddpm":
        kwargs["batch_size"] = K
    else:
        kwargs["num_images_per_prompt"] = K
    generator = torch.Generator().manual_seed(seed)
    return pipe(**kwargs, output_type="pt", generator=generator).images.float()


def zeros(images, prompts):
    return torch.zeros(len(images))


def brightness(images, prompts):
    return images.mean(dim=(1, 2, 3))


# -- the stock output is reproduced --------------------------------------------------------------


@pytest.mark.parametrize("name", list(BUILDERS))
def test_base_and_uniform_weights_reproduce_the_stock_pipeline(pipes, name):
    """method="base", and FK with a constant reward (uniform weights: systematic resampling gives
    identity ancestors at every step), give exactly the stock pipeline's images: the integration
    draws nothing from the pipeline's generator and changes no sampling step."""
    pipe = pipes(name)
    K = 2
    expected = stock_images(pipe, name, K, seed=3)
    scheduler = pipe.scheduler
    for method in ("base", "fk"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeterministicSamplerWarning)
            result = steer_pipeline(
                pipe,
                zeros,
                FKConfig(num_particles=K),
                method=method,
                generator=torch.Generator().manual_seed(3),
                **call_kwargs(name),
            )
        G = 1 if name == "ddpm" else 2
        assert isinstance(result, PipelineSteeringResult)
        assert result.samples.shape == (G, K, *expected.shape[1:])
        assert torch.equal(result.samples.reshape(expected.shape), expected), method
        assert pipe.scheduler is scheduler
        if method == "fk":
            assert all(t.resampled.all() for t in result.trace[:-1])
    assert len(result.images) == G and len(result.images[0]) == K
    assert result.images[0][0].size == (expected.shape[-1], expected.shape[-2])


@pytest.mark.parametrize("name", ["sdxl", "flux"])
def test_micro_batched_denoiser_and_chunked_decoding_give_the_same_result(pipes, name):
    """SDXL splits added_cond_kwargs, Flux keeps its 2-D txt_ids/img_ids whole."""
    pipe = pipes(name)
    config = FKConfig(num_particles=3, lmbda=5.0)
    runs = []
    for options in (
        DiffusersOptions(),
        DiffusersOptions(denoiser_batch_size=2, decode_batch_size=1),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeterministicSamplerWarning)
            runs.append(
                steer_pipeline(
                    pipe, brightness, config, generator=torch.Generator().manual_seed(5),
                    options=options, **call_kwargs(name),
                )
            )
    assert torch.allclose(runs[0].samples, runs[1].samples, atol=1e-5)
    assert torch.allclose(runs[0].weights, runs[1].weights, atol=1e-6)
    assert type(pipe.transformer if name == "flux" else pipe.unet).__module__.startswith(
        "diffusers"
    )


# -- resampling: groups, embeddings, scheduler history ------------------------------------------


def _forced(survivors: list[int], scoring_step: int):
    """A reward that kills every particle but ``survivors`` at ``scoring_step``'s call: the
    systematic resampler then copies each survivor over its dead neighbours (known ancestors)."""
    calls = []

    def reward(images, prompts):
        calls.append(list(prompts) if prompts is not None else None)
        if len(calls) == 1:  # the one intermediate scoring call
            values = torch.full((len(images),), -torch.inf)
            values[survivors] = 0.0
            return values
        return torch.zeros(len(images))

    return reward, calls


def test_forced_resampling_continues_each_particle_as_its_ancestor_dpm_solver(pipes):
    """DPM-Solver++ (2nd order, deterministic), 2 prompts x 3 particles, CFG. Killing all but
    particle 1 of group 0 and particle 2 of group 1 at step 2 must make every particle of a group
    end exactly as that survivor ends without steering: latents, model output, scheduler history
    (model_outputs) and prompt embeddings all follow the particle, and groups never mix."""
    pipe = pipes("sd")
    original = pipe.scheduler
    pipe.scheduler = diffusers.DPMSolverMultistepScheduler.from_config(original.config)
    try:
        K, kwargs = 3, {**call_kwargs("sd"), "num_inference_steps": 4}
        kwargs.pop("eta")
        base = steer_pipeline(
            pipe, zeros, FKConfig(num_particles=K), method="base",
            generator=torch.Generator().manual_seed(7), **kwargs,
        )
        reward, calls = _forced([1, 5], scoring_step=2)
        with pytest.warns(DeterministicSamplerWarning, match="sde-dpmsolver"):
            steered = steer_pipeline(
                pipe, reward, FKConfig(num_particles=K, resample_start=2, resample_end=2),
                generator=torch.Generator().manual_seed(7), **kwargs,
            )
    finally:
        pipe.scheduler = original
    assert torch.equal(steered.trace[2].ancestors, torch.tensor([[1, 1, 1], [2, 2, 2]]))
    assert calls[0] == ["a cat"] * 3 + ["a dog"] * 3
    for k in range(K):
        assert torch.allclose(steered.samples[0, k], base.samples[0, 1], atol=1e-5)
        assert torch.allclose(steered.samples[1, k], base.samples[1, 2], atol=1e-5)
    # the two prompts' images differ: had embeddings not followed, groups would have mixed
    assert not torch.allclose(base.samples[0, 1], base.samples[1, 2], atol=1e-3)


def test_duplicates_diverge_under_a_stochastic_scheduler(pipes):
    """sde-dpmsolver++: resampled copies get fresh noise from the pipeline's generator."""
    pipe = pipes("sd")
    original = pipe.scheduler
    pipe.scheduler = diffusers.DPMSolverMultistepScheduler.from_config(
        original.config, algorithm_type="sde-dpmsolver++"
    )
    try:
        reward, _ = _forced([1, 5], scoring_step=1)
        kwargs = {**call_kwargs("sd"), "num_inference_steps": 4}
        kwargs.pop("eta")
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeterministicSamplerWarning)
            steered = steer_pipeline(
                pipe, reward, FKConfig(num_particles=3, resample_start=1, resample_end=1),
                generator=torch.Generator().manual_seed(7), **kwargs,
            )
    finally:
        pipe.scheduler = original
    samples = steered.samples
    assert not torch.allclose(samples[0, 0], samples[0, 1], atol=1e-3)


def test_flow_eta_renoises_sd3_and_eta_zero_is_the_stock_ode(pipes):
    pipe = pipes("sd3")
    K = 3
    stock = stock_images(pipe, "sd3", K, seed=9)
    ode = steer_pipeline(
        pipe, zeros, FKConfig(num_particles=K), generator=torch.Generator().manual_seed(9),
        options=DiffusersOptions(flow_eta=0.0), **call_kwargs("sd3"),
    )
    assert torch.allclose(ode.samples.reshape(stock.shape), stock, atol=1e-5)
    reward, _ = _forced([0, 3], scoring_step=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeterministicSamplerWarning)
        steered = steer_pipeline(
            pipe, reward, FKConfig(num_particles=K, resample_start=1, resample_end=1),
            generator=torch.Generator().manual_seed(9),
            options=DiffusersOptions(flow_eta=1.0), **call_kwargs("sd3"),
        )
    assert torch.equal(steered.trace[1].ancestors, torch.tensor([[0, 0, 0], [0, 0, 0]]))
    assert not torch.allclose(steered.samples[0, 0], steered.samples[0, 1], atol=1e-4)


def test_deterministic_flow_sampler_warns(pipes):
    with pytest.warns(DeterministicSamplerWarning, match="flow_eta"):
        steer_pipeline(
            pipes("flux"), brightness, FKConfig(num_particles=2),
            generator=torch.Generator().manual_seed(0), **call_kwargs("flux"),
        )


def test_brightness_reward_raises_brightness_over_base(pipes):
    """A visible property moves the right way: FK's weighted mean brightness beats base's."""
    pipe = pipes("sd")
    config = FKConfig(num_particles=6, lmbda=400.0)
    kwargs = {**call_kwargs("sd", groups=1), "num_inference_steps": 4}
    gains = []
    for seed in range(3):
        runs = {
            method: steer_pipeline(
                pipe, brightness, config, method=method,
                generator=torch.Generator().manual_seed(seed), **kwargs,
            )
            for method in ("base", "fk")
        }
        fk = float((runs["fk"].weights * runs["fk"].rewards).sum())
        base = runs["base"].rewards
        # in units of the base spread: the random tiny VAE keeps brightness in a narrow band
        gains.append((fk - float(base.mean())) / float(base.std()))
    assert min(gains) > 0 and sum(gains) / len(gains) > 0.3, gains


# -- decoders ------------------------------------------------------------------------------------


def test_cheap_intermediate_decoder_is_used_only_at_scoring_steps(pipes):
    """A tiny decoder decodes intermediate predictions in chunks; the final potential still
    reads the pipeline's own decode (the output equals the stock pipeline's)."""
    pipe = pipes("sd")
    tiny = diffusers.AutoencoderTiny(
        latent_channels=4,
        encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8),
        num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1),
    )
    chunks = []

    def decoder_spy(module):
        def decode(latents, **kwargs):
            chunks.append(latents.shape[0])
            return module.__class__.decode(module, latents, **kwargs)

        return decode

    tiny.decode = decoder_spy(tiny)
    K = 3
    shapes = []

    def reward(images, prompts):
        shapes.append(tuple(images.shape))
        assert images.min() >= 0 and images.max() <= 1
        return torch.zeros(len(images))

    reward.batch_size = 4
    expected = stock_images(pipe, "sd", K, seed=4)
    result = steer_pipeline(
        pipe, reward, FKConfig(num_particles=K, resample_every=2),
        generator=torch.Generator().manual_seed(4),
        options=DiffusersOptions(decoder=tiny, decode_batch_size=3), **call_kwargs("sd"),
    )
    assert torch.equal(result.samples.reshape(expected.shape), expected)
    # 3 steps, scoring at 0 and 2; 6 particles per step in reward chunks of 4 (4 + 2), each
    # decoded in chunks of at most 3
    assert chunks == [3, 1, 2] * 2
    assert shapes == [(4, 3, 16, 16), (2, 3, 16, 16)] * 3  # two scoring steps, then the final


def test_callable_decoder_gets_the_clean_latents(pipes):
    seen = []

    def decoder(latents):
        seen.append(latents.shape)
        return torch.zeros(latents.shape[0], 1, 2, 2)

    steer_pipeline(
        pipes("sd"), zeros, FKConfig(num_particles=2), generator=torch.Generator().manual_seed(0),
        options=DiffusersOptions(decoder=decoder), **call_kwargs("sd"),
    )
    assert seen == [torch.Size([4, 4, 8, 8])] * 3


def _shape_recorder(shapes, input_size=None):
    def reward(images, prompts):
        shapes.append(tuple(images.shape))
        return images.mean(dim=(1, 2, 3))

    if input_size is not None:
        reward.input_size = input_size
    return reward


@pytest.mark.parametrize(
    "resolution, input_size, intermediate",
    [
        ("auto", None, (4, 3, 16, 16)),  # half the latents, images resized back to 16x16
        (0.25, None, (4, 3, 16, 16)),
        ("full", None, (4, 3, 16, 16)),
        ("auto", 4, (4, 3, 4, 4)),  # the smallest decode with a short side >= 4 px
        ("auto", 64, (4, 3, 16, 16)),  # never above full resolution
    ],
)
def test_intermediate_resolution_keeps_the_final_decode(pipes, resolution, input_size,
                                                        intermediate):
    """Intermediate predictions are decoded at the resolution asked for; the final potential
    reads the pipeline's own full decode, so the output equals the stock pipeline's."""
    pipe, K = pipes("sd"), 2
    shapes = []
    expected = stock_images(pipe, "sd", K, seed=5)
    result = steer_pipeline(
        pipe, _shape_recorder(shapes, input_size), FKConfig(num_particles=K, lmbda=0.0),
        generator=torch.Generator().manual_seed(5),
        options=DiffusersOptions(intermediate_resolution=resolution), **call_kwargs("sd"),
    )
    assert torch.equal(result.samples.reshape(expected.shape), expected)
    assert shapes == [intermediate] * 3 + [(4, 3, 16, 16)]


def test_auto_resolution_halves_the_vae_decode(pipes):
    """'auto' decodes latents of half the height and width with the pipeline's own VAE."""
    pipe = pipes("sd")
    seen = []
    original = pipe.vae.decode

    def spy(latents, *args, **kwargs):
        seen.append(tuple(latents.shape[-2:]))
        return original(latents, *args, **kwargs)

    pipe.vae.decode = spy
    try:
        steer_pipeline(pipe, zeros, FKConfig(num_particles=2),
                       generator=torch.Generator().manual_seed(0), **call_kwargs("sd"))
    finally:
        del pipe.vae.decode
    assert seen[:3] == [(4, 4)] * 3 and seen[3] == (8, 8)  # three scoring steps, then the final


def test_reduced_resolution_matches_a_full_decode_on_smooth_images():
    """Resizing down and back loses only detail: a constant image comes back unchanged."""
    from fksteer.integrations.diffusers.decoding import reduced_resolution

    decode = lambda x: (x / 2 + 0.5).clamp(0, 1)  # noqa: E731
    latents = torch.full((3, 1, 8, 8), 0.4)
    reduced = reduced_resolution(decode, 0.5)(latents)
    torch.testing.assert_close(reduced, decode(latents))
    small = reduced_resolution(decode, short_side=3, pixels_per_latent=2)(latents)
    assert small.shape == (3, 1, 2, 2)


@pytest.mark.parametrize("value", [0.0, 1.5, "half", True, None])
def test_bad_intermediate_resolution_is_an_error(value):
    with pytest.raises(ValueError, match="intermediate_resolution"):
        DiffusersOptions(intermediate_resolution=value)


# -- errors and restoration ----------------------------------------------------------------------


def test_scheduler_and_denoiser_are_restored_after_an_error(pipes):
    pipe = pipes("sd")
    scheduler, unet = pipe.scheduler, pipe.unet

    def failing(images, prompts):
        raise RuntimeError("reward exploded")

    with pytest.raises(RuntimeError, match="reward exploded"):
        steer_pipeline(
            pipe, failing, FKConfig(num_particles=2), generator=torch.Generator().manual_seed(0),
            options=DiffusersOptions(denoiser_batch_size=1), **call_kwargs("sd"),
        )
    assert pipe.scheduler is scheduler and pipe.unet is unet
    assert pipe.config["scheduler"][1] == type(scheduler).__name__


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_images_per_prompt": 4}, "conflicts with config.num_particles=2"),
        ({"output_type": "pil"}, "steer_pipeline sets it"),
        ({"return_dict": False}, "steer_pipeline sets it"),
    ],
)
def test_conflicting_arguments_are_errors(pipes, kwargs, match):
    with pytest.raises(ValueError, match=match):
        steer_pipeline(pipes("sd"), zeros, FKConfig(num_particles=2), prompt="a", **kwargs)


def test_unsupported_scheduler_and_misplaced_flow_eta_are_refused(pipes):
    pipe = pipes("sd")
    original = pipe.scheduler
    pipe.scheduler = diffusers.EDMEulerScheduler()
    try:
        with pytest.raises(ValueError, match="EDMEulerScheduler is not supported"):
            steer_pipeline(pipe, zeros, FKConfig(num_particles=2), prompt="a")
    finally:
        pipe.scheduler = original
    with pytest.raises(ValueError, match="flow_eta needs FlowMatchEulerDiscreteScheduler"):
        steer_pipeline(
            pipe, zeros, FKConfig(num_particles=2), prompt="a",
            options=DiffusersOptions(flow_eta=1.0),
        )
    with pytest.raises(ValueError, match="flow_eta"):
        DiffusersOptions(flow_eta=2.0)
    with pytest.raises(ValueError, match="denoiser_batch_size"):
        DiffusersOptions(denoiser_batch_size=0)


def test_reward_prompts_for_precomputed_embeddings(pipes):
    reward, calls = _forced([0, 2], scoring_step=0)
    steer_pipeline(
        pipes("flux"), reward, FKConfig(num_particles=2, resample_end=0),
        generator=torch.Generator().manual_seed(0),
        options=DiffusersOptions(flow_eta=1.0, reward_prompts=["cat", "dog"]),
        **call_kwargs("flux"),
    )
    assert calls[0] == ["cat", "cat", "dog", "dog"]
