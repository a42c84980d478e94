"""`fksteer demo`: base vs best-of-K vs FK at equal K on the embedded weak image model.

    from fksteer.commands.demo_image import run_image_demo
    report = run_image_demo("runs/demo", num_particles=4, seed=0)

Every method draws the same initial noise (same seed) for each prompt (a Fashion-MNIST class
name), K particles each, so they cost the same NFE. The steering reward is the embedded steering
classifier's log p(prompt's class | x); the held-out judge (a classifier trained on a disjoint
split) scores the result: accuracy of the best particle (highest steering reward) and of a draw
from the final weights (its expectation, sum_k w_k [judge(x_k) = class]). Writes ``grid.png``
(rows = prompts, column blocks = methods, particles by weight, highest reward framed in red),
``report.md``, ``summary.json`` and ``config.json``, and each method's run as a run folder under
``methods/<method>/`` (images, results.jsonl, trace.jsonl, summary.json, config.json: what
``fksteer report`` shows, e.g. ``fksteer report runs/demo/methods/base runs/demo/methods/fk``).
"""

from __future__ import annotations

import logging
import shlex
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from fksteer.embedded.fashion import CLASS_NAMES

__all__ = ["DEMO_PROMPTS", "DEMO_METHODS", "run_image_demo"]

logger = logging.getLogger(__name__)

DEMO_PROMPTS = CLASS_NAMES  # all ten classes: judge accuracy in steps of 10%
DEMO_METHODS = ("base", "best_of_n", "fk")
METHOD_LABELS = {"base": "base (uniform draw)", "best_of_n": "best-of-K", "fk": "FK steering",
                 "importance": "importance"}


def run_image_demo(
    out_dir: str | Path,
    num_particles: int = 4,
    prompts: Sequence[str] = DEMO_PROMPTS,
    num_steps: int = 50,
    lmbda: float = 10.0,
    seed: int = 0,
    methods: Sequence[str] = DEMO_METHODS,
    overwrite: bool = False,
) -> str:
    """Run each method on ``prompts``; write the files and return the markdown report.

    ``out_dir`` holding files is refused unless ``overwrite``; errors name the options."""
    from fksteer.bench.records import counted
    from fksteer.commands.images import grid, particle_row, save_png, text_tile
    from fksteer.commands.options import named_fk_config
    from fksteer.commands.run_folder import write_json
    from fksteer.commands.staging import check_writable, staged_directory
    from fksteer.embedded.classifier import load_classifier
    from fksteer.embedded.image_model import load_image_model
    from fksteer.rewards.classifier import ClassifierLogProb
    from fksteer.smc.engine import steer

    config = named_fk_config({"num_particles": num_particles, "lmbda": lmbda},
                             {"num_particles": "--particles", "lmbda": "--lmbda"})
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"--steps {num_steps!r}: pass a positive int, e.g. 50.")
    if not prompts:
        raise ValueError("no prompts: pass class names, e.g. sneaker bag dress.")
    check_writable(out_dir, overwrite=overwrite)
    model = load_image_model("weak", num_inference_steps=num_steps)
    prompts = [CLASS_NAMES[model.class_id(prompt)] for prompt in prompts]
    reward = ClassifierLogProb(load_classifier("steering"), labels=CLASS_NAMES)
    judge = load_classifier("judge")
    labels = torch.tensor([CLASS_NAMES.index(prompt) for prompt in prompts])  # (G,)

    rows, summary, samples_of, results_of = [], {}, {}, {}
    for method in methods:
        start = time.perf_counter()
        result = steer(model, reward, config, prompts=prompts,
                       generator=torch.Generator().manual_seed(seed), method=method)
        seconds = time.perf_counter() - start
        samples = result.samples.detach().float().cpu()  # (G, K, 1, 16, 16)
        with torch.no_grad():
            judged = judge(samples.flatten(0, 1)).argmax(-1).view(samples.shape[:2])  # (G, K)
        correct = (judged == labels[:, None]).double()  # (G, K)
        weights = result.weights.double()  # (G, K)
        row = {
            "steering_reward": float(torch.nansum(weights * result.rewards, 1).mean()),
            "judge_accuracy_best": float(correct.gather(1, result.best[:, None]).mean()),
            "judge_accuracy_draw": float((weights * correct).sum(1).mean()),
            "seconds": seconds,
            "nfe": result.nfe,
            "samples_scored": result.samples_scored,
            "log_evidence": result.log_evidence.tolist(),
            "final_ess": result.ess.tolist(),
        }
        summary[method] = row
        samples_of[method] = (samples, weights, result.best)
        results_of[method] = (result, seconds)
        rows.append([METHOD_LABELS[method], f"{row['steering_reward']:.3f}",
                     f"{row['judge_accuracy_best']:.0%}", f"{row['judge_accuracy_draw']:.0%}",
                     f"{seconds:.1f}", str(row["nfe"])])
        logger.info("%s: %s", method, row)

    table = _table(["method", "steering reward (drawn)", "judge acc (best)",
                    "judge acc (draw)", "wall s", "NFE"], rows)
    report = (
        "# fksteer demo: base vs best-of-K vs FK on the embedded weak image model\n\n"
        f"{counted(len(prompts), 'prompt')} ({', '.join(prompts)}), K = {num_particles} "
        "particles each, "
        f"{num_steps} DDPM steps, lambda = {lmbda}, seed {seed}; same initial noise for every "
        "method. Steering reward: the steering classifier's log p(class | x) of a draw from the "
        "final weights (its expectation; best-of-K's weights sit on its best particle). Judge "
        "accuracy: a held-out classifier's argmax equals the prompt's class, for the "
        "highest-reward particle and for a draw from the weights (its expectation).\n\n"
        f"{table}\n\ngrid.png: rows = prompts, column blocks = methods; particles by weight, "
        "heaviest first; the highest steering reward framed in red.\n"
    )
    record = {"command": "demo", "model": "embedded-weak", "reward": "embedded steering classifier",
              "judge": "embedded judge classifier", "prompts": prompts, "num_steps": num_steps,
              "seed": seed, "methods": list(methods), "fk_config": config.to_dict(),
              "threads": torch.get_num_threads()}
    with staged_directory(out_dir, overwrite=overwrite) as work:
        _write_method_runs(work, record, prompts, samples_of, results_of, num_particles)
        blocks = []
        for group, prompt in enumerate(prompts):
            line = [text_tile(prompt, 72, 70)]
            for method in methods:
                samples, weights, best = samples_of[method]
                line.append(particle_row(samples[group], weights[group], int(best[group])))
            blocks.append(line)
        header = [text_tile("", 72, 14)] + [
            text_tile(METHOD_LABELS[method], block.width, 14)
            for method, block in zip(methods, blocks[0][1:], strict=True)
        ]
        blocks.insert(0, header)
        save_png(grid(blocks), work / "grid.png")
        (work / "report.md").write_text(report)
        write_json(work / "summary.json", summary)
        write_json(work / "config.json", record)
    return report


def _write_method_runs(work: Path, record, prompts, samples_of, results_of, num_particles):
    """``methods/<method>/``: each method's run folder, with the command that reruns the demo."""
    from fksteer.commands.run_folder import environment
    from fksteer.commands.sample import write_image_run

    rerun = shlex.join(["fksteer", "demo", "--particles", str(num_particles), "--steps",
                        str(record["num_steps"]), "--lmbda", f"{record['fk_config']['lmbda']}",
                        "--seed", str(record["seed"]), *prompts])
    machine = environment()
    for method, (result, seconds) in results_of.items():
        write_image_run(work / "methods" / method, prompts, result, samples_of[method][0],
                        {"steer": seconds}, {**record, "command": "demo", "method": method,
                                             "reproduce": rerun, "machine": machine})


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
