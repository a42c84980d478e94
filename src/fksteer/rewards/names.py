"""Reward names: the catalogue's registry of constructors and ``package.module:attribute`` specs.

    from fksteer.rewards.names import build_named, register_reward, available_rewards

The lowest layer of name resolution: a name maps to a constructor, kept as a ``module:attribute``
string and imported only when that reward is loaded (so one missing optional package never breaks
the others), and called with the keyword arguments. For a ``package.module:attribute`` spec (the
module found on ``sys.path`` or in the working directory), the attribute is instantiated with the
keyword arguments when it is a class, called with them when they are given (a factory), and used
as the reward itself otherwise.

:func:`build_named` returns what the name builds, as it is;
:func:`fksteer.rewards.compose.as_reward` (one layer up, beside the weighted sums a mapping of
names becomes) turns it into a :class:`~fksteer.rewards.base.RewardModel`, and
:func:`fksteer.rewards.registry.load_reward` (the top, the public entry point) puts the two
together. This module imports only ``base``.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path
from typing import Any

from fksteer.rewards.base import RewardModel

__all__ = ["available_rewards", "build_named", "register_reward", "reward_modality"]

_REGISTRY: dict[str, str | Any] = {
    "toxicity": "fksteer.rewards.toxicity:Toxicity",
    "profanity-words": "fksteer.rewards.profanity_words:ProfanityWords",
    "sentiment": "fksteer.rewards.sentiment:Sentiment",
    "lm-likelihood": "fksteer.rewards.likelihood:LMLikelihood",
    "smollm2-likelihood": "fksteer.rewards.likelihood:smollm2_likelihood",
    "similarity": "fksteer.rewards.similarity:TextSimilarity",
    "classifier": "fksteer.rewards.classifier:ClassifierLogProb",
    "hf-classifier": "fksteer.rewards.hf_classifier:SequenceClassifierReward",
    "clip-score": "fksteer.rewards.clip:CLIPScore",
    "pickscore": "fksteer.rewards.clip:PickScore",
    "hpsv2": "fksteer.rewards.clip:HPSv2",
    "aesthetic": "fksteer.rewards.aesthetic:LAIONAesthetic",
    "image-reward": "fksteer.rewards.image_reward:ImageReward",
    "llm-grader": "fksteer.rewards.grader:ChatGrader",
}

#: What each catalogue reward scores: "text" (a list of str) or "image" (a (B, C, H, W) batch).
_MODALITIES = {
    **dict.fromkeys(
        (
            "toxicity",
            "profanity-words",
            "sentiment",
            "lm-likelihood",
            "smollm2-likelihood",
            "similarity",
            "hf-classifier",
            "llm-grader",
        ),
        "text",
    ),
    **dict.fromkeys(
        ("classifier", "clip-score", "pickscore", "hpsv2", "aesthetic", "image-reward"), "image"
    ),
}


def reward_modality(spec: Any) -> str | None:
    """``"text"`` or ``"image"`` for a catalogue name (known without importing anything), None
    for anything else (a spec, a registered callable, a mapping)."""
    return _MODALITIES.get(spec) if isinstance(spec, str) else None


def register_reward(name: str, target: str | Any, *, overwrite: bool = False) -> None:
    """Register ``target`` under ``name`` for :func:`load_reward`.

    ``target`` is a constructor (a class or a factory function, called with the keyword
    arguments of ``load_reward``), a ``module:attribute`` string naming one (imported on first
    load), or an already built :class:`RewardModel` (wrap a plain reward function in
    :class:`fksteer.rewards.base.FunctionReward`).
    """
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"name={name!r}: a reward name is a non-empty string without ':'.")
    if name in _REGISTRY and not overwrite:
        raise ValueError(
            f"a reward named {name!r} is already registered ({_REGISTRY[name]!r}); pass "
            "overwrite=True to replace it."
        )
    _REGISTRY[name] = target


def available_rewards() -> list[str]:
    """The registered names, sorted."""
    return sorted(_REGISTRY)


def _import_spec(spec: str) -> Any:
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(
            f"reward spec {spec!r} is not 'package.module:function'. Registered names: "
            f"{', '.join(available_rewards())}."
        )
    module = _import_module(module_name, spec)
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as error:
            raise ValueError(
                f"reward spec {spec!r}: module {module_name!r} has no attribute {attribute!r}."
            ) from error
    return target


def _import_module(module_name: str, spec: str) -> Any:
    """Import ``module_name``; a module or package in the working directory is found too (as
    ``python -m`` would), so ``mymod:fn`` works beside ``mymod.py`` without PYTHONPATH."""
    top = module_name.split(".")[0]
    here = Path.cwd()
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        beside = (here / f"{top}.py").is_file() or (here / top / "__init__.py").is_file()
        if error.name != top or not beside or str(here) in sys.path:
            where = (
                f"it is neither in the working directory ({here}: no {top}.py) nor on PYTHONPATH"
                if error.name == top
                else str(error)
            )
            raise ImportError(
                f"cannot import {module_name!r} for the reward {spec!r}: {where}."
            ) from error
    except Exception as error:  # the module's own code failed: quote it for its author
        raise ImportError(
            f"importing {module_name!r} for the reward {spec!r} raised "
            f"{type(error).__name__}: {error}"
        ) from error
    sys.path.insert(0, str(here))
    return _import_module(module_name, spec)


def _build(target: Any, kwargs: dict[str, Any], *, constructor: bool) -> Any:
    if isinstance(target, RewardModel):
        if kwargs:
            raise TypeError(f"{target!r} is already built: it takes no keyword arguments.")
        return target
    if constructor or inspect.isclass(target) or kwargs:
        return target(**kwargs)
    return target


def build_named(spec: str, **kwargs: Any) -> Any:
    """What the registry name or ``package.module:attribute`` spec ``spec`` builds with
    ``kwargs``: a reward, a plain callable, or whatever the constructor returned (unconverted)."""
    if spec in _REGISTRY:
        target = _REGISTRY[spec]
        if isinstance(target, str):
            target = _import_spec(target)
        return _build(target, kwargs, constructor=True)
    if ":" in spec:
        return _build(_import_spec(spec), kwargs, constructor=False)
    raise ValueError(
        f"unknown reward {spec!r}. Registered names: {', '.join(available_rewards())}; or "
        "pass 'package.module:function' for any importable callable."
    )
