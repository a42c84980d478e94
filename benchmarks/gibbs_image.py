"""Particle Gibbs vs FK steering at equal NFE on the embedded weak image model.

    OMP_NUM_THREADS=1 python benchmarks/gibbs_image.py --out docs/results/gibbs-image

The ten Fashion-MNIST class names as prompts, 20 DDPM steps (--steps), classifier-free guidance
0.5 (--guidance-scale; the hard setting of BENCHMARKS.md: at guidance 1 the judge accuracy is
100% for every method), lambda 10, the embedded
steering classifier's log p(class | x) as the reward, the held-out judge classifier for
accuracy. Per seed, every method starts from the same seed:

- FK(K), K in --fk-particles: one run; "draw" metrics are expectations under the final weights
  (sum_k w_k m(x_k)), "best" the highest-reward particle.
- Gibbs(K, S), K in --gibbs-particles, S = every power of 2 up to the budget of the largest FK
  run: the first S sweeps of one run (sweeps replay exactly). "draw" metrics average the kept
  samples of sweeps S // 4 .. S - 1 (burn-in counted in the NFE), "best" is the highest-reward
  particle of any of the S sweeps. Wall time: the run's, pro rata over its sweeps.

NFE per prompt = 20 K S (one guided UNet evaluation per particle and step). Writes config.json,
results.jsonl (one line per method, K, S and seed), report.md and reward_vs_nfe.png into --out.
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
from fksteer.embedded.classifier import load_classifier  # noqa: E402
from fksteer.embedded.fashion import CLASS_NAMES  # noqa: E402
from fksteer.embedded.image_model import load_image_model  # noqa: E402
from fksteer.rewards.classifier import ClassifierLogProb  # noqa: E402

STEPS, LAMBDA = 20, 10.0  # --steps overrides STEPS


def _judged(judge, samples, labels):
    """(..., G) 1.0 where the held-out judge names the prompt's class; samples (..., G, C, H, W)."""
    flat = samples.detach().float().cpu().reshape(-1, *samples.shape[-3:])
    with torch.no_grad():
        classes = judge(flat).argmax(-1).reshape(samples.shape[:-3])
    return (classes == labels).double()


def fk_record(model, reward, judge, labels, k, seed) -> dict:
    start = time.perf_counter()
    result = steer(model, reward, FKConfig(num_particles=k, lmbda=LAMBDA),
                   prompts=list(CLASS_NAMES), generator=torch.Generator().manual_seed(seed))
    seconds = time.perf_counter() - start
    correct = _judged(judge, result.samples.transpose(0, 1), labels).T  # (G, K)
    weights = result.weights.double()
    return {"method": "fk", "num_particles": k, "sweeps": 1, "seed": seed,
            "nfe_per_prompt": STEPS * k,
            "reward_draw": float(torch.nansum(weights * result.rewards, 1).mean()),
            "reward_best": float(result.rewards.gather(1, result.best[:, None]).mean()),
            "judge_draw": float((weights * correct).sum(1).mean()),
            "judge_best": float(correct.gather(1, result.best[:, None]).mean()),
            "seconds": seconds}


def gibbs_records(model, reward, judge, labels, k, max_sweeps, seed) -> list[dict]:
    start = time.perf_counter()
    result = gibbs(model, reward, FKConfig(num_particles=k, lmbda=LAMBDA), sweeps=max_sweeps,
                   prompts=list(CLASS_NAMES), generator=torch.Generator().manual_seed(seed))
    seconds = time.perf_counter() - start
    kept_correct = _judged(judge, result.samples, labels)  # (S, G)
    rewards = torch.stack([sweep.rewards for sweep in result.sweeps])  # (S, G, K)
    records, s = [], 2
    while s <= max_sweeps:
        burn_in = s // 4
        flat = rewards[:s].permute(1, 0, 2).reshape(len(labels), -1)  # (G, s K)
        best = flat.argmax(dim=1)
        samples = torch.stack([sweep.samples for sweep in result.sweeps[:s]])  # (s, G, K, ...)
        best_samples = samples.permute(1, 0, 2, 3, 4, 5).reshape(len(labels), -1,
                                                                  *samples.shape[-3:])
        best_samples = best_samples[torch.arange(len(labels)), best]  # (G, C, H, W)
        records.append({
            "method": "gibbs", "num_particles": k, "sweeps": s, "seed": seed,
            "nfe_per_prompt": STEPS * k * s,
            "reward_draw": float(result.rewards[burn_in:s].mean()),
            "reward_best": float(flat.gather(1, best[:, None]).mean()),
            "judge_draw": float(kept_correct[burn_in:s].mean()),
            "judge_best": float(_judged(judge, best_samples, labels).mean()),
            "acceptance": float(result.accepted[1:s].double().mean()),
            "seconds": seconds * s / max_sweeps,
        })
        s *= 2
    return records


def report(records, config) -> str:
    cells: dict[tuple, list[dict]] = {}
    for record in records:
        key = (record["nfe_per_prompt"], record["method"], record["num_particles"],
               record["sweeps"])
        cells.setdefault(key, []).append(record)
    rows = []
    for (nfe, method, k, s), group in sorted(cells.items()):
        row = [nfe, method, k, s]
        for name in ("reward_draw", "reward_best", "judge_draw", "judge_best", "seconds"):
            mean, half = mean_and_t_ci([r[name] for r in group])
            row.append(f"{mean:.3f} ± {half:.3f}")
        rows.append(row)
    return (
        "# Particle Gibbs vs FK at equal NFE: embedded weak image model\n\n"
        f"Ten class prompts, {STEPS} DDPM steps, guidance {config['guidance_scale']}, lambda "
        f"{LAMBDA}, {config['seeds']} seeds; "
        "means with 95% t intervals over seeds. Reward: the steering classifier's "
        "log p(class | x); judge: the held-out classifier's accuracy. FK draw = expectation "
        "under the final weights; Gibbs draw = mean over the kept samples after burn-in S // 4. "
        "Best = the highest-reward particle seen. Wall s: per run of all ten prompts.\n\n"
        + markdown_table(["NFE / prompt", "method", "K", "sweeps", "reward (draw)",
                          "reward (best)", "judge acc (draw)", "judge acc (best)", "wall s"],
                         rows)
    )


def plot(records, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    series: dict[tuple, dict[int, list[dict]]] = {}
    for r in records:
        k = r["num_particles"]
        label = f"FK (K = NFE / {STEPS})" if r["method"] == "fk" else f"Gibbs K={k}"
        series.setdefault(label, {}).setdefault(r["nfe_per_prompt"], []).append(r)
    for label, points in sorted(series.items()):
        nfe = sorted(points)
        for axis, name in zip(axes, ("reward_draw", "judge_draw"), strict=True):
            axis.plot(nfe, [sum(r[name] for r in points[n]) / len(points[n]) for n in nfe],
                      marker="o", label=label)
    axes[0].set(xscale="log", xlabel="NFE per prompt", ylabel="steering reward (draw)")
    axes[1].set(xscale="log", xlabel="NFE per prompt", ylabel="held-out judge accuracy (draw)")
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/gibbs-image")
    parser.add_argument("--fk-particles", default="4,8,16")
    parser.add_argument("--gibbs-particles", default="2,4")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--guidance-scale", type=float, default=0.5)
    args = parser.parse_args()
    globals()["STEPS"] = args.steps
    out = Path(args.out)
    fk_particles = [int(v) for v in args.fk_particles.split(",")]
    gibbs_particles = [int(v) for v in args.gibbs_particles.split(",")]
    config = {"fk_particles": fk_particles, "gibbs_particles": gibbs_particles,
              "seeds": args.seeds, "steps": STEPS, "lmbda": LAMBDA, "model": "embedded weak",
              "guidance_scale": args.guidance_scale,
              "prompts": list(CLASS_NAMES)}
    write_json(out / "config.json", config)
    torch.set_num_threads(1)
    model = load_image_model("weak", num_inference_steps=STEPS,
                             guidance_scale=args.guidance_scale)
    reward = ClassifierLogProb(load_classifier("steering"), labels=CLASS_NAMES)
    judge = load_classifier("judge")
    labels = torch.arange(len(CLASS_NAMES))
    records = RecordFile(out / "results.jsonl", ("method", "num_particles", "sweeps", "seed"))
    for seed in range(args.seeds):
        for k in fk_particles:
            if not records.done(method="fk", num_particles=k, sweeps=1, seed=seed):
                records.append(fk_record(model, reward, judge, labels, k, seed))
        for k in gibbs_particles:
            max_sweeps = max(fk_particles) // k
            if not records.done(method="gibbs", num_particles=k, sweeps=max_sweeps, seed=seed):
                records.extend(gibbs_records(model, reward, judge, labels, k, max_sweeps, seed))
        print(f"seed {seed} done", flush=True)
    text = report(records.records, config)
    (out / "report.md").write_text(text)
    plot(records.records, out / "reward_vs_nfe.png")
    print(text)


if __name__ == "__main__":
    main()
