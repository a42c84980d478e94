"""`fksteer bench overhead`: wall time of steering a stock diffusers pipeline over not steering it.

    from fksteer.bench.overhead import OverheadBenchConfig, run_overhead_bench

A small pixel-space ``UNet2DModel`` (the ~0.7M-parameter 16x16 architecture of the embedded
image models, random weights: timing does not depend on them) runs in ``DDPMPipeline`` with K
particles. Variants, all with the same generator seed and the same number of denoiser
evaluations:

- ``stock``: the pipeline itself, ``pipe(batch_size=K, output_type="pt")``;
- ``base``: :func:`fksteer.diffusers.steer_pipeline` with ``method="base"`` (the wrapper alone);
- ``fk``: ``steer_pipeline`` with FK, a cheap reward (mean brightness) scored and resampled at
  every step (the most engine work per denoiser call);
- ``fk_stepmodel``: the same through :class:`fksteer.diffusers.UNetStepModel` and
  :func:`fksteer.steer`.

Repeats are interleaved (every variant once per round) so that machine noise hits them alike;
the report gives each variant's median seconds, its ratio to ``stock``'s, and the median over
rounds of the ratio within a round (robust to slow phases of a shared machine). The target is
``fk / stock <= 1.10``.
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
    MOST_STEPS,
    RecordFile,
    check_counts,
    counted,
    markdown_table,
    write_json,
)
from fksteer.bench.suite import check_resumable, machine_info
from fksteer.smc.config import FKConfig
from fksteer.smc.engine import steer

__all__ = ["OverheadBenchConfig", "run_overhead_bench", "VARIANTS"]

logger = logging.getLogger(__name__)

VARIANTS = ("stock", "base", "fk", "fk_stepmodel")


@dataclass(frozen=True)
class OverheadBenchConfig:
    """What `bench overhead` times: a small UNet's DDPMPipeline stock, wrapped and steered."""
    num_particles: int = 16
    num_steps: int = 50
    repeats: int = 5
    image_size: int = 16
    block_out_channels: tuple[int, ...] = (32, 64)
    lmbda: float = 10.0

    def __post_init__(self) -> None:
        for name in ("num_particles", "num_steps", "repeats", "image_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}: pass a positive int.")
        check_counts(num_particles=(self.num_particles, MOST_PARTICLES),
                     num_steps=(self.num_steps, MOST_STEPS), repeats=(self.repeats, MOST_REPEATS))

    @classmethod
    def quick(cls) -> OverheadBenchConfig:
        """The CI variant: K = 4, five steps, two repeats, an 8x8 UNet."""
        return cls(num_particles=4, num_steps=5, repeats=2, image_size=8,
                   block_out_channels=(8, 16))


def _brightness(images: torch.Tensor, prompts) -> torch.Tensor:
    return images.mean(dim=(1, 2, 3))


def build_pipeline(bench: OverheadBenchConfig):
    """A DDPMPipeline over a random-weight UNet2DModel of the embedded models' architecture."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=bench.image_size,
        in_channels=1,
        out_channels=1,
        layers_per_block=1,
        block_out_channels=bench.block_out_channels,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    )
    unet.eval()
    pipe = DDPMPipeline(unet=unet, scheduler=DDPMScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def time_variant(pipe, bench: OverheadBenchConfig, variant: str, seed: int) -> dict:
    """Run one variant once; returns its seconds and the run's evaluations."""
    from fksteer.diffusers import UNetStepModel, steer_pipeline

    config = FKConfig(num_particles=bench.num_particles, lmbda=bench.lmbda)
    generator = torch.Generator().manual_seed(seed)
    nfe = bench.num_particles * bench.num_steps
    start = time.perf_counter()
    if variant == "stock":
        pipe(batch_size=bench.num_particles, num_inference_steps=bench.num_steps,
             output_type="pt", generator=generator)
    elif variant in ("base", "fk"):
        result = steer_pipeline(pipe, _brightness, config, method=variant, generator=generator,
                                num_inference_steps=bench.num_steps)
        nfe = result.nfe
    elif variant == "fk_stepmodel":
        model = UNetStepModel(pipe.unet, pipe.scheduler, bench.num_steps)
        result = steer(model, _brightness, config, generator=generator)
        nfe = result.nfe
    else:
        raise ValueError(f"variant={variant!r} is unknown: choose one of {', '.join(VARIANTS)}.")
    return {"seconds": time.perf_counter() - start, "nfe": nfe}


def run_overhead_bench(bench: OverheadBenchConfig, out_dir: str | Path, progress=None) -> dict:
    """Run into ``out_dir``: config.json, results.jsonl (one line per variant and repeat),
    report.md, overhead.png. Returns {"seconds": {variant: median}, "ratio": {variant: median /
    median of stock}, "paired_ratio": {variant: median over rounds of variant / stock}}."""
    out_dir = Path(out_dir)
    config = {"bench": "overhead", **asdict(bench), "machine": machine_info()}
    check_resumable(out_dir, config, may_change=("repeats",))
    write_json(out_dir / "config.json", config)
    records = RecordFile(out_dir / "results.jsonl", ("variant", "repeat"))
    pipe = build_pipeline(bench)
    for variant in VARIANTS:  # warm-up: first calls pay for lazy initialisation
        time_variant(pipe, bench, variant, seed=0)
    work = [(repeat, v) for repeat in range(bench.repeats) for v in VARIANTS]
    todo = [w for w in work if not records.done(variant=w[1], repeat=w[0])]
    for repeat, variant in progress(todo) if progress else todo:
        timing = time_variant(pipe, bench, variant, seed=repeat)
        records.append({
            "variant": variant,
            "repeat": repeat,
            "num_particles": bench.num_particles,
            "num_steps": bench.num_steps,
            "torch_threads": torch.get_num_threads(),
            **timing,
        })
    current = [r for r in records.records if r["repeat"] < bench.repeats]  # fewer repeats now
    medians = {
        v: statistics.median(r["seconds"] for r in current if r["variant"] == v)
        for v in VARIANTS
    }
    ratios = {v: medians[v] / medians["stock"] for v in VARIANTS}
    seconds = {(r["variant"], r["repeat"]): r["seconds"] for r in current}
    paired = {  # median over rounds of the ratio within a round: robust to slow phases
        v: statistics.median(
            seconds[v, k] / seconds["stock", k]
            for k in range(bench.repeats)
            if (v, k) in seconds and ("stock", k) in seconds
        )
        for v in VARIANTS
    }
    per_step = {
        v: 1e3 * (medians[v] - medians["stock"]) / bench.num_steps for v in VARIANTS
    }
    rows = [[v, medians[v], ratios[v], paired[v], per_step[v]] for v in VARIANTS]
    parameters = sum(p.numel() for p in pipe.unet.parameters())
    verdict = "meets" if max(ratios["fk"], paired["fk"]) <= 1.10 else "misses"
    report = (
        "# bench overhead\n\n"
        f"DDPMPipeline over a random-weight UNet2DModel ({parameters / 1e6:.2f}M parameters, "
        f"{bench.image_size}x{bench.image_size}, 1 channel), K = {bench.num_particles} "
        f"particles, {bench.num_steps} DDPM steps, on CPU with "
        f"{counted(torch.get_num_threads(), 'torch thread')}. FK scores a cheap reward (mean "
        "brightness) and resamples at every step. "
        f"Median of {counted(bench.repeats, 'interleaved repeat')}.\n\n"
        + markdown_table(
            ["variant", "median seconds", "median / stock median",
             "median of per-round ratios", "extra ms per step"],
            rows,
        )
        + f"\nSteered / stock = {ratios['fk']:.3f} (per-round median {paired['fk']:.3f}): "
        f"{verdict} the target <= 1.10.\n"
    )
    (out_dir / "report.md").write_text(report)
    _plot(medians, ratios, out_dir / "overhead.png")
    return {"seconds": medians, "ratio": ratios, "paired_ratio": paired}


def _plot(medians: dict[str, float], ratios: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    names = list(medians)
    bars = axis.bar(names, [medians[n] for n in names], color=["0.6", "C0", "C1", "C2"])
    for bar, name in zip(bars, names, strict=True):
        axis.annotate(f"x{ratios[name]:.3f}", (bar.get_x() + bar.get_width() / 2,
                                              bar.get_height()), ha="center", va="bottom")
    axis.set_ylabel("median seconds per run")
    axis.set_title("steering overhead vs the stock pipeline")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
