"""Particle Gibbs vs FK steering at equal NFE on the exact rare-mode target, and the chain's
autocorrelation.

    OMP_NUM_THREADS=1 python benchmarks/gibbs_rare_mode.py --out docs/results/gibbs-rare-mode

Target: `GaussianMixtureDiffusion.rare_mode` (a component with 1% of the prior mass holds 88.5%
of the tilted mass), 25 steps, linear reward, lambda 1.75, difference potential, systematic
resampling at every step. The error of a run is |estimated rare-component mass - 0.8847|, with
f(x) = p_target(rare | x) (Rao-Blackwellised occupancy):

- FK(K): one run of K particles, estimate sum_k w_k f(x_k); cost 25 K evaluations.
- Gibbs(K, S): S sweeps of K particles (sweep 0 is FK(K)), the first S // 4 dropped as burn-in
  (their cost still counted); cost 25 K S. Two estimators: ``kept`` (the mean of f over the kept
  samples) and ``all`` (the mean over sweeps of each sweep's weighted particles, sum_k W_k f,
  also unbiased at stationarity: the kept sample is drawn from those weights); with and
  without ancestor sampling (``gibbs-as-*``).

At a budget of 25 N evaluations per replicate, N in --budgets, FK runs K = N and Gibbs runs
K = 4 and 8 with S = N / K. Each cell: --replicas independent replicates (groups of one batch,
chains of one Gibbs run; the Gibbs run for S sweeps is the first S sweeps of one longer run, as
the sweeps replay exactly) x --seeds seeds. Then the autocorrelation of the kept samples'
rare-component indicator 1[p_target(rare | x) > 1/2] per lag, its integrated autocorrelation
time and ESS (fksteer.smc.chains), for K = 4 and 8 over the longest runs.

Writes config.json, results.jsonl (resumable), autocorrelation.json, report.md,
error_vs_nfe.png and autocorrelation.png into --out.
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
from fksteer.models.gaussian_mixture import GaussianMixtureDiffusion, LinearReward  # noqa: E402
from fksteer.smc.chains import autocorrelation, effective_sample_size  # noqa: E402

#: (K, ancestor sampling) of the Gibbs runs
GIBBS_VARIANTS = ((4, False), (8, False), (4, True), (8, True))
MAX_LAG = 30


def _problem():
    problem = GaussianMixtureDiffusion.rare_mode(num_steps=25)
    target = problem.model.tilted(problem.direction, problem.lmbda)
    return problem, target, LinearReward(problem.direction)


def _rare(target, samples: torch.Tensor) -> torch.Tensor:
    """p_target(rare | x) for samples (..., 2): (...)."""
    flat = samples.reshape(-1, 2).double()
    return target.responsibilities(flat)[:, -1].reshape(samples.shape[:-1])


def fk_records(budgets, replicas, seed) -> list[dict]:
    problem, target, reward = _problem()
    exact = float(target.weights[-1])
    records = []
    for n in budgets:
        config = FKConfig(num_particles=n, lmbda=problem.lmbda)
        start = time.perf_counter()
        result = steer(problem.model, reward, config, prompts=[None] * replicas,
                       generator=torch.Generator().manual_seed(seed))
        seconds = time.perf_counter() - start
        estimate = (result.weights * _rare(target, result.samples)).sum(dim=1)  # (R,)
        records.append({"method": "fk", "num_particles": n, "sweeps": 1, "seed": seed,
                        "nfe_per_replicate": 25 * n, "error": float((estimate - exact).abs()
                                                                    .mean()),
                        "seconds": seconds})
    return records


def gibbs_run(num_particles, sweeps, replicas, seed, ancestor_sampling):
    problem, target, reward = _problem()
    config = FKConfig(num_particles=num_particles, lmbda=problem.lmbda)
    start = time.perf_counter()
    result = gibbs(problem.model, reward, config, sweeps=sweeps, prompts=[None] * replicas,
                   generator=torch.Generator().manual_seed(seed),
                   ancestor_sampling=ancestor_sampling)
    return result, target, time.perf_counter() - start


def gibbs_records(num_particles, ancestor_sampling, budgets, replicas, seed):
    """Records of every S = N / K prefix of one run, and the kept indicator chains (R, S)."""
    sweeps = [n // num_particles for n in budgets if n >= num_particles]
    result, target, seconds = gibbs_run(num_particles, max(sweeps), replicas, seed,
                                        ancestor_sampling)
    prefix = "gibbs-as" if ancestor_sampling else "gibbs"
    exact = float(target.weights[-1])
    kept = _rare(target, result.samples).T  # (R, S_max)
    weighted = torch.stack([(sweep.weights * _rare(target, sweep.samples)).sum(dim=1)
                            for sweep in result.sweeps]).T  # (R, S_max)
    records = []
    for s in sweeps:
        burn_in = s // 4
        for estimator, values in (("kept", kept), ("all", weighted)):
            estimate = values[:, burn_in:s].mean(dim=1)
            records.append({
                "method": f"{prefix}-{estimator}", "num_particles": num_particles, "sweeps": s,
                "seed": seed, "nfe_per_replicate": 25 * num_particles * s,
                "error": float((estimate - exact).abs().mean()),
                "acceptance": float(result.accepted[1:s].double().mean()) if s > 1 else None,
                "update_rate_step0": float(result.changed[1:s, :, 0].double().mean())
                if s > 1 else None,
                "seconds": seconds * s / max(sweeps),  # the run's wall time, pro rata
            })
    return records, (kept > 0.5).double()


def autocorrelation_summary(indicators: dict[str, list[torch.Tensor]]) -> dict:
    summary = {}
    for k, chains in indicators.items():
        values = torch.cat(chains)  # (seeds * R, S), burn-in dropped below
        values = values[:, values.shape[1] // 4 :]
        rho = autocorrelation(values, split=False)[: MAX_LAG + 1]
        ess = float(effective_sample_size(values))
        draws = values.numel()
        summary[k] = {"lags": list(range(len(rho))), "rho": rho.tolist(), "ess": ess,
                           "draws": draws, "integrated_time": draws / ess,
                           "rare_mass_of_kept": float(values.mean())}
    return summary


def report(records, auto, config) -> str:
    lines = ["# Particle Gibbs vs FK at equal NFE: exact rare-mode target\n",
             f"Exact rare-component mass 0.8847; {config['replicas']} replicates x "
             f"{config['seeds']} seeds per cell; mean |error| with a 95% t interval over seeds. "
             "Gibbs burn-in S // 4 (counted in the NFE).\n"]
    cells: dict[tuple, list[dict]] = {}
    for record in records:
        cells.setdefault((record["nfe_per_replicate"], record["method"],
                          record["num_particles"], record["sweeps"]), []).append(record)
    rows = []
    for (nfe, method, k, s), group in sorted(cells.items()):
        mean, half = mean_and_t_ci([r["error"] for r in group])
        seconds = sum(r["seconds"] for r in group) / len(group)
        acceptance = group[0].get("acceptance")
        rows.append((nfe, method, k, s, mean, half, seconds,
                     "" if acceptance is None else acceptance))
    lines.append(markdown_table(["NFE / replicate", "method", "K", "sweeps", "mean |error|",
                                 "95% CI +-", f"wall s ({config['replicas']} replicates)",
                                 "acceptance (seed 0)"], rows))
    lines.append("\n## Autocorrelation of the kept samples' rare-component indicator\n")
    auto_rows = [(k, *[v["rho"][lag] if lag < len(v["rho"]) else None for lag in (1, 2, 5, 10)],
                  v["integrated_time"], v["ess"], v["draws"], v["rare_mass_of_kept"])
                 for k, v in auto.items()]
    lines.append(markdown_table(["chain", "rho(1)", "rho(2)", "rho(5)", "rho(10)",
                                 "integrated time (sweeps)", "ESS", "draws",
                                 "rare mass of kept"], auto_rows))
    return "\n".join(lines)


def plot(records, auto, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 4.2))
    series: dict[tuple, dict[int, list[float]]] = {}
    for r in records:
        series.setdefault((r["method"], r["num_particles"] if r["method"] != "fk" else None),
                          {}).setdefault(r["nfe_per_replicate"], []).append(r["error"])
    for (method, k), points in sorted(series.items(), key=str):
        nfe = sorted(points)
        label = "FK (K = NFE / 25)" if method == "fk" else f"{method} K={k}"
        axis.plot(nfe, [sum(points[n]) / len(points[n]) for n in nfe], marker="o", label=label)
    axis.set(xscale="log", yscale="log", xlabel="NFE per replicate",
             ylabel="mean |rare mass error|", title="rare-mode target: error vs compute")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out / "error_vs_nfe.png", dpi=120)
    figure, axis = plt.subplots(figsize=(6, 3.8))
    for k, v in auto.items():
        axis.plot(v["lags"], v["rho"], marker=".", label=f"Gibbs {k}")
    axis.axhline(0.0, color="grey", linewidth=0.8)
    axis.set(xlabel="lag (sweeps)", ylabel="autocorrelation",
             title="kept samples: rare-component indicator")
    axis.legend()
    figure.tight_layout()
    figure.savefig(out / "autocorrelation.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/gibbs-rare-mode")
    parser.add_argument("--budgets", default="16,32,64,128,256,512,1024",
                        help="N: budgets of 25 N evaluations per replicate")
    parser.add_argument("--replicas", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    out = Path(args.out)
    budgets = [int(part) for part in args.budgets.split(",")]
    config = {"budgets": budgets, "replicas": args.replicas, "seeds": args.seeds,
              "num_steps": 25, "lmbda": 1.75, "potential": "difference",
              "resampling": "systematic", "gibbs_variants": [list(v) for v in GIBBS_VARIANTS]}
    write_json(out / "config.json", config)
    records = RecordFile(out / "results.jsonl", ("method", "num_particles", "sweeps", "seed"))
    indicators: dict[str, list[torch.Tensor]] = {}
    for seed in range(args.seeds):
        if not records.done(method="fk", num_particles=budgets[-1], sweeps=1, seed=seed):
            records.extend(fk_records(budgets, args.replicas, seed))
        for k, ancestor_sampling in GIBBS_VARIANTS:  # rerun for the indicator chains
            new, chains = gibbs_records(k, ancestor_sampling, budgets, args.replicas, seed)
            records.extend([r for r in new if not records.done(**r)])
            label = f"K={k}" + (" ancestor sampling" if ancestor_sampling else "")
            indicators.setdefault(label, []).append(chains)
            print(f"seed {seed} {label} done", flush=True)
    auto = autocorrelation_summary(indicators)
    write_json(out / "autocorrelation.json", auto)
    text = report(records.records, auto, config)
    (out / "report.md").write_text(text)
    plot(records.records, auto, out)
    print(text)


if __name__ == "__main__":
    main()
