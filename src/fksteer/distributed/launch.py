"""Processes started by ``torchrun`` (or SLURM's ``srun``): `launched`, `start_process_group`.

    from fksteer.distributed.launch import launched, start_process_group, local_device
    if launched():                                  # WORLD_SIZE > 1 in the environment
        communicator = start_process_group(device)  # gloo on CPUs, NCCL on GPUs
    device = local_device(device)                   # cuda -> cuda:LOCAL_RANK

``torchrun`` sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT for every process;
``start_process_group`` reads them (torch's ``env://`` initialisation). Under plain ``srun``,
SLURM's SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID stand in for the first three when RANK is
not set (MASTER_ADDR and MASTER_PORT must then be exported by the batch script; the README shows
one). Collectives time out after ``FKSTEER_DIST_TIMEOUT`` seconds (default 1800): a rank that
dies without a word cannot hang the others for ever.
"""

from __future__ import annotations

import datetime
import os

import torch

from fksteer.distributed.communicator import Communicator

__all__ = [
    "DEFAULT_TIMEOUT_SECONDS",
    "launched",
    "start_process_group",
    "stop_process_group",
    "local_device",
    "refuse_distributed",
]

DEFAULT_TIMEOUT_SECONDS = 1800.0

_SLURM = {"RANK": "SLURM_PROCID", "WORLD_SIZE": "SLURM_NTASKS", "LOCAL_RANK": "SLURM_LOCALID"}


def _environment(name: str) -> str | None:
    value = os.environ.get(name)
    if value is None and "MASTER_ADDR" in os.environ:
        value = os.environ.get(_SLURM[name])
    return value


def launched() -> bool:
    """Whether this process is one of several started by torchrun or srun (WORLD_SIZE > 1)."""
    return int(_environment("WORLD_SIZE") or "1") > 1


def local_rank() -> int:
    return int(_environment("LOCAL_RANK") or "0")


def local_device(device: torch.device) -> torch.device:
    """``cuda`` without an index becomes ``cuda:LOCAL_RANK`` when launched; else unchanged."""
    if launched() and device.type == "cuda" and device.index is None:
        return torch.device("cuda", local_rank())
    return device


def start_process_group(
    device: torch.device | str = "cpu", timeout_seconds: float | None = None
) -> Communicator:
    """Initialise torch.distributed from the environment (once) and return its Communicator.

    The backend is NCCL when ``device`` is a CUDA device, gloo otherwise. Outside a launch
    (WORLD_SIZE unset or 1) nothing is initialised and the Communicator is one process.
    """
    import torch.distributed as dist

    if not launched() or dist.is_initialized():
        return Communicator.current()
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        if name not in os.environ and _environment(name) is not None:
            os.environ[name] = _environment(name)
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise ValueError(
            f"{' and '.join(missing)} not set: launch with torchrun, or export them in the batch "
            "script (see the README's SLURM example)."
        )
    device = torch.device(device)
    if timeout_seconds is None:
        timeout_seconds = float(os.environ.get("FKSTEER_DIST_TIMEOUT", DEFAULT_TIMEOUT_SECONDS))
    backend = "gloo"
    if device.type == "cuda":
        backend = "nccl"
        torch.cuda.set_device(local_device(device))
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_seconds))
    return Communicator.current()


def stop_process_group() -> None:
    """Wait for every rank, then destroy the default process group (if initialised)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def refuse_distributed(command: str) -> None:
    """A ValueError when ``command`` (which has no distributed mode) runs under torchrun."""
    if launched():
        raise ValueError(
            f"fksteer {command} does not run distributed: every process would run the whole job "
            "and write the same files. Run it in one process, or use fksteer sample."
        )
