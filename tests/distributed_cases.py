"""The runs of the distributed tests, shared by the worker processes and the test's own
single-process references: each case is a function of the communicator (and a dict it may fill
with extra records, such as the particle transfers)."""

from __future__ import annotations

import os

from distributed_helpers import brightness, tiny_unet_model

from fksteer import FKConfig
from fksteer.distributed import Transfer, steer_particle_parallel, steer_prompt_parallel
from fksteer.models import GaussianMixtureDiffusion, LinearReward

PROMPTS = ["a", "b", "c"]  # 3 groups over 2 ranks: an uneven split
SEED = 11


def mixture_problem():
    problem = GaussianMixtureDiffusion.rare_mode(num_steps=8)
    return problem.model, LinearReward(problem.direction), problem.lmbda


def prompt_case(communicator, record):
    model, reward, lmbda = mixture_problem()
    config = FKConfig(num_particles=4, lmbda=lmbda, ess_threshold=0.5)
    return steer_prompt_parallel(model, reward, config, prompts=PROMPTS, seed=SEED,
                                 communicator=communicator)


def particle_mixture_case(communicator, record, guidance=0.0):
    model, reward, lmbda = mixture_problem()
    config = FKConfig(num_particles=8, lmbda=lmbda, guidance=guidance)
    transfers: list[Transfer] = []
    result = steer_particle_parallel(model, reward, config, prompts=PROMPTS[:2], seed=SEED,
                                     num_shards=2, communicator=communicator,
                                     transfers=transfers)
    record["transfers"] = [vars(t) for t in transfers]
    return result


def particle_guided_case(communicator, record):
    """Reward-gradient guidance: each rank's proposal corrections reach every rank's weights."""
    return particle_mixture_case(communicator, record, guidance=1.0)


def particle_unet_case(communicator, record):
    config = FKConfig(num_particles=4, lmbda=1.0)
    transfers: list[Transfer] = []
    result = steer_particle_parallel(tiny_unet_model(), brightness, config, prompts=None,
                                     seed=SEED, num_shards=2, communicator=communicator,
                                     transfers=transfers)
    record["transfers"] = [vars(t) for t in transfers]
    return result


def particle_masked_case(communicator, record):
    """The masked sampler (exact table denoiser, ancestral unmasking): tokens, positions and the
    cached logits travel between the ranks."""
    from fksteer.integrations.masked import MaskedDiffusionModel
    from fksteer.models import TableDenoiser, TabularMaskedDiffusion

    table = TabularMaskedDiffusion.default()
    model = MaskedDiffusionModel(TableDenoiser(table), seq_len=table.seq_len, num_steps=3,
                                 num_x0_samples=2)

    def count_of_token_two(tokens, prompts):
        return (tokens == 2).sum(dim=-1).double()

    transfers: list[Transfer] = []
    result = steer_particle_parallel(model, count_of_token_two, FKConfig(num_particles=8),
                                     prompts=[None, None], seed=SEED, num_shards=2,
                                     communicator=communicator, transfers=transfers)
    record["transfers"] = [vars(t) for t in transfers]
    return result


class RewardFailure(ValueError):
    pass


def _failing_on_rank_one(communicator):
    calls = []

    def reward(samples, prompts):
        calls.append(len(samples))
        if communicator.rank == 1 and len(calls) == 3:
            raise RewardFailure(f"boom on rank {communicator.rank} at call {len(calls)}")
        return samples[:, 0].double()

    return reward


def error_particle_case(communicator, record):
    model, _, lmbda = mixture_problem()
    return steer_particle_parallel(model, _failing_on_rank_one(communicator),
                                   FKConfig(num_particles=4, lmbda=lmbda), prompts=PROMPTS[:1],
                                   seed=SEED, communicator=communicator)


def error_prompt_case(communicator, record):
    model, reward, lmbda = mixture_problem()
    return steer_prompt_parallel(model, _failing_on_rank_one(communicator),
                                 FKConfig(num_particles=4, lmbda=lmbda), prompts=PROMPTS,
                                 seed=SEED, communicator=communicator)


def dead_rank_case(communicator, record):
    """Rank 1 dies without a word in the middle of a particle-parallel run."""
    model, reward, lmbda = mixture_problem()

    def dying(samples, prompts):
        if communicator.rank == 1:
            os._exit(3)
        return reward(samples, prompts)

    return steer_particle_parallel(model, dying, FKConfig(num_particles=4, lmbda=lmbda),
                                   prompts=PROMPTS[:1], seed=SEED, communicator=communicator)


SCENARIOS = {
    "prompt": prompt_case,
    "particle-mixture": particle_mixture_case,
    "particle-unet": particle_unet_case,
    "particle-guided": particle_guided_case,
    "particle-masked": particle_masked_case,
    "error-particle": error_particle_case,
    "error-prompt": error_prompt_case,
    "dead-rank": dead_rank_case,
}


def result_record(result) -> dict:
    """The fields of a SteeringResult that must agree bitwise, as plain tensors."""
    return {
        "samples": result.samples,
        "weights": result.weights,
        "log_weights": result.log_weights,
        "rewards": result.rewards,
        "best": result.best,
        "log_evidence": result.log_evidence,
        "ancestors": [step.ancestors for step in result.trace],
        "ess": [step.ess for step in result.trace],
        "nfe": result.nfe,
        "samples_scored": result.samples_scored,
        "prompts": list(result.prompts),
    }
