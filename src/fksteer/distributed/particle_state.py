"""Reading and writing the rows of particles in a model's state: `ShardableModel`, `as_shardable`.

    from fksteer.distributed.particle_state import as_shardable, pack_rows, unpack_rows
    model = as_shardable(model)                        # checked: it declares its rows
    rows = model.particle_rows(state, output)          # a pytree of per-particle tensors
    state, output = model.with_particle_rows(state, output, new_rows)
    copy = model.replicate()                           # for another shard in this process

A model tells the engine once which of its tensors are per-particle
(:class:`fksteer.smc.rows.ParticleRows`: ``particle_rows`` and ``with_particle_rows``); the
engine reorders particles from that description, and this module moves them between processes
with it. :class:`ShardableModel` adds ``replicate()``: an independent copy for another shard run
by the same process (a model that keeps run state in itself, like a scheduler's step counter and
history, cannot serve two shards); a model with no run state returns itself. The exact fixtures,
``UNetStepModel``, the embedded models and ``MaskedDiffusionModel`` all declare their rows; any
other model is refused by :func:`as_shardable` with a message naming the protocol: guessing which
tensors are per-particle could silently leave some behind.

Rows travel as bytes: :func:`pack_rows` views each leaf's selected rows as ``uint8`` and
concatenates them per particle, :func:`unpack_rows` does the reverse, so a particle arrives
bitwise as it left.
"""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import torch

from fksteer.smc.rows import flatten_rows, has_particle_rows

__all__ = [
    "ShardableModel",
    "as_shardable",
    "flatten_rows",
    "pack_rows",
    "unpack_rows",
    "row_bytes",
    "row_spec",
]


@runtime_checkable
class ShardableModel(Protocol):
    """A StepModel whose particles can be read out, written back and run as several shards."""

    def particle_rows(self, state: Any, model_output: Any) -> Any:
        """The per-particle tensors of ``state`` and ``model_output``, as a pytree of (rows, ...)
        leaves."""

    def with_particle_rows(self, state: Any, model_output: Any, rows: Any) -> tuple[Any, Any]:
        """``state`` and ``model_output`` with their per-particle rows replaced by ``rows``."""

    def replicate(self) -> Any:
        """An independent copy of the model, for a further shard on the same rank."""


# -- rows as bytes ------------------------------------------------------------------------------


def row_spec(leaves: list[torch.Tensor], num_rows: int) -> tuple[tuple[tuple[int, ...], str], ...]:
    """(row shape, dtype) per leaf; a ValueError if a leaf has no ``num_rows`` leading axis."""
    spec = []
    for index, leaf in enumerate(leaves):
        if leaf.dim() == 0 or leaf.shape[0] != num_rows:
            raise ValueError(
                f"particle_rows returned a tensor of shape {tuple(leaf.shape)} (leaf {index}) "
                f"on a shard of {num_rows} particles: every tensor leaf must have the "
                "particles on its leading axis."
            )
        spec.append((tuple(leaf.shape[1:]), str(leaf.dtype).removeprefix("torch.")))
    return tuple(spec)


def _leaf_bytes(leaf: torch.Tensor) -> int:
    return math.prod(leaf.shape[1:]) * leaf.element_size()


def pack_rows(
    leaves: list[torch.Tensor], index: torch.Tensor, device: torch.device
) -> torch.Tensor:
    """Rows ``index`` of every leaf as one ``(len(index), row_bytes)`` uint8 tensor on ``device``.
    """
    parts = []
    for leaf in leaves:
        rows = leaf.index_select(0, index.to(leaf.device)).reshape(index.numel(), -1)
        if leaf.dtype == torch.bool:
            rows = rows.to(torch.uint8)
        parts.append(rows.contiguous().view(torch.uint8).to(device))
    return torch.cat(parts, dim=1) if parts else torch.empty(index.numel(), 0, dtype=torch.uint8)


def unpack_rows(buffer: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
    """The leaves packed by :func:`pack_rows`, shaped and typed as ``like``, on its devices."""
    num_rows = buffer.shape[0]
    leaves, start = [], 0
    for leaf in like:
        stop = start + _leaf_bytes(leaf)
        # a fresh copy: a slice of one row is "contiguous" but keeps the buffer's offset and row
        # stride, which a dtype view must divide
        raw = buffer[:, start:stop].clone(memory_format=torch.contiguous_format)
        dtype = torch.uint8 if leaf.dtype == torch.bool else leaf.dtype
        values = raw.view(dtype).reshape(num_rows, *leaf.shape[1:]).to(leaf.device)
        leaves.append(values.to(torch.bool) if leaf.dtype == torch.bool else values)
        start = stop
    return leaves


def row_bytes(leaves: list[torch.Tensor]) -> int:
    """Bytes of one particle's rows."""
    return sum(_leaf_bytes(leaf) for leaf in leaves)


def as_shardable(model: Any, *, replicas: int = 1) -> ShardableModel:
    """``model``, checked to describe its particle rows (and to replicate when ``replicas`` > 1).

    Raises:
        ValueError: the model does not declare its per-particle state, naming what to implement.
    """
    if not has_particle_rows(model):
        raise ValueError(
            f"model {type(model).__name__} cannot run particle-parallel: fksteer does not know "
            "which of its tensors are per-particle. Implement particle_rows(state, model_output) "
            "and with_particle_rows(state, model_output, rows) (fksteer.smc.rows.ParticleRows), "
            "or run it prompt-parallel."
        )
    if replicas > 1 and not callable(getattr(model, "replicate", None)):
        raise ValueError(
            f"model {type(model).__name__} has no replicate(): this rank runs {replicas} shards "
            "and each needs its own copy of the model's run state. Implement replicate(), or "
            "run one shard per process."
        )
    return model
