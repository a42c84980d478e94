"""Engine bookkeeping per step: fksteer's particle system against the reference code's `FKD`.

Both drive the same exact Gaussian-mixture diffusion (`GaussianMixtureDiffusion.rare_mode`,
2-D, G = 1 group of K particles) with a linear reward, scoring every step with the difference
potential. What is timed is process time (one torch thread: CPU time of this process):

- ``bare``: the model's own loop, ``predict`` then ``move`` at every step (no reward, no
  weights);
- ``fksteer``: :func:`fksteer.steer` with ``FKConfig(potential="difference",
  resampling="systematic")``, resampling at every step: the loop, the reward calls, the
  weights, log Z, dead-particle checks, the step records and the permutation of the particles;
- ``fksteer_trace``: the same, then the whole trace read (its ESS, reward summaries and
  distinct ancestors per step are computed when it is first read);
- ``reference`` (when ``--reference`` names a checkout of
  github.com/zacharyhorvitz/Fk-Diffusion-Steering): the same loop calling its
  ``FKD.resample`` (imported unchanged from ``text_to_image/fkd_diffusers/fkd_class.py``)
  after every move, as its pipelines do, with the same reward and lambda.

Engine cost per step = (variant - bare) / steps, measured round by round with the variants
interleaved (the median over rounds of each round's difference). Writes ``engine.jsonl`` (one
line per variant, K and round) and ``engine.md`` (the table) into ``--out``.

    OMP_NUM_THREADS=1 python benchmarks/engine_bookkeeping.py --reference /path/to/checkout \\
        --out docs/results/versus-reference
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import fksteer  # noqa: E402
from fksteer.models import GaussianMixtureDiffusion, LinearReward  # noqa: E402

REFERENCE_DIR = Path("text_to_image") / "fkd_diffusers"


def import_reference(checkout: str | None):
    """The reference's ``fkd_class`` module, or None (with the reason) when not available."""
    if checkout is None:
        return None, "no --reference checkout given"
    folder = Path(checkout) / REFERENCE_DIR
    if not (folder / "fkd_class.py").is_file():
        return None, f"{folder / 'fkd_class.py'} does not exist"
    sys.path.insert(0, str(folder))
    import fkd_class

    return fkd_class, None


def bare(model, num_particles: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    state = model.init([None], num_particles, generator)
    for step in range(model.num_steps):
        output, _ = model.predict(state, step, generator)
        state = model.move(state, output, step, generator)


def run_fksteer(
    model, reward, lmbda: float, num_particles: int, seed: int, read_trace: bool = False
) -> None:
    config = fksteer.FKConfig(num_particles=num_particles, lmbda=lmbda, potential="difference",
                              resampling="systematic")
    result = fksteer.steer(model, reward, config, generator=torch.Generator().manual_seed(seed))
    if read_trace:
        tuple(result.trace)


def run_reference(fkd_class, model, reward, lmbda: float, num_particles: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    fkd = fkd_class.FKD(
        potential_type="diff", lmbda=lmbda, num_particles=num_particles,
        adaptive_resampling=False, resample_frequency=1, resampling_t_start=-1,
        resampling_t_end=model.num_steps, time_steps=model.num_steps,
        reward_fn=lambda x: reward(x), device=torch.device("cpu"),
    )
    state = model.init([None], num_particles, generator)
    for step in range(model.num_steps):
        output, clean = model.predict(state, step, generator)
        state = model.move(state, output, step, generator)
        with contextlib.redirect_stdout(io.StringIO()):  # it prints when it resamples adaptively
            state, _ = fkd.resample(sampling_idx=step, latents=state, x0_preds=clean)


def timed(function, *args) -> float:
    start = time.process_time()
    function(*args)
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference", help="checkout of zacharyhorvitz/Fk-Diffusion-Steering")
    parser.add_argument("--particles", type=int, nargs="+", default=[256, 4096])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", default="runs/versus-reference")
    args = parser.parse_args()
    torch.set_num_threads(1)
    fkd_class, reason = import_reference(args.reference)
    if fkd_class is None:
        print(f"reference code skipped: {reason} (pass --reference PATH to a checkout of "
              "github.com/zacharyhorvitz/Fk-Diffusion-Steering)")
    problem = GaussianMixtureDiffusion.rare_mode(num_steps=args.steps)
    model, reward = problem.model, LinearReward(problem.direction)
    variants = {
        "bare": lambda k, s: bare(model, k, s),
        "fksteer": lambda k, s: run_fksteer(model, reward, problem.lmbda, k, s),
        "fksteer_trace": lambda k, s: run_fksteer(model, reward, problem.lmbda, k, s, True),
    }
    if fkd_class is not None:
        variants["reference"] = lambda k, s: run_reference(
            fkd_class, model, reward, problem.lmbda, k, s
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines, rows = [], []
    for k in args.particles:
        for run in variants.values():  # warm-up
            run(k, 0)
        seconds = {name: [] for name in variants}
        for round_index in range(args.rounds):
            for name, run in variants.items():
                seconds[name].append(timed(run, k, round_index))
                lines.append({"variant": name, "num_particles": k, "round": round_index,
                              "process_seconds": seconds[name][-1], "steps": args.steps})
        per_step = {
            name: 1e3 * statistics.median(
                (v - b) / args.steps for v, b in zip(values, seconds["bare"], strict=True)
            )
            for name, values in seconds.items() if name != "bare"
        }
        theirs = per_step.get("reference")
        rows.append((k, 1e3 * statistics.median(seconds["bare"]) / args.steps,
                     per_step["fksteer"], per_step["fksteer_trace"], theirs))
    with open(out / "engine.jsonl", "w") as handle:
        for line in lines:
            handle.write(json.dumps(line) + "\n")
    table = ["| K | bare loop ms/step | fksteer engine ms/step | fksteer, trace read | "
             "reference engine ms/step | fksteer / reference | trace read / reference |",
             "|---|---|---|---|---|---|---|"]
    for k, bare_ms, ours, traced, theirs in rows:
        cells = [f"{theirs:.3f}", f"{ours / theirs:.2f}", f"{traced / theirs:.2f}"] if theirs \
            else ["skipped", "-", "-"]
        table.append(f"| {k} | {bare_ms:.3f} | {ours:.3f} | {traced:.3f} | {' | '.join(cells)} |")
    text = (
        "# Engine bookkeeping per step\n\n"
        f"Exact 2-D Gaussian mixture, G = 1, {args.steps} steps, scoring every step (difference "
        "potential; fksteer: systematic resampling, the reference: its multinomial), process "
        f"time with one torch thread, median over {args.rounds} interleaved rounds of (variant - "
        f"bare loop) / steps.\n\n" + "\n".join(table) + "\n"
    )
    (out / "engine.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
