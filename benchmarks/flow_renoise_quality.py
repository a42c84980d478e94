"""What the DDIM-style flow re-noising step (DiffusersOptions.flow_eta) does to the base law.

    python benchmarks/flow_renoise_quality.py --out runs/flow-renoise

The stock flow-matching sampler integrates the ODE dx/dt = v(x, t) with Euler steps (eta = 0).
``flow_renoise_step`` instead draws x_s = (1 - s) x0_hat + s (sqrt(1 - eta^2) eps_hat + eta z):
with an exact velocity every eta keeps the marginals of x_t, so the laws differ only by
discretisation error; with a learned velocity they differ by how each sampler propagates the
model's error. Two measurements, each at several step counts and eta in {0, 0.5, 1}:

Both noise conventions of ``flow_renoise_std`` are measured: ``"ddpm"`` (eta times the DDPM
posterior std; eta = 1 is the ancestral sampler) and ``"fraction"`` (sigma = eta * s).

1. a 2-D Gaussian mixture whose velocity is exact in closed form (weights 0.8/0.2, means -2/+2,
   std 0.3): energy distance to exact samples, the minor component's share (exact 0.2) and the
   within-component std (exact 0.3);
2. the embedded class-conditional Fashion-MNIST DDPM (``src/fksteer/embedded/weights/
   fashion16-*``, if trained), run in flow coordinates (x_flow = x_vp / (alpha + sigma),
   t = sigma / (alpha + sigma), v = eps - x0_hat) on the flow times of DDIM's timestep grid, so
   that the model is evaluated at its trained timesteps and eta = 0 is DDIM exactly; scored by
   the held-out judge classifier (accuracy on the conditioning class, no guidance) and by the
   within-class spread relative to the test images', beside the model's own DDPM and DDIM
   (eta = 0) samplers, all without x0 clipping.

Writes results.jsonl and report.md into --out.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fksteer.integrations.diffusers.schedulers import flow_renoise_step  # noqa: E402

WEIGHTS = torch.tensor([0.8, 0.2], dtype=torch.float64)
MEANS = torch.tensor([[-2.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
STD = 0.3


def mixture_velocity(x: torch.Tensor, t: float) -> torch.Tensor:
    """E[eps - x0 | x_t = x] for x_t = (1 - t) x0 + t eps, x0 from the mixture (exact)."""
    x = x.double()
    variance = (1 - t) ** 2 * STD**2 + t**2
    centred = x[:, None, :] - (1 - t) * MEANS[None]  # (B, 2, D)
    log_r = torch.log(WEIGHTS)[None] - (centred**2).sum(-1) / (2 * variance)
    r = torch.softmax(log_r, dim=1)  # (B, 2)
    means = MEANS[None] + (1 - t) * STD**2 / variance * centred  # E[x0 | x_t, k]
    clean = (r[..., None] * means).sum(1)
    noise = (x - (1 - t) * clean) / t
    return (noise - clean).float()


def exact_mixture(n: int, generator: torch.Generator) -> torch.Tensor:
    k = torch.multinomial(WEIGHTS.float(), n, replacement=True, generator=generator)
    return (MEANS[k] + STD * torch.randn(n, 2, generator=generator, dtype=torch.float64)).float()


def energy_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(2 * torch.cdist(a, b).mean() - torch.cdist(a, a).mean() - torch.cdist(b, b).mean())


def flow_sample(
    velocity, shape, steps: int, eta: float, seed: int, noise: str, sigmas=None, scale=1.0
) -> torch.Tensor:
    """Sample with flow_renoise_step from x = scale * N(0, I) over ``steps`` uniform flow times,
    or over the flow times ``sigmas`` (then 0)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0)
    if sigmas is None:
        scheduler.set_timesteps(steps)
    else:
        scheduler.set_timesteps(sigmas=sigmas)
    generator = torch.Generator().manual_seed(seed)
    x = scale * torch.randn(shape, generator=generator)
    for index, t in enumerate(scheduler.timesteps):
        v = velocity(x, float(scheduler.sigmas[index]), index)
        x = flow_renoise_step(scheduler, v, t, x, eta, generator, noise)
    return x


def settings(etas):
    """(eta, noise convention) pairs: eta = 0 once (the ODE), each eta > 0 under both."""
    pairs = [(0.0, "ddpm")] if 0.0 in etas else []
    return pairs + [(eta, noise) for noise in ("ddpm", "fraction") for eta in etas if eta > 0]


def mixture_rows(steps_list, etas, n: int) -> list[dict]:
    rows = []
    reference = exact_mixture(n, torch.Generator().manual_seed(123))
    for steps in steps_list:
        for eta, noise in settings(etas):
            x = flow_sample(lambda x, t, index: mixture_velocity(x, t), (n, 2), steps, eta,
                            seed=0, noise=noise)
            minor = x[:, 0] > 0
            within = torch.cat([x[minor] - MEANS[1].float(), x[~minor] - MEANS[0].float()])
            rows.append({
                "model": "mixture", "steps": steps, "eta": eta, "noise": noise,
                "energy_distance": energy_distance(x[:4000], reference[:4000]),
                "minor_share": float(minor.float().mean()),
                "within_std": float(within.std()),
            })
            print(json.dumps(rows[-1]), flush=True)
    return rows


def embedded_rows(steps_list, etas, per_class: int) -> list[dict]:
    weights = sorted((ROOT / "src/fksteer/embedded/weights").glob("fashion16-*"))
    weights = [w for w in weights if (w / "scheduler_config.json").exists()]  # diffusion models
    if not weights:
        print("no embedded image model weights found: skipping part 2", flush=True)
        return []
    from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

    from fksteer.embedded.classifier import load_classifier

    judge = load_classifier("judge").eval()
    rows = []
    labels = torch.arange(10).repeat_interleave(per_class)
    shape = (len(labels), 1, 16, 16)

    def accuracy(x):
        with torch.no_grad():
            logits = judge(((x.clamp(-1, 1) + 1) / 2).float())
        return float((logits.argmax(-1) == labels).float().mean())

    def class_spread(images, classes):  # mean over classes of the per-pixel std within a class
        return torch.stack([images[classes == c].std(dim=0).mean() for c in range(10)])

    from fksteer.embedded.fashion import load_fashion

    real_images, real_labels = load_fashion("test")
    real_spread = class_spread(real_images, real_labels)

    def spread(x):  # 1: as diverse as the test images of each class; < 1: collapsed
        return float((class_spread((x.clamp(-1, 1) + 1) / 2, labels) / real_spread).mean())

    def reference(unet, scheduler, steps, **step_kwargs):
        scheduler.set_timesteps(steps)
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(shape, generator=generator)
        with torch.no_grad():
            for t in scheduler.timesteps:
                out = unet(x, t, class_labels=labels).sample
                x = scheduler.step(out, t, x, generator=generator, **step_kwargs).prev_sample
        return x

    for folder in weights:
        unet = UNet2DModel.from_pretrained(folder).eval()
        abar = DDPMScheduler.from_pretrained(folder).alphas_cumprod.double()
        for steps in steps_list:
            for sampler, scheduler, kwargs in (
                ("ddpm", DDPMScheduler.from_pretrained(folder, clip_sample=False), {}),
                ("ddim eta=0", DDIMScheduler.from_pretrained(folder, clip_sample=False),
                 {"eta": 0.0}),
            ):
                x = reference(unet, scheduler, steps, **kwargs)
                rows.append({"model": folder.name, "sampler": sampler, "steps": steps,
                             "eta": None, "judge_accuracy": accuracy(x), "spread": spread(x)})
                print(json.dumps(rows[-1]), flush=True)
            # The flow times of DDIM's grid: t = sigma / (alpha + sigma) at each trained step,
            # so the model is evaluated at exactly its trained timesteps (eta = 0 is DDIM).
            grid = DDIMScheduler.from_pretrained(folder)
            grid.set_timesteps(steps)
            trained = [int(t) for t in grid.timesteps]
            alphas = [math.sqrt(float(abar[t])) for t in trained]
            sigmas_vp = [math.sqrt(1 - float(abar[t])) for t in trained]
            flow_times = [s / (a + s) for a, s in zip(alphas, sigmas_vp, strict=True)]

            @torch.no_grad()
            def velocity(x, t, index, unet=unet, trained=trained, alphas=alphas,
                         sigmas_vp=sigmas_vp):
                alpha, sigma = alphas[index], sigmas_vp[index]
                x_vp = x * (alpha + sigma)
                eps = unet(x_vp, trained[index], class_labels=labels).sample
                return eps - (x_vp - sigma * eps) / alpha

            for eta, noise in settings(etas):
                x = flow_sample(velocity, shape, steps, eta, seed=0, noise=noise,
                                sigmas=flow_times, scale=1 / (alphas[0] + sigmas_vp[0]))
                rows.append({"model": folder.name, "sampler": "flow", "steps": steps,
                             "eta": eta, "noise": noise, "judge_accuracy": accuracy(x),
                             "spread": spread(x)})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/flow-renoise"))
    parser.add_argument("--steps", default="10,25,50")
    parser.add_argument("--etas", default="0,0.5,1")
    parser.add_argument("--samples", type=int, default=20000, help="mixture samples")
    parser.add_argument("--per-class", type=int, default=50, help="embedded images per class")
    args = parser.parse_args()
    steps_list = [int(s) for s in args.steps.split(",")]
    etas = [float(e) for e in args.etas.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    rows = mixture_rows(steps_list, etas, args.samples)
    rows += embedded_rows(steps_list, etas, args.per_class)
    (args.out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    lines = ["# Flow re-noising (flow_eta) vs the flow ODE\n",
             "## Gaussian mixture, exact velocity (exact: minor share 0.2, within std 0.3)\n",
             "| steps | eta | noise | energy distance | minor share | within std |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        if r["model"] == "mixture":
            lines.append(f"| {r['steps']} | {r['eta']} | {r['noise']} | "
                         f"{r['energy_distance']:.4f} | {r['minor_share']:.3f} | "
                         f"{r['within_std']:.3f} |")
    embedded = [r for r in rows if r["model"] != "mixture"]
    if embedded:
        lines += ["", "## Embedded Fashion-MNIST DDPM in flow coordinates: judge accuracy\n",
                  "Spread: per-pixel std within each class over the test images' (1: as "
                  "diverse as the data; < 1: collapsed towards class prototypes).\n",
                  "| model | sampler | steps | eta | noise | judge accuracy | spread |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['sampler']} | {r['steps']} | {r['eta']} | "
                  f"{r.get('noise', '')} | {r['judge_accuracy']:.3f} | {r['spread']:.3f} |"
                  for r in embedded]
    report = "\n".join(lines) + "\n"
    (args.out / "report.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
