"""Helpers of the distributed tests: a sharded-noise reference model, tiny models, process launch.

``ShardedNoiseModel`` runs an inner StepModel shard by shard with the shard generators of
:mod:`fksteer.distributed.seeding`, inside the stock engine (``fksteer.steer``): an independent
single-process reference for the noise layout of a particle-parallel run (valid for models that
keep no run state in themselves, such as the Gaussian mixture).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch
from tiny_builds import tiny_unet2d

from fksteer.distributed.seeding import shard_generator
from fksteer.distributed.sharding import ParticleLayout

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().parent / "distributed_worker.py"


class ShardedNoiseModel:
    """``inner`` run as ``num_shards`` shards, each with its own generator, in one batch layout."""

    def __init__(self, inner, num_shards: int, seed: int):
        self.inner = inner
        self.num_shards = num_shards
        self.seed = seed
        self.num_steps = inner.num_steps
        self.layout = None
        self.generators = None

    def _split(self, tensor):
        layout = self.layout
        return [tensor.index_select(0, layout.global_index(s).to(tensor.device))
                for s in range(layout.num_shards)]

    def _join(self, pieces):
        layout = self.layout
        flat = torch.arange(layout.num_groups * layout.num_particles)
        source = layout.shard_of(flat) * layout.shard_size + layout.local_index(flat)
        return torch.cat(pieces).index_select(0, source.to(pieces[0].device))

    def init(self, prompts, num_particles, generator):
        self.layout = ParticleLayout(len(prompts), num_particles, self.num_shards)
        self.generators = [shard_generator(self.seed, s, self.num_shards)
                           for s in range(self.num_shards)]
        per_shard = num_particles // self.num_shards
        return self._join([self.inner.init(prompts, per_shard, g) for g in self.generators])

    def predict(self, state, step, generator):
        pairs = [self.inner.predict(piece, step, g)
                 for piece, g in zip(self._split(state), self.generators, strict=True)]
        return self._join([o for o, _ in pairs]), self._join([p for _, p in pairs])

    def move(self, state, model_output, step, generator):
        return self._join([
            self.inner.move(s, o, step, g) for s, o, g in
            zip(self._split(state), self._split(model_output), self.generators, strict=True)
        ])

    def decode(self, clean, final):
        return self._join([self.inner.decode(piece, final) for piece in self._split(clean)])

    def permute(self, state, model_output, ancestors):
        return self.inner.permute(state, model_output, ancestors)

    def final_sample(self, state):
        return self.inner.final_sample(state)


def tiny_unet_model(steps: int = 4):
    """A UNetStepModel with a per-particle scheduler history (DPM-Solver++ SDE, order 2)."""
    import diffusers

    from fksteer.diffusers import UNetStepModel

    scheduler = diffusers.DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++")
    return UNetStepModel(tiny_unet2d(), scheduler, steps)


def brightness(samples, prompts):
    return samples.mean(dim=(1, 2, 3)) * 40.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), str(ROOT / "tests"), env.get("PYTHONPATH", "")]
    )
    env.update(extra or {})
    return env


def run_ranks(args: list[str], world_size: int = 2, timeout: float = 90.0,
              dist_timeout: float = 30.0) -> list[subprocess.CompletedProcess]:
    """Start ``world_size`` worker processes (gloo, 127.0.0.1) and wait, killing all at timeout."""
    port = free_port()
    processes = []
    for rank in range(world_size):
        env = environment({
            "RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
            "FKSTEER_DIST_TIMEOUT": str(dist_timeout),
        })
        processes.append(subprocess.Popen(
            [sys.executable, str(WORKER), *args], env=env, cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    deadline = time.monotonic() + timeout
    results = []
    try:
        for process in processes:
            remaining = max(deadline - time.monotonic(), 0.1)
            stdout, stderr = process.communicate(timeout=remaining)
            results.append(subprocess.CompletedProcess(process.args, process.returncode,
                                                       stdout, stderr))
    except subprocess.TimeoutExpired:
        for process in processes:
            process.kill()
        for process in processes:
            process.communicate()
        raise AssertionError(f"distributed workers {args} did not finish in {timeout} s") from None
    return results
