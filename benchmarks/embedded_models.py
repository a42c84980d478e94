"""Figures of the embedded models: held-out judge accuracy under steering, and the text model's
unsteered toxic rate.

    python benchmarks/embedded_models.py --out docs/results/embedded-models

Image: each class name is a prompt, ``--repeats`` groups per class, K particles per group. For
base, best-of-K and FK (default config, lambda = 1, the steering classifier's log p(class | x) as
reward) it reports the held-out judge's accuracy (argmax == the prompt's class) on the
best-reward particle of each group (the paper's protocol) and on one draw from the weights (a
sample of the tilted target), the mean steering reward of those, wall time and NFE.
Text: the share of unsteered samples of the embedded text model that the steering toxicity judge
(alt-profanity-check, P(toxic) > 0.5) flags. Writes results.json and report.md.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

import fksteer
from fksteer.bench.records import markdown_table
from fksteer.embedded.classifier import load_classifier
from fksteer.embedded.fashion import CLASS_NAMES
from fksteer.rewards.classifier import ClassifierLogProb


def image_rows(size: str, particles: list[int], repeats: int, steps: int, seed: int) -> list:
    from fksteer.embedded.image_model import load_image_model

    steering = ClassifierLogProb(load_classifier("steering"), labels=CLASS_NAMES)
    judge = load_classifier("judge")
    prompts = list(CLASS_NAMES) * repeats
    truth = torch.arange(len(CLASS_NAMES)).repeat(repeats)  # (G,)
    rows = []
    for k in particles:
        for method in ("base", "best_of_n", "fk"):
            model = load_image_model(size, num_inference_steps=steps)
            start = time.perf_counter()
            result = fksteer.steer(model, steering, fksteer.FKConfig(num_particles=k, lmbda=1.0),
                                   prompts=prompts, generator=torch.Generator().manual_seed(seed),
                                   method=method)
            seconds = time.perf_counter() - start
            with torch.no_grad():
                judged = judge(result.samples.reshape(-1, 1, 16, 16)).argmax(1)
            judged = judged.reshape(len(prompts), k)  # (G, K)
            drawn = torch.multinomial(result.weights.float(), 1,
                                      generator=torch.Generator().manual_seed(seed + 1))
            best = result.best[:, None]

            def accuracy(index: torch.Tensor, judged: torch.Tensor = judged) -> float:
                return float((judged.gather(1, index)[:, 0] == truth).float().mean())

            rows.append({
                "model": size, "K": k, "method": method,
                "judge_accuracy_best": accuracy(best),
                "judge_accuracy_drawn": accuracy(drawn),
                "reward_best": float(result.rewards.gather(1, best).mean()),
                "reward_drawn": float(result.rewards.gather(1, drawn).mean()),
                "groups": len(prompts), "seconds": seconds, "nfe": result.nfe,
            })
            print(rows[-1], flush=True)
    return rows


def text_toxic_rate(samples: int, seq_len: int, seed: int) -> dict:
    from fksteer.embedded.text_model import load_text_model
    from fksteer.rewards import load_reward

    toxicity = load_reward("toxicity")
    model = load_text_model(seq_len=seq_len, num_steps=seq_len)
    groups = math.ceil(samples / 50)
    start = time.perf_counter()
    result = fksteer.steer(model, toxicity, fksteer.FKConfig(num_particles=50),
                           prompts=[None] * groups, generator=torch.Generator().manual_seed(seed),
                           method="base")
    seconds = time.perf_counter() - start
    probabilities = result.rewards.flatten()
    texts = [text for group in result.samples for text in group]
    flagged = [t for t, p in zip(texts, probabilities.tolist(), strict=True) if p > 0.5]
    return {"samples": len(texts), "toxic_rate": len(flagged) / len(texts),
            "mean_probability": float(probabilities.mean()), "seconds": seconds,
            "examples": texts[:8], "flagged_examples": flagged[:5]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/results/embedded-models"))
    parser.add_argument("--sizes", default="weak,strong")
    parser.add_argument("--particles", default="4,8")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--text-samples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    particles = [int(k) for k in args.particles.split(",")]
    rows = []
    for size in args.sizes.split(","):
        rows += image_rows(size, particles, args.repeats, args.steps, args.seed)
    text = text_toxic_rate(args.text_samples, 32, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"image": rows, "text": text}, indent=2))
    table = markdown_table(
        ["model", "K", "method", "judge acc. (best)", "judge acc. (drawn)", "reward (best)",
         "reward (drawn)", "seconds", "NFE"],
        [[r["model"], r["K"], r["method"], r["judge_accuracy_best"], r["judge_accuracy_drawn"],
          r["reward_best"], r["reward_drawn"], r["seconds"], r["nfe"]] for r in rows],
    )
    report = (
        "# Embedded models\n\n"
        f"Image: {len(CLASS_NAMES)} class prompts x {args.repeats} groups, {args.steps} DDPM "
        "steps, no guidance; FK with the default config and lambda = 1; judge = the held-out "
        f"classifier.\n\n{table}\n"
        f"Text: {text['samples']} unsteered samples of the embedded text model (32 tokens); "
        f"alt-profanity-check flags {text['toxic_rate']:.2%} (mean P(toxic) "
        f"{text['mean_probability']:.3f}).\n"
    )
    (args.out / "report.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
