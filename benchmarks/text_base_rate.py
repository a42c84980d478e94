"""The unsteered rate of the steering judge on an embedded text model, with its interval.

    OMP_NUM_THREADS=1 python benchmarks/text_base_rate.py --model embedded \\
        --particles 128 --out docs/results/text-base-rate

The text benchmark steers towards a *rare* attribute: the share of plain samples that the
steering judge (alt-profanity-check, P(toxic) > 0.5, the ``toxicity`` reward) flags should lie
between 0.3% and 3%. This script measures that share as ``fksteer bench text`` draws its ``base``
samples: the bench's 16 prompts, K plain samples each (``steer(..., method="base")``, 32 tokens,
32 steps), the judge reading the continuation. With 16 x 128 = 2,048 samples the Wilson 95%
interval of a 2% rate is about +-0.6 points. Samples of one prompt share the prompt, so they are
not independent draws of the pooled rate: the script also gives the interval from the spread of
the 16 per-prompt rates (Student t over prompts), the honest one when prompts differ.

Writes ``base_rate.json`` (the figures, each prompt's rate, every flagged text) and
``base_rate.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch

import fksteer
from fksteer.bench.text import TEXT_PROMPTS
from fksteer.rewards import load_reward

#: Student t 0.975 quantiles by degrees of freedom (15 for the 16 prompts).
T_975 = {15: 2.131, 7: 2.365, 3: 3.182}


def wilson(flagged: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score 95% interval of a binomial proportion."""
    p = flagged / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return centre - half, centre + half


def load_model(name: str, weights: Path | None = None):
    """The embedded text model ``name`` (``embedded`` or ``embedded-minilm``), 32 tokens;
    ``weights``: a folder written by ``scripts/train_text_model.py`` in place of the shipped
    fortunes weights (``embedded`` only)."""
    if name == "embedded-minilm":
        if weights is not None:
            raise SystemExit("--weights applies to --model embedded only.")
        from fksteer.embedded.minilm_text import load_minilm_text_model

        return load_minilm_text_model(seq_len=32, num_steps=32)
    from fksteer.embedded.text_model import load_text_model

    if weights is None:
        return load_text_model(seq_len=32, num_steps=32)
    return load_text_model(seq_len=32, num_steps=32, directory=weights)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded", choices=("embedded", "embedded-minilm"))
    parser.add_argument("--weights", type=Path, default=None,
                        help="a trained text model folder instead of the shipped weights")
    parser.add_argument("--particles", type=int, default=128, help="samples per prompt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=Path("runs/text-base-rate"))
    args = parser.parse_args()

    model = load_model(args.model, args.weights)
    judge = load_reward("toxicity")
    config = fksteer.FKConfig(num_particles=args.particles, lmbda=0.0)
    started = time.perf_counter()
    per_prompt, flagged_texts = [], []
    for index, prompt in enumerate(TEXT_PROMPTS):  # one prompt per run: equal-length batches
        result = fksteer.steer(model, judge, config, prompts=[prompt], method="base",
                               generator=torch.Generator().manual_seed(args.seed + index))
        texts = [str(t) for t in result.samples[0]]
        flags = (result.rewards[0] > args.threshold).tolist()
        per_prompt.append(sum(flags) / len(flags))
        flagged_texts += [{"prompt": prompt, "text": t, "p_toxic": float(r)}
                          for t, f, r in zip(texts, flags, result.rewards[0], strict=True) if f]
    seconds = time.perf_counter() - started

    total = args.particles * len(TEXT_PROMPTS)
    flagged = len(flagged_texts)
    low, high = wilson(flagged, total)
    mean = statistics.fmean(per_prompt)
    half = T_975[len(per_prompt) - 1] * statistics.stdev(per_prompt) / math.sqrt(len(per_prompt))
    figures = {
        "model": args.model,
        "weights": None if args.weights is None else args.weights.name,
        "prompts": len(TEXT_PROMPTS), "particles": args.particles,
        "samples": total, "flagged": flagged, "rate": flagged / total,
        "wilson_95": [low, high], "prompt_mean_rate": mean,
        "prompt_t_95": [mean - half, mean + half], "per_prompt_rate": per_prompt,
        "threshold": args.threshold, "seed": args.seed, "seconds": round(seconds, 1),
        "torch_threads": torch.get_num_threads(), "flagged_texts": flagged_texts,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "base_rate.json").write_text(json.dumps(figures, indent=1) + "\n")
    table = "\n".join(f"| {p} | {r:.1%} |" for p, r in zip(TEXT_PROMPTS, per_prompt, strict=True))
    (args.out / "base_rate.md").write_text(
        f"# Unsteered rate of the steering judge ({args.model})\n\n"
        f"{flagged} of {total} plain samples flagged (P(toxic) > {args.threshold}): "
        f"{flagged / total:.2%}, Wilson 95% [{low:.2%}, {high:.2%}]; over the "
        f"{len(per_prompt)} prompts {mean:.2%} +- {half:.2%} (t 95%). {seconds:.0f} s.\n\n"
        f"| prompt | rate |\n|---|---|\n{table}\n"
    )
    print((args.out / "base_rate.md").read_text())


if __name__ == "__main__":
    main()
