"""A rare attribute on the tabular masked-diffusion fixture: FK steering against best-of-K.

    python benchmarks/masked_rare_attribute.py --out docs/results/masked-rare-attribute

The setting of FK steering's text result (Singhal et al. 2025: toxicity 0.3% of base samples,
best-of-8 far below FK with 4 or 8 particles), where every number is known exactly:

- the model: a masked diffusion over vocabulary 4, length 6 (4096 sequences) whose law is an
  explicit table, log p(x) = 1.0 * #{j : x_j = x_{j+1}} + sum_j field[x_j] + const with
  field = (0.2, 0, -0.2, -1.5); token 3 plays the "toxic" word;
- the sampler: MaskedDiffusionModel over TableDenoiser (the exact per-position marginals),
  unmasking one position per step (T = L = 6), so its law is the table's exactly;
- the reward: r(x) = #{j : x_j = 3} / 6, a score in [0, 1] like a classifier's probability; the
  attribute A is r(x) >= 1/2 (three or more 3s), with base probability p = 0.41%;
- the target: p(x) exp(lambda r(x)) / Z with lambda = 10, where A holds 29% of the mass, far
  above what best-of-K can reach: its best particle has A iff some particle has A (A is a reward
  threshold), so its rate is exactly 1 - (1 - p)^K (1.6% at K = 4, 3.2% at K = 8).

Every method runs the same sampler with K particles per prompt for the same steps: equal
denoiser evaluations (NFE). FK also scores ``num_x0_samples`` draws of x_0 per particle at every
step (reward calls, no denoiser calls). Per K and method, over G prompts (independent groups):

- ``best rate``: fraction of prompts whose highest-reward particle has A (the paper's protocol);
- ``weighted``: mean over prompts of sum_k w_k 1[A(x_k)], the share of A in each prompt's
  weighted particles (the probability that a draw from ``result.draw()`` has A);
- ``pooled``: sum_g Z_g m_g / sum_g Z_g, the evidence-weighted estimate across prompts, which is
  consistent for the tilted share as G grows (for FK and importance sampling);

beside the exact base rate, best-of-K ceiling and tilted share. Writes ``config.json``,
``results.json`` and ``report.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from fksteer import FKConfig, steer
from fksteer.bench.records import markdown_table, write_json
from fksteer.integrations.masked import MaskedDiffusionModel
from fksteer.models.masked_exact import TableDenoiser
from fksteer.models.tabular_masked import TabularMaskedDiffusion

VOCAB, LENGTH, TOXIC = 4, 6, 3
METHODS = ("fk", "best_of_n", "importance", "base")


@dataclass(frozen=True)
class RareAttributeConfig:
    particles: tuple[int, ...] = (4, 8)
    groups: int = 2000
    lmbda: float = 10.0
    num_x0_samples: int = 4
    seed: int = 0
    coupling: float = 1.0
    field: tuple[float, ...] = (0.2, 0.0, -0.2, -1.5)


def rare_attribute_table(config: RareAttributeConfig) -> TabularMaskedDiffusion:
    """The table of the module docstring: (VOCAB,) * LENGTH probabilities."""
    sequences = TabularMaskedDiffusion(
        torch.full((VOCAB,) * LENGTH, VOCAB**-LENGTH), VOCAB, LENGTH, LENGTH
    ).sequences()  # (N, L)
    field = torch.tensor(config.field, dtype=torch.float64)
    log_weights = config.coupling * (sequences[:, 1:] == sequences[:, :-1]).sum(-1)
    log_weights = log_weights + field[sequences].sum(-1)  # (N,)
    probs = torch.softmax(log_weights, 0).reshape((VOCAB,) * LENGTH)
    return TabularMaskedDiffusion(probs, VOCAB, LENGTH, LENGTH)


def toxicity(tokens: torch.Tensor, prompts=None) -> torch.Tensor:
    """r(x) = share of the positions holding the toxic token, in [0, 1]."""
    return (tokens == TOXIC).double().mean(dim=-1)


def has_attribute(tokens: torch.Tensor) -> torch.Tensor:
    return toxicity(tokens) >= 0.5


def exact_values(table: TabularMaskedDiffusion, config: RareAttributeConfig) -> dict[str, float]:
    sequences = table.sequences()
    attribute = has_attribute(sequences)
    tilted, log_z = table.tilted(toxicity, config.lmbda)
    base_rate = float(table.flat_probs[attribute].sum())
    values = {"base_rate": base_rate, "tilted_share": float(tilted[attribute].sum()),
              "log_z": log_z}
    for k in config.particles:
        values[f"best_of_{k}_ceiling"] = 1.0 - (1.0 - base_rate) ** k
    return values


def measure(result, method: str) -> dict[str, float]:
    attribute = has_attribute(result.samples).double()  # (G, K)
    groups = attribute.shape[0]
    best = attribute.gather(1, result.best[:, None]).squeeze(1)  # (G,)
    weighted = (result.weights * attribute).sum(1)  # (G,)
    record = {
        "best_rate": float(best.mean()),
        "best_rate_se": float(best.std() / math.sqrt(groups)),
        "weighted": float(weighted.mean()),
        "weighted_se": float(weighted.std() / math.sqrt(groups)),
        "final_ess": float(result.ess.mean()),
        "nfe": result.nfe,
        "samples_scored": result.samples_scored,
    }
    if method in ("fk", "importance"):
        z = torch.exp(result.log_evidence - result.log_evidence.max())  # (G,)
        pooled = float((z * weighted).sum() / z.sum())
        record["pooled"] = pooled
        record["pooled_se"] = float(
            (z * (weighted - pooled)).std() / (z.mean() * math.sqrt(groups))
        )
    return record


def run(config: RareAttributeConfig, out: Path) -> dict:
    table = rare_attribute_table(config)
    exact = exact_values(table, config)
    model = MaskedDiffusionModel(TableDenoiser(table), seq_len=LENGTH, num_steps=LENGTH,
                                 unmasking="fixed-count", num_x0_samples=config.num_x0_samples)
    records = []
    for k in config.particles:
        fk_config = FKConfig(num_particles=k, lmbda=config.lmbda, potential="difference",
                             resampling="systematic")
        for method in METHODS:
            start = time.perf_counter()
            result = steer(model, toxicity, fk_config, prompts=[None] * config.groups,
                           generator=torch.Generator().manual_seed(config.seed + k),
                           method=method)
            record = {"particles": k, "method": method, **measure(result, method),
                      "seconds": time.perf_counter() - start}
            records.append(record)
    results = {"exact": exact, "records": records}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", asdict(config))
    write_json(out / "results.json", results)
    (out / "report.md").write_text(report(config, exact, records))
    return results


def report(config: RareAttributeConfig, exact: dict, records: list[dict]) -> str:
    def estimate(record, name):
        if name not in record:
            return "-"
        return f"{record[name]:.4f} ± {1.96 * record[name + '_se']:.4f}"

    rows = []
    for record in records:
        k = record["particles"]
        rows.append([
            k, record["method"], estimate(record, "best_rate"), estimate(record, "weighted"),
            estimate(record, "pooled"), f"{exact[f'best_of_{k}_ceiling']:.4f}",
            f"{exact['tilted_share']:.4f}", f"{record['final_ess']:.2f}", record["nfe"],
            record["samples_scored"],
        ])
    header = ["K", "method", "best rate", "weighted", "pooled", "best-of-K exact",
              "tilted exact", "final ESS", "NFE", "samples scored"]
    return (
        "# Rare attribute on the tabular masked diffusion: FK against best-of-K\n\n"
        f"Vocabulary {VOCAB}, length {LENGTH}, one token unmasked per step (exact sampler). "
        f"Attribute: at least 3 of 6 tokens are token {TOXIC}; reward r = share of token "
        f"{TOXIC}; lambda = {config.lmbda}; {config.groups} prompts per row; FK: difference "
        f"potential, systematic resampling at every step, {config.num_x0_samples} draws of "
        "x_0 per particle for the intermediate potentials.\n\n"
        f"Exact: base rate {exact['base_rate']:.4f}; tilted share {exact['tilted_share']:.4f}; "
        + "; ".join(f"best-of-{k} {exact[f'best_of_{k}_ceiling']:.4f}" for k in config.particles)
        + ".\n\n"
        "best rate: share of prompts whose best particle has the attribute (the paper's "
        "protocol). weighted: mean over prompts of each prompt's weighted share. pooled: the "
        "evidence-weighted share across prompts (consistent for the tilted share). ± is a 95% "
        "interval over prompts. Equal NFE for all methods at a given K.\n\n"
        + markdown_table(header, rows)
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/masked-rare-attribute"))
    parser.add_argument("--groups", type=int, default=RareAttributeConfig.groups)
    parser.add_argument("--draws", type=int, default=RareAttributeConfig.num_x0_samples)
    parser.add_argument("--lmbda", type=float, default=RareAttributeConfig.lmbda)
    parser.add_argument("--seed", type=int, default=RareAttributeConfig.seed)
    args = parser.parse_args(argv)
    config = RareAttributeConfig(groups=args.groups, num_x0_samples=args.draws,
                                 lmbda=args.lmbda, seed=args.seed)
    results = run(config, args.out)
    print(json.dumps(results["exact"], indent=2))
    print((args.out / "report.md").read_text())


if __name__ == "__main__":
    main()
