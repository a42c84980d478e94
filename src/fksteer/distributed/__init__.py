"""Scale out with torch.distributed: prompts, or one prompt's particles, over many processes.

    from fksteer.distributed import steer_prompt_parallel, steer_particle_parallel
    result = steer_prompt_parallel(model, reward, config, prompts=prompts, seed=0)
    result = steer_particle_parallel(model, reward, config, prompts=["a"], seed=0)

    torchrun --nproc-per-node 4 -m fksteer sample --prompts-file prompts.txt     # CLI

Modules, one concept each:

- ``communicator``: the ranks of a run and their collectives (a single process is world size 1);
- ``lockstep``: an error on one rank stops every rank with that error at the next collective;
- ``seeding``: seeds derived from (seed, what the work is), never from where it runs;
- ``sharding``: which rank holds which groups, and the layout of particle shards;
- ``prompt_parallel``: per-group-seed mode, groups split over ranks, results gathered;
- ``particle_state``: reading and writing particles' rows (state, output, scheduler history);
- ``particle_parallel``: one group's particles split over ranks, only the moved ones sent;
- ``modes``: the path the command line takes; ``launch``: processes started by torchrun/srun.

Nothing here is imported by ``import fksteer``; torch.distributed is touched only when a process
group is initialised (by ``launch.start_process_group`` or by the user).
"""

from fksteer.distributed.communicator import Communicator
from fksteer.distributed.launch import launched, start_process_group, stop_process_group
from fksteer.distributed.lockstep import Lockstep, RankFailedError
from fksteer.distributed.particle_parallel import Transfer, steer_particle_parallel
from fksteer.distributed.particle_state import ShardableModel, as_shardable
from fksteer.distributed.prompt_parallel import run_prompt_parallel, steer_prompt_parallel
from fksteer.distributed.seeding import derive_seed, group_generator, shard_generator
from fksteer.distributed.sharding import ParticleLayout, split_range

__all__ = [
    "Communicator",
    "Lockstep",
    "ParticleLayout",
    "RankFailedError",
    "ShardableModel",
    "Transfer",
    "as_shardable",
    "derive_seed",
    "group_generator",
    "launched",
    "run_prompt_parallel",
    "shard_generator",
    "split_range",
    "start_process_group",
    "steer_particle_parallel",
    "steer_prompt_parallel",
    "stop_process_group",
]
