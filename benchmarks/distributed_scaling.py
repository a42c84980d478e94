"""Distributed steering on this machine: prompt-parallel scaling, per-group-seed cost, bytes moved.

    python benchmarks/distributed_scaling.py --out docs/results/distributed-scaling [--quick]

Three measurements, every process with the thread count named and one process per run:

1. prompt-parallel scaling at equal total threads on the exact fixture (Gaussian-mixture rare-mode
   problem, 25 steps, resampling at every step): per-group-seed mode in 1 process x 1 thread,
   1 process x 2 threads and 2 processes x 1 thread (gloo, ``steer_prompt_parallel``, results
   gathered), beside the batched default (``fksteer.steer``, all groups in one batch) with 1 and 2
   threads; two sizes: 16 groups x 64 particles (overhead-bound) and 16 x 16384 (compute-bound).
   Each run is a fresh process that first steers a tiny warm-up problem, then times the steering
   call alone (for 2 processes: from a barrier to the gathered result, on rank 0). The machine is
   shared with other work, so the layouts are interleaved, repeated, and summarised by medians;
   the load average is recorded with each run.
2. the cost of per-group-seed mode against the batched default in one process and one thread:
   the mixture runs of (1), and the embedded weak image model (8 class prompts x 4 particles,
   20 DDPM steps, embedded steering classifier as the reward).
3. bytes moved per resampling step by particle-parallel runs on 2 processes (counted by the
   driver's transfer plan, which is what is sent) against a naive all-gather of every particle,
   for the mixture (1 group x 1024 particles; systematic and multinomial resampling), the
   embedded weak image model (1 x 16) and a tiny UNet with DPM-Solver++ history (1 x 16), all
   resampling at every step; beside it, what a resampler that keeps surviving particles in
   their slots would move (computed from the same steps' offspring counts).

Writes ``config.json``, ``results.jsonl`` (one line per run), ``tables.md`` (the medians),
``scaling.png`` and ``bytes.png`` into ``--out``; ``--tables-only`` rewrites the tables and plots
from an existing ``results.jsonl``. The discussion is in ``report.md`` beside them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("fksteer") is None:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT / "src"))

SCALING_LAYOUTS = [  # (processes, threads per process, mode)
    (1, 1, "per-group"),
    (1, 2, "per-group"),
    (2, 1, "per-group"),
    (1, 1, "batched"),
    (1, 2, "batched"),
]


def workloads(quick: bool) -> dict[str, dict]:
    large = 2048 if quick else 16384
    return {
        "small": {"groups": 16, "particles": 64, "steps": 25},
        "large": {"groups": 16, "particles": large, "steps": 25},
    }


# -- workers (run in their own processes) --------------------------------------------------------


def _mixture():
    from fksteer.models import GaussianMixtureDiffusion, LinearReward

    problem = GaussianMixtureDiffusion.rare_mode(num_steps=25)
    return problem.model, LinearReward(problem.direction), problem.lmbda


def worker_scaling(spec: dict) -> dict | None:
    from fksteer import FKConfig, steer
    from fksteer.distributed import launch, steer_prompt_parallel

    communicator = launch.start_process_group("cpu")
    model, reward, lmbda = _mixture()
    timings = {}
    for name, work in spec["workloads"].items():
        config = FKConfig(num_particles=work["particles"], lmbda=lmbda)
        prompts = [f"p{g}" for g in range(work["groups"])]

        def run(prompts=prompts, config=config):
            if spec["mode"] == "batched":
                return steer(model, reward, config, prompts=prompts,
                             generator=torch.Generator().manual_seed(0))
            return steer_prompt_parallel(model, reward, config, prompts=prompts, seed=0,
                                         communicator=communicator, root=0)

        warm = FKConfig(num_particles=8, lmbda=lmbda)
        steer_prompt_parallel(model, reward, warm, prompts=["w", "w"], seed=1,
                              communicator=communicator, root=0)
        communicator.barrier()
        start, cpu_start = time.perf_counter(), time.process_time()
        run()
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        # CPU seconds of every process (all its threads), summed: wall x cores actually used
        timings[name] = {"seconds": wall,
                         "cpu_seconds": sum(communicator.all_gather_object(cpu))}
    launch.stop_process_group()
    return timings if communicator.is_root else None


def worker_per_group_image(spec: dict) -> dict:
    from fksteer import FKConfig, steer
    from fksteer.commands.sample import load_image_reward
    from fksteer.distributed import steer_prompt_parallel
    from fksteer.embedded.fashion import CLASS_NAMES
    from fksteer.embedded.image_model import load_image_model

    model = load_image_model("weak", num_inference_steps=spec["steps"])
    reward = load_image_reward("embedded-classifier", True, torch.device("cpu"))
    prompts = list(CLASS_NAMES[: spec["groups"]])
    config = FKConfig(num_particles=spec["particles"], lmbda=10.0)
    steer(model, reward, FKConfig(num_particles=2), prompts=prompts[:2],
          generator=torch.Generator().manual_seed(1))  # warm-up
    timings = {}
    for mode in ("batched", "per-group") if spec["first"] == "batched" else (
        "per-group", "batched"
    ):
        start = time.perf_counter()
        if mode == "batched":
            steer(model, reward, config, prompts=prompts,
                  generator=torch.Generator().manual_seed(0))
        else:
            steer_prompt_parallel(model, reward, config, prompts=prompts, seed=0)
        timings[mode] = time.perf_counter() - start
    return timings


def worker_bytes(spec: dict) -> dict | None:
    from fksteer import FKConfig
    from fksteer.distributed import launch, steer_particle_parallel

    communicator = launch.start_process_group("cpu")
    name = spec["model"]
    if name == "mixture":
        model, reward, lmbda = _mixture()
        prompts, K = None, 1024
    elif name == "embedded-weak":
        from fksteer.commands.sample import load_image_reward
        from fksteer.embedded.image_model import load_image_model

        model = load_image_model("weak", num_inference_steps=20)
        reward = load_image_reward("embedded-classifier", True, torch.device("cpu"))
        prompts, K, lmbda = ["bag"], 16, 10.0
    else:  # a tiny random UNet with a multistep scheduler: the history travels too
        import diffusers

        from fksteer.diffusers import UNetStepModel

        torch.manual_seed(0)
        unet = diffusers.UNet2DModel(
            sample_size=16, in_channels=1, out_channels=1, layers_per_block=1,
            block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4,
        ).eval()
        scheduler = diffusers.DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++")
        model = UNetStepModel(unet, scheduler, 10)

        def reward(samples, prompts):
            return samples.mean(dim=(1, 2, 3)) * 40.0

        prompts, K, lmbda = None, 16, 1.0
    transfers = []
    config = FKConfig(num_particles=K, lmbda=lmbda, resampling=spec["resampling"])
    result = steer_particle_parallel(model, reward, config,
                                     prompts=prompts, seed=0, communicator=communicator,
                                     transfers=transfers)
    launch.stop_process_group()
    if not communicator.is_root:
        return None
    ancestors = {step.step: step.ancestors[0].tolist() for step in result.trace
                 if step.ancestors is not None}
    return {"particles": K, "transfers": [vars(t) for t in transfers], "ancestors": ancestors}


WORKERS = {"scaling": worker_scaling, "per-group-image": worker_per_group_image,
           "bytes": worker_bytes}


# -- the driver ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(kind: str, spec: dict, processes: int, threads: int, timeout: float = 600) -> dict:
    """Run a worker in ``processes`` fresh processes of ``threads`` threads; rank 0's output."""
    port = _free_port()
    children = []
    for rank in range(processes):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                   FKSTEER_BENCH_THREADS=str(threads), PYTHONPATH=str(ROOT / "src"))
        if processes > 1:
            env.update(RANK=str(rank), WORLD_SIZE=str(processes), LOCAL_RANK=str(rank),
                       MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                       FKSTEER_DIST_TIMEOUT="300")
        children.append(subprocess.Popen(
            [sys.executable, __file__, "--worker", kind, json.dumps(spec)], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        ))
    outputs = []
    for child in children:
        stdout, stderr = child.communicate(timeout=timeout)
        if child.returncode != 0:
            raise RuntimeError(f"worker {kind} failed:\n{stderr[-3000:]}")
        outputs.append(stdout)
    return json.loads(outputs[0].strip().splitlines()[-1])


def stable_rows(ancestors: list[int], ranks: int) -> tuple[int, int]:
    """(rows sent with these ancestors, rows sent if survivors kept their slots), 1 group.

    Kept in place: a particle with at least one offspring keeps slot i; its extra copies fill
    the slots of particles with none, in order. Rows are counted once per (ancestor,
    destination rank), as the driver sends them.
    """
    K = len(ancestors)
    per_rank = K // ranks

    def rows(assignment: list[int]) -> int:
        return len({(a, slot // per_rank) for slot, a in enumerate(assignment)
                    if a // per_rank != slot // per_rank})

    counts = [0] * K
    for a in ancestors:
        counts[a] += 1
    kept = [i if counts[i] > 0 else None for i in range(K)]
    extra = [i for i in range(K) for _ in range(max(counts[i] - 1, 0))]
    free = [i for i in range(K) if kept[i] is None]
    for slot, a in zip(free, extra, strict=True):
        kept[slot] = a
    return rows(ancestors), rows(kept)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/results/distributed-scaling")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only-scaling", action="store_true",
                        help="measurement 1 alone (no diffusers needed)")
    parser.add_argument("--only-bytes", action="store_true",
                        help="measurement 3 alone; the other records in results.jsonl are kept")
    parser.add_argument("--tables-only", action="store_true",
                        help="rewrite tables.md and the plots from --out/results.jsonl")
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, spec = args.worker
        torch.set_num_threads(int(os.environ.get("FKSTEER_BENCH_THREADS", "1")))
        print(json.dumps(WORKERS[kind](json.loads(spec))))
        return

    out = Path(args.out)
    if args.tables_only:
        records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
        write_report(out, records, json.loads((out / "config.json").read_text()))
        return
    out.mkdir(parents=True, exist_ok=True)
    if args.only_bytes:
        kept = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
        records = [r for r in kept if r["kind"] != "bytes"] + measure_bytes()
        _write_records(out, records)
        write_report(out, records, json.loads((out / "config.json").read_text()))
        return
    repeats = 2 if args.quick else args.repeats
    work = workloads(args.quick)
    image = {"groups": 8, "particles": 4, "steps": 5 if args.quick else 20}
    config = {"repeats": repeats, "workloads": work, "layouts": SCALING_LAYOUTS,
              "per_group_image": image, "torch": torch.__version__, "cpus": os.cpu_count()}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    records = []
    for repeat in range(repeats):
        for processes, threads, mode in SCALING_LAYOUTS:
            load = os.getloadavg()[0]
            timings = launch("scaling", {"mode": mode, "workloads": work}, processes, threads)
            for name, measured in timings.items():
                records.append({"kind": "scaling", "repeat": repeat, "processes": processes,
                                "threads": threads, "mode": mode, "workload": name,
                                **measured, "load_average": load})
            print(f"repeat {repeat}: {processes}x{threads} {mode}: {timings}", flush=True)
        if args.only_scaling:
            continue
        load = os.getloadavg()[0]
        timings = launch("per-group-image",
                         {**image, "first": "batched" if repeat % 2 == 0 else "per-group"}, 1, 1)
        for mode, seconds in timings.items():
            records.append({"kind": "per-group-image", "repeat": repeat, "mode": mode,
                            "seconds": seconds, "load_average": load})
        print(f"repeat {repeat}: image {timings}", flush=True)
    if not args.only_scaling:
        records += measure_bytes()
    _write_records(out, records)
    write_report(out, records, config)


#: (model, resampling scheme) of the particle-parallel byte counts.
BYTES_RUNS = [("mixture", "systematic"), ("mixture", "multinomial"),
              ("embedded-weak", "systematic"), ("unet-dpm", "systematic")]


def measure_bytes() -> list[dict]:
    records = []
    for model, scheme in BYTES_RUNS:
        data = launch("bytes", {"model": model, "resampling": scheme}, 2, 1)
        for transfer in data["transfers"]:
            sent, kept = stable_rows(data["ancestors"][str(transfer["step"])], 2)
            assert sent == transfer["rows_sent"], (sent, transfer)
            records.append({"kind": "bytes", "model": f"{model} ({scheme})",
                            "particles": data["particles"], **transfer,
                            "rows_if_kept_in_place": kept})
        print(f"bytes {model} {scheme}: {len(data['transfers'])} resampling steps", flush=True)
    return records


def _write_records(out: Path, records: list[dict]) -> None:
    with open(out / "results.jsonl", "w") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")


def _median(records, field="seconds", **match) -> float:
    values = [r[field] for r in records if all(r.get(k) == v for k, v in match.items())]
    return statistics.median(values)


def write_report(out: Path, records: list[dict], config: dict) -> None:
    """tables.md (medians), scaling.png and, when measured, bytes.png."""
    from fksteer.bench.records import markdown_table

    scaling = [r for r in records if r["kind"] == "scaling"]
    loads = [r["load_average"] for r in records if "load_average" in r]
    lines = ["# Distributed steering: measured medians", "",
             f"{config['cpus']} CPUs; torch {config['torch']}; medians of {config['repeats']} "
             "interleaved repeats, each run a fresh process (1-minute load average before the "
             f"runs: {min(loads):.2f} to {max(loads):.2f}).", "",
             "## Prompt-parallel scaling at equal total threads (exact mixture fixture)", ""]
    rows = []
    for name, work in config["workloads"].items():
        base = _median(scaling, workload=name, processes=1, threads=1, mode="per-group")
        for processes, threads, mode in config["layouts"]:
            match = {"workload": name, "processes": processes, "threads": threads,
                     "mode": mode}
            seconds = _median(scaling, **match)
            cpu = _median(scaling, "cpu_seconds", **match)
            rows.append([f"{work['groups']} x {work['particles']}", f"{processes} x {threads}",
                         mode, f"{seconds:.3f}", f"{base / seconds:.2f}", f"{cpu:.3f}",
                         f"{cpu / seconds:.2f}"])
    lines += [markdown_table(["groups x K", "processes x threads", "mode", "median wall s",
                              "speed-up over 1 x 1 per-group", "median CPU s (all processes)",
                              "CPU / wall"], rows), ""]
    image = [r for r in records if r["kind"] == "per-group-image"]
    if image:
        cost_rows = []
        for name, work in config["workloads"].items():
            batched = _median(scaling, workload=name, processes=1, threads=1, mode="batched")
            per_group = _median(scaling, workload=name, processes=1, threads=1,
                                mode="per-group")
            cost_rows.append([f"mixture, {work['groups']} x {work['particles']}, 25 steps",
                              f"{batched:.3f}", f"{per_group:.3f}",
                              f"{per_group / batched:.2f}"])
        spec = config["per_group_image"]
        batched, per_group = _median(image, mode="batched"), _median(image, mode="per-group")
        cost_rows.append([f"embedded weak UNet, {spec['groups']} x {spec['particles']}, "
                          f"{spec['steps']} steps", f"{batched:.3f}", f"{per_group:.3f}",
                          f"{per_group / batched:.2f}"])
        lines += ["## Cost of per-group-seed mode (1 process, 1 thread)", "",
                  markdown_table(["workload", "batched s", "per-group s",
                                  "per-group / batched"], cost_rows), ""]
    transfers = [r for r in records if r["kind"] == "bytes"]
    if transfers:
        rows = []
        for model in dict.fromkeys(r["model"] for r in transfers):
            mine = [r for r in transfers if r["model"] == model]
            sent = [r["bytes_sent"] for r in mine]
            naive = [r["all_gather_bytes"] for r in mine]
            kept = [r["rows_if_kept_in_place"] * r["row_bytes"] for r in mine]
            rows.append([model, mine[0]["particles"],
                         f"{mine[0]['row_bytes']} to {mine[-1]['row_bytes']}", len(mine),
                         f"{statistics.mean(sent):.0f}", max(sent),
                         f"{statistics.mean(naive):.0f}", f"{sum(sent) / sum(naive):.3f}",
                         f"{statistics.mean(kept):.0f}"])
        lines += ["## Particle-parallel: bytes moved per resampling step (2 processes)", "",
                  markdown_table(["model", "K", "bytes per particle", "resampling steps",
                                  "mean bytes sent", "max bytes sent", "all-gather bytes",
                                  "sent / all-gather", "mean if survivors kept their slots"],
                                 rows), ""]
    (out / "tables.md").write_text("\n".join(lines) + "\n")
    _plots(out, scaling, transfers, config)


def _plots(out: Path, scaling: list[dict], transfers: list[dict], config: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for axis, (name, work) in zip(axes, config["workloads"].items(), strict=True):
        labels, values = [], []
        for processes, threads, mode in config["layouts"]:
            labels.append(f"{processes}p x {threads}t\n{mode}")
            values.append(_median(scaling, workload=name, processes=processes, threads=threads,
                                  mode=mode))
        axis.bar(range(len(values)), values, color=["C0", "C0", "C2", "C7", "C7"])
        axis.set_xticks(range(len(values)), labels, fontsize=7)
        axis.set_yscale("log")
        axis.set_ylabel("median wall seconds (log)")
        axis.set_title(f"mixture, {work['groups']} groups x {work['particles']} particles",
                       fontsize=9)
    figure.tight_layout()
    figure.savefig(out / "scaling.png", dpi=120)
    plt.close(figure)
    if not transfers:
        return
    figure, axis = plt.subplots(figsize=(6.5, 3.8))
    for index, model in enumerate(dict.fromkeys(r["model"] for r in transfers)):
        mine = [r for r in transfers if r["model"] == model]
        steps = [r["step"] for r in mine]
        axis.plot(steps, [max(r["bytes_sent"], 1) for r in mine], "o-", color=f"C{index}",
                  label=f"{model}: sent", markersize=3)
        axis.plot(steps, [r["all_gather_bytes"] for r in mine], "--", color=f"C{index}",
                  label=f"{model}: naive all-gather")
    axis.set_yscale("log")
    axis.set_xlabel("resampling step")
    axis.set_ylabel("bytes per step (0 drawn as 1)")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out / "bytes.png", dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    main()
