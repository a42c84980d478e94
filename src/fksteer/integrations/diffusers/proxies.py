"""Stand-ins for a pipeline's components during one steered call.

    from fksteer.integrations.diffusers.proxies import MicroBatchedDenoiser, RecordingDenoiser

`steer_pipeline` swaps a pipeline's scheduler and denoiser for these proxies for the length of
one call: each forwards every attribute to the wrapped object (so the pipeline sees its own
component) and changes one behaviour: :class:`MicroBatchedDenoiser` splits large batches,
:class:`RecordingDenoiser` remembers its last call so that reward-gradient guidance can call the
denoiser again, with gradients, exactly as the pipeline did. :func:`swapped_components` installs
them for one ``with`` block and always puts the originals back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch

__all__ = [
    "Proxy",
    "MicroBatchedDenoiser",
    "RecordingDenoiser",
    "UNBATCHED_ARGUMENTS",
    "select_batch_rows",
    "swapped_components",
]

#: Keyword arguments of denoisers that never carry a batch axis (Flux's 2-D position ids).
UNBATCHED_ARGUMENTS = frozenset({"txt_ids", "img_ids"})


class Proxy:
    """Forwards every attribute to the wrapped object; ``isinstance`` sees the wrapped class.

    The ``__class__`` property is the same device ``unittest.mock`` uses for ``spec``: pipelines
    that check ``isinstance(self.scheduler, ...)`` keep working.
    """

    def __init__(self, inner: Any) -> None:
        object.__setattr__(self, "_fk_inner", inner)

    def __getattr__(self, name: str) -> Any:
        return getattr(object.__getattribute__(self, "_fk_inner"), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._fk_inner, name, value)

    __class__ = property(lambda self: type(object.__getattribute__(self, "_fk_inner")))

    def __repr__(self) -> str:
        return f"{type(self).__mro__[0].__name__}({self._fk_inner!r})"


class MicroBatchedDenoiser(Proxy):
    """The pipeline's denoiser, called on at most ``batch_size`` rows at a time.

    Every tensor argument whose leading length is the batch's is split (recursively through
    dicts, lists and tuples, e.g. SDXL's ``added_cond_kwargs``); others (scalar timesteps, Flux's
    2-D ``txt_ids``/``img_ids``) are passed whole; outputs are concatenated back.
    """

    def __init__(self, inner: Any, batch_size: int) -> None:
        Proxy.__init__(self, inner)
        object.__setattr__(self, "_fk_batch_size", batch_size)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The denoiser's output, computed in micro-batches of at most the batch size."""
        inner = self._fk_inner
        size = self._fk_batch_size
        batch = _leading_length(args, kwargs)
        if batch is None or batch <= size:
            return inner(*args, **kwargs)
        outputs = []
        for start in range(0, batch, size):
            rows = torch.arange(start, min(start + size, batch))
            chunk_args = select_batch_rows(args, rows, batch)
            chunk_kwargs = {
                name: select_batch_rows(value, rows, batch, name) for name, value in kwargs.items()
            }
            outputs.append(inner(*chunk_args, **chunk_kwargs))
        return _concatenate(outputs)


def _leading_length(args: Sequence[Any], kwargs: dict[str, Any]) -> int | None:
    for value in (*args, kwargs.get("sample"), kwargs.get("hidden_states")):
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return value.shape[0]
    return None


def _concatenate(outputs: list[Any]) -> Any:
    first = outputs[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(outputs)
    if first is None:
        return None
    if isinstance(first, dict):  # diffusers' BaseOutput is an OrderedDict
        return type(first)(**{key: _concatenate([o[key] for o in outputs]) for key in first})
    if isinstance(first, (list, tuple)):
        return type(first)(_concatenate(list(parts)) for parts in zip(*outputs, strict=True))
    return first


class RecordingDenoiser(Proxy):
    """The pipeline's denoiser, remembering the arguments of its last call (``last_call``)."""

    def __init__(self, inner: Any) -> None:
        Proxy.__init__(self, inner)
        object.__setattr__(self, "last_call", None)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The denoiser's output; the arguments are kept as ``last_call``."""
        object.__setattr__(self, "last_call", (args, kwargs))
        return self._fk_inner(*args, **kwargs)


def select_batch_rows(value: Any, index: torch.Tensor, batch: int, name: str | None = None) -> Any:
    """``value`` with the rows ``index`` of every tensor whose leading length is ``batch``.

    Recurses through dicts, lists and tuples (SDXL's ``added_cond_kwargs``); scalars, tensors of
    another length and :data:`UNBATCHED_ARGUMENTS` are returned whole.
    """
    if name in UNBATCHED_ARGUMENTS:
        return value
    if isinstance(value, torch.Tensor):
        if value.dim() > 0 and value.shape[0] == batch:
            return value.index_select(0, index.to(value.device))
        return value
    if isinstance(value, dict):
        return {key: select_batch_rows(item, index, batch, key) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(select_batch_rows(item, index, batch) for item in value)
    return value




@contextlib.contextmanager
def swapped_components(pipe: Any, stand_ins: dict[str, Any]) -> Iterator[None]:
    """Replace the pipeline's components named in ``stand_ins`` for the length of a ``with``
    block, and put the originals back afterwards, also on error (the pipeline is unchanged)."""
    originals = {name: getattr(pipe, name) for name in stand_ins}
    try:
        for name, stand_in in stand_ins.items():
            object.__setattr__(pipe, name, stand_in)
        yield
    finally:
        for name, original in originals.items():
            object.__setattr__(pipe, name, original)
