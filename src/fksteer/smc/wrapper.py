"""`ModelWrapper`: a StepModel that forwards to another one, for wrappers that change one thing.

    from fksteer.smc.wrapper import ModelWrapper

    class WithLogging(ModelWrapper):
        def move(self, state, model_output, step, generator):
            print("step", step)
            return self.model.move(state, model_output, step, generator)

Every method of :class:`~fksteer.smc.protocol.StepModel` calls ``self.model``'s; any other
attribute (``num_predictions``, the guidance methods of
:class:`~fksteer.smc.protocol.GuidedStepModel`, the particle rows of
:class:`~fksteer.smc.rows.ParticleRows`, a model's own attributes) is read from the wrapped
model, so the wrapper offers exactly what the wrapped model offers: it is a GuidedStepModel if
and only if the wrapped model is one. ``replicate()`` (for running several shards of particles
in one process), where the wrapped model has it, copies the wrapper around a replica of the
wrapped model.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fksteer.smc.rows import has_particle_rows, permute_particles, permute_rows

if TYPE_CHECKING:  # annotations only: the command line's parser loads this without torch
    import torch

__all__ = ["ModelWrapper"]


class ModelWrapper:
    """Forwards the StepModel protocol, and every other attribute, to ``self.model``."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.num_steps = model.num_steps

    def __getattr__(self, name: str) -> Any:
        # only called for attributes not found on the wrapper itself
        if name == "model":  # not set yet (e.g. during copy): no recursion
            raise AttributeError(name)
        value = getattr(self.model, name)
        if name == "replicate":
            return self._replicate
        return value

    def _replicate(self) -> ModelWrapper:
        replica = copy.copy(self)
        replica.model = self.model.replicate()
        return replica

    def init(self, prompts: Sequence[Any], num_particles: int, generator: torch.Generator) -> Any:
        """The wrapped model's ``init``."""
        return self.model.init(prompts, num_particles, generator)

    def predict(self, state: Any, step: int, generator: torch.Generator) -> tuple[Any, Any]:
        """The wrapped model's ``predict``."""
        return self.model.predict(state, step, generator)

    def move(self, state: Any, model_output: Any, step: int, generator: torch.Generator) -> Any:
        """The wrapped model's ``move``."""
        return self.model.move(state, model_output, step, generator)

    def decode(self, clean: Any, final: bool) -> Any:
        """The wrapped model's ``decode``."""
        return self.model.decode(clean, final)

    def permute(self, state: Any, model_output: Any, ancestors: torch.Tensor) -> tuple[Any, Any]:
        """Reorder the particles by ``ancestors``: by the declared rows, else the model's
        ``permute``."""
        # by the rows this wrapper offers (its own, or the wrapped model's), else the model's
        if has_particle_rows(self):
            return permute_rows(self, state, model_output, ancestors)
        return permute_particles(self.model, state, model_output, ancestors)

    def final_sample(self, state: Any) -> Any:
        """The wrapped model's ``final_sample``."""
        return self.model.final_sample(state)
