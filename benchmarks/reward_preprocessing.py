"""Time and distance of the image rewards' two preprocessing paths, side by side.

    python benchmarks/reward_preprocessing.py [--batch 8] [--repeats 15] [--out DIR]

For each original's transform (``fksteer.rewards.preprocess.ImageTransform``: OpenAI CLIP's
torchvision transform for ImageReward and the LAION aesthetic predictor, transformers'
CLIPImageProcessor for CLIP score and PickScore, HPS v2.1's evaluation transform) and each
image size a diffusion model decodes (64 px, SD 1.5's 512 px, a 768x512 portrait, SDXL's 1024
px), it preprocesses one batch of ``--batch`` images to 224 px by the ``fast`` path (torch on the
float images) and the ``exact`` path (8-bit, the original's resize), alternating the two for
``--repeats`` rounds, and reports the median time of each (wall clock and process CPU time) and
their ratio, and how far the fast pixels are from the exact ones (in 8-bit grey levels, before
normalisation: |fast - exact| * std * 255). Images are smooth random fields (noise summed over
scales, as decoded images have most of their energy at low frequencies), seeded. The CPU only:
one torch thread, so that the other processes of a shared machine matter less.
Writes ``results.json`` and ``report.md`` in ``--out`` (default docs/results/reward-preprocessing).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from fksteer.rewards.preprocess import ImageTransform, preprocess_images

TRANSFORMS = {
    "torchvision-clip (ImageReward, aesthetic)": ImageTransform.torchvision_clip(224),
    "transformers-clip (CLIP score, PickScore)": ImageTransform.transformers_clip(224),
    "hps-evaluation (HPS v2.1)": ImageTransform.hps_evaluation(224),
}
SHAPES = [(64, 64), (512, 512), (768, 512), (1024, 1024)]


def smooth_images(count: int, shape: tuple[int, int], seed: int) -> torch.Tensor:
    """(count, 3, H, W) in [0, 1]: uniform noise at 4, 16, 64 px and full scale, summed."""
    g = torch.Generator().manual_seed(seed)
    total = torch.zeros(count, 3, *shape)
    for cells, weight in ((4, 0.5), (16, 0.25), (64, 0.15), (None, 0.1)):
        size = shape if cells is None else (min(cells, shape[0]), min(cells, shape[1]))
        noise = torch.rand(count, 3, *size, generator=g)
        total += weight * torch.nn.functional.interpolate(
            noise, size=shape, mode="bicubic", align_corners=False
        )
    return total.clamp(0.0, 1.0)


def timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(transform: ImageTransform, images: torch.Tensor, repeats: int) -> dict:
    fast = preprocess_images(images, transform, "fast")
    exact = preprocess_images(images, transform, "exact")
    std = torch.tensor(transform.std)[:, None, None]
    grey = ((fast - exact) * std * 255).abs()  # 8-bit grey levels
    times = {"fast": [], "exact": []}
    for _ in range(repeats):  # alternate, so that load on the machine hits both alike
        for path in ("fast", "exact"):
            times[path].append(timed(lambda p=path: preprocess_images(images, transform, p)))
    row = {"grey_max": float(grey.max()), "grey_mean": float(grey.mean())}
    for path, pairs in times.items():
        row[f"{path}_wall_ms"] = 1e3 * statistics.median(w for w, _ in pairs)
        row[f"{path}_cpu_ms"] = 1e3 * statistics.median(c for _, c in pairs)
    row["exact_over_fast_wall"] = row["exact_wall_ms"] / row["fast_wall_ms"]
    row["exact_over_fast_cpu"] = row["exact_cpu_ms"] / max(row["fast_cpu_ms"], 1e-9)
    return row


def report(rows: list[dict], settings: dict) -> str:
    lines = [
        "# Image reward preprocessing: fast vs exact path",
        "",
        f"Batch of {settings['batch']} images to 224 px, CPU, {settings['threads']} torch "
        f"thread, median of {settings['repeats']} alternating rounds; 1-minute load average "
        f"{settings['load_average']:.2f} on {settings['cpus']} CPUs.",
        "",
        "| transform | image | fast ms | exact ms | exact / fast (wall) | exact / fast (CPU) "
        "| grey levels max | grey levels mean |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['transform']} | {r['height']}x{r['width']} | {r['fast_wall_ms']:.2f} | "
            f"{r['exact_wall_ms']:.2f} | {r['exact_over_fast_wall']:.2f} | "
            f"{r['exact_over_fast_cpu']:.2f} | {r['grey_max']:.2f} | {r['grey_mean']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path("docs/results/reward-preprocessing"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for index, shape in enumerate(SHAPES):
        images = smooth_images(args.batch, shape, seed=index)
        for name, transform in TRANSFORMS.items():
            row = {"transform": name, "height": shape[0], "width": shape[1]}
            row.update(measure(transform, images, args.repeats))
            rows.append(row)
            print(
                f"{name:44s} {shape[0]:4d}x{shape[1]:<4d} fast {row['fast_wall_ms']:7.2f} ms  "
                f"exact {row['exact_wall_ms']:7.2f} ms  "
                f"exact/fast {row['exact_over_fast_wall']:5.2f}"
                f"  grey max {row['grey_max']:.2f} mean {row['grey_mean']:.3f}",
                flush=True,
            )
    settings = {
        "batch": args.batch,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg()[0],
        "torch": torch.__version__,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    results = {"settings": settings, "rows": rows}
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    (args.out / "report.md").write_text(report(rows, settings))
    print(f"wrote {args.out / 'results.json'} and {args.out / 'report.md'}")


if __name__ == "__main__":
    main()
