"""Which process holds which groups and particles: `split_range`, `ParticleLayout`.

    from fksteer.distributed.sharding import split_range, ParticleLayout
    my_groups = split_range(num_groups, world_size, rank)         # a contiguous range
    layout = ParticleLayout(num_groups=G, num_particles=K, num_shards=S)
    layout.global_index(shard, local)                            # flat G*K index

Prompt-parallel runs give each rank a contiguous block of groups. Particle-parallel runs split
every group's K particles into S equal shards: shard s holds particles s*K/S .. (s+1)*K/S - 1 of
every group, laid out group-major as a StepModel expects (G groups of K/S particles), so each
shard runs the unchanged model on a batch of G*K/S particles. Global particle p = g*K + k (the
engine's flat, group-major index) lives on shard (k // (K/S)) at local index g*K/S + k % (K/S).
The S shards are spread over the W ranks in contiguous blocks of S/W.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["split_range", "ParticleLayout"]


def split_range(num_items: int, num_parts: int, part: int) -> range:
    """The ``part``-th of ``num_parts`` contiguous blocks of ``range(num_items)``.

    Block sizes differ by at most one, the larger blocks first; a part may be empty when
    ``num_items < num_parts``.
    """
    if num_parts < 1 or not 0 <= part < num_parts:
        raise ValueError(f"part {part} of {num_parts} parts does not exist.")
    base, extra = divmod(num_items, num_parts)
    start = part * base + min(part, extra)
    return range(start, start + base + (1 if part < extra else 0))


@dataclass(frozen=True)
class ParticleLayout:
    """G groups of K particles split into S shards of K/S particles per group, over W ranks.

    Raises a ValueError at construction unless S divides K and W divides S.
    """

    num_groups: int
    num_particles: int
    num_shards: int
    world_size: int = 1

    def __post_init__(self) -> None:
        for name in ("num_groups", "num_particles", "num_shards", "world_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} is invalid: pass a positive int.")
        if self.num_particles % self.num_shards:
            raise ValueError(
                f"num_particles={self.num_particles} is not divisible by num_shards="
                f"{self.num_shards}: particle-parallel runs split every group's particles into "
                "equal shards; pass a multiple of the number of shards (processes)."
            )
        if self.num_shards % self.world_size:
            raise ValueError(
                f"num_shards={self.num_shards} is not divisible by the world size "
                f"{self.world_size}: every rank must hold the same number of shards."
            )

    @property
    def shard_particles(self) -> int:
        """K/S: particles of each group on one shard."""
        return self.num_particles // self.num_shards

    @property
    def shard_size(self) -> int:
        """G*K/S: particles on one shard."""
        return self.num_groups * self.shard_particles

    @property
    def shards_per_rank(self) -> int:
        """Shards each rank runs."""
        return self.num_shards // self.world_size

    def rank_shards(self, rank: int) -> range:
        """The shards held by ``rank``."""
        return range(rank * self.shards_per_rank, (rank + 1) * self.shards_per_rank)

    def global_index(self, shard: int, local: torch.Tensor | None = None) -> torch.Tensor:
        """Flat G*K indices of ``shard``'s local particles (all of them by default), int64."""
        if local is None:
            local = torch.arange(self.shard_size)
        per_group = self.shard_particles
        return (local // per_group) * self.num_particles + shard * per_group + local % per_group

    def shard_of(self, index: torch.Tensor) -> torch.Tensor:
        """The shard holding each flat particle index."""
        return (index % self.num_particles) // self.shard_particles

    def local_index(self, index: torch.Tensor) -> torch.Tensor:
        """Each flat particle's index within its shard."""
        per_group = self.shard_particles
        return (index // self.num_particles) * per_group + (index % self.num_particles) % per_group

    def rank_of(self, index: torch.Tensor) -> torch.Tensor:
        """The rank holding each flat particle index."""
        return self.shard_of(index) // self.shards_per_rank
