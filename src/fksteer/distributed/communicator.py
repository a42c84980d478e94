"""The processes of a run and how they talk: `Communicator`.

    from fksteer.distributed.communicator import Communicator
    communicator = Communicator.current()      # torch.distributed's default group, or one process
    everything = communicator.all_gather_object(mine)
    received = communicator.exchange({1: payload}, {1: num_bytes})   # point to point

A thin layer over ``torch.distributed`` (gloo on CPUs, NCCL on GPUs) so that the drivers are
written once for any number of processes: with no process group initialised, a Communicator is a
single process and every collective is the identity. Byte payloads travel as flat ``uint8``
tensors, on the CPU for gloo and on the current CUDA device for NCCL.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["Communicator"]


class Communicator:
    """The ranks of one run: ``rank`` in ``0 .. world_size - 1``.

    All ranks of torch.distributed's default process group when it is initialised (as under
    ``torchrun``), else a single process.
    """

    def __init__(self) -> None:
        import torch.distributed as dist

        self.distributed = dist.is_available() and dist.is_initialized()
        if self.distributed:
            self.rank = dist.get_rank()
            self.world_size = dist.get_world_size()
            self.backend = dist.get_backend()
        else:
            self.rank, self.world_size, self.backend = 0, 1, None

    @classmethod
    def current(cls) -> Communicator:
        """The default process group if torch.distributed is initialised, else one process."""
        return cls()

    @property
    def is_root(self) -> bool:
        """Whether this process is rank 0 (the one that writes)."""
        return self.rank == 0

    @property
    def transport_device(self) -> torch.device:
        """Where payloads must live for the backend: the current CUDA device for NCCL."""
        if self.backend == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable), in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def gather_object(self, obj: Any, root: int = 0) -> list[Any] | None:
        """Every rank's ``obj`` in rank order on ``root``; None on the other ranks."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        gathered: list[Any] | None = [None] * self.world_size if self.rank == root else None
        dist.gather_object(obj, gathered, dst=root)
        return gathered

    def exchange(
        self, sends: dict[int, torch.Tensor], receives: dict[int, int]
    ) -> dict[int, torch.Tensor]:
        """Point-to-point: send ``sends[rank]`` (1-D uint8) to each rank, receive from others.

        ``receives`` maps each source rank to the number of bytes it sends here; both sides
        know the sizes beforehand (they follow from the shared resampling plan). Returns the
        received buffers on :attr:`transport_device`.
        """
        if not sends and not receives:
            return {}
        if not self.distributed:
            raise RuntimeError("exchange between ranks needs an initialised process group.")
        import torch.distributed as dist

        device = self.transport_device
        operations = []
        received = {}
        for source, size in sorted(receives.items()):
            received[source] = torch.empty(size, dtype=torch.uint8, device=device)
            operations.append(dist.P2POp(dist.irecv, received[source], source))
        for destination, payload in sorted(sends.items()):
            payload = payload.to(device).contiguous()
            operations.append(dist.P2POp(dist.isend, payload, destination))
        # one batch: NCCL needs the sends and receives of a step grouped, or a rank that
        # posted its receive first could wait for ever
        for request in dist.batch_isend_irecv(operations):
            request.wait()
        return received

    def barrier(self) -> None:
        """Wait for every rank (nothing in a single process)."""
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def __repr__(self) -> str:
        return (
            f"Communicator(rank={self.rank}, world_size={self.world_size}, "
            f"backend={self.backend!r})"
        )
