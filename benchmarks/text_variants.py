"""The tables of BENCHMARKS.md's "Where FK does not beat best-of-K": FK variants of `bench text`.

    python benchmarks/text_variants.py --bench docs/results/bench-text

Reads the main run (``--bench``, written by ``fksteer bench text``) and each variant folder under
``<bench>/variants/`` (written by ``fksteer bench text --methods fk --x0-samples 1 <option>
--perplexity off --out <bench>/variants/<name>``, the command is in each folder's
``command.txt``). The variants keep the seeds, prompts and initial noise of the main run, so each
FK setting pairs with the main run's best-of-K. Writes ``<bench>/variants/report.md`` with two
tables: every setting's cells (mean over seeds of the per-seed mean over prompts, Student t 95%
over seeds), and the paired differences FK - best-of-K (per seed the difference of the two
per-seed means, Student t 95% over the seeds; the perplexity per seed is exp of its mean
SmolLM2 negative log-likelihood, where the run measured it).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from fksteer.bench.records import markdown_table, mean_and_t_ci
from fksteer.bench.suite import format_cell, seed_cell, seed_means

#: Variant folder -> how the table names it, in the order of the table.
VARIANTS = {
    "resample-every-4": "resample every 4 steps",
    "ess-0.5": "adaptive: resample when ESS < 0.5 K",
    "lambda-3": "lambda 3",
    "lambda-30": "lambda 30",
    "max-every-4": "max potential, every 4 steps",
}
COLUMNS = (("steer_rate_best", True), ("steer_rate_draw", True), ("heldout_rate_best", True),
           ("heldout_rate_draw", True), ("ess", False), ("distinct_2", False))


def read(folder: Path) -> list[dict]:
    """The records of one bench text folder."""
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


def paired(fk: list[dict], base: list[dict], where_fk: dict, k: int, metric: str,
           perplexity: bool = False) -> str:
    """FK minus best-of-K, per seed (each a mean over prompts), with its t interval; with
    ``perplexity`` the metric is a mean NLL and each seed's value is exp of its mean."""
    transform = math.exp if perplexity else None
    a = seed_means(fk, {**where_fk, "num_particles": k}, metric, transform)
    b = seed_means(base, {"method": "best_of_n", "num_particles": k}, metric, transform)
    shared = sorted(set(a) & set(b))
    if len(shared) < 2:
        return "-"  # e.g. a variant run with --perplexity off
    mean, half_width = mean_and_t_ci(a[s] - b[s] for s in shared)
    return format_cell((mean, half_width, len(shared)), percent=not perplexity)


def main() -> None:
    """Write the two tables of the FK variants against the main run's best-of-K."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, default=Path("docs/results/bench-text"))
    args = parser.parse_args()
    main_run = read(args.bench)
    settings = [("best-of-K (main run)", main_run, {"method": "best_of_n"}, "bench-text"),
                ("main run: FK, one x0 draw", main_run, {"method": "fk", "num_x0_samples": 1},
                 "bench-text"),
                ("main run: FK, 4 x0 draws", main_run, {"method": "fk", "num_x0_samples": 4},
                 "bench-text")]
    for folder, name in VARIANTS.items():
        settings.append((name, read(args.bench / "variants" / folder), {"method": "fk"},
                         f"bench-text/variants/{folder}"))
    particles = sorted({r["num_particles"] for r in main_run})
    cells, pairs = [], []
    for k in particles:
        for name, records, where, folder in settings:
            at = {**where, "num_particles": k}
            cells.append([k, name, *(format_cell(seed_cell(records, at, m), percent=p)
                                     for m, p in COLUMNS), folder])
            if where["method"] == "fk":
                pairs.append([k, name, *(paired(records, main_run, where, k, m)
                                         for m in ("steer_rate_best", "heldout_rate_best")),
                              paired(records, main_run, where, k, "nll_best", perplexity=True),
                              folder])
    report = (
        "# FK variants of bench text against the main run's best-of-K\n\n"
        + markdown_table(["K", "setting", "steer best", "steer draw", "held-out best",
                          "held-out draw", "final ESS", "dist-2", "output folder"], cells)
        + "\n\nPaired differences (per seed, FK minus best-of-K of the main run, same noise):\n\n"
        + markdown_table(["K", "FK setting", "steer best: FK - best-of-K",
                          "held-out best: FK - best-of-K", "SmolLM2 ppl best: FK - best-of-K",
                          "output folder"], pairs) + "\n"
    )
    (args.bench / "variants" / "report.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
