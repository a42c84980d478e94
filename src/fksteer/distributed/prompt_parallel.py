"""Prompt-parallel steering in per-group-seed mode: each group's result depends on (seed, group).

    from fksteer.distributed import steer_prompt_parallel
    result = steer_prompt_parallel(model, reward, config, prompts=prompts, seed=0)
    # one process: every group run with its own generator; under torchrun: groups split over ranks

The G groups are split into contiguous blocks, one per rank
(:func:`~fksteer.distributed.sharding.split_range`). Group g runs alone, with
``torch.Generator().manual_seed(derive_seed(seed, GROUP, g))``
(:func:`~fksteer.distributed.seeding.group_generator`) driving its model noise and, through
``engine_generator``, its resampling. So its result is a function of the seed and g only: the
same on one process or many, whichever rank runs it. The price is batching: one process runs its
groups one after the other instead of one batch of G*K particles (measured in
docs/results/distributed-scaling/). The default single-process path, :func:`fksteer.steer` with
one generator for the whole batch, is unchanged; this mode is what distributed runs use, and
what a single process runs to reproduce them (``steer_prompt_parallel`` without a process
group, or ``fksteer sample --per-group-seeds``).

Each rank's groups are gathered in rank order (groups in prompt order) with
:func:`~fksteer.smc.result.concatenate_results`, on every rank or on ``root`` only. Errors in
any rank stop every rank with that error (:mod:`.lockstep`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch

from fksteer.distributed.communicator import Communicator
from fksteer.distributed.lockstep import Lockstep
from fksteer.distributed.seeding import group_generator
from fksteer.distributed.sharding import split_range
from fksteer.smc.config import FKConfig
from fksteer.smc.engine import steer
from fksteer.smc.protocol import Reward, StepModel
from fksteer.smc.result import SteeringResult, concatenate_results

__all__ = ["GroupRunner", "run_prompt_parallel", "steer_prompt_parallel"]

#: ``run(prompts, generator) -> SteeringResult``: steer these prompts (here always one) with
#: this generator; e.g. ``lambda p, g: steer_pipeline(pipe, reward, config, prompt=p,
#: generator=g)``.
GroupRunner = Callable[[list[Any], torch.Generator], SteeringResult]


def steer_prompt_parallel(
    model: StepModel,
    reward: Reward,
    config: FKConfig,
    *,
    prompts: Sequence[Any] | str | None,
    seed: int,
    method: str = "fk",
    communicator: Communicator | None = None,
    root: int | None = None,
    generator_device: str | torch.device = "cpu",
) -> SteeringResult | None:
    """:func:`fksteer.steer` for each group with its own generator, groups split over ranks.

    Returns the result of all groups on every rank (``root=None``), or on ``root`` only (None
    elsewhere): gathering to one rank keeps the others' memory free of everyone's samples.
    """

    def run(group_prompts: list[Any], generator: torch.Generator) -> SteeringResult:
        return steer(model, reward, config, prompts=group_prompts if prompts is not None else
                     None, generator=generator, method=method)

    return run_prompt_parallel(run, prompts, seed, communicator=communicator, root=root,
                               generator_device=generator_device)


def run_prompt_parallel(
    run: GroupRunner,
    prompts: Sequence[Any] | str | None,
    seed: int,
    *,
    communicator: Communicator | None = None,
    root: int | None = None,
    generator_device: str | torch.device = "cpu",
) -> SteeringResult | None:
    """Call ``run([prompt_g], group_generator(seed, g))`` for this rank's groups; gather.

    ``prompts=None`` is one group whose runner gets ``[None]``.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed={seed!r}: pass an int (each group's noise is derived from it).")
    communicator = communicator or Communicator.current()
    if isinstance(prompts, str):
        prompts = [prompts]
    group_prompts = [None] if prompts is None else list(prompts)
    if not group_prompts:
        raise ValueError("prompts is empty: pass at least one prompt, or None for one group.")
    groups = split_range(len(group_prompts), communicator.world_size, communicator.rank)
    lockstep = Lockstep(communicator)

    def local() -> SteeringResult | None:
        results = [
            run([group_prompts[g]], group_generator(seed, g, generator_device)) for g in groups
        ]
        if not results:
            return None
        result = concatenate_results(results)
        if communicator.distributed and isinstance(result.samples, torch.Tensor):
            # sent to other ranks: on the CPU, never on this rank's device
            result = replace(result, samples=result.samples.detach().cpu())
        return result

    mine = lockstep.run(local)
    if root is None:
        gathered = lockstep.sync(mine)
    else:
        gathered = lockstep.gather(mine, root)
        if gathered is None:
            return None
    return concatenate_results([result for result in gathered if result is not None])
