"""When a group resamples: the resampling rules, one small function each, behind a registry.

    from fksteer.smc.rules import RESAMPLING_RULES, get_rule

    rule = get_rule("ess")
    resample = rule(ess, num_particles, config)     # (G,) bool, one decision per group

A rule sees, at a scoring step after the potential was applied, the effective sample size of
each group's weights (G,) float64, the number of particles K per group and the
:class:`~fksteer.smc.config.FKConfig`, and says which groups resample. A group that does not
resample carries its log-weights on to the next scoring step; either way the particle system
stays exact, so a rule changes variance and cost, never the target.

- ``always``: resample every group at every scoring step (the paper's setting).
- ``ess``: resample a group when its ESS falls below ``config.ess_threshold * K`` (adaptive
  resampling; Liu & Chen 1995; Del Moral, Doucet & Jasra 2012).

``FKConfig.resampling_rule=None`` picks ``ess`` when ``ess_threshold`` is set, else ``always``.
A new rule is one function decorated with :func:`register_rule`. No torch import: the names load
without it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["RESAMPLING_RULES", "ResamplingRule", "get_rule", "register_rule", "always", "ess_below"]

#: ``rule(ess, num_particles, config) -> (G,) bool``
ResamplingRule = Callable[["torch.Tensor", int, Any], "torch.Tensor"]

#: name -> rule.
RESAMPLING_RULES: dict[str, ResamplingRule] = {}


def register_rule(name: str) -> Callable[[ResamplingRule], ResamplingRule]:
    """Function decorator: add a rule to :data:`RESAMPLING_RULES` under ``name``."""

    def add(rule: ResamplingRule) -> ResamplingRule:
        if name in RESAMPLING_RULES and RESAMPLING_RULES[name] is not rule:
            raise ValueError(f"a resampling rule named {name!r} is already registered.")
        RESAMPLING_RULES[name] = rule
        return rule

    return add


def get_rule(name: str) -> ResamplingRule:
    """The rule registered as ``name``; a ValueError lists the valid names."""
    try:
        return RESAMPLING_RULES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"resampling rule {name!r} is unknown: choose one of {', '.join(RESAMPLING_RULES)}."
        ) from None


@register_rule("always")
def always(ess: torch.Tensor, num_particles: int, config: Any) -> torch.Tensor:
    """Every group resamples."""
    return ess.new_ones(ess.shape, dtype=bool)


@register_rule("ess")
def ess_below(ess: torch.Tensor, num_particles: int, config: Any) -> torch.Tensor:
    """Groups whose ESS is below ``config.ess_threshold * K`` resample."""
    if config.ess_threshold is None:
        raise ValueError(
            "the 'ess' resampling rule needs FKConfig.ess_threshold: set it (e.g. 0.5)."
        )
    return ess < config.ess_threshold * num_particles
