"""GPU benchmark: steered / stock wall time of an SD-1.5-sized StableDiffusionPipeline.

Random weights with the real architectures (timing does not depend on the weights): the SD-1.5
UNet (860M parameters) and VAE, fp16, 512x512, classifier-free guidance, K in {4, 8, 16}
particles for one prompt, 50 DDIM steps (eta = 1), FK scoring and resampling at 10 points
(every 5th step), a reward with the CLIP ViT-L/14 image tower (304M parameters, 224 px input).
Variants, interleaved round by round after a warm-up:

- ``stock``: ``pipe(num_images_per_prompt=K, ...)`` itself;
- ``fk_tiny``: ``steer_pipeline`` with ``AutoencoderTiny`` (TAESD architecture) as the
  intermediate decoder (the final potential uses the pipeline's own VAE decode);
- ``fk_auto``: ``steer_pipeline`` with its default intermediate decoding (the pipeline's VAE on
  half-size latents, images resized back: ``DiffusersOptions.intermediate_resolution="auto"``);
- ``fk_full``: ``steer_pipeline`` decoding intermediate predictions with the full VAE at full
  resolution (``intermediate_resolution="full"``);
- ``fk_guided`` (K in ``--guided-particles`` only): ``fk_tiny`` plus reward-gradient guidance
  (``FKConfig.guidance=1``): at every step the UNet (with CFG), the tiny decoder and the CLIP
  tower run again forward and backward, in chunks of ``--guided-batch`` particles;
- ``fk_guided_ckpt`` (with ``--checkpointing``): ``fk_guided`` with the UNet's gradient
  checkpointing on (less memory for the backward pass, one more forward).

``--model sdxl`` runs the SDXL base architecture instead (2.6B-parameter UNet, 1024 px, its VAE,
precomputed 2048-wide prompt embeddings and 1280-wide pooled embeddings), to show how the
overhead shrinks as the denoiser grows. ``--profile-guided`` adds one ``fk_guided`` run under
``torch.profiler`` and writes the operators that took the GPU's time to ``guided_profile.txt``.
``benchmarks/gpu_perf.sh`` runs the three GPU measurements (guidance, unguided overhead,
SDXL size) in one go.

Writes config.json, results.jsonl (one line per run), report.md (median seconds, ratio to stock,
peak GPU memory; target fk_tiny / stock <= 1.10) into --out.

On a GPU machine without network access that has torch and transformers but not diffusers,
bring the four pure-Python wheels diffusers needs beside torch. On a machine with PyPI, in the
repository root:

    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \\
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \\
        -d .whl diffusers==0.42.1 importlib_metadata==10.2.0 lazy-importer==0.1.0 zipp==4.1.2

(huggingface_hub >= 1.32, safetensors >= 0.8, regex, requests, filelock, numpy and Pillow are
assumed present). Copy the repository with ``.whl/`` to the GPU machine, then there:

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \\
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD/src && \\
    python3 benchmarks/gpu_overhead.py --out runs/gpu-overhead

It takes about 5 minutes on one H100/H200 (models built on the GPU, 40 timed or warm-up runs).
``--quick`` runs tiny models on the CPU in seconds (a smoke test of this script).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from fksteer import FKConfig  # noqa: E402

VARIANTS = ("stock", "fk_tiny", "fk_auto", "fk_full", "fk_guided", "fk_guided_ckpt")


def sdxl_parts(quick: bool):
    """(unet, vae, tiny decoder) configs of SDXL base (stabilityai/stable-diffusion-xl-base-1.0)."""
    from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel

    if quick:
        unet = UNet2DConditionModel(
            sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
            block_out_channels=(8, 16), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
            use_linear_projection=True, addition_embed_type="text_time",
            addition_time_embed_dim=4, projection_class_embeddings_input_dim=4 * 6 + 16,
            cross_attention_dim=32, norm_num_groups=4,
        )
        return unet, *sd15_parts(True)[1:]
    unet = UNet2DConditionModel(  # unet/config.json
        sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20),
        cross_attention_dim=2048, use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
    )
    vae = AutoencoderKL(  # vae/config.json (force_upcast off: time the fp16 decode)
        block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=2,
        sample_size=1024, scaling_factor=0.13025, force_upcast=False,
    )
    return unet, vae, AutoencoderTiny()


def sd15_parts(quick: bool):
    """(unet, vae, tiny decoder) configs: SD-1.5's, or tiny ones for --quick."""
    from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel

    if quick:
        unet = UNet2DConditionModel(
            sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
            block_out_channels=(8, 16), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
            attention_head_dim=4, norm_num_groups=4,
        )
        vae = AutoencoderKL(
            block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
            layers_per_block=1,
        )
        tiny = AutoencoderTiny(
            encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
            num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1),
        )
        return unet, vae, tiny
    unet = UNet2DConditionModel(  # runwayml/stable-diffusion-v1-5 unet/config.json
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=768, attention_head_dim=8,
    )
    vae = AutoencoderKL(  # vae/config.json
        block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=2,
        sample_size=512, scaling_factor=0.18215,
    )
    return unet, vae, AutoencoderTiny()  # TAESD's default architecture


class ClipImageReward:
    """Cosine between the CLIP image embedding and a fixed direction: a CLIP-L-sized reward."""

    def __init__(self, device, dtype, quick: bool):
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        if quick:
            config = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, image_size=32, patch_size=8,
                                      projection_dim=16)
        else:  # openai/clip-vit-large-patch14 vision tower
            config = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096,
                                      num_hidden_layers=24, num_attention_heads=16,
                                      image_size=224, patch_size=14, projection_dim=768)
        with torch.device(device):
            self.model = CLIPVisionModelWithProjection(config).to(dtype).eval()
        self.size = config.image_size
        generator = torch.Generator().manual_seed(0)
        direction = torch.randn(config.projection_dim, generator=generator)
        self.direction = (direction / direction.norm()).to(device, dtype)
        self.mean = torch.tensor([0.4815, 0.4578, 0.4082], device=device, dtype=dtype)
        self.std = torch.tensor([0.2686, 0.2613, 0.2758], device=device, dtype=dtype)
        self.mean, self.std = self.mean[:, None, None], self.std[:, None, None]
        self.batch_size = None

    @torch.no_grad()
    def __call__(self, images, prompts):
        return self.score(images, prompts)

    def differentiable(self):
        """The same score with gradients (reward-gradient guidance calls this)."""
        return self.score

    def score(self, images, prompts):
        images = torch.nan_to_num(images.to(self.direction.dtype), 0.5).clamp(0, 1)
        pixels = torch.nn.functional.interpolate(images, size=(self.size, self.size),
                                                 mode="bilinear", antialias=False)
        embeds = self.model(pixel_values=(pixels - self.mean) / self.std).image_embeds
        scores = torch.nn.functional.cosine_similarity(embeds.float(), self.direction.float()[None])
        return torch.nan_to_num(scores, 0.0)


def build(args):
    from diffusers import DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    device = torch.device("cuda" if torch.cuda.is_available() and not args.quick else "cpu")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    xl = args.model == "sdxl"
    with torch.device(device):  # initialise the weights on the GPU directly
        unet, vae, tiny = (sdxl_parts if xl else sd15_parts)(args.quick)
    unet, vae, tiny = (m.to(device, dtype).eval() for m in (unet, vae, tiny))
    if args.channels_last:
        unet.to(memory_format=torch.channels_last)
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    if xl:
        pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=None, text_encoder_2=None,
                                         tokenizer=None, tokenizer_2=None, unet=unet,
                                         scheduler=scheduler)
    else:
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=None, tokenizer=None, unet=unet,
                                       scheduler=scheduler, safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    width = unet.config.cross_attention_dim
    tokens = 77 if not args.quick else 8
    generator = torch.Generator().manual_seed(1)
    embeds = torch.randn(1, tokens, width, generator=generator).to(device, dtype)
    extra = {}
    if xl:  # pooled text embeddings: the rest of the time-embedding input
        pooled = unet.config.projection_class_embeddings_input_dim - 6 * (
            unet.config.addition_time_embed_dim)
        pooled = torch.randn(1, pooled, generator=generator).to(device, dtype)
        extra = {"pooled_prompt_embeds": pooled,
                 "negative_pooled_prompt_embeds": torch.zeros_like(pooled)}
    request = {
        **extra,
        "prompt_embeds": embeds,
        "negative_prompt_embeds": torch.zeros_like(embeds),
        "guidance_scale": 7.5,
        "num_inference_steps": args.steps,
        "height": args.size,
        "width": args.size,
        "eta": 1.0,
    }
    return pipe, tiny, ClipImageReward(device, dtype, args.quick), request, device


def run_once(pipe, tiny, reward, request, variant, K, args, seed):
    from fksteer.diffusers import DiffusersOptions, steer_pipeline

    generator = torch.Generator().manual_seed(seed)
    cuda = pipe.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    seconds_parts = None
    if variant == "stock":
        pipe(**request, num_images_per_prompt=K, output_type="pt", generator=generator)
    else:
        guided = variant.startswith("fk_guided")
        config = FKConfig(num_particles=K, lmbda=10.0,
                          resample_every=max(args.steps // args.scoring_points, 1),
                          guidance=1.0 if guided else 0.0)
        own_vae = variant in ("fk_full", "fk_auto")
        options = DiffusersOptions(decoder=None if own_vae else tiny,
                                   intermediate_resolution="full" if variant == "fk_full"
                                   else "auto",
                                   decode_batch_size=args.decode_batch_size,
                                   denoiser_batch_size=args.guided_batch if guided else None)
        if variant == "fk_guided_ckpt":
            pipe.unet.enable_gradient_checkpointing()
        try:
            result = steer_pipeline(pipe, reward, config, generator=generator, options=options,
                                    **request)
        except torch.OutOfMemoryError:  # recorded, so that the other variants still run
            torch.cuda.empty_cache()
            return {"variant": variant, "num_particles": K, "seed": seed,
                    "seconds": None, "parts": None, "error": "out of memory"}
        finally:
            if variant == "fk_guided_ckpt":
                pipe.unet.disable_gradient_checkpointing()
        seconds_parts = result.seconds
    if cuda:
        torch.cuda.synchronize()
    record = {"variant": variant, "num_particles": K, "seed": seed,
              "seconds": time.perf_counter() - start, "parts": seconds_parts}
    if cuda:
        record["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/gpu-overhead"))
    parser.add_argument("--particles", default="4,8,16")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--scoring-points", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--decode-batch-size", type=int, default=None)
    parser.add_argument("--guided-particles", default="4",
                        help="K values at which fk_guided runs (comma-separated)")
    parser.add_argument("--guided-batch", type=int, default=4,
                        help="particles per backward pass (and denoiser rows per forward) of "
                        "fk_guided")
    parser.add_argument("--model", choices=("sd15", "sdxl"), default="sd15")
    parser.add_argument("--checkpointing", action="store_true",
                        help="also run fk_guided with the UNet's gradient checkpointing")
    parser.add_argument("--channels-last", action="store_true",
                        help="the UNet in channels_last memory format")
    parser.add_argument("--profile-guided", action="store_true",
                        help="profile one fk_guided run: guided_profile.txt")
    parser.add_argument("--quick", action="store_true", help="tiny models on the CPU")
    args = parser.parse_args()
    if args.quick:
        args.size, args.steps, args.scoring_points, args.repeats = 16, 10, 2, 1
        args.particles = args.guided_particles = "2,4"
    particles = [int(k) for k in args.particles.split(",")]
    guided_particles = {int(k) for k in args.guided_particles.split(",") if k.strip()}

    def variants(K):
        chosen = [v for v in VARIANTS if not v.startswith("fk_guided") or K in guided_particles]
        return [v for v in chosen if v != "fk_guided_ckpt" or args.checkpointing]
    args.out.mkdir(parents=True, exist_ok=True)

    import diffusers
    import transformers

    start = time.perf_counter()
    pipe, tiny, reward, request, device = build(args)
    build_seconds = time.perf_counter() - start
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    environment = {"device": card, "torch": torch.__version__, "diffusers": diffusers.__version__,
                   "transformers": transformers.__version__, "build_seconds": build_seconds,
                   "dtype": str(pipe.unet.dtype)}
    (args.out / "config.json").write_text(json.dumps({**vars(args), "out": str(args.out),
                                                      **environment}, indent=2))
    print(json.dumps(environment), flush=True)

    records = []
    with (args.out / "results.jsonl").open("w") as handle:
        for K in particles:  # warm-up: cuDNN autotuning, allocator, lazy imports
            for variant in variants(K):
                run_once(pipe, tiny, reward, request, variant, K, args, seed=0)
        for repeat in range(args.repeats):
            for K in particles:
                for variant in variants(K):
                    record = run_once(pipe, tiny, reward, request, variant, K, args, repeat)
                    record["repeat"] = repeat
                    records.append(record)
                    handle.write(json.dumps(record) + "\n")
                    handle.flush()
                    print(json.dumps(record), flush=True)

    lines = [
        "# GPU overhead of steer_pipeline (SD-1.5 architecture, random weights)\n",
        f"{card}, {args.model}, {environment['dtype']}, {args.size}px, {args.steps} DDIM steps "
        "(eta=1), CFG "
        f"7.5, {args.scoring_points} scoring points, CLIP ViT-L/14-sized reward; median of "
        f"{args.repeats} interleaved repeats. torch {torch.__version__}, diffusers "
        f"{diffusers.__version__}.\n",
        "| K | variant | median s | / stock | peak GiB | reward+decode s | engine s |",
        "|---|---|---|---|---|---|---|",
    ]
    for K in particles:
        def median(variant, key="seconds", K=K):
            values = [r[key] for r in records if r["variant"] == variant
                      and r["num_particles"] == K and r.get(key) is not None]
            return statistics.median(values) if values else float("nan")

        stock = median("stock")
        for variant in variants(K):
            parts = [r["parts"] for r in records if r["variant"] == variant
                     and r["num_particles"] == K and r["parts"]]
            reward_s = statistics.median(p["reward"] for p in parts) if parts else 0.0
            engine_s = statistics.median(p["engine"] for p in parts) if parts else 0.0
            lines.append(
                f"| {K} | {variant} | {median(variant):.3f} | {median(variant) / stock:.3f} | "
                f"{median(variant, 'peak_gib'):.2f} | {reward_s:.3f} | {engine_s:.4f} |"
            )
    report = "\n".join(lines) + "\n"
    (args.out / "report.md").write_text(report)
    print(report)
    if args.profile_guided and guided_particles:
        profile_guided(pipe, tiny, reward, request, min(guided_particles), args)


def profile_guided(pipe, tiny, reward, request, K, args) -> None:
    """One fk_guided run under torch.profiler: the operators that took the time, by device
    time (CUDA) or CPU time, into guided_profile.txt."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if pipe.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities, record_shapes=False) as profiler:
        record = run_once(pipe, tiny, reward, request, "fk_guided", K, args, seed=0)
    key = "self_cuda_time_total" if pipe.device.type == "cuda" else "self_cpu_time_total"
    table = profiler.key_averages().table(sort_by=key, row_limit=40)
    (args.out / "guided_profile.txt").write_text(
        f"fk_guided, K = {K}: {json.dumps(record)}\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
