"""Finding weights by hub id or local path, with errors that say what to download and where.

    from fksteer.rewards.hub import resolve_file, load_pretrained, dtype_kwargs

Rewards take their weights as a local path or a Hugging Face hub id. A local path is used as it
is. An id goes through ``huggingface_hub``, which reads its local cache first: a machine with no
hub access works as soon as the files are in that cache (``hf download ID``) or in a folder passed
as a path. When neither has them, the error names the id, the file and the two ways to provide it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fksteer.rewards.base import require

__all__ = [
    "WeightsNotFoundError",
    "dtype_kwargs",
    "hub_offline",
    "load_pretrained",
    "resolve_file",
]


class WeightsNotFoundError(OSError):
    """The weights a reward needs are neither at the path given nor reachable on the hub."""


def _hint(source: str, filename: str | None) -> str:
    file_part = f" {filename}" if filename else ""
    return (
        f"On a machine with hub access run `hf download {source}{file_part}` (it fills the cache "
        "that this machine reads, ~/.cache/huggingface or $HF_HOME), or download the files and "
        "pass their local path instead of the id. On a machine without network, set "
        "HF_HUB_OFFLINE=1 to fail at once instead of retrying."
    )


def hub_offline() -> bool:
    """True when huggingface_hub is told to stay offline (``HF_HUB_OFFLINE=1``)."""
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(constants.HF_HUB_OFFLINE)


def resolve_file(source: str | os.PathLike, filename: str, *, what: str) -> Path:
    """A local file: ``source`` itself if it is a file, ``source/filename`` if a folder, else
    ``filename`` from the hub repository ``source`` (the local cache first, then the hub)."""
    path = Path(source)
    if path.is_file():
        return path
    if path.is_dir():
        candidate = path / filename
        if candidate.is_file():
            return candidate
        raise WeightsNotFoundError(
            f"{what}: the folder {str(path)!r} has no file {filename!r}. Put the file there, or "
            "pass the path of the file itself."
        )
    hub = require("huggingface_hub", "rewards-hf", what=what)
    error: Exception | None = None
    for local_only in (True, False):
        if not local_only and hub_offline():
            break
        try:
            return Path(
                hub.hf_hub_download(
                    repo_id=str(source), filename=filename, local_files_only=local_only
                )
            )
        except Exception as caught:  # offline, unknown repository, missing file: one message
            error = caught
    raise WeightsNotFoundError(
        f"{what}: cannot find {filename!r} of {str(source)!r} locally or on the hub "
        f"({type(error).__name__}). {_hint(str(source), filename)}"
    ) from error


def load_pretrained(
    loader: Callable[..., Any], source: str | os.PathLike, *, what: str, **kwargs: Any
) -> Any:
    """``loader(source, **kwargs)`` (a ``from_pretrained``): a local path as it is; an id from
    the local cache first, then the hub (unless offline). A failure to find the weights becomes a
    :class:`WeightsNotFoundError` that says what to download."""
    if Path(source).exists():
        try:
            return loader(str(source), **kwargs)
        except OSError as error:
            raise WeightsNotFoundError(
                f"{what}: cannot load from the local path {str(source)!r}: {error}"
            ) from error
    error: Exception | None = None
    for local_only in (True, False):
        if not local_only and hub_offline():
            break
        try:
            return loader(str(source), local_files_only=local_only, **kwargs)
        except OSError as caught:
            error = caught
    first_line = str(error).splitlines()[0].rstrip(".") if error is not None and str(error) else ""
    raise WeightsNotFoundError(
        f"{what}: cannot load {str(source)!r} from the local cache or the hub"
        f"{': ' + first_line if first_line else ''}. {_hint(str(source), None)}"
    ) from error


def dtype_kwargs(dtype: Any) -> dict[str, Any]:
    """The ``from_pretrained`` keyword for a dtype: ``dtype`` on transformers >= 4.56, else
    ``torch_dtype``."""
    if dtype is None:
        return {}
    transformers = require("transformers", "rewards-hf")
    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}
