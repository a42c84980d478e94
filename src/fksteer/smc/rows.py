"""One description of a model's per-particle state: `ParticleRows`, and what derives from it.

    from fksteer.smc.rows import ParticleRows, PermuteByRows, permute_particles, flatten_rows

A model tells the engine once which tensors belong to its particles:

- ``particle_rows(state, model_output)``: a pytree (dicts, lists, tuples; None and non-tensor
  leaves are kept as they are) whose tensor leaves all have the particles (G*K) on their leading
  axis. It holds *everything* per-particle: the state, the model output and any per-particle
  tensors the model keeps in itself (a scheduler's history, a cache).
- ``with_particle_rows(state, model_output, rows)``: the state and output whose rows are ``rows``
  (same structure, leaves with the same trailing shapes), writing history back into the model.

Everything that moves particles derives from that one description, as blackjax reorders any
pytree of particles with one map: reordering them after resampling (:func:`permute_rows`, and
the ``permute`` that :class:`PermuteByRows` gives a model), sending them between processes
(:mod:`fksteer.distributed.particle_parallel` packs the leaves' rows as bytes) and restoring a
kept reference path. A model that cannot describe its rows may still implement ``permute``
itself (the older form of the protocol); it then runs in one process only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

__all__ = [
    "ParticleRows",
    "PermuteByRows",
    "TensorRows",
    "flatten_rows",
    "has_particle_rows",
    "permute_particles",
    "permute_rows",
    "select_rows",
]


@runtime_checkable
class ParticleRows(Protocol):
    """A model whose per-particle tensors can be read out and written back."""

    def particle_rows(self, state: Any, model_output: Any) -> Any:
        """The per-particle tensors of ``state`` and ``model_output``, as a pytree of (rows, ...)
        leaves."""

    def with_particle_rows(self, state: Any, model_output: Any, rows: Any) -> tuple[Any, Any]:
        """``state`` and ``model_output`` with their per-particle rows replaced by ``rows``."""


def has_particle_rows(model: Any) -> bool:
    """Whether ``model`` describes its per-particle state (``isinstance(model, ParticleRows)``):
    the common answer (both members there, neither None) is read directly, without the
    protocol check's walk of its members (several microseconds a call)."""
    if getattr(model, "particle_rows", None) is not None and (
        getattr(model, "with_particle_rows", None) is not None
    ):
        return True
    return isinstance(model, ParticleRows)


def flatten_rows(tree: Any) -> tuple[list[torch.Tensor], Callable[[list[torch.Tensor]], Any]]:
    """The tensor leaves of ``tree`` (depth-first) and a function rebuilding it from new leaves."""
    import torch

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


def select_rows(tree: Any, index: torch.Tensor) -> Any:
    """``tree`` with every tensor leaf's rows taken at ``index`` (on each leaf's device)."""
    import torch

    if type(tree) is dict:  # the common flat case (e.g. TensorRows): no tree to walk
        selected, device = {}, index.get_device()  # -1: the CPU
        for key, leaf in tree.items():
            if not (isinstance(leaf, torch.Tensor) and leaf.get_device() == device):
                break
            selected[key] = leaf.index_select(0, index)
        else:
            return selected
    leaves, build = flatten_rows(tree)
    return build([
        leaf.index_select(0, index if leaf.device == index.device else index.to(leaf.device))
        for leaf in leaves
    ])


def permute_rows(
    model: ParticleRows, state: Any, model_output: Any, ancestors: torch.Tensor
) -> tuple[Any, Any]:
    """Particle p becomes old particle ``ancestors[p]`` in every row the model declares."""
    rows = model.particle_rows(state, model_output)
    return model.with_particle_rows(state, model_output, select_rows(rows, ancestors))


def permute_particles(
    model: Any, state: Any, model_output: Any, ancestors: torch.Tensor
) -> tuple[Any, Any]:
    """Reorder a model's particles by flat ``ancestors``: its ``permute`` where it has one (a
    :class:`PermuteByRows` model's is derived from its rows), else from its rows."""
    permute = getattr(model, "permute", None)
    if permute is not None:
        return permute(state, model_output, ancestors)
    if has_particle_rows(model):
        return permute_rows(model, state, model_output, ancestors)
    raise ValueError(
        f"model {type(model).__name__} cannot reorder its particles: implement "
        "particle_rows(state, model_output) and with_particle_rows(state, model_output, rows) "
        "(fksteer.smc.rows.ParticleRows), or permute(state, model_output, ancestors)."
    )


class PermuteByRows:
    """Mixin: a model that declares its rows gets ``permute`` from them (one description)."""

    def permute(self, state: Any, model_output: Any, ancestors: torch.Tensor) -> tuple[Any, Any]:
        """Particle ``p`` becomes old particle ``ancestors[p]``: every declared row reordered.

        ``ancestors`` is a flat ``(G*K,)`` int64 index on the CPU that never crosses groups.
        """
        return permute_rows(self, state, model_output, ancestors)


class TensorRows(PermuteByRows):
    """Mixin for a model whose whole per-particle state is its ``state`` and ``model_output``
    tensors (or pytrees of them), and which keeps no run state in itself."""

    def particle_rows(self, state: Any, model_output: Any) -> Any:
        """The state and the model output: every tensor in them is per-particle."""
        return {"state": state, "output": model_output}

    def with_particle_rows(self, state: Any, model_output: Any, rows: Any) -> tuple[Any, Any]:
        """The state and output made of ``rows``."""
        return rows["state"], rows["output"]

    def permute(self, state: Any, model_output: Any, ancestors: torch.Tensor) -> tuple[Any, Any]:
        """:meth:`PermuteByRows.permute` for these rows, without the calls that read and write
        them back (they are the state and the output themselves)."""
        import torch

        if isinstance(state, torch.Tensor) and isinstance(model_output, torch.Tensor):
            device = ancestors.get_device()
            if state.get_device() == device and model_output.get_device() == device:
                return state.index_select(0, ancestors), model_output.index_select(0, ancestors)
        rows = select_rows({"state": state, "output": model_output}, ancestors)
        return rows["state"], rows["output"]

    def replicate(self) -> Any:
        """The model itself: it keeps no run state, so one object serves several shards."""
        return self
