"""`fksteer bench image`: the embedded image models steered by a classifier, judged by another.

    from fksteer.bench.image import ImageBenchConfig, run_image_bench
    run_image_bench(ImageBenchConfig(), "runs/bench-image")

The FK steering paper's image claims in miniature, on the embedded class-conditional
Fashion-MNIST models (:func:`fksteer.embedded.image_model.load_image_model`, ``weak`` ~0.18M and
``strong`` ~0.70M UNet parameters): the prompt is a class name, the steering reward is the
embedded steering classifier's log p(class | x), and a held-out judge classifier (trained on a
disjoint split, never used to steer) decides whether the image shows the class: its accuracy is
this suite's GenEval analogue.

For each model, K in ``particles`` and seed, every method runs the same prompts with the same
initial noise (equal NFE): ``base``, ``best_of_n`` and FK with each potential (``fk-difference``,
``fk-max``, ``fk-sum``, ``fk-immediate``); on request also ``fk-adaptive`` (the difference
potential with adaptive tempering to lambda) and the searches ``svdd``, ``code`` and ``beam``,
which run K / M particles with M = ``candidates`` candidates each, so that they too evaluate K
rows per step (:mod:`fksteer.bench.matched`; their diversity is over the K / M kept samples).
The report then adds a matched-NFE table: the winner at each K and every method's paired
difference from it. Per prompt it records the steering reward and the
judge's verdict of the best particle (the paper's protocol) and of a draw from the final weights
(its expectation), the diversity of the K final particles (mean pairwise RMS pixel distance),
the final ESS, NFE, samples scored by the reward and wall seconds of the whole run per prompt
(denoiser, decode, reward and engine). The report adds reward against K, and held-out accuracy
of the weak model with FK against the strong model's plain samples with their compute beside
them. Files: ``config.json``, ``results.jsonl`` (one line per model, method, K, seed and prompt),
``report.md``, ``summary.json``, ``reward_vs_particles.png`` and ``accuracy_vs_compute.png``.
"""

from __future__ import annotations

import logging
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
from fksteer.bench.suite import check_resumable, format_cell, machine_info, run_units, seed_cell
from fksteer.distributed.communicator import Communicator
from fksteer.embedded.fashion import CLASS_NAMES
from fksteer.smc.config import POTENTIALS, SEARCH_METHODS, AdaptiveTilt, FKConfig, SearchConfig
from fksteer.smc.engine import steer

__all__ = ["ImageBenchConfig", "run_image_bench", "IMAGE_METHODS"]

logger = logging.getLogger(__name__)

#: The methods the suite runs by default.
DEFAULT_METHODS = ("base", "best_of_n") + tuple(f"fk-{potential}" for potential in POTENTIALS)
#: Every method it can run: the defaults, adaptive tempering and the searches.
IMAGE_METHODS = (*DEFAULT_METHODS, "fk-adaptive", *SEARCH_METHODS)
KEY_FIELDS = ("model", "method", "num_particles", "seed", "prompt_index")
MAY_CHANGE = ("models", "particles", "methods", "seeds", "fk_config")


@dataclass(frozen=True)
class ImageBenchConfig:
    """What `bench image` runs. ``quick()`` is the CI variant (one seed, three classes)."""

    models: tuple[str, ...] = ("weak", "strong")
    particles: tuple[int, ...] = (2, 4, 8)
    methods: tuple[str, ...] = DEFAULT_METHODS
    seeds: int = 3
    classes: tuple[str, ...] = CLASS_NAMES
    repeats: int = 3
    num_steps: int = 50
    guidance_scale: float = 1.0
    scheduler: str = "ddpm"
    lmbda: float = 10.0
    resampling: str = "systematic"
    resample_every: int = 5
    ess_threshold: float | None = None
    #: the latent scale intermediate predictions are decoded at ("full": full resolution)
    intermediate_resolution: str | float = "full"
    candidates: int = 2
    temperature: float = 0.0
    block: int = 5

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in IMAGE_METHODS]
        if unknown:
            raise ValueError(f"methods {unknown}: choose from {', '.join(IMAGE_METHODS)}.")
        bad_models = [m for m in self.models if m not in ("weak", "strong")]
        if bad_models:
            raise ValueError(f"models {bad_models}: choose from weak, strong.")
        bad_classes = [c for c in self.classes if c not in CLASS_NAMES]
        if bad_classes:
            raise ValueError(f"classes {bad_classes}: choose from {', '.join(CLASS_NAMES)}.")
        if not self.particles or min(self.particles) < 1:
            raise ValueError(f"particles={self.particles!r}: pass positive ints, e.g. (2, 4, 8).")
        if self.seeds < 1 or self.repeats < 1 or not self.classes or self.num_steps < 1:
            raise ValueError("seeds, repeats and num_steps must be >= 1 and classes non-empty.")
        check_counts(particles=(self.particles, MOST_PARTICLES), seeds=(self.seeds, MOST_SEEDS),
                     repeats=(self.repeats, MOST_REPEATS), num_steps=(self.num_steps, MOST_STEPS))
        for method in self.methods:
            for k in self.particles:
                self.fk_config(method, k)  # FKConfig's and SearchConfig's own checks, now

    @classmethod
    def quick(cls) -> ImageBenchConfig:
        """The CI variant: K = 2, one seed, three classes, ten steps."""
        return cls(particles=(2,), seeds=1, classes=CLASS_NAMES[:3], repeats=1, num_steps=10)

    def expanded_prompts(self) -> list[str]:
        """The class names, each repeated ``repeats`` times: one group each."""
        return [name for _ in range(self.repeats) for name in self.classes]

    def fk_config(self, method: str, num_particles: int) -> FKConfig:
        """The FKConfig of ``method`` at K rows per prompt (``fk-<potential>``; ``fk-adaptive``
        tempers to lambda; baselines use the default potential; a search K / M particles)."""
        lmbda: float | AdaptiveTilt = self.lmbda
        potential = method.removeprefix("fk-") if method.startswith("fk-") else "difference"
        if method == "fk-adaptive":
            potential, lmbda = "difference", AdaptiveTilt(target=self.lmbda)
        if method in SEARCH_METHODS:
            num_particles = self.steer_method(method, num_particles)[0]
        return FKConfig(num_particles=num_particles, potential=potential, lmbda=lmbda,
                        resampling=self.resampling, resample_every=self.resample_every,
                        ess_threshold=self.ess_threshold)

    def steer_method(self, method: str, num_particles: int) -> tuple[int, str | SearchConfig]:
        """(particles, ``steer``'s method argument) of ``method`` at K rows per prompt."""
        if method in SEARCH_METHODS:
            return search_setting(method, num_particles, self.candidates, self.temperature,
                                  self.block)
        return num_particles, "fk" if method.startswith("fk-") else method


def _pairwise_rms(samples: torch.Tensor) -> torch.Tensor:
    """(G,) mean RMS pixel distance over the pairs of K samples (G, K, C, H, W); 0 for K = 1."""
    flat = samples.flatten(2).double()  # (G, K, D)
    k = flat.shape[1]
    if k < 2:
        return torch.zeros(flat.shape[0], dtype=torch.float64)
    distances = torch.cdist(flat, flat) / flat.shape[-1] ** 0.5  # (G, K, K)
    return distances.sum(dim=(1, 2)) / (k * (k - 1))


class _ImageUnits:
    def __init__(self, bench: ImageBenchConfig):
        from fksteer.embedded.classifier import load_classifier
        from fksteer.rewards.classifier import ClassifierLogProb

        self.bench = bench
        self.prompts = bench.expanded_prompts()
        self.labels = torch.tensor([CLASS_NAMES.index(p) for p in self.prompts])  # (G,)
        self.reward = ClassifierLogProb(load_classifier("steering"), labels=CLASS_NAMES)
        self.judge = load_classifier("judge")
        self._models: dict[str, Any] = {}

    def model(self, size: str):
        if size not in self._models:
            from fksteer.embedded.image_model import load_image_model

            model = load_image_model(size, num_inference_steps=self.bench.num_steps,
                                     guidance_scale=self.bench.guidance_scale,
                                     scheduler=self.bench.scheduler,
                                     intermediate_resolution=self.bench.intermediate_resolution)
            parameters = sum(p.numel() for p in model.model.unet.parameters())  # guided UNet
            self._models[size] = (model, parameters)
        return self._models[size]

    def __call__(self, unit: dict[str, Any]) -> list[dict[str, Any]]:
        method, k, seed = unit["method"], unit["num_particles"], unit["seed"]
        model, parameters = self.model(unit["model"])
        groups = len(self.prompts)
        start = time.perf_counter()
        result = steer(model, self.reward, self.bench.fk_config(method, k), prompts=self.prompts,
                       generator=torch.Generator().manual_seed(seed),
                       method=self.bench.steer_method(method, k)[1])
        seconds = time.perf_counter() - start
        samples = result.samples.detach().float().cpu()  # (G, K kept, 1, 16, 16)
        kept = result.num_particles  # K, or K / M for a search
        with torch.no_grad():
            judged = self.judge(samples.flatten(0, 1)).argmax(-1).view(groups, kept)  # (G, K)
        correct = (judged == self.labels[:, None]).double()  # (G, K)
        weights = result.weights.double()  # (G, K)
        rewards = result.rewards.double()  # (G, K)
        best = result.best
        diversity = _pairwise_rms(samples)  # (G,)
        parts = {part: value / groups for part, value in result.seconds.items()}
        lines = []
        for g, prompt in enumerate(self.prompts):
            b = int(best[g])
            lines.append({
                **unit, "prompt_index": g, "prompt": prompt,
                "reward_best": float(rewards[g, b]),
                "reward_draw": float(torch.nansum(weights[g] * rewards[g])),
                "judge_best": float(correct[g, b]),
                "judge_draw": float((weights[g] * correct[g]).sum()),
                "judge_particle": float(correct[g].mean()),
                "diversity": float(diversity[g]),
                "ess": float(result.ess[g]),
                "mean_ess": float(torch.stack([step.ess[g] for step in result.trace]).mean()),
                "kept": kept,
                "log_evidence": float(result.log_evidence[g]),
                "nfe": result.nfe // groups,
                "samples_scored": result.samples_scored // groups,
                "seconds": seconds / groups,
                "seconds_per_particle": seconds / groups / k,
                "model_seconds": parts["model"], "reward_seconds": parts["reward"],
                "engine_seconds": parts["engine"],
                "unet_parameters": parameters,
            })
        return lines


def _units(bench: ImageBenchConfig) -> list[dict[str, Any]]:
    return [
        {"model": size, "method": method, "num_particles": k, "seed": seed}
        for seed in range(bench.seeds)
        for size in bench.models
        for k in bench.particles
        for method in bench.methods
    ]


METRICS = ("reward_best", "reward_draw", "judge_best", "judge_draw", "judge_particle",
           "diversity", "ess", "nfe", "samples_scored", "seconds", "seconds_per_particle",
           "unet_parameters")


def summarise(bench: ImageBenchConfig, records: list[dict]) -> tuple[str, dict]:
    records = [{**r, "nfe_per_particle": r["nfe"] / r["num_particles"]} for r in records]
    cells: dict[str, Any] = {}
    rows = []
    for size in bench.models:
        for k in bench.particles:
            for method in bench.methods:
                where = {"model": size, "method": method, "num_particles": k}
                cell = {metric: seed_cell(records, where, metric) for metric in METRICS}
                cells.setdefault(size, {}).setdefault(f"K={k}", {})[method] = cell
                rows.append([
                    size, k, method,
                    format_cell(cell["reward_best"]), format_cell(cell["reward_draw"]),
                    format_cell(cell["judge_best"], percent=True),
                    format_cell(cell["judge_draw"], percent=True),
                    format_cell(cell["diversity"]), format_cell(cell["ess"]),
                    format_cell(cell["nfe"]), format_cell(cell["samples_scored"]),
                    format_cell(cell["seconds"]),
                ])
    prompts = len(bench.classes) * bench.repeats
    parts = [
        "# bench image: the embedded Fashion-MNIST models, steered and judged\n\n",
        f"Prompts: {len(bench.classes)} class names x {bench.repeats} repeats = {prompts} "
        f"groups per run; seeds: {bench.seeds}; {bench.num_steps} {bench.scheduler.upper()} "
        f"steps, guidance scale {bench.guidance_scale}. Steering reward: the embedded steering "
        "classifier's log p(class | x); judge: the held-out classifier (accuracy = argmax is "
        f"the prompt's class). FK: lambda = {bench.lmbda}, {bench.resampling} resampling every "
        f"{bench.resample_every} steps, ess_threshold = {bench.ess_threshold}. All methods at "
        "a given K share the initial noise and the NFE. Cells: mean over seeds of the per-seed "
        "mean over prompts ± a Student t 95% interval over seeds. best: the highest-reward "
        "particle per prompt (for `base` that is best-of-K's pick); draw: one draw from the "
        "final weights (its expectation; `base` draws uniformly, `best_of_n` takes its best). "
        "diversity: mean pairwise RMS pixel distance of the K final particles. s/prompt: wall "
        "seconds of the run per prompt, denoiser, decode, reward and engine included.\n\n",
        markdown_table(["model", "K", "method", "reward best", "reward draw", "judge best",
                        "judge draw", "diversity", "final ESS", "NFE/prompt",
                        "samples scored/prompt", "s/prompt"], rows),
    ]
    compute_rows = []
    if "strong" in bench.models and "base" in bench.methods:
        where = {"model": "strong", "method": "base"}
        compute_rows.append(["strong", "base, one sample (all K pooled)", 1,
                             format_cell(seed_cell(records, where, "judge_particle"), True),
                             "-", format_cell(seed_cell(records, where, "seconds_per_particle")),
                             format_cell(seed_cell(records, where, "nfe_per_particle")), "-"])
    if "weak" in bench.models:
        for method in ("best_of_n", "fk-difference"):
            if method not in bench.methods:
                continue
            for k in bench.particles:
                cell = cells["weak"][f"K={k}"][method]
                compute_rows.append(["weak", method, k, format_cell(cell["judge_draw"], True),
                                     format_cell(cell["judge_best"], True),
                                     format_cell(cell["seconds"]), format_cell(cell["nfe"]),
                                     format_cell(cell["samples_scored"])])
    if compute_rows:
        parameters = {size: seed_cell(records, {"model": size}, "unet_parameters")
                      for size in bench.models}
        sizes = ", ".join(f"{size} {int(cell[0]):,}" for size, cell in parameters.items()
                          if cell is not None)
        parts.append(
            "\n## Weak model + steering against the strong model's plain samples\n\n"
            f"UNet parameters: {sizes}. The strong row is one plain sample per prompt (the "
            "judge's accuracy on a uniformly chosen base particle, pooled over the K runs), its "
            "cost the run's per-particle wall time; the weak rows give the whole K-particle "
            "run's cost per prompt.\n\n"
            + markdown_table(["model", "method", "K", "judge draw", "judge best", "s/prompt",
                              "NFE/prompt", "samples scored/prompt"], compute_rows))
    winners = {}
    if set(bench.methods) - set(DEFAULT_METHODS):
        parts.append(_matched_section(bench, records, winners))
    return "".join(parts), {"cells": cells, "winners": winners}


def _matched_section(bench: ImageBenchConfig, records: list[dict], winners: dict) -> str:
    """Per model: the winner at each K (rows per prompt, equal NFE) by held-out judge and by
    steering reward of a draw, with every method's paired difference from it."""
    parts = [
        "\n## Matched NFE: which method wins at each budget\n\n"
        f"Every method at K evaluates K rows per step (searches: K / {bench.candidates} "
        f"particles x {bench.candidates} candidates; svdd temperature {bench.temperature}, "
        f"code blocks of {bench.block} steps, beam and svdd choose at every step). The winner "
        "has the highest mean; the next column is winner minus method, paired over (seed, "
        "prompt) pairs with a Student t 95% interval over the pairs: an interval that holds 0 "
        "is a tie. A search's draw is a uniform pick among its kept samples.\n"]
    for size in bench.models:
        for metric, percent in (("judge_draw", True), ("reward_draw", False)):
            table, found = matched_table(records, bench.methods, bench.particles,
                                         {"model": size}, metric, percent)
            winners.setdefault(size, {})[metric] = found
            verdict = "; ".join(f"K={k}: {w['winner']} ({'clear' if w['clear'] else 'tied'})"
                                for k, w in found.items())
            parts.append(f"\n### {size} model, {metric}: {verdict}\n\n{table}")
    return "".join(parts)


def plot(bench: ImageBenchConfig, summary: dict, out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = summary["cells"]
    ks = list(bench.particles)
    metrics = (("reward_best", "steering reward, best"), ("reward_draw", "steering reward, draw"),
               ("judge_draw", "held-out judge accuracy, draw"))
    figure, axes = plt.subplots(len(bench.models), 3, figsize=(15, 4 * len(bench.models)),
                                squeeze=False)
    for row, size in enumerate(bench.models):
        for axis, (metric, title) in zip(axes[row], metrics, strict=True):
            for method in bench.methods:
                points = [(k, cells[size][f"K={k}"][method][metric]) for k in ks]
                points = [(k, c) for k, c in points if c is not None]
                axis.errorbar([k for k, _ in points], [c[0] for _, c in points],
                              yerr=[c[1] for _, c in points], marker="o", capsize=3,
                              label=method)
            axis.set_xscale("log", base=2)
            axis.set_xticks(ks, [str(k) for k in ks])
            axis.set_xlabel("particles K")
            axis.set_title(f"{size}: {title}")
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out_dir / "reward_vs_particles.png", dpi=110)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(8, 5))
    colours = {method: f"C{i}" for i, method in enumerate(IMAGE_METHODS)}
    for size, marker, style in (("weak", "o", "-"), ("strong", "s", "--")):
        if size not in cells:
            continue
        for method in bench.methods:
            points = [cells[size][f"K={k}"][method] for k in ks]
            points = [c for c in points if c["seconds"] is not None and c["judge_draw"]]
            axis.errorbar([c["seconds"][0] for c in points],
                          [c["judge_draw"][0] for c in points],
                          yerr=[c["judge_draw"][1] for c in points], marker=marker, capsize=3,
                          linestyle=style, color=colours[method], label=f"{size} {method}")
    axis.set_xscale("log")
    axis.set_xlabel("wall seconds per prompt (K = " + ", ".join(map(str, ks)) + ")")
    axis.set_ylabel("held-out judge accuracy (draw)")
    axis.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(out_dir / "accuracy_vs_compute.png", dpi=110)
    plt.close(figure)


def run_image_bench(bench: ImageBenchConfig, out_dir: str | Path, progress=None) -> dict:
    """Run (or resume) the suite into ``out_dir``; returns the summary dict."""
    out_dir = Path(out_dir)
    config = {"bench": "image", **asdict(bench),
              "reward": "embedded steering classifier, log p(class | x)",
              "judge": "embedded held-out judge classifier",
              "fk_config": {method: bench.fk_config(method, max(bench.particles)).to_dict()
                            for method in bench.methods if method.startswith("fk-")},
              "machine": machine_info()}
    communicator = Communicator.current()
    units = _units(bench)
    check_resumable(out_dir, config, MAY_CHANGE)  # read-only: every rank refuses alike
    if not communicator.is_root:  # under torchrun: compute a share of the units, write nothing
        run_units(None, units, len(bench.expanded_prompts()), _ImageUnits(bench), progress,
                  communicator)
        return {}
    write_json(out_dir / "config.json", config)
    records = RecordFile(out_dir / "results.jsonl", KEY_FIELDS)
    prompts = len(bench.expanded_prompts())
    if communicator.distributed or any(
        not records.done(**u, prompt_index=i) for u in units for i in range(prompts)
    ):
        run_units(records, units, prompts, _ImageUnits(bench), progress, communicator)
    keys = {tuple(u.values()) for u in units}
    current = [r for r in records.records
               if (r["model"], r["method"], r["num_particles"], r["seed"]) in keys]
    report, summary = summarise(bench, current)
    (out_dir / "report.md").write_text(report)
    write_json(out_dir / "summary.json", summary)
    plot(bench, summary, out_dir)
    return summary
