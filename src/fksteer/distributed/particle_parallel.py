"""Particle-parallel steering: one group's K particles split over processes.

    from fksteer.distributed import steer_particle_parallel
    result = steer_particle_parallel(model, reward, FKConfig(num_particles=64), prompts=["a"],
                                     seed=0)     # under torchrun: K/W particles per process

For a K or a model too large for one device. The G*K particles are cut into S shards (S = the
number of processes by default; see :class:`~fksteer.distributed.sharding.ParticleLayout`), each
run by the unchanged StepModel on its own G*K/S particles. At a scoring step:

1. every rank decodes and scores its own particles, and one ``all_gather_object`` gives every
   rank all G*K rewards (with each rank's ok/error status, see :mod:`.lockstep`);
2. every rank runs the same :class:`~fksteer.smc.particles.ParticleSystem` on them: its draws
   come from a generator derived from the seed alone, so all ranks compute the same weights,
   evidence and ancestors, with no further communication;
3. the ancestors are rearranged so that every surviving particle keeps its slot
   (:func:`~fksteer.smc.resampling.survivors_in_place`; the particles are exchangeable, so the
   law is unchanged), and the particles whose ancestor lives on another rank are sent point to point
   (``isend``/``irecv``), each needed ancestor once per destination rank, as the bytes of its
   rows (state, model output, scheduler history: :mod:`.particle_state`); the others are
   reordered in place. ``transfers=[]`` collects, per resampling step, the bytes sent against
   the (W-1) * G*K rows a naive all-gather of every particle would move.

Randomness: shard s draws its model noise (initial draw, every move) from its own generator,
seeded from (seed, s, S) (:func:`~fksteer.distributed.seeding.shard_generator`), and the
engine's resampling from ``engine_generator`` of ``torch.Generator().manual_seed(seed)``. The
result is therefore a function of (seed, S) and not of the number of processes W (W must
divide S): ``steer_particle_parallel(..., num_shards=2)`` in one process gives bitwise what two
processes give on the CPU. It is a different layout of the noise from :func:`fksteer.steer`'s
single batch, so a different (equally exact) sample.

The final samples and rewards are all-gathered: every rank returns the whole result, samples
on the CPU.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fksteer.distributed.communicator import Communicator
from fksteer.distributed.lockstep import Lockstep
from fksteer.distributed.particle_state import (
    ShardableModel,
    as_shardable,
    flatten_rows,
    pack_rows,
    row_bytes,
    row_spec,
    unpack_rows,
)
from fksteer.distributed.seeding import shard_generator
from fksteer.distributed.sharding import ParticleLayout
from fksteer.smc.config import FKConfig
from fksteer.smc.guidance import reward_gradient
from fksteer.smc.particles import ParticleSystem
from fksteer.smc.plan import StepTimes, group_prompts, require_guided_model
from fksteer.smc.protocol import Reward, StepModel, call_reward
from fksteer.smc.result import SteeringResult

__all__ = ["steer_particle_parallel", "Transfer"]


@dataclass(frozen=True)
class Transfer:
    """The particles moved between ranks at one resampling step (the same on every rank).

    Attributes:
        step: the scoring step that resampled.
        slots_from_other_ranks: particles whose ancestor lived on another rank.
        rows_sent: ancestors sent (each once per destination rank that needs it).
        row_bytes: bytes of one particle (state, model output, scheduler history).
        bytes_sent: ``rows_sent * row_bytes``, summed over all ranks.
        all_gather_bytes: what a naive all-gather of every particle would move:
            ``(world_size - 1) * num_particles_total * row_bytes``.
    """

    step: int
    slots_from_other_ranks: int
    rows_sent: int
    row_bytes: int
    bytes_sent: int
    all_gather_bytes: int


def steer_particle_parallel(
    model: StepModel | Sequence[StepModel],
    reward: Reward,
    config: FKConfig,
    *,
    prompts: Sequence[Any] | str | None = None,
    seed: int,
    method: str = "fk",
    num_shards: int | None = None,
    communicator: Communicator | None = None,
    generator_device: str | torch.device = "cpu",
    transfers: list[Transfer] | None = None,
    guidance_batch_size: int | None = None,
) -> SteeringResult:
    """Steer with the particles of every group split over the ranks (see the module docstring).

    Args:
        model: the StepModel this rank runs; it must declare its particle rows
            (:class:`~fksteer.smc.rows.ParticleRows`, checked by
            :func:`~fksteer.distributed.particle_state.as_shardable`); when a rank runs several
            shards it is replicated (``replicate()``), or pass one model per local shard.
        reward: as for :func:`fksteer.steer`.
        config: as for :func:`fksteer.steer`.
        prompts: as for :func:`fksteer.steer`.
        method: as for :func:`fksteer.steer`.
        seed: the run's seed (an int: every rank must derive the same generators from it).
        num_shards: S, the shards of particles (default: the world size); the result depends on
            S, not on how many ranks run them. S must divide K and the world size must divide S.
        communicator: the ranks (default: torch.distributed's default group, else one process).
        generator_device: device of the per-shard generators (the model's noise).
        transfers: a list that receives one :class:`Transfer` per resampling step.
        guidance_batch_size: particles per backward pass of the guidance gradient, as for
            :func:`fksteer.steer` (default: the reward's ``batch_size``, else a whole shard).

    Returns:
        the whole :class:`~fksteer.smc.result.SteeringResult`, on every rank.
    """
    run = _ParticleParallelRun(
        model, reward, config, prompts, seed, method, num_shards,
        communicator or Communicator.current(), generator_device, guidance_batch_size,
    )
    return run.steer(transfers)


class _ParticleParallelRun:
    def __init__(
        self, model, reward, config, prompts, seed, method, num_shards, communicator,
        generator_device, guidance_batch_size,
    ) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed={seed!r}: pass an int (every rank derives its noise from it).")
        self.communicator = communicator
        self.reward = reward
        self.group_prompts = group_prompts(prompts)
        num_shards = communicator.world_size if num_shards is None else num_shards
        self.layout = ParticleLayout(
            len(self.group_prompts), config.num_particles, num_shards, communicator.world_size
        )
        self.shards = self.layout.rank_shards(communicator.rank)
        self.models = self._models(model)
        first = self.models[0]
        self.config = config
        self.guidance_batch_size = guidance_batch_size
        require_guided_model(first, config)
        self.num_predictions = getattr(first, "num_predictions", 1)
        self.system = ParticleSystem(
            reward, config, num_steps=first.num_steps, prompts=prompts,
            generator=torch.Generator().manual_seed(seed), method=method,
            num_predictions=self.num_predictions,
            stable_slots=True,  # a surviving particle stays where it is: fewer transfers
        )
        self.generators = [
            shard_generator(seed, shard, num_shards, generator_device) for shard in self.shards
        ]
        per_particle = self.layout.shard_particles
        self.reward_prompts = (
            None if prompts is None
            else [p for p in self.group_prompts for _ in range(per_particle)
                  for _ in range(self.num_predictions)]
        )
        self.lockstep = Lockstep(communicator)
        self.states: list[Any] = []
        self.outputs: list[Any] = []

    def _models(self, model) -> list[ShardableModel]:
        count = len(self.shards)
        if isinstance(model, (list, tuple)):
            if len(model) != count:
                raise ValueError(
                    f"got {len(model)} models for the {count} shard(s) this rank runs: pass one "
                    "model, or one per local shard."
                )
            models = [as_shardable(m) for m in model]
        else:
            first = as_shardable(model, replicas=count)
            models = [first] + [first.replicate() for _ in range(count - 1)]
        steps = {m.num_steps for m in models}
        if len(steps) != 1:
            raise ValueError(f"the shards' models have different num_steps: {sorted(steps)}.")
        return models

    # -- the loop ---------------------------------------------------------------------------

    def steer(self, transfers: list[Transfer] | None) -> SteeringResult:
        system, lockstep = self.system, self.lockstep
        with torch.no_grad():
            lockstep.run(self._init)
            for step in range(system.num_steps):
                record = self._step(step)
                if record is not None and transfers is not None:
                    transfers.append(record)
            times = StepTimes()
            start = time.perf_counter()
            local = lockstep.run(self._final)
            gathered = lockstep.sync(local)
            rewards = {k: v for payload in gathered for k, v in payload[0].items()}
            decoded = {k: v for payload in gathered for k, v in payload[1].items()}
            times.add("reward", start)
            return system.finish(
                self._assemble(decoded), rewards=self._assemble(rewards), times=times
            )

    def _step(self, step: int) -> Transfer | None:
        """One step on every rank: predict, score and exchange particles where due, move."""
        system, lockstep = self.system, self.lockstep
        times, transfer = StepTimes(), None
        start = time.perf_counter()
        scored = system.is_scoring_step(step)
        local = lockstep.run(self._predict, step, scored)
        times.add("model", start)
        if scored:
            rewards, spec, reward_seconds = local if local is not None else ({}, None, 0.0)
            times.model -= reward_seconds  # the local decode and reward ran inside _predict
            times.reward += reward_seconds
            gathered = lockstep.sync((rewards, spec))
            specs = {payload[1] for payload in gathered}
            if len(specs) != 1:
                raise ValueError(
                    f"the ranks' particles differ in shape or dtype at step {step}: "
                    f"{sorted(map(str, specs))}."
                )
            shard_rewards = {k: v for payload in gathered for k, v in payload[0].items()}
            ancestors = system.weigh_and_resample(step, rewards=self._assemble(shard_rewards))
            if ancestors is not None:
                start = time.perf_counter()
                transfer = self._transfer(step, ancestors)
                times.add("permute", start)
        start = time.perf_counter()
        strength = system.guidance_strength(step)
        ratios = lockstep.run(self._move, step, strength)
        if strength is not None:  # every rank weighs every particle's proposal correction
            gathered = lockstep.sync(ratios)
            shard_ratios = {k: v for payload in gathered for k, v in payload.items()}
            system.reweight(step, self._assemble(shard_ratios))
        times.add("model", start)
        system.record(step, times, evaluations=system.plan.evaluations(guided=strength is not None))
        return transfer

    def _init(self) -> None:
        K_shard = self.layout.shard_particles
        self.states = [
            model.init(self.group_prompts, K_shard, generator)
            for model, generator in zip(self.models, self.generators, strict=True)
        ]
        self.outputs = [None] * len(self.models)

    def _predict(self, step: int, scored: bool):
        predictions = []
        for index, (model, generator) in enumerate(
            zip(self.models, self.generators, strict=True)
        ):
            self.outputs[index], prediction = model.predict(self.states[index], step, generator)
            predictions.append(prediction)
        if not scored:
            return None
        start = time.perf_counter()
        rewards = {}
        for shard, model, prediction in zip(self.shards, self.models, predictions, strict=True):
            rewards[shard] = self._score(model.decode(prediction, final=False))
        reward_seconds = time.perf_counter() - start
        leaves, _ = flatten_rows(self.models[0].particle_rows(self.states[0], self.outputs[0]))
        return rewards, row_spec(leaves, self.layout.shard_size), reward_seconds

    def _score(self, decoded: Any) -> torch.Tensor:
        values = self._shard_rewards(decoded, self.reward_prompts, self.num_predictions)
        return values.reshape(self.layout.shard_size, -1).squeeze(-1)

    def _shard_rewards(
        self, decoded: Any, prompts: list | None, per_particle: int, final: bool = False
    ) -> torch.Tensor:
        """The reward (``final``: the final reward) of this shard's flat batch
        (``per_particle`` samples per particle)."""
        expected = self.layout.shard_size * per_particle
        if len(decoded) != expected:
            raise ValueError(
                f"the model decoded {len(decoded)} samples on this shard but {expected} were "
                "expected."
            )
        return call_reward(self.system.final_reward if final else self.reward, decoded, prompts)

    def _move(self, step: int, strength: float | torch.Tensor | None) -> dict[int, torch.Tensor]:
        """Move every local shard; with guidance, return each shard's log density ratios."""
        ratios = {}
        for index, (shard, model, generator) in enumerate(
            zip(self.shards, self.models, self.generators, strict=True)
        ):
            state, output = self.states[index], self.outputs[index]
            if strength is None:
                self.states[index] = model.move(state, output, step, generator)
                continue
            if isinstance(strength, torch.Tensor):  # per particle: this shard's rows
                shard_strength = strength[self.layout.global_index(shard)]
            else:
                shard_strength = strength
            gradient = reward_gradient(
                model.guidance_input(state),
                lambda x, rows, model=model, state=state: model.clean_from(state, x, rows, step),
                lambda clean, model=model: model.decode(clean, final=False),
                self.reward,
                self.reward_prompts,
                shard_strength,
                self.guidance_batch_size,
            )
            self.states[index], ratios[shard] = model.guided_move(
                state, output, step, generator, gradient
            )
        return ratios

    def _final(self):
        rewards, decoded = {}, {}
        for shard, model, state in zip(self.shards, self.models, self.states, strict=True):
            samples = model.decode(model.final_sample(state), final=True)
            prompts = (
                None if self.reward_prompts is None
                else self.reward_prompts[:: self.num_predictions]
            )
            rewards[shard] = self._shard_rewards(samples, prompts, 1, final=True)
            decoded[shard] = samples.detach().cpu() if isinstance(samples, torch.Tensor) else (
                list(samples)
            )
        return rewards, decoded

    # -- moving particles -------------------------------------------------------------------

    def _assemble(self, per_shard: dict[int, Any]) -> Any:
        """Shard-major pieces -> the engine's flat group-major order over all G*K particles."""
        layout = self.layout
        flat = torch.arange(layout.num_groups * layout.num_particles)
        source = layout.shard_of(flat) * layout.shard_size + layout.local_index(flat)
        pieces = [per_shard[shard] for shard in range(layout.num_shards)]
        if isinstance(pieces[0], torch.Tensor):
            return torch.cat(pieces).index_select(0, source.to(pieces[0].device))
        items = [item for piece in pieces for item in piece]
        return [items[i] for i in source.tolist()]

    def _transfer(self, step: int, ancestors: torch.Tensor) -> Transfer:
        """Give every local shard the rows of its new particles: particle p <- ancestors[p]."""
        layout, rank = self.layout, self.communicator.rank
        world = self.communicator.world_size
        flat = torch.arange(ancestors.numel())
        source_rank = layout.rank_of(ancestors)
        target_rank = layout.rank_of(flat)
        crossing = source_rank != target_rank
        # needed[a][b]: sorted unique particles that rank b needs from rank a
        needed = {
            (a, b): torch.unique(ancestors[crossing & (source_rank == a) & (target_rank == b)])
            for a in range(world) for b in range(world) if a != b
        }
        trees = [m.particle_rows(s, o) for m, s, o in
                 zip(self.models, self.states, self.outputs, strict=True)]
        flattened = [flatten_rows(tree) for tree in trees]
        leaves = [leaf_list for leaf_list, _ in flattened]
        size = row_bytes(leaves[0])
        # local pool: this rank's shards, shard-major
        first_shard = self.shards[0]
        pool_leaves = [
            torch.cat([shard_leaves[i] for shard_leaves in leaves]) if len(leaves) > 1
            else leaves[0][i]
            for i in range(len(leaves[0]))
        ]
        sends = {}
        for target in range(world):
            index = needed.get((rank, target))
            if index is None or index.numel() == 0:
                continue
            local = (layout.shard_of(index) - first_shard) * layout.shard_size + layout.local_index(
                index
            )
            packed = self.lockstep.run(
                pack_rows, pool_leaves, local, self.communicator.transport_device
            )
            if packed is None:  # keep the exchange in step; the error surfaces at the next sync
                packed = torch.zeros(index.numel(), size, dtype=torch.uint8)
            sends[target] = packed.reshape(-1)
        receives = {
            source: needed[(source, rank)].numel() * size
            for source in range(world)
            if source != rank and needed[(source, rank)].numel() > 0
        }
        received = self.communicator.exchange(sends, receives)
        self.lockstep.run(self._rebuild, ancestors, pool_leaves, flattened, needed, received, size)
        rows_sent = sum(int(index.numel()) for index in needed.values())
        total = ancestors.numel()
        return Transfer(
            step=step,
            slots_from_other_ranks=int(crossing.sum()),
            rows_sent=rows_sent,
            row_bytes=size,
            bytes_sent=rows_sent * size,
            all_gather_bytes=(world - 1) * total * size,
        )

    def _rebuild(self, ancestors, pool_leaves, flattened, needed, received, size) -> None:
        layout, rank = self.layout, self.communicator.rank
        local_count = len(self.shards) * layout.shard_size
        # where each global particle sits in the pool: local rows first, then received ones
        position = torch.full((ancestors.numel(),), -1, dtype=torch.long)
        local_particles = torch.cat([layout.global_index(shard) for shard in self.shards])
        first_shard = self.shards[0]
        position[local_particles] = (
            (layout.shard_of(local_particles) - first_shard) * layout.shard_size
            + layout.local_index(local_particles)
        )
        extra = [pool_leaves]
        offset = local_count
        for source in sorted(received):
            index = needed[(source, rank)]
            buffer = received[source].reshape(index.numel(), size)
            extra.append(unpack_rows(buffer, pool_leaves))
            position[index] = offset + torch.arange(index.numel())
            offset += index.numel()
        if len(extra) > 1:
            pool = [torch.cat([part[i] for part in extra]) for i in range(len(pool_leaves))]
        else:
            pool = pool_leaves
        for index, shard in enumerate(self.shards):
            sources = position[ancestors[layout.global_index(shard)]]
            if bool((sources < 0).any()):
                raise RuntimeError(f"particle transfer plan is incomplete on rank {rank}.")
            _, rebuild = flattened[index]
            rows = rebuild([leaf.index_select(0, sources.to(leaf.device)) for leaf in pool])
            self.states[index], self.outputs[index] = self.models[index].with_particle_rows(
                self.states[index], self.outputs[index], rows
            )
