"""fksteer: steer diffusion models towards high reward with Feynman-Kac particle systems.

    import fksteer
    result = fksteer.steer(model, reward, fksteer.FKConfig(num_particles=8), prompts=[...])

The engine lives in ``fksteer.smc``; exact test models in ``fksteer.models``. The names below
load on first use (PEP 562), so that ``import fksteer`` and the command line's ``--help`` do not
import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS = {
    "AllParticlesDeadError": "fksteer.smc.particles",
    "Budget": "fksteer.smc.particle_gibbs",
    "FKConfig": "fksteer.smc.config",
    "GibbsResult": "fksteer.smc.gibbs_result",
    "LinearRamp": "fksteer.smc.config",
    "Reward": "fksteer.smc.protocol",
    "SearchConfig": "fksteer.smc.config",
    "SteeringResult": "fksteer.smc.result",
    "StepModel": "fksteer.smc.protocol",
    "StepTrace": "fksteer.smc.result",
    "gibbs": "fksteer.smc.particle_gibbs",
    "steer": "fksteer.smc.engine",
}

__all__ = [*_EXPORTS, "__version__"]

if TYPE_CHECKING:  # for type checkers and editors; at run time __getattr__ loads them
    from fksteer.smc.config import FKConfig, LinearRamp, SearchConfig  # noqa: F401
    from fksteer.smc.engine import steer  # noqa: F401
    from fksteer.smc.gibbs_result import GibbsResult  # noqa: F401
    from fksteer.smc.particle_gibbs import Budget, gibbs  # noqa: F401
    from fksteer.smc.particles import AllParticlesDeadError  # noqa: F401
    from fksteer.smc.protocol import Reward, StepModel  # noqa: F401
    from fksteer.smc.result import SteeringResult, StepTrace  # noqa: F401


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fksteer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
