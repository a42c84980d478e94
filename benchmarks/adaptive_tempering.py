"""Adaptive tempering and the tilt chosen from the particles against a fixed lambda.

    OMP_NUM_THREADS=1 python benchmarks/adaptive_tempering.py --out docs/results/adaptive-tempering

Part 1, the exact rare-mode target (`GaussianMixtureDiffusion.rare_mode`, 25 steps, linear
reward, scored and resampled at every step, difference potential): the exact tilt at lambda
1.75 (the problem's own) and at lambda 7 (four times stronger), fixed lambda against
AdaptiveTilt(target=lambda, ess=0.5), K in {4, 16, 64}, ``--seeds`` x ``--replicas`` independent
runs per cell (the record of `fksteer bench exact`: rare-component mass error, |log Z_hat - log
Z|, final ESS, ESS before resampling averaged over the steps and its per-run minimum).

Part 2, the embedded weak image model (50 DDPM steps, scored every 5 steps, K = ``--particles``,
one prompt per Fashion-MNIST class) with the steering reward (the embedded steering classifier's
log p(class | x)) multiplied by c in {0.01, 1, 100}: fixed lambda 10, LargestTilt(cap=1e4) (the
final lambda_hat chosen from the particles) and AdaptiveTilt(target=10). Per prompt: held-out
judge accuracy and steering reward (unscaled) of a draw from the final weights, ESS averaged
over the 50 steps and the final one, diversity (mean pairwise RMS pixel distance of the K
particles) and the final lambda times c (scale-free tilts give the same value at every c).

Writes config.json, exact.jsonl and image.jsonl (both resumable), and report.md into --out.
Intervals: mean ± a 95% normal interval over seeds x runs (part 1: over the seeds' means,
Student t) or over the (seed, prompt) records (part 2).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from fksteer import FKConfig, steer  # noqa: E402
from fksteer.bench.exact import ExactBenchConfig, run_one  # noqa: E402
from fksteer.bench.records import (  # noqa: E402
    RecordFile,
    markdown_table,
    mean_and_ci,
    mean_and_t_ci,
    write_json,
)
from fksteer.embedded.fashion import CLASS_NAMES  # noqa: E402
from fksteer.smc.tempering import AdaptiveTilt, LargestTilt  # noqa: E402

EXACT_LAMBDAS = (1.75, 7.0)
EXACT_PARTICLES = (4, 16, 64)
EXACT_METHODS = ("fk-difference", "fk-adaptive")
SCALES = (0.01, 1.0, 100.0)
TILTS = ("fixed 10", "LargestTilt(cap=1e4)", "AdaptiveTilt(10)")


def exact_part(out: Path, seeds: int, replicas: int) -> list[dict]:
    bench = ExactBenchConfig(seeds=seeds, replicas=replicas)
    records = RecordFile(out / "exact.jsonl", ("lmbda", "method", "num_particles", "seed"))
    for lmbda in EXACT_LAMBDAS:
        for k in EXACT_PARTICLES:
            for method in EXACT_METHODS:
                for seed in range(seeds):
                    if not records.done(lmbda=lmbda, method=method, num_particles=k, seed=seed):
                        records.append(run_one(bench, method, k, seed, lmbda=lmbda))
    return records.records


def _tilt(name: str):
    return {"fixed 10": 10.0, "LargestTilt(cap=1e4)": LargestTilt(cap=1e4),
            "AdaptiveTilt(10)": AdaptiveTilt(target=10.0)}[name]


class Scaled:
    """``reward`` times ``scale`` (batch size kept)."""

    def __init__(self, reward, scale: float):
        self.reward, self.scale = reward, scale
        self.batch_size = getattr(reward, "batch_size", None)

    def __call__(self, samples, prompts):
        return self.reward(samples, prompts) * self.scale


def image_part(out: Path, seeds: int, particles: int) -> list[dict]:
    from fksteer.bench.image import _pairwise_rms
    from fksteer.embedded.classifier import load_classifier
    from fksteer.embedded.image_model import load_image_model
    from fksteer.rewards.classifier import ClassifierLogProb

    records = RecordFile(out / "image.jsonl", ("scale", "tilt", "seed", "prompt_index"))
    model = load_image_model("weak", num_inference_steps=50, guidance_scale=1.0,
                             scheduler="ddpm")
    steering = ClassifierLogProb(load_classifier("steering"), labels=CLASS_NAMES)
    judge = load_classifier("judge")
    prompts = list(CLASS_NAMES)
    labels = torch.arange(len(prompts))
    for scale in SCALES:
        for tilt in TILTS:
            for seed in range(seeds):
                if records.done(scale=scale, tilt=tilt, seed=seed, prompt_index=0):
                    continue
                config = FKConfig(num_particles=particles, lmbda=_tilt(tilt), resample_every=5)
                start = time.perf_counter()
                result = steer(model, Scaled(steering, scale), config, prompts=prompts,
                               generator=torch.Generator().manual_seed(seed))
                seconds = time.perf_counter() - start
                samples = result.samples.detach().float()  # (G, K, 1, 16, 16)
                with torch.no_grad():
                    judged = judge(samples.flatten(0, 1)).argmax(-1).view(len(prompts), -1)
                correct = (judged == labels[:, None]).double()
                weights, rewards = result.weights, result.rewards / scale  # unscaled reward
                diversity = _pairwise_rms(samples)
                ess = torch.stack([step.ess for step in result.trace])  # (T + 1, G)
                final_lambda = result.trace[-1].lmbda  # (G,)
                records.extend([{
                    "scale": scale, "tilt": tilt, "seed": seed, "prompt_index": g,
                    "judge_draw": float((weights[g] * correct[g]).sum()),
                    "reward_draw": float(torch.nansum(weights[g] * rewards[g])),
                    "mean_ess": float(ess[:, g].mean()), "final_ess": float(result.ess[g]),
                    "diversity": float(diversity[g]),
                    "scaled_final_lambda": float(final_lambda[g]) * scale,
                    "seconds": seconds / len(prompts),
                } for g in range(len(prompts))])
    return records.records


def _cell(values, t=False, percent=False) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    mean, half = (mean_and_t_ci if t else mean_and_ci)(values)
    if percent:
        return f"{100 * mean:.1f}% ± {100 * half:.1f}"
    return f"{mean:.4g} ± {half:.2g}"


def _seed_means(records, metric, **where) -> list[float]:
    rows = [r for r in records if all(r[k] == v for k, v in where.items())]
    seeds = sorted({r["seed"] for r in rows})
    return [sum(r[metric] for r in rows if r["seed"] == s) / sum(1 for r in rows
            if r["seed"] == s) for s in seeds if rows]


def report(exact: list[dict], image: list[dict], args: argparse.Namespace) -> str:
    parts = ["# Adaptive tempering and the tilt chosen from the particles\n\n",
             f"Command: `OMP_NUM_THREADS=1 python benchmarks/adaptive_tempering.py --out "
             f"{args.out} --seeds {args.seeds} --replicas {args.replicas} --image-seeds "
             f"{args.image_seeds} --particles {args.particles}`.\n\n",
             "## 1. Exact rare-mode target: fixed lambda against AdaptiveTilt(lambda)\n\n"
             f"{args.seeds} seeds x {args.replicas} runs per cell; cells: mean over seeds ± a "
             "Student t 95% interval over the seeds' means. Rare-mass error |m_hat - m|, log Z "
             "error |log Z_hat - log Z| (the adaptive run's is consistent, not unbiased), final "
             "ESS, step ESS (before resampling, mean over the 25 steps), min step ESS (the "
             "lowest step of a run, median over runs).\n\n"]
    rows = []
    for lmbda in EXACT_LAMBDAS:
        for method in EXACT_METHODS:
            for k in EXACT_PARTICLES:
                where = {"lmbda": lmbda, "method": method, "num_particles": k}
                rows.append([lmbda, "fixed" if method == "fk-difference" else "adaptive", k] + [
                    _cell(_seed_means(exact, metric, **where), t=True)
                    for metric in ("occupancy_error", "log_evidence_error", "ess", "step_ess",
                                   "min_step_ess")])
    parts.append(markdown_table(["lambda", "tilt", "K", "rare-mass error", "log Z error",
                                 "final ESS", "step ESS", "min step ESS"], rows))
    parts.append(
        "\n## 2. Embedded weak image model, steering reward times c\n\n"
        f"K = {args.particles}, 50 DDPM steps, scored every 5 steps, 10 prompts (one per "
        f"class) x {args.image_seeds} seeds; cells: mean ± a normal 95% interval over the "
        "(seed, prompt) records. judge: held-out judge accuracy of a draw from the final "
        "weights; reward: the unscaled steering reward of a draw; lambda x c: the final tilt "
        "times the reward's scale (a scale-free tilt gives the same value at every c).\n\n")
    rows = []
    for scale in SCALES:
        for tilt in TILTS:
            chosen = [r for r in image if r["scale"] == scale and r["tilt"] == tilt]
            if not chosen:
                continue
            rows.append([scale, tilt] + [
                _cell([r[m] for r in chosen], percent=m == "judge_draw")
                for m in ("judge_draw", "reward_draw", "mean_ess", "final_ess", "diversity",
                          "scaled_final_lambda", "seconds")])
    parts.append(markdown_table(["c", "tilt", "judge", "reward", "mean ESS", "final ESS",
                                 "diversity", "lambda x c", "s/prompt"], rows))
    return "".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="docs/results/adaptive-tempering")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=100)
    parser.add_argument("--image-seeds", type=int, default=2)
    parser.add_argument("--particles", type=int, default=8)
    parser.add_argument("--skip-image", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", {**vars(args), "exact_lambdas": EXACT_LAMBDAS,
                                     "exact_particles": EXACT_PARTICLES, "scales": SCALES,
                                     "tilts": TILTS,
                                     "exact_bench": asdict(ExactBenchConfig(
                                         seeds=args.seeds, replicas=args.replicas))})
    exact = exact_part(out, args.seeds, args.replicas)
    image = [] if args.skip_image else image_part(out, args.image_seeds, args.particles)
    (out / "report.md").write_text(report(exact, image, args))
    print((out / "report.md").read_text())


if __name__ == "__main__":
    main()
