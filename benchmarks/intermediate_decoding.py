"""Does decoding intermediate predictions at half resolution cost steering quality?

The embedded image benchmark (:mod:`fksteer.bench.image`: the embedded Fashion-MNIST model,
steered by the embedded steering classifier, judged by the held-out judge classifier) run twice
with the same seeds and prompts, so the same initial noise: intermediate predictions decoded at
full resolution, and at latent scale ``--scale`` (resized down, decoded, resized back to 16x16,
as ``intermediate_resolution="auto"`` does for a latent pipeline's VAE; the final samples are
always decoded in full). Each (seed, prompt) group is an independent run whose two variants
share their noise, so the paired difference of the judge's verdict on the best particle is
averaged over all groups, with a Student t 95% interval over the groups (and over the seeds'
means, as the bench reports). Writes ``<out>/full/``, ``<out>/scale-<s>/`` (the bench's own files)
and ``<out>/paired.md``, ``<out>/paired.json``.

    OMP_NUM_THREADS=1 python benchmarks/intermediate_decoding.py \
        --out docs/results/intermediate-decoding/default
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from fksteer.bench.image import ImageBenchConfig, run_image_bench  # noqa: E402
from fksteer.bench.records import mean_and_t_ci  # noqa: E402

METRICS = ("judge_best", "judge_draw", "reward_best")


def t_interval(values: list[float]) -> tuple[float, float, int]:
    """Mean, 95% Student t half-width and count of ``values``."""
    mean, half_width = mean_and_t_ci(values)
    return mean, half_width, len(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/intermediate-decoding")
    parser.add_argument("--scale", type=float, default=0.5)
    parser.add_argument("--particles", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the ten class prompts")
    parser.add_argument("--model", default="weak", choices=("weak", "strong"))
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--guidance-scale", type=float, default=1.0)
    args = parser.parse_args()
    out = Path(args.out)
    records, seconds = {}, {}
    for name, resolution in (("full", "full"), (f"scale-{args.scale:g}", args.scale)):
        bench = ImageBenchConfig(models=(args.model,), particles=(args.particles,),
                                 methods=("fk-difference",), seeds=args.seeds,
                                 repeats=args.repeats, num_steps=args.steps,
                                 guidance_scale=args.guidance_scale,
                                 intermediate_resolution=resolution)
        start = time.perf_counter()
        run_image_bench(bench, out / name)
        seconds[name] = time.perf_counter() - start
        lines = [json.loads(line) for line in (out / name / "results.jsonl").open()]
        records[name] = {(r["seed"], r["prompt_index"]): r for r in lines}
    full, reduced = records["full"], records[f"scale-{args.scale:g}"]
    keys = sorted(full)
    summary = {"scale": args.scale, "particles": args.particles, "seeds": args.seeds,
               "groups": len(keys), "wall_seconds": seconds, "metrics": {}}
    rows = []
    for metric in METRICS:
        differences = [reduced[k][metric] - full[k][metric] for k in keys]
        by_seed = [statistics.fmean(reduced[k][metric] - full[k][metric] for k in keys
                                    if k[0] == seed) for seed in range(args.seeds)]
        mean_full = statistics.fmean(full[k][metric] for k in keys)
        mean_reduced = statistics.fmean(reduced[k][metric] for k in keys)
        paired, half, n = t_interval(differences)
        seed_mean, seed_half, _ = t_interval(by_seed)
        summary["metrics"][metric] = {"full": mean_full, "reduced": mean_reduced,
                                      "paired": paired, "half_width": half,
                                      "paired_over_seeds": seed_mean,
                                      "half_width_over_seeds": seed_half}
        rows.append(f"| {metric} | {mean_full:.4f} | {mean_reduced:.4f} | {paired:+.4f} ± "
                    f"{half:.4f} (n = {n}) | {seed_mean:+.4f} ± {seed_half:.4f} |")
    (out / "paired.json").write_text(json.dumps(summary, indent=2) + "\n")
    text = (
        f"# Intermediate decoding at latent scale {args.scale:g} against full resolution\n\n"
        f"Embedded `{args.model}` model, guidance scale {args.guidance_scale:g}, {args.steps} "
        "steps, FK (difference potential, the bench's other settings), "
        f"K = {args.particles}, {args.seeds} seeds x {len(keys) // args.seeds} prompts, "
        "same noise in both variants. Paired difference (reduced - full) with a Student t 95% "
        "interval over the groups, and over the seeds' means.\n\n"
        "| metric | full | reduced | paired, over groups | paired, over seeds |\n"
        "|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        f"Wall seconds of each bench run: {json.dumps({k: round(v) for k, v in seconds.items()})}"
        " (a pixel-space decode costs next to nothing: the time saved is measured on a latent "
        "pipeline, benchmarks/versus_reference.py).\n"
    )
    (out / "paired.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
