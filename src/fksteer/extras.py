"""The optional dependencies: which pip extra of fksteer installs a missing module.

    from fksteer.extras import missing_extra_hint, require_extra
    missing_extra_hint(error)   # "pip install 'fksteer[diffusers]'" for No module named diffusers
    diffusers = require_extra("diffusers", "a diffusers pipeline")   # or that hint

Standard library only, so that the command line can explain a missing module without
importing anything heavy.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXTRA_OF_MODULE", "missing_extra_hint", "require_extra", "with_install_hint"]

#: top-level module -> the smallest fksteer extra that installs it (``all`` installs every one)
EXTRA_OF_MODULE = {
    "diffusers": "diffusers",
    "accelerate": "diffusers",
    "PIL": "diffusers",
    "transformers": "text",
    "tokenizers": "text",
    "safetensors": "text",
    "matplotlib": "report",
    "markdown_it": "report",
    "tqdm": "bench",
    "mkdocs": "docs",
    "playwright": "dev",
    "profanity_check": "rewards-text",
    "better_profanity": "rewards-text",
    "vaderSentiment": "rewards-text",
    "sentence_transformers": "rewards-similarity",
    "gguf": "rewards-hf",
    "build": "dev",
    "twine": "dev",
}


def missing_extra_hint(error: BaseException) -> str | None:
    """``pip install 'fksteer[EXTRA]'`` when ``error`` is a missing module an extra provides."""
    name = getattr(error, "name", None)
    if not isinstance(error, ModuleNotFoundError) or not name:
        return None
    extra = EXTRA_OF_MODULE.get(name.split(".")[0])
    return None if extra is None else f"pip install 'fksteer[{extra}]'"


def with_install_hint(error: BaseException) -> str:
    """The error's message, followed by the extra to install when it is a missing module."""
    message = str(error)
    hint = missing_extra_hint(error)
    if hint is None or "pip install" in message:
        return message
    return f"{message}: install it with {hint} (or 'fksteer[all]' for every extra)"


def require_extra(module: str, what: str) -> ModuleType:
    """Import ``module``; if it (or a module it needs) is missing, say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        install = missing_extra_hint(error) or f"pip install {error.name}"
        raise ModuleNotFoundError(
            f"{what} needs the Python package {error.name!r}, which is not installed: "
            f"{install} (or 'fksteer[all]' for every extra)",
            name=error.name,
        ) from error
