"""Finding weights by hub id or local path, with errors that say what to download and where.

    from fksteer.rewards.hub import resolve_file, load_pretrained, dtype_kwargs

Rewards take their weights as a local path or a Hugging Face hub id. A local path is used as it
is. An id goes through ``huggingface_hub``, which reads its local cache first: a machine with no
hub access works as soon as the files are in that cache (``hf download ID``) or in a folder passed
as a path. The hub is asked only when it answers a quick request (no half minute of retries on a
machine without network) and HF_HUB_OFFLINE is not set. When neither has the files, one error
names the id, the file, why the hub was not used, and the ways to provide it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fksteer.rewards.base import require

__all__ = [
    "WeightsNotFoundError",
    "dtype_kwargs",
    "hub_offline",
    "hub_reachable",
    "load_pretrained",
    "resolve_file",
]


class WeightsNotFoundError(OSError):
    """The weights a reward needs are neither at the path given nor reachable on the hub."""


def _cache_folder() -> str:
    try:
        from huggingface_hub import constants
    except ImportError:
        return "~/.cache/huggingface/hub"
    return str(constants.HF_HUB_CACHE)


def _missing(what: str, source: str, filename: str | None, error: Exception | None) -> str:
    """One message: what is missing, why the hub was not asked (or what it answered), and the
    three ways to provide it. Upstream messages are not quoted when the hub was never reached:
    their advice (``local_files_only=False``, "the stacktrace above") cannot be followed here."""
    file_part = f" {filename}" if filename else ""
    item = f"{filename!r} of {source!r}" if filename else repr(source)
    if hub_offline():
        why = "HF_HUB_OFFLINE is set, so the hub was not asked"
    elif not hub_reachable():
        why = f"the hub ({_endpoint()}) cannot be reached from here"
    else:
        first = str(error).splitlines()[0].rstrip(".") if error is not None and str(error) else ""
        why = f"the hub answered {type(error).__name__}{': ' + first if first else ''}"
    return (
        f"{what}: {item} is not in the local cache ({_cache_folder()}) and {why}. To provide "
        f"it: run `hf download {source}{file_part}` on a machine with hub access (then copy its "
        "cache folder, or set HF_HOME to it here), or pass the path of a local folder or file "
        "holding it instead of the id; HF_HUB_OFFLINE=1 reads the local cache only."
    )


def hub_offline() -> bool:
    """True when huggingface_hub is told to stay offline (``HF_HUB_OFFLINE=1``)."""
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(constants.HF_HUB_OFFLINE)


def _endpoint() -> str:
    from huggingface_hub import constants

    return str(constants.ENDPOINT)


@functools.cache
def hub_reachable() -> bool:
    """Whether the hub answers one HEAD request within 3 seconds (asked once per process), so
    that a machine without network fails at once instead of spending half a minute in the
    hub client's retries."""
    try:
        from huggingface_hub.utils import get_session

        get_session().head(_endpoint(), timeout=3)
    except Exception:  # no network, no DNS, a proxy refusing: all mean the hub is out of reach
        return False
    return True


def _hub_attempts() -> tuple[bool, ...]:
    """``local_files_only`` values to try in turn: the cache, then the hub when it can answer."""
    return (True,) if hub_offline() or not hub_reachable() else (True, False)


def _quiet_hub():
    """While fksteer tries the cache and the hub, their own warnings are not printed: the one
    message fksteer raises says what is missing."""
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    for name in ("huggingface_hub", "transformers", "diffusers"):
        logger = logging.getLogger(name)
        stack.callback(logger.setLevel, logger.level)
        logger.setLevel(logging.ERROR)
    return stack


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
    with _quiet_hub():
        for local_only in _hub_attempts():
            try:
                return Path(hub.hf_hub_download(repo_id=str(source), filename=filename,
                                                local_files_only=local_only))
            except Exception as caught:  # offline, unknown repository, missing file: one message
                error = caught
    raise WeightsNotFoundError(_missing(what, str(source), filename, error)) from error


def load_pretrained(
    loader: Callable[..., Any], source: str | os.PathLike, *, what: str, **kwargs: Any
) -> Any:
    """``loader(source, **kwargs)`` (a ``from_pretrained``): a local path as it is; an id from
    the local cache first, then the hub (unless offline or out of reach). A failure to find the
    weights becomes a :class:`WeightsNotFoundError` that says what to download."""
    if Path(source).exists():
        try:
            return loader(str(source), **kwargs)
        except OSError as error:
            raise WeightsNotFoundError(
                f"{what}: cannot load from the local path {str(source)!r}: {error}"
            ) from error
    error: Exception | None = None
    with _quiet_hub():
        for local_only in _hub_attempts():
            try:
                return loader(str(source), local_files_only=local_only, **kwargs)
            except OSError as caught:
                error = caught
    raise WeightsNotFoundError(_missing(what, str(source), None, error)) from error


def dtype_kwargs(dtype: Any) -> dict[str, Any]:
    """The ``from_pretrained`` keyword for a dtype: ``dtype`` on transformers >= 4.56, else
    ``torch_dtype``."""
    if dtype is None:
        return {}
    transformers = require("transformers", "rewards-hf")
    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}
