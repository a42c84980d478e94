"""Seeds that depend on what a piece of work is, not on where it runs: `derive_seed`.

    from fksteer.distributed.seeding import group_generator, shard_generator
    generator = group_generator(seed, group)              # per-group-seed mode
    generator = shard_generator(seed, shard, num_shards)  # one shard of particles

A distributed run gives the same bits as one process only if every random draw is made by a
generator whose seed names the work it serves. Here that seed is a hash of the user's seed, a
domain tag (what kind of work) and the work's indices (the group, the shard), so it does not
change with the number of processes or with which process does the work.

The hash is SplitMix64's finaliser (Steele, Lea & Flood 2014, "Fast splittable pseudorandom
number generators"), applied to the running value plus each index times the golden-ratio
constant; its output passes through ``% 2**63`` so that it is a valid ``manual_seed``.
"""

from __future__ import annotations

import torch

__all__ = ["GROUP", "SHARD", "derive_seed", "group_generator", "shard_generator"]

_MASK = 2**64 - 1
_GOLDEN = 0x9E3779B97F4A7C15

#: Domain tags: what the derived seed is for.
GROUP = 1
SHARD = 2


def _splitmix64(value: int) -> int:
    value = (value + _GOLDEN) & _MASK
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK
    return value ^ (value >> 31)


def derive_seed(seed: int, domain: int, *indices: int) -> int:
    """A seed in [0, 2**63) determined by ``seed``, ``domain`` and ``indices`` alone."""
    for name, value in (("seed", seed), ("domain", domain), *(("index", i) for i in indices)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"derive_seed: {name} must be an int, got {value!r}.")
    state = _splitmix64(seed & _MASK)
    for value in (domain, *indices):
        state = _splitmix64((state + (value & _MASK) * _GOLDEN) & _MASK)
    return state % 2**63


def group_generator(seed: int, group: int, device: str | torch.device = "cpu") -> torch.Generator:
    """The generator of group ``group`` (0-based index in the run's prompt list)."""
    return torch.Generator(device=device).manual_seed(derive_seed(seed, GROUP, group))


def shard_generator(
    seed: int, shard: int, num_shards: int, device: str | torch.device = "cpu"
) -> torch.Generator:
    """The generator of particle shard ``shard`` of ``num_shards`` (particle-parallel mode).

    ``num_shards`` is part of the seed: a run with another number of shards is another layout
    of the noise, hence another (equally valid) sample.
    """
    return torch.Generator(device=device).manual_seed(
        derive_seed(seed, SHARD, num_shards, shard)
    )
