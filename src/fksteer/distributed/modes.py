"""One entry point for the command line: `steer_in_mode` picks the path a run takes.

    from fksteer.distributed.modes import PARALLEL_MODES, steer_in_mode
    result = steer_in_mode(run, model, reward, config, prompts, seed, method,
                           parallel="prompts", per_group_seeds=False, communicator=c)

- one process, ``per_group_seeds=False``, ``parallel="prompts"``: the default batched
  ``run(prompts, torch.Generator().manual_seed(seed))``, unchanged;
- ``parallel="prompts"`` with several processes, or ``per_group_seeds=True``: per-group-seed
  mode (:mod:`.prompt_parallel`), gathered on rank 0;
- ``parallel="particles"``: every group's particles split over the processes
  (:mod:`.particle_parallel`); needs a StepModel, not a wrapped pipeline.

Ranks other than 0 get None: rank 0 alone writes the run's files.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from fksteer.distributed.communicator import Communicator
from fksteer.distributed.particle_parallel import steer_particle_parallel
from fksteer.distributed.prompt_parallel import GroupRunner, run_prompt_parallel
from fksteer.smc.config import FKConfig
from fksteer.smc.protocol import Reward
from fksteer.smc.result import SteeringResult

__all__ = ["PARALLEL_MODES", "steer_in_mode"]

#: What ``--parallel`` splits over the processes.
PARALLEL_MODES = ("prompts", "particles")


def steer_in_mode(
    run: GroupRunner,
    model: Any,
    reward: Reward,
    config: FKConfig,
    prompts: Sequence[Any],
    seed: int,
    method: str,
    *,
    parallel: str = "prompts",
    per_group_seeds: bool = False,
    communicator: Communicator | None = None,
) -> SteeringResult | None:
    """Steer as the options say; the result on rank 0, None on the other ranks.

    ``run(prompts, generator)`` steers any prompts (pipelines included); ``model`` is the
    StepModel behind it, or None when there is none (particle-parallel mode then refuses).
    """
    if parallel not in PARALLEL_MODES:
        raise ValueError(f"--parallel {parallel!r}: choose one of {', '.join(PARALLEL_MODES)}.")
    communicator = communicator or Communicator.current()
    if parallel == "particles":
        if model is None:
            raise ValueError(
                "--parallel particles needs a StepModel (an embedded model or a UNet folder); "
                "diffusers pipelines run with --parallel prompts."
            )
        result = steer_particle_parallel(model, reward, config, prompts=prompts, seed=seed,
                                         method=method, communicator=communicator)
        return result if communicator.is_root else None
    if communicator.world_size == 1 and not per_group_seeds:
        return run(list(prompts), torch.Generator().manual_seed(seed))
    return run_prompt_parallel(run, prompts, seed, communicator=communicator, root=0)
