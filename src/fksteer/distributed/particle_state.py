"""Reading and writing the rows of particles in a model's state: `ShardableModel`, `as_shardable`.

    from fksteer.distributed.particle_state import as_shardable
    model = as_shardable(model)                        # the model, or an adapter around it
    rows = model.particle_rows(state, output)          # a pytree of per-particle tensors
    state, output = model.with_particle_rows(state, output, new_rows)
    copy = model.replicate()                           # for another shard in this process

The engine reorders particles within one process with ``StepModel.permute``. Moving particles
between processes needs more: their rows must be read out, sent as bytes, and written back. A
model takes part through :class:`ShardableModel`, three methods:

- ``particle_rows(state, model_output)``: a pytree (dicts, lists, tuples; None and other
  non-tensor leaves are kept as they are) whose tensor leaves all have the shard's particles on
  their leading axis. It must hold *everything* that ``permute`` reorders: the state, the model
  output and any per-particle tensors the model keeps in itself (a scheduler's history).
- ``with_particle_rows(state, model_output, rows)``: the state and output whose rows are
  ``rows`` (same structure, same shapes), writing any history back into the model.
- ``replicate()``: an independent copy for another shard run by the same process (a model that
  keeps run state in itself, like a scheduler's step counter and history, cannot serve two
  shards); a model with no run state returns itself.

:func:`as_shardable` returns a model that implements it, or an adapter for the models this
package knows: :class:`~fksteer.models.GaussianMixtureDiffusion` (the state and the output are
tensors), :class:`~fksteer.integrations.diffusers_unet.UNetStepModel` (the state dict, the output
and the scheduler's per-particle history named by
:func:`~fksteer.integrations.diffusers_schedulers.scheduler_spec`) and the embedded image models
(a class-name wrapper around a UNetStepModel). Any other model raises a ValueError naming the
protocol: guessing which tensors are per-particle could silently leave some behind.

Rows travel as bytes: :func:`pack_rows` views each leaf's selected rows as ``uint8`` and
concatenates them per particle, :func:`unpack_rows` does the reverse, so a particle arrives
bitwise as it left.
"""

from __future__ import annotations

import copy
import math
import sys
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch

from fksteer.smc.wrapper import ModelWrapper

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

    def particle_rows(self, state: Any, model_output: Any) -> Any: ...

    def with_particle_rows(self, state: Any, model_output: Any, rows: Any) -> tuple[Any, Any]: ...

    def replicate(self) -> Any: ...


# -- pytrees of rows ----------------------------------------------------------------------------


def flatten_rows(tree: Any) -> tuple[list[torch.Tensor], Callable[[list[torch.Tensor]], Any]]:
    """The tensor leaves of ``tree`` (depth-first) and a function rebuilding it from new leaves."""
    leaves: list[torch.Tensor] = []

    def walk(node: Any) -> Callable[[list[torch.Tensor]], Any]:
        if isinstance(node, torch.Tensor):
            position = len(leaves)
            leaves.append(node)
            return lambda new: new[position]
        if isinstance(node, dict):
            builders = {key: walk(value) for key, value in node.items()}
            return lambda new: {key: build(new) for key, build in builders.items()}
        if isinstance(node, (list, tuple)):
            builders = [walk(value) for value in node]
            kind = type(node)
            return lambda new: kind(build(new) for build in builders)
        return lambda new: node

    build = walk(tree)
    return leaves, build


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
        raw = buffer[:, start:stop].contiguous()
        dtype = torch.uint8 if leaf.dtype == torch.bool else leaf.dtype
        values = raw.view(dtype).reshape(num_rows, *leaf.shape[1:]).to(leaf.device)
        leaves.append(values.to(torch.bool) if leaf.dtype == torch.bool else values)
        start = stop
    return leaves


def row_bytes(leaves: list[torch.Tensor]) -> int:
    """Bytes of one particle's rows."""
    return sum(_leaf_bytes(leaf) for leaf in leaves)


# -- adapters for the models this package knows ------------------------------------------------


def _loaded_class(module: str, name: str) -> type | None:
    """``module.name`` if that module is already imported (then a model can be an instance)."""
    loaded = sys.modules.get(module)
    return getattr(loaded, name, None) if loaded is not None else None


class TensorStateAdapter(ModelWrapper):
    """A model whose whole per-particle state is its ``state`` and ``model_output`` arguments."""

    def particle_rows(self, state, model_output):
        return {"state": state, "output": model_output}

    def with_particle_rows(self, state, model_output, rows):
        return rows["state"], rows["output"]

    def replicate(self):
        return self


class UNetStepModelAdapter(ModelWrapper):
    """:class:`UNetStepModel`: the state dict, the output and the scheduler's history."""

    def _history_names(self) -> tuple[str, ...]:
        from fksteer.integrations.diffusers_schedulers import scheduler_spec

        return scheduler_spec(self.model.scheduler).history

    def particle_rows(self, state, model_output):
        batch = model_output.shape[0]
        scheduler = self.model.scheduler
        history = {}
        for name in self._history_names():
            value = getattr(scheduler, name, None)
            history[name] = _per_particle(value, batch)
        return {"state": state, "output": model_output, "history": history}

    def with_particle_rows(self, state, model_output, rows):
        scheduler = self.model.scheduler
        for name, value in rows["history"].items():
            if value is not None:
                setattr(scheduler, name, _merge(getattr(scheduler, name), value))
        return rows["state"], rows["output"]

    def replicate(self):
        """A UNetStepModel sharing the UNet, with a fresh scheduler of the same configuration
        (``init`` resets a scheduler's timesteps and history anyway)."""
        scheduler = self.model.scheduler
        replica = copy.copy(self.model)
        replica.scheduler = type(scheduler).from_config(scheduler.config)
        replica.scheduler.set_timesteps(self.model.num_inference_steps)
        return UNetStepModelAdapter(replica)


def _per_particle(value: Any, batch: int) -> Any:
    """The per-particle tensors of a history value (same rule as permute_scheduler_state)."""
    if isinstance(value, torch.Tensor):
        return value if value.dim() > 0 and value.shape[0] == batch else None
    if isinstance(value, (list, tuple)):
        return type(value)(_per_particle(item, batch) for item in value)
    return None


def _merge(old: Any, new: Any) -> Any:
    """``old`` with its per-particle tensors replaced by ``new`` (None in ``new``: keep old)."""
    if new is None:
        return old
    if isinstance(new, torch.Tensor):
        return new
    return type(old)(_merge(o, n) for o, n in zip(old, new, strict=True))


class ClassNameModelAdapter(ModelWrapper):
    """The embedded image models: a class-name wrapper around a shardable inner model."""

    def __init__(self, model: Any, inner: Any | None = None) -> None:
        super().__init__(model)
        self.inner = inner if inner is not None else as_shardable(model.model)

    def particle_rows(self, state, model_output):
        return self.inner.particle_rows(state, model_output)

    def with_particle_rows(self, state, model_output, rows):
        return self.inner.with_particle_rows(state, model_output, rows)

    def replicate(self):
        inner = self.inner.replicate()
        replica = copy.copy(self.model)
        replica.model = inner.model if isinstance(inner, ModelWrapper) else inner
        return ClassNameModelAdapter(replica, inner)


def as_shardable(model: Any) -> ShardableModel:
    """``model`` itself if it implements :class:`ShardableModel`, else a known adapter.

    Raises:
        ValueError: the model is neither, naming the three methods to implement.
    """
    if isinstance(model, ShardableModel):
        return model
    known = (
        ("fksteer.models.gaussian_mixture", "GaussianMixtureDiffusion", TensorStateAdapter),
        ("fksteer.integrations.diffusers_unet", "UNetStepModel", UNetStepModelAdapter),
        ("fksteer.embedded.image_model", "ClassNameModel", ClassNameModelAdapter),
    )
    for module, name, adapter in known:
        cls = _loaded_class(module, name)
        if cls is not None and isinstance(model, cls):
            return adapter(model)
    raise ValueError(
        f"model {type(model).__name__} cannot run particle-parallel: fksteer does not know "
        "which of its tensors are per-particle. Implement particle_rows(state, model_output), "
        "with_particle_rows(state, model_output, rows) and replicate() "
        "(fksteer.distributed.ShardableModel), or run it prompt-parallel."
    )
