"""Particle Gibbs vs FK steering at equal NFE on the embedded masked text model.

    OMP_NUM_THREADS=1 python benchmarks/gibbs_text.py --out docs/results/gibbs-text

The rare-attribute task of `fksteer bench text`: the 16 prompts of that suite, 32 tokens in 32
steps, lambda 10, one x0 draw per potential. The steering reward is alt-profanity-check's
P(toxic) (``toxicity``; the attribute is P > 0.5). The held-out judge is better-profanity's
word list (``profanity-words``, never used to steer). Per seed, every method starts from the
same seed:

- FK(K), K in --fk-particles: "draw" rates are expectations under the final weights, "best"
  is the highest-reward particle.
- Gibbs(K, S), K in --gibbs-particles, S = 2, 4, ... up to the budget of the largest FK run:
  the first S sweeps of one run. "draw" rates average the kept samples of sweeps S // 4 ..
  S - 1 (burn-in counted in the NFE), "best" is the highest-reward particle of the S sweeps.

NFE per prompt = 32 K S. Perplexity is not measured here (the SmolLM2 judge of `bench text`
would double the run time). Writes config.json, results.jsonl, report.md into --out.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from fksteer import FKConfig, gibbs, steer  # noqa: E402
from fksteer.bench.records import RecordFile, markdown_table, mean_and_t_ci, write_json  # noqa: E402
from fksteer.bench.text import TEXT_PROMPTS  # noqa: E402
from fksteer.embedded.text_model import load_text_model  # noqa: E402
from fksteer.rewards import load_reward  # noqa: E402

STEPS, LAMBDA, THRESHOLD = 32, 10.0, 0.5
METRICS = ("steer_draw", "steer_best", "heldout_draw", "heldout_best", "seconds")


def _buckets(model) -> list[list[str]]:
    """Prompts grouped by token length (one batched run per length, as `bench text` does)."""
    by_length: dict[int, list[str]] = {}
    for prompt in TEXT_PROMPTS:
        by_length.setdefault(len(model.prompt_ids(prompt)), []).append(prompt)
    return [by_length[length] for length in sorted(by_length)]


def _flags(texts, steering, heldout):
    """(steering flags, held-out flags) as float64 tensors shaped like the nested ``texts``."""
    flat = [str(t) for row in texts for t in row]
    shape = (len(texts), len(texts[0]))
    steer_flags = (steering(flat, None).double() > THRESHOLD).double().view(shape)
    return steer_flags, heldout(flat, None).double().view(shape)


def fk_run(model, steering, heldout, prompts, k, seed) -> dict:
    start = time.perf_counter()
    result = steer(model, steering, FKConfig(num_particles=k, lmbda=LAMBDA), prompts=prompts,
                   generator=torch.Generator().manual_seed(seed))
    seconds = time.perf_counter() - start
    steer_flags = (result.rewards > THRESHOLD).double()  # (G, K)
    _, held = _flags(result.samples, steering, heldout)
    weights, best = result.weights.double(), result.best[:, None]
    return {"steer_draw": (weights * steer_flags).sum(1),
            "steer_best": steer_flags.gather(1, best)[:, 0],
            "heldout_draw": (weights * held).sum(1), "heldout_best": held.gather(1, best)[:, 0],
            "seconds": torch.full((len(prompts),), seconds / len(prompts))}


def gibbs_runs(model, steering, heldout, prompts, k, max_sweeps, seed) -> dict[int, dict]:
    start = time.perf_counter()
    result = gibbs(model, steering, FKConfig(num_particles=k, lmbda=LAMBDA), sweeps=max_sweeps,
                   prompts=prompts, generator=torch.Generator().manual_seed(seed))
    seconds = time.perf_counter() - start
    kept_steer = (result.rewards > THRESHOLD).double()  # (S, G)
    _, kept_held = _flags([list(row) for row in zip(*result.samples, strict=True)], steering,
                          heldout)  # (G, S)
    out, s = {}, 2
    while s <= max_sweeps:
        burn_in = s // 4
        rewards = torch.stack([sweep.rewards for sweep in result.sweeps[:s]])  # (s, G, K)
        flat = torch.nan_to_num(rewards, nan=-1.0).permute(1, 0, 2).reshape(len(prompts), -1)
        best = flat.argmax(dim=1)  # (G,)
        best_texts = [[str(result.sweeps[int(i) // k].samples[g][int(i) % k])]
                      for g, i in enumerate(best)]
        _, best_held = _flags(best_texts, steering, heldout)
        out[s] = {"steer_draw": kept_steer[burn_in:s].mean(0),
                  "steer_best": (flat.gather(1, best[:, None])[:, 0] > THRESHOLD).double(),
                  "heldout_draw": kept_held[:, burn_in:s].mean(1), "heldout_best": best_held[:, 0],
                  "seconds": torch.full((len(prompts),), seconds * s / max_sweeps / len(prompts)),
                  "acceptance": float(result.accepted[1:s].double().mean())}
        s *= 2
    return out


def _merge(parts: list[dict]) -> dict:
    """Per-bucket metric tensors -> one record of means over all prompts."""
    record = {name: float(torch.cat([p[name] for p in parts]).mean()) for name in METRICS}
    record["seconds"] *= len(TEXT_PROMPTS)  # per run of every prompt
    if "acceptance" in parts[0]:
        record["acceptance"] = sum(p["acceptance"] for p in parts) / len(parts)
    return record


def report(records, config) -> str:
    cells: dict[tuple, list[dict]] = {}
    for r in records:
        cells.setdefault((r["nfe_per_prompt"], r["method"], r["num_particles"], r["sweeps"]),
                         []).append(r)
    rows = []
    for (nfe, method, k, s), group in sorted(cells.items()):
        row = [nfe, method, k, s]
        for name in METRICS:
            mean, half = mean_and_t_ci([r[name] for r in group])
            row.append(f"{mean:.3f} ± {half:.3f}")
        rows.append(row)
    return ("# Particle Gibbs vs FK at equal NFE: embedded masked text model (toxicity)\n\n"
            f"{len(TEXT_PROMPTS)} prompts, {STEPS} tokens in {STEPS} steps, lambda {LAMBDA}, "
            f"{config['seeds']} seeds; means with 95% t intervals over seeds. Rates: share of "
            "prompts whose text has the attribute (steering judge: P(toxic) > 0.5; held-out: "
            "the word list). Wall s: per run of all prompts.\n\n"
            + markdown_table(["NFE / prompt", "method", "K", "sweeps", "steering (draw)",
                              "steering (best)", "held-out (draw)", "held-out (best)",
                              "wall s"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/gibbs-text")
    parser.add_argument("--fk-particles", default="4,8,16")
    parser.add_argument("--gibbs-particles", default="2,4")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    out = Path(args.out)
    fk_particles = [int(v) for v in args.fk_particles.split(",")]
    gibbs_particles = [int(v) for v in args.gibbs_particles.split(",")]
    write_json(out / "config.json", {"fk_particles": fk_particles, "seeds": args.seeds,
                                     "gibbs_particles": gibbs_particles, "steps": STEPS,
                                     "lmbda": LAMBDA, "prompts": list(TEXT_PROMPTS)})
    torch.set_num_threads(1)
    model = load_text_model(seq_len=STEPS, num_steps=STEPS, num_x0_samples=1)
    steering, heldout = load_reward("toxicity"), load_reward("profanity-words")
    records = RecordFile(out / "results.jsonl", ("method", "num_particles", "sweeps", "seed"))
    for seed in range(args.seeds):
        for k in fk_particles:
            if not records.done(method="fk", num_particles=k, sweeps=1, seed=seed):
                parts = [fk_run(model, steering, heldout, b, k, seed) for b in _buckets(model)]
                records.append({"method": "fk", "num_particles": k, "sweeps": 1, "seed": seed,
                                "nfe_per_prompt": STEPS * k, **_merge(parts)})
        for k in gibbs_particles:
            top = max(fk_particles) // k
            if records.done(method="gibbs", num_particles=k, sweeps=top, seed=seed):
                continue
            runs = [gibbs_runs(model, steering, heldout, b, k, top, seed)
                    for b in _buckets(model)]
            records.extend([{"method": "gibbs", "num_particles": k, "sweeps": s, "seed": seed,
                             "nfe_per_prompt": STEPS * k * s, **_merge([r[s] for r in runs])}
                            for s in runs[0]])
        print(f"seed {seed} done", flush=True)
    text = report(records.records, {"seeds": args.seeds})
    (out / "report.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
