"""`fksteer bench exact`: error to an exact target versus particles, FK against importance sampling.

    from fksteer.bench.exact import ExactBenchConfig, run_exact_bench
    run_exact_bench(ExactBenchConfig(), "runs/bench-exact")

The target is `GaussianMixtureDiffusion.rare_mode`: a component with 1% of the prior mass holds
88% of the tilted mass p(x_0) exp(lambda r(x_0)) / Z, so proposals from the prior rarely reach
it. For each method and particle count N, every seed runs `replicas` independent SMC runs (one
group each, all in one batched call) and records, averaged over the runs:

- ``occupancy_error``: |weighted mass of the rare component - its exact tilted mass|, the mass
  measured by the exact tilted responsibilities (a Rao-Blackwellised indicator);
- ``mean_error``: Euclidean error of the weighted mean against the exact tilted mean;
- ``log_evidence_error``: |log Z_hat - log Z|, with log Z = log E_p[exp(lambda r(x_0))];
- ``ess`` (final), ``step_ess`` (before resampling, averaged over the scoring steps),
  ``min_step_ess`` (the lowest of those in a run, median over the runs),
  ``best_reward`` (best-of-N's quantity: the highest final reward), ``weighted_reward``.

All methods use the same sampler and the same number of denoiser evaluations (NFE) for a given
N; FK additionally scores intermediate predictions (``samples_scored``).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from fksteer.bench.records import (
    MOST_PARTICLES,
    MOST_SEEDS,
    MOST_STEPS,
    RecordFile,
    check_counts,
    counted,
    markdown_table,
    mean_and_ci,
    write_json,
)
from fksteer.bench.suite import check_resumable, machine_info
from fksteer.models.gaussian_mixture import GaussianMixtureDiffusion, LinearReward
from fksteer.smc.config import POTENTIALS, AdaptiveTilt, FKConfig
from fksteer.smc.engine import steer

__all__ = ["ExactBenchConfig", "run_exact_bench", "METHOD_NAMES"]

logger = logging.getLogger(__name__)

#: FK with each potential, then the baselines at equal NFE: what the suite runs by default.
DEFAULT_METHODS = tuple(f"fk-{potential}" for potential in POTENTIALS) + ("importance",
                                                                          "best_of_n")
#: Every method it can run: the defaults and ``fk-adaptive`` (the difference potential with
#: adaptive tempering to the problem's lambda, AdaptiveTilt(target=lambda)).
METHOD_NAMES = (*DEFAULT_METHODS, "fk-adaptive")
#: Config fields that only add or drop (method, N, seed) records: a resumed run may change them.
MAY_CHANGE = ("particles", "methods", "seeds")


@dataclass(frozen=True)
class ExactBenchConfig:
    """What `bench exact` runs. ``quick()`` is the small variant used in CI smoke runs."""

    particles: tuple[int, ...] = (4, 8, 16, 32, 64, 128, 256, 512, 1024)
    methods: tuple[str, ...] = DEFAULT_METHODS
    seeds: int = 3
    replicas: int = 100
    num_steps: int = 25
    resample_every: int = 1
    resampling: str = "systematic"
    ess_threshold: float | None = None
    guidance: float = 0.0

    def __post_init__(self) -> None:
        unknown = [name for name in self.methods if name not in METHOD_NAMES]
        if unknown:
            raise ValueError(
                f"methods {unknown} are unknown: choose from {', '.join(METHOD_NAMES)}."
            )
        if not self.particles or min(self.particles) < 1:
            raise ValueError(f"particles={self.particles!r}: pass positive ints, e.g. (4, 16).")
        if self.seeds < 1 or self.replicas < 2:
            raise ValueError("seeds must be >= 1 and replicas >= 2.")
        check_counts(particles=(self.particles, 10 * MOST_PARTICLES),
                     seeds=(self.seeds, MOST_SEEDS), replicas=(self.replicas, MOST_PARTICLES),
                     num_steps=(self.num_steps, MOST_STEPS))

    @classmethod
    def quick(cls) -> ExactBenchConfig:
        """The CI variant: N in 4, 16, 64, two seeds of 50 runs (seconds)."""
        return cls(particles=(4, 16, 64), seeds=2, replicas=50)


def _fk_config(bench: ExactBenchConfig, method: str, num_particles: int, lmbda: float) -> FKConfig:
    potential = method.removeprefix("fk-") if method.startswith("fk-") else "difference"
    tilt: float | AdaptiveTilt = lmbda
    if method == "fk-adaptive":
        potential, tilt = "difference", AdaptiveTilt(target=lmbda)
    return FKConfig(
        num_particles=num_particles,
        potential=potential,
        lmbda=tilt,
        resampling=bench.resampling,
        ess_threshold=bench.ess_threshold,
        resample_every=bench.resample_every,
        guidance=bench.guidance,
    )


def run_one(
    bench: ExactBenchConfig, method: str, num_particles: int, seed: int,
    lmbda: float | None = None,
) -> dict:
    """One record: ``bench.replicas`` independent runs of ``method`` with N particles, towards
    the rare-mode problem's exact tilt (or the exact tilt at ``lmbda``, when given)."""
    problem = GaussianMixtureDiffusion.rare_mode(num_steps=bench.num_steps)
    lmbda = problem.lmbda if lmbda is None else lmbda
    target = problem.model.tilted(problem.direction, lmbda)
    reward = LinearReward(problem.direction)
    config = _fk_config(bench, method, num_particles, lmbda)
    engine_method = "fk" if method.startswith("fk-") else method
    start = time.perf_counter()
    result = steer(
        problem.model,
        reward,
        config,
        prompts=list(range(bench.replicas)),
        generator=torch.Generator().manual_seed(seed),
        method=engine_method,
    )
    seconds = time.perf_counter() - start
    samples = result.samples.double()  # (R, N, d)
    rare = target.responsibilities(samples.reshape(-1, samples.shape[-1]))[:, -1]
    rare = rare.reshape(bench.replicas, num_particles)  # (R, N)
    occupancy = (result.weights * rare).sum(dim=1)  # (R,)
    mean = (result.weights[..., None] * samples).sum(dim=1)  # (R, d)
    log_z_error = result.log_evidence - target.log_normaliser  # (R,)
    best = result.rewards.gather(1, result.best[:, None]).squeeze(1)
    return {
        "method": method,
        "num_particles": num_particles,
        "seed": seed,
        "replicas": bench.replicas,
        "guidance": bench.guidance,
        "lmbda": lmbda,
        "occupancy_error": float((occupancy - target.weights[-1]).abs().mean()),
        "mean_error": float((mean - target.mean()).norm(dim=1).mean()),
        "log_evidence_error": float(log_z_error.abs().mean()),
        "log_evidence_bias": float(log_z_error.mean()),
        "ess": float(result.ess.mean()),
        # ESS before resampling, averaged over the intermediate scoring steps (FK only)
        "step_ess": float(
            torch.stack([s.ess for s in result.trace[:-1] if s.scored]).mean()
        ) if any(s.scored for s in result.trace[:-1]) else None,
        # the lowest of those per run (the step where the weights collapse most), median of runs
        "min_step_ess": float(
            torch.stack([s.ess for s in result.trace[:-1] if s.scored]).amin(dim=0).median()
        ) if any(s.scored for s in result.trace[:-1]) else None,
        "best_reward": float(best.mean()),
        "weighted_reward": float((result.weights * result.rewards).sum(dim=1).mean()),
        "nfe_per_run": result.nfe // bench.replicas,
        "samples_scored_per_run": result.samples_scored // bench.replicas,
        "seconds": seconds,
    }


def fitted_slope(particles: list[int], errors: list[float]) -> float:
    """Least-squares slope of log(error) against log(N): -0.5 is the Monte Carlo rate."""
    xs = [math.log(n) for n in particles]
    ys = [math.log(max(e, 1e-300)) for e in errors]
    x_mean, y_mean = sum(xs) / len(xs), sum(ys) / len(ys)
    numerator = sum((x - x_mean) * (y - y_mean) for x, y in zip(xs, ys, strict=True))
    denominator = sum((x - x_mean) ** 2 for x in xs)
    return numerator / denominator if denominator else float("nan")


def summarise(bench: ExactBenchConfig, records: list[dict]) -> tuple[str, dict]:
    """The markdown report and a dict of per-method means (for the plot and the summary)."""
    table: dict[str, dict[int, dict[str, tuple[float, float]]]] = {}
    metrics = ("occupancy_error", "mean_error", "log_evidence_error", "ess", "best_reward")
    for method in bench.methods:
        for n in bench.particles:
            rows = [r for r in records if r["method"] == method and r["num_particles"] == n]
            if rows:
                table.setdefault(method, {})[n] = {
                    metric: mean_and_ci(r[metric] for r in rows) for metric in metrics
                }
    problem = GaussianMixtureDiffusion.rare_mode(num_steps=bench.num_steps)
    target = problem.model.tilted(problem.direction, problem.lmbda)
    parts = [
        "# bench exact: rare-mode Gaussian mixture\n",
        f"Target: the rare component (1% prior mass) holds {float(target.weights[-1]):.3f} of the "
        f"tilted mass; log Z = {target.log_normaliser:.4f}. {bench.num_steps} steps, "
        f"FK resamples every {bench.resample_every} steps ({bench.resampling}). Each cell: mean "
        f"over {counted(bench.seeds, 'seed')} of the average over {bench.replicas} independent "
        "runs, "
        "+- a 95% confidence interval over seeds. All methods use the same NFE at equal N.\n",
    ]
    slopes: dict[str, dict[str, float]] = {}
    for metric, title in (
        ("occupancy_error", "Rare-component mass error |m_hat - m|"),
        ("mean_error", "Weighted-mean error"),
        ("log_evidence_error", "log Z error |log Z_hat - log Z|"),
        ("ess", "Final ESS"),
        ("best_reward", "Best final reward in the run (best-of-N's pick)"),
    ):
        header = ["method", *[f"N={n}" for n in bench.particles]]
        if metric.endswith("error"):
            header.append("slope vs log N")
        rows = []
        for method, by_n in table.items():
            cells = [
                f"{by_n[n][metric][0]:.4g} +- {by_n[n][metric][1]:.2g}" if n in by_n else ""
                for n in bench.particles
            ]
            if metric.endswith("error"):
                ns = sorted(by_n)
                slope = fitted_slope(ns, [by_n[n][metric][0] for n in ns]) if len(ns) > 1 else 0
                slopes.setdefault(method, {})[metric] = slope
                cells.append(f"{slope:.2f}")
            rows.append([method, *cells])
        parts.append(f"\n## {title}\n\n" + markdown_table(header, rows))
    return "".join(parts), {"table": table, "slopes": slopes}


def plot(bench: ExactBenchConfig, summary: dict, path: Path) -> None:
    """Error against N on log-log axes with an N^-1/2 reference line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = summary["table"]
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for axis, (metric, label) in zip(
        axes,
        (
            ("occupancy_error", "rare-component mass error"),
            ("log_evidence_error", "|log Z_hat - log Z|"),
            ("ess", "final ESS"),
        ),
        strict=True,
    ):
        for method, by_n in table.items():
            ns = sorted(by_n)
            means = [by_n[n][metric][0] for n in ns]
            errors = [by_n[n][metric][1] for n in ns]
            axis.errorbar(ns, means, yerr=errors, marker="o", capsize=3, label=method)
        if metric != "ess":
            ns = sorted(bench.particles)
            fk = table.get("fk-difference", {})
            anchor = fk.get(ns[0], {}).get(metric, (1.0, 0))[0]
            axis.plot(ns, [anchor * (n / ns[0]) ** -0.5 for n in ns], "k--", label="N^-1/2")
        axis.set_yscale("log")
        axis.set_xscale("log", base=2)
        axis.set_xlabel("particles N (equal NFE across methods)")
        axis.set_title(label)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def run_exact_bench(bench: ExactBenchConfig, out_dir: str | Path, progress=None) -> dict:
    """Run (or resume) the benchmark into ``out_dir``; returns the summary dict.

    Writes ``config.json``, ``results.jsonl`` (one line per method, N and seed), ``report.md``
    and ``error_vs_particles.png``.
    """
    out_dir = Path(out_dir)
    config = {"bench": "exact", **asdict(bench), "machine": machine_info()}
    check_resumable(out_dir, config, MAY_CHANGE)
    write_json(out_dir / "config.json", config)
    records = RecordFile(out_dir / "results.jsonl", ("method", "num_particles", "seed"))
    work = [
        (method, n, seed)
        for n in bench.particles
        for method in bench.methods
        for seed in range(bench.seeds)
    ]
    todo = [w for w in work if not records.done(method=w[0], num_particles=w[1], seed=w[2])]
    logger.info("bench exact: %d of %d runs to do", len(todo), len(work))
    for method, n, seed in progress(todo) if progress else todo:
        records.append(run_one(bench, method, n, seed))
    wanted = set(work)  # an earlier run with more seeds, N or methods left lines outside them
    current = [r for r in records.records
               if (r["method"], r["num_particles"], r["seed"]) in wanted]
    report, summary = summarise(bench, current)
    (out_dir / "report.md").write_text(report)
    plot(bench, summary, out_dir / "error_vs_particles.png")
    return summary
