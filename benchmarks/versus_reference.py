"""Steered / stock wall time of a tiny Stable Diffusion pipeline: fksteer beside the reference code.

A random-weight `StableDiffusionPipeline` built in code (UNet ~1M parameters, VAE ~0.17M, CLIP
text encoder, 32x32 px, 16x16 latents), DDIM with eta = 1, 50 steps, classifier-free guidance 3,
one prompt, K particles, a brightness reward, lambda = 10, the difference potential, multinomial
resampling at every scoring step (no adaptive resampling), scoring every step or every 5th.
Variants, interleaved round by round after a warm-up, each with the same seed:

- ``stock``: ``pipe(prompt, num_images_per_prompt=K, eta=1, ...)`` itself;
- ``fksteer``: :func:`fksteer.diffusers.steer_pipeline` with its default intermediate decoding
  (``DiffusersOptions.intermediate_resolution="auto"``: the VAE at half the latent size, images
  resized back), the final potential on the pipeline's own decode;
- ``fksteer_full``: the same with ``intermediate_resolution="full"`` (the full VAE decode of
  every particle at every scoring step, as the reference does);
- ``reference`` (when ``--reference`` names a checkout of
  github.com/zacharyhorvitz/Fk-Diffusion-Steering): its ``FKDStableDiffusion``
  (``text_to_image/fkd_diffusers/fkd_pipeline_sd.py``, imported unchanged from the checkout, never
  copied here) built from the same components and called as its ``launch_eval_runs.py`` does,
  ``pipe([prompt] * K, num_inference_steps=50, eta=1, fkd_args=...)``, with ``device=cpu`` in
  ``fkd_args`` and, in place of its ``rewards`` module (which imports CLIP, HPSv2 and ImageReward
  at import time), a module whose ``get_reward_function`` returns the same brightness.

Without ``--reference`` the reference variant is skipped with a message. Reported: per variant,
the median seconds and the median over rounds of its ratio to that round's stock run. Writes
``pipeline.jsonl`` (one line per variant, setting and round) and ``pipeline.md`` into ``--out``.

    OMP_NUM_THREADS=1 python benchmarks/versus_reference.py --reference /path/to/checkout \\
        --out docs/results/versus-reference
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import fksteer  # noqa: E402

REFERENCE_DIR = Path("text_to_image") / "fkd_diffusers"
PROMPT = "a photo of a cat"


def brightness(images: torch.Tensor, prompts=None) -> torch.Tensor:
    """Mean pixel value of (B, C, H, W) images in [0, 1]."""
    return images.float().mean(dim=(1, 2, 3))


def _tokenizer(directory: Path):
    from transformers import CLIPTokenizer

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for token in letters + [f"{c}</w>" for c in letters]:
        vocab[token] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"),
                         model_max_length=16)


def build_pipeline():
    """The tiny random-weight StableDiffusionPipeline (32x32 px) with a DDIM scheduler."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(36, 72), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
        attention_head_dim=4, norm_num_groups=4,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(16, 32),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4, norm_num_groups=8, layers_per_block=1, sample_size=32,
    )
    text = CLIPTextModel(CLIPTextConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        vocab_size=60, max_position_embeddings=16, bos_token_id=0, eos_token_id=1,
        pad_token_id=1,
    ))
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    with tempfile.TemporaryDirectory() as directory:
        tokenizer = _tokenizer(Path(directory))
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def reference_pipeline(checkout: str | None, pipe):
    """The reference's FKDStableDiffusion over ``pipe``'s components, or (None, the reason)."""
    if checkout is None:
        return None, "no --reference checkout given"
    folder = Path(checkout) / REFERENCE_DIR
    if not (folder / "fkd_pipeline_sd.py").is_file():
        return None, f"{folder / 'fkd_pipeline_sd.py'} does not exist"
    import numpy as np

    def get_reward_function(name, images, prompts, metric_to_chase=None):
        return [float(np.asarray(image, dtype=np.float64).mean() / 255.0) for image in images]

    # its rewards.py imports clip, hpsv2 and ImageReward at import time: a stand-in module
    sys.modules["rewards"] = types.SimpleNamespace(get_reward_function=get_reward_function)
    sys.path.insert(0, str(folder))
    import fkd_pipeline_sd

    reference = fkd_pipeline_sd.FKDStableDiffusion(**pipe.components)
    reference.set_progress_bar_config(disable=True)
    return reference, None


def run_variant(pipes, variant: str, K: int, every: int, args, seed: int) -> dict:
    """Wall and process seconds of one run of ``variant``."""
    from fksteer.diffusers import DiffusersOptions, steer_pipeline

    pipe, reference = pipes
    common = {"num_inference_steps": args.steps, "guidance_scale": args.cfg, "eta": 1.0}
    generator = torch.Generator().manual_seed(seed)
    start, process_start = time.perf_counter(), time.process_time()
    if variant == "stock":
        pipe(PROMPT, num_images_per_prompt=K, output_type="pt", generator=generator, **common)
    elif variant in ("fksteer", "fksteer_full"):
        config = fksteer.FKConfig(num_particles=K, lmbda=args.lmbda, potential="difference",
                                  resampling="multinomial", resample_every=every)
        resolution = "full" if variant == "fksteer_full" else "auto"
        steer_pipeline(pipe, brightness, config, generator=generator, prompt=PROMPT,
                       options=DiffusersOptions(intermediate_resolution=resolution), **common)
    else:
        fkd_args = {"lmbda": args.lmbda, "num_particles": K, "use_smc": True,
                    "adaptive_resampling": False, "resample_frequency": every,
                    "time_steps": args.steps, "resampling_t_start": 0,
                    "resampling_t_end": args.steps, "guidance_reward_fn": "brightness",
                    "potential_type": "diff", "device": torch.device("cpu")}
        with contextlib.redirect_stdout(io.StringIO()):  # it prints its arguments every call
            reference([PROMPT] * K, fkd_args=fkd_args, generator=generator, **common)
    return {"seconds": time.perf_counter() - start,
            "process_seconds": time.process_time() - process_start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference", help="checkout of zacharyhorvitz/Fk-Diffusion-Steering")
    parser.add_argument("--particles", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--every", type=int, nargs="+", default=[1, 5],
                        help="score every N-th step (1: every step)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--cfg", type=float, default=3.0)
    parser.add_argument("--lmbda", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="runs/versus-reference")
    args = parser.parse_args()
    torch.set_num_threads(1)
    pipe = build_pipeline()
    reference, reason = reference_pipeline(args.reference, pipe)
    variants = ["stock", "fksteer", "fksteer_full"] + (["reference"] if reference else [])
    if reference is None:
        print(f"reference code skipped: {reason} (pass --reference PATH to a checkout of "
              "github.com/zacharyhorvitz/Fk-Diffusion-Steering)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = [(K, every) for K in args.particles for every in args.every]
    warm_up = argparse.Namespace(**{**vars(args), "steps": 2})
    for K, every in settings:  # warm-up: lazy initialisation, allocator
        for variant in variants:
            run_variant((pipe, reference), variant, K, every, warm_up, seed=0)
    lines = []
    with (out / "pipeline.jsonl").open("w") as handle:
        for round_index in range(args.rounds):
            for K, every in settings:
                for variant in variants:
                    timing = run_variant((pipe, reference), variant, K, every, args,
                                         seed=round_index + 1)
                    line = {"variant": variant, "num_particles": K, "every": every,
                            "round": round_index, **timing,
                            "torch_threads": torch.get_num_threads()}
                    lines.append(line)
                    handle.write(json.dumps(line) + "\n")
                    handle.flush()
            text = report(lines, variants, settings, pipe, args, round_index + 1)
            (out / "pipeline.md").write_text(text)  # rewritten after every round
    print(text)


def report(lines, variants, settings, pipe, args, rounds: int) -> str:
    """Markdown tables: median per-round ratio to stock and median seconds, in process time
    (CPU seconds of this process: what a shared machine's other jobs disturb least) and wall
    time."""
    def timings(variant, K, every, key):
        return {line["round"]: line[key] for line in lines if line["variant"] == variant
                and line["num_particles"] == K and line["every"] == every}

    tables = []
    for key, title in (("process_seconds", "process time"), ("seconds", "wall time")):
        header = "| K | scoring | " + " | ".join(f"{v} / stock" for v in variants[1:])
        rows = [f"{title}:\n", header + " | " + " | ".join(f"{v} s" for v in variants) + " |",
                "|---" * (1 + 2 * len(variants)) + "|"]
        for K, every in settings:
            stock = timings("stock", K, every, key)
            ratios = [statistics.median(runs[r] / stock[r] for r in runs)
                      for runs in (timings(v, K, every, key) for v in variants[1:])]
            medians = [statistics.median(timings(v, K, every, key).values()) for v in variants]
            scoring = "every step" if every == 1 else f"every {every}th"
            rows.append(f"| {K} | {scoring} | " + " | ".join(f"{r:.3f}" for r in ratios) + " | "
                        + " | ".join(f"{m:.2f}" for m in medians) + " |")
        tables.append("\n".join(rows))
    unet = sum(p.numel() for p in pipe.unet.parameters()) / 1e6
    vae = sum(p.numel() for p in pipe.vae.parameters()) / 1e6
    return (
        "# Steered / stock: fksteer beside the reference code\n\n"
        f"Tiny random-weight StableDiffusionPipeline (UNet {unet:.2f}M, VAE {vae:.2f}M "
        f"parameters, 32x32 px), DDIM eta 1, {args.steps} steps, CFG {args.cfg:g}, one prompt, "
        f"brightness reward, lambda {args.lmbda:g}, difference potential, multinomial "
        f"resampling, no adaptive resampling; CPU, {torch.get_num_threads()} torch thread(s). "
        f"Ratios: median over {rounds} interleaved rounds of (variant / that round's "
        "stock); seconds: medians.\n\n" + "\n\n".join(tables) + "\n"
    )


if __name__ == "__main__":
    main()
