"""`fksteer bench vectorisation`: cost of many groups against one, on the mixture fixture.

    from fksteer.bench.vectorisation import VectorisationBenchConfig, run_vectorisation_bench

The engine processes G groups of K particles as one (G, K) batch. If it looped over groups in
Python, 512 groups would cost about 512 times one group; batched, the cost grows with the
arithmetic only. The benchmark times `steer` on the exact Gaussian-mixture fixture (FK, default
configuration: difference potential, systematic resampling at every step) for each G, with the
repeats of all G interleaved so that machine noise hits them alike, and reports the median time
of each G over the median time of G = 1.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from fksteer.bench.records import (
    MOST_PARTICLES,
    MOST_REPEATS,
    RecordFile,
    check_counts,
    counted,
    markdown_table,
    write_json,
)
from fksteer.bench.suite import check_resumable, machine_info
from fksteer.models.gaussian_mixture import GaussianMixtureDiffusion, LinearReward
from fksteer.smc.config import FKConfig
from fksteer.smc.engine import steer

__all__ = ["VectorisationBenchConfig", "run_vectorisation_bench"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VectorisationBenchConfig:
    """What `bench vectorisation` times: the mixture fixture at each number of groups."""
    groups: tuple[int, ...] = (1, 8, 64, 512)
    num_particles: int = 16
    num_steps: int = 50
    repeats: int = 5
    lmbda: float = 1.0

    def __post_init__(self) -> None:
        if 1 not in self.groups:
            raise ValueError(f"groups={self.groups!r} must include 1, the reference.")
        if self.repeats < 1:
            raise ValueError(f"repeats={self.repeats!r}: pass an int >= 1.")
        check_counts(repeats=(self.repeats, MOST_REPEATS), groups=(self.groups, MOST_PARTICLES),
                     num_particles=(self.num_particles, MOST_PARTICLES))


def time_one(bench: VectorisationBenchConfig, num_groups: int, seed: int) -> float:
    """Seconds for one `steer` call with ``num_groups`` groups."""
    model = GaussianMixtureDiffusion.default(num_steps=bench.num_steps)
    reward = LinearReward([1.0, 0.5])
    config = FKConfig(num_particles=bench.num_particles, lmbda=bench.lmbda)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    steer(model, reward, config, prompts=list(range(num_groups)), generator=generator)
    return time.perf_counter() - start


def run_vectorisation_bench(
    bench: VectorisationBenchConfig, out_dir: str | Path, progress=None
) -> dict:
    """Run into ``out_dir``: config.json, results.jsonl (one line per G and repeat), report.md,
    time_vs_groups.png. Returns {"seconds": {G: median}, "ratio": {G: median / median at G=1}}."""
    out_dir = Path(out_dir)
    config = {"bench": "vectorisation", **asdict(bench), "machine": machine_info()}
    check_resumable(out_dir, config, may_change=("groups", "repeats"))
    write_json(out_dir / "config.json", config)
    records = RecordFile(out_dir / "results.jsonl", ("num_groups", "repeat"))
    time_one(bench, 1, seed=0)  # warm-up: first calls pay for lazy initialisation
    work = [(repeat, g) for repeat in range(bench.repeats) for g in bench.groups]
    todo = [w for w in work if not records.done(num_groups=w[1], repeat=w[0])]
    for repeat, num_groups in progress(todo) if progress else todo:
        seconds = time_one(bench, num_groups, seed=repeat)
        records.append({
            "num_groups": num_groups,
            "repeat": repeat,
            "num_particles": bench.num_particles,
            "num_steps": bench.num_steps,
            "seconds": seconds,
            "torch_threads": torch.get_num_threads(),
        })
    medians = {
        g: statistics.median(r["seconds"] for r in records.records
                             if r["num_groups"] == g and r["repeat"] < bench.repeats)
        for g in bench.groups
    }
    ratios = {g: medians[g] / medians[1] for g in bench.groups}
    rows = [
        [g, g * bench.num_particles, medians[g], ratios[g], ratios[g] / g] for g in bench.groups
    ]
    report = (
        "# bench vectorisation\n\n"
        f"FK on the Gaussian-mixture fixture, K = {bench.num_particles}, {bench.num_steps} steps, "
        f"median of {counted(bench.repeats, 'interleaved repeat')}, "
        f"{counted(torch.get_num_threads(), 'torch thread')}. "
        "A Python loop over groups would give ratio ~ G.\n\n"
        + markdown_table(
            ["groups G", "particles", "median seconds", "time / time(G=1)", "ratio / G"], rows
        )
    )
    (out_dir / "report.md").write_text(report)
    _plot(bench, medians, out_dir / "time_vs_groups.png")
    return {"seconds": medians, "ratio": ratios}


def _plot(bench: VectorisationBenchConfig, medians: dict[int, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted(medians)
    figure, axis = plt.subplots(figsize=(6, 4.5))
    axis.plot(groups, [medians[g] for g in groups], "o-", label="batched engine")
    axis.plot(groups, [medians[1] * g for g in groups], "k--", label="a loop over groups")
    axis.set_xscale("log", base=2)
    axis.set_yscale("log")
    axis.set_xlabel(f"groups G (K = {bench.num_particles} each)")
    axis.set_ylabel(f"seconds for {bench.num_steps} steps")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
