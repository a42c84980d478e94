"""Train the embedded class-conditional diffusion models on Fashion-MNIST 16x16.

    python scripts/train_image_models.py --size weak    # ~0.18M parameters
    python scripts/train_image_models.py --size strong  # ~0.70M parameters

Writes a diffusers folder (UNet2DModel + DDPMScheduler configs and safetensors weights, the EMA
of the training weights) and ``training.json`` (settings, loss curve, wall time) into
``src/fksteer/embedded/weights/fashion16-{size}``. The prompt is a class name; class index 10
is the null class used for classifier-free guidance (dropped in for 10% of training examples).
Needs ``apt-get install dataset-fashion-mnist`` and ``pip install -e ".[diffusers]"``. Seeded:
the same command gives the same weights on the same machine and library versions.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DModel

from fksteer.embedded.fashion import CLASS_NAMES, load_fashion

SIZES = {
    # name: (block_out_channels, training steps)
    "weak": ((16, 32), 3000),
    "strong": ((32, 64), 3000),
}
NULL_CLASS = len(CLASS_NAMES)
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "src/fksteer/embedded/weights"


def build_unet(block_out_channels: tuple[int, int]) -> UNet2DModel:
    return UNet2DModel(
        sample_size=16,
        in_channels=1,
        out_channels=1,
        layers_per_block=1,
        block_out_channels=block_out_channels,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        num_class_embeds=NULL_CLASS + 1,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), required=True)
    parser.add_argument("--steps", type=int, help="training steps (default: per size)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="output folder (default: the package's)")
    args = parser.parse_args()
    channels, default_steps = SIZES[args.size]
    steps = args.steps or default_steps
    out = args.out or WEIGHTS_DIR / f"fashion16-{args.size}"
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)

    images, labels = load_fashion("train")
    data = images * 2 - 1  # (N, 1, 16, 16) in [-1, 1]
    unet = build_unet(channels)
    ema = copy.deepcopy(unet).requires_grad_(False)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    optimizer = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=1e-4)
    warmup = 200

    def learning_rate(step: int) -> float:  # linear warm-up, then cosine decay to 5%
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

    lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate)
    alphas_cumprod = scheduler.alphas_cumprod
    losses, start = [], time.time()
    for step in range(steps):
        index = torch.randint(0, len(data), (args.batch_size,), generator=generator)
        x0, y = data[index], labels[index].clone()
        y[torch.rand(len(y), generator=generator) < 0.1] = NULL_CLASS  # CFG dropout
        t = torch.randint(0, 1000, (len(x0),), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        a = alphas_cumprod[t].sqrt()[:, None, None, None]
        x_t = a * x0 + (1 - a**2).sqrt() * noise
        loss = torch.nn.functional.mse_loss(unet(x_t, t, class_labels=y).sample, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        lr_schedule.step()
        decay = 0.0 if step < warmup else min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for ema_param, param in zip(ema.parameters(), unet.parameters(), strict=True):
                ema_param.lerp_(param, 1 - decay)
        losses.append(loss.item())
        if (step + 1) % 250 == 0:
            recent = sum(losses[-250:]) / 250
            elapsed = time.time() - start
            print(f"step {step + 1}/{steps} loss {recent:.4f} {elapsed:.0f}s", flush=True)

    out.mkdir(parents=True, exist_ok=True)
    ema.save_pretrained(out, safe_serialization=True)
    scheduler.save_pretrained(out)
    report = {
        "size": args.size,
        "parameters": sum(p.numel() for p in ema.parameters()),
        "block_out_channels": list(channels),
        "steps": steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "class_names": list(CLASS_NAMES),
        "null_class": NULL_CLASS,
        "cfg_dropout": 0.1,
        "loss_every_250_steps": [sum(losses[i : i + 250]) / 250 for i in range(0, steps, 250)],
        "seconds": time.time() - start,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    (out / "training.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out} in {report['seconds']:.0f}s")


if __name__ == "__main__":
    main()
