"""A process-wide cache of loaded reward models, so that each set of weights loads once.

    from fksteer.rewards.cache import cached_model, clear_model_cache, cache_dir

Rewards load their models lazily, on first call, through :func:`cached_model` with a key naming
the weights, the device and the dtype: two rewards on the same weights (say a likelihood used in a
sum and again on its own) share one copy. :func:`cache_dir` is where rewards keep files they
convert once (e.g. SmolLM2's GGUF dequantised to safetensors): ``$FKSTEER_CACHE``, else
``$XDG_CACHE_HOME/fksteer``, else ``~/.cache/fksteer``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

__all__ = ["cache_dir", "cached_model", "clear_model_cache"]

_MODELS: dict[Hashable, Any] = {}
_LOCK = threading.Lock()


def cached_model(key: Hashable, loader: Callable[[], Any]) -> Any:
    """Return the object cached under ``key``, calling ``loader()`` the first time only."""
    with _LOCK:
        if key in _MODELS:
            return _MODELS[key]
    value = loader()  # outside the lock: loading may take seconds and use other keys
    with _LOCK:
        return _MODELS.setdefault(key, value)


def clear_model_cache() -> None:
    """Forget every cached model (rewards that already hold one keep it)."""
    with _LOCK:
        _MODELS.clear()


def cache_dir() -> Path:
    """The folder where rewards keep converted weights; created on demand by the caller."""
    root = os.environ.get("FKSTEER_CACHE")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) / "fksteer" if xdg else Path.home() / ".cache" / "fksteer"
