"""fksteer.distributed: prompt- and particle-parallel steering over processes (gloo, CPU).

The multi-process tests start two worker processes (tests/distributed_worker.py, one rank each,
127.0.0.1 and a free port) that run the cases of tests/distributed_cases.py, and compare what
each rank returned with the same case run here in one process: bitwise, since every random draw
comes from a generator named by the work it serves (seed, group or shard), never by the rank.
Every launch has a wall-clock limit and a short collective timeout, so a hang fails the test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from distributed_cases import (
    PROMPTS,
    SEED,
    mixture_problem,
    particle_guided_case,
    particle_masked_case,
    particle_mixture_case,
    particle_unet_case,
    prompt_case,
    result_record,
)
from distributed_helpers import ROOT, ShardedNoiseModel, environment, free_port, run_ranks

from fksteer import FKConfig, steer
from fksteer.distributed import (
    Communicator,
    ParticleLayout,
    as_shardable,
    derive_seed,
    group_generator,
    launched,
    split_range,
    steer_particle_parallel,
)
from fksteer.distributed.particle_state import flatten_rows, pack_rows, unpack_rows
from fksteer.smc.result import concatenate_results

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SCENARIOS = ["prompt", "particle-mixture", "particle-unet", "particle-guided", "particle-masked",
             "error-particle", "error-prompt"]


def load(folder: Path, scenario: str, rank: int) -> dict:
    return torch.load(folder / f"{scenario}_rank{rank}.pt", weights_only=False)


def assert_same(actual: dict, expected: dict) -> None:
    """Every field of two result records equal, tensors bitwise."""
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        other = actual[key]
        if isinstance(value, torch.Tensor):
            assert torch.equal(other, value), key
        elif isinstance(value, list) and value and any(isinstance(v, torch.Tensor) for v in value):
            assert len(other) == len(value), key
            for step, (a, b) in enumerate(zip(other, value, strict=True)):
                assert (a is None and b is None) or torch.equal(a, b), f"{key} at step {step}"
        else:
            assert other == value, key


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    """Run every scenario on 2 ranks once; the folder of their records."""
    pytest.importorskip("diffusers")
    folder = tmp_path_factory.mktemp("ranks")
    processes = run_ranks([",".join(SCENARIOS), str(folder)], timeout=180, dist_timeout=60)
    for rank, process in enumerate(processes):
        assert process.returncode == 0, f"rank {rank}:\n{process.stderr[-4000:]}"
    return folder


# -- single process ---------------------------------------------------------------------------


def test_layout_maps_every_particle_to_one_shard_and_back():
    layout = ParticleLayout(num_groups=3, num_particles=8, num_shards=4, world_size=2)
    seen = torch.cat([layout.global_index(shard) for shard in range(4)])
    assert sorted(seen.tolist()) == list(range(24))
    flat = torch.arange(24)
    shard, local = layout.shard_of(flat), layout.local_index(flat)
    for p in range(24):
        assert int(layout.global_index(int(shard[p]), local[p : p + 1])) == p
    # shard s holds particles 2s, 2s+1 of every group; ranks hold contiguous pairs of shards
    assert layout.global_index(1).tolist() == [2, 3, 10, 11, 18, 19]
    assert layout.rank_of(flat[:8]).tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    with pytest.raises(ValueError, match="num_particles=6 is not divisible by num_shards=4"):
        ParticleLayout(1, 6, 4)
    with pytest.raises(ValueError, match="not divisible by the world size 3"):
        ParticleLayout(1, 8, 4, world_size=3)
    assert [list(split_range(5, 2, r)) for r in range(2)] == [[0, 1, 2], [3, 4]]
    assert list(split_range(1, 3, 2)) == []


def test_derived_seeds_name_the_work_not_the_process():
    assert derive_seed(0, 1, 3) == derive_seed(0, 1, 3)
    seeds = {derive_seed(seed, domain, index)
             for seed in range(4) for domain in (1, 2) for index in range(50)}
    assert len(seeds) == 4 * 2 * 50
    assert all(0 <= s < 2**63 for s in seeds)
    first = torch.randn(3, generator=group_generator(5, 2))
    assert torch.equal(first, torch.randn(3, generator=group_generator(5, 2)))
    assert not torch.equal(first, torch.randn(3, generator=group_generator(5, 1)))


def test_one_process_particle_driver_equals_the_engine_on_the_same_noise_layout(monkeypatch):
    """The driver (2 shards, one process) vs fksteer.steer over a per-shard-noise wrapper, whose
    particle system also keeps surviving particles in place after resampling, as the driver's
    does."""
    import functools

    from fksteer.smc import engine as engine_module
    from fksteer.smc.particles import ParticleSystem

    monkeypatch.setattr(engine_module, "ParticleSystem",
                        functools.partial(ParticleSystem, stable_slots=True))
    model, reward, lmbda = mixture_problem()
    config = FKConfig(num_particles=8, lmbda=lmbda, ess_threshold=0.7)
    driver = steer_particle_parallel(model, reward, config, prompts=PROMPTS, seed=SEED,
                                     num_shards=2)
    engine = steer(ShardedNoiseModel(model, 2, SEED), reward, config, prompts=PROMPTS,
                   generator=torch.Generator().manual_seed(SEED))
    assert_same(result_record(driver), result_record(engine))
    assert sum(int(step.resampled.sum()) for step in engine.trace) > 0
    batched = steer(model, reward, config, prompts=PROMPTS,
                    generator=torch.Generator().manual_seed(SEED))
    assert not torch.equal(driver.samples, batched.samples)  # another noise layout


@pytest.mark.parametrize("guidance", [0.0, 1.0])
def test_particle_driver_matches_the_exact_tilted_target(guidance):
    """4 shards in one process, with and without reward-gradient guidance: the weighted
    particles against the closed-form tilted mixture (the checks of test_exactness)."""
    from test_exactness import (
        GROUPS,
        MIXTURE_DIRECTION,
        MIXTURE_LAMBDA,
        PARTICLES,
        SCHEDULES,
        check_mixture,
    )

    from fksteer.models import GaussianMixtureDiffusion, LinearReward

    model = GaussianMixtureDiffusion.default(num_steps=8, dtype=torch.float64)
    config = FKConfig(num_particles=PARTICLES, lmbda=MIXTURE_LAMBDA, guidance=guidance,
                      **SCHEDULES["fixed"])
    result = steer_particle_parallel(model, LinearReward(MIXTURE_DIRECTION), config,
                                     prompts=list(range(GROUPS)), seed=5, num_shards=4)
    check_mixture(model, result)


def test_particle_driver_scores_final_samples_with_the_final_reward():
    """A reward declaring final_reward (as the image rewards' exact preprocessing does): the
    driver's final potential uses it, so the target is the final reward's."""
    from test_exactness import (
        GROUPS,
        MIXTURE_DIRECTION,
        MIXTURE_LAMBDA,
        PARTICLES,
        SCHEDULES,
        IntermediateAndFinal,
        check_mixture,
    )

    from fksteer.models import GaussianMixtureDiffusion

    model = GaussianMixtureDiffusion.default(num_steps=8, dtype=torch.float64)
    config = FKConfig(num_particles=PARTICLES, lmbda=MIXTURE_LAMBDA, **SCHEDULES["fixed"])
    reward = IntermediateAndFinal([-0.5, 1.0], MIXTURE_DIRECTION)
    result = steer_particle_parallel(model, reward, config, prompts=list(range(GROUPS)),
                                     seed=6, num_shards=2)
    flat = result.samples.reshape(-1, 2)
    torch.testing.assert_close(
        result.rewards.reshape(-1), reward.final_reward(flat).double(), rtol=0, atol=1e-12
    )
    check_mixture(model, result)


@pytest.mark.parametrize("kind", ["unet-dpm", "embedded"])
def test_particle_rows_written_back_permuted_equal_the_models_own_permute(kind):
    pytest.importorskip("diffusers")
    from distributed_helpers import tiny_unet_model

    if kind == "unet-dpm":
        model = tiny_unet_model(steps=4)
        prompts = [None]
    else:
        from fksteer.embedded.image_model import load_image_model

        model = load_image_model("weak", num_inference_steps=3)
        prompts = ["bag"]
    with torch.no_grad():
        generator = torch.Generator().manual_seed(0)
        state = model.init(prompts, 4, generator)
        for step in range(2):  # two steps: DPM-Solver++'s history holds a per-particle output
            output, _ = model.predict(state, step, generator)
            state = model.move(state, output, step, generator)
        output, _ = model.predict(state, 2, generator)
        ancestors = torch.tensor([3, 3, 0, 1])
        shardable = as_shardable(model)
        replica = shardable.replicate()
        leaves, rebuild = flatten_rows(shardable.particle_rows(state, output))
        assert replica is not shardable
        # through bytes, as between processes
        moved = unpack_rows(pack_rows(leaves, ancestors, torch.device("cpu")), leaves)
        ours = shardable.with_particle_rows(state, output, rebuild(moved))
        ours_history = flatten_rows(shardable.particle_rows(*ours))[0]
        # the model's own permute, on a fresh copy of the same history
        theirs = replica.with_particle_rows(state, output, rebuild(leaves))
        theirs = replica.permute(*theirs, ancestors)
        theirs_history = flatten_rows(replica.particle_rows(*theirs))[0]
        assert len(ours_history) == len(theirs_history) >= 3 + (kind == "unet-dpm")
        for a, b in zip(ours_history, theirs_history, strict=True):
            assert torch.equal(a, b)


@pytest.mark.parametrize("rows", [[1], [2, 0]])
def test_rows_survive_bytes_with_odd_widths_and_a_single_row(rows):
    """A bool leaf makes a row's width odd; one received row is a slice that is contiguous but
    keeps the buffer's stride: both must come back bitwise."""
    leaves = [torch.arange(6).reshape(3, 2), torch.tensor([True, False, True]),
              torch.randn(3, 2, dtype=torch.float64)]
    index = torch.tensor(rows)
    unpacked = unpack_rows(pack_rows(leaves, index, torch.device("cpu")), leaves)
    for leaf, back in zip(leaves, unpacked, strict=True):
        assert back.dtype == leaf.dtype and torch.equal(back, leaf[index])


def test_concatenated_results_keep_each_groups_trace():
    model, reward, lmbda = mixture_problem()
    config = FKConfig(num_particles=4, lmbda=lmbda, ess_threshold=0.5)
    parts = [steer(model, reward, config, prompts=[p], generator=group_generator(SEED, g))
             for g, p in enumerate(PROMPTS)]
    joined = concatenate_results(parts)
    assert joined.prompts == PROMPTS and joined.nfe == sum(part.nfe for part in parts)
    assert torch.equal(joined.weights, torch.cat([part.weights for part in parts]))
    identity = torch.arange(4)[None]
    mixed = 0
    for index, step in enumerate(joined.trace):
        own = [part.trace[index].ancestors for part in parts]
        if all(a is None for a in own):
            assert step.ancestors is None
            continue
        mixed += any(a is None for a in own)
        expected = torch.cat([identity if a is None else a for a in own])
        assert torch.equal(step.ancestors, expected)
        assert torch.equal(step.resampled, torch.cat([p.trace[index].resampled for p in parts]))
    assert mixed > 0  # some step resampled one group and not another


def test_slurm_variables_stand_in_for_torchrun_ones(monkeypatch):
    from fksteer.distributed import launch

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_LOCALID", "3")
    assert not launched()  # SLURM alone (no MASTER_ADDR): one process per task, not a launch
    monkeypatch.setenv("MASTER_ADDR", "node1")
    assert launched()
    assert launch.local_device(torch.device("cuda")) == torch.device("cuda", 3)
    assert launch.local_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match="fksteer bench exact does not run distributed"):
        launch.refuse_distributed("bench exact")


def test_models_without_known_per_particle_state_are_refused():
    with pytest.raises(ValueError, match="particle_rows"):
        as_shardable(object())


# -- two processes ----------------------------------------------------------------------------


def test_prompt_parallel_on_two_ranks_equals_one_process_per_group_seeds(two_ranks):
    expected = result_record(prompt_case(Communicator(), {}))
    for rank in range(2):
        assert_same(load(two_ranks, "prompt", rank)["result"], expected)
    # and each group is exactly fksteer.steer of that group alone with its derived generator
    model, reward, lmbda = mixture_problem()
    config = FKConfig(num_particles=4, lmbda=lmbda, ess_threshold=0.5)
    for group, prompt in enumerate(PROMPTS):
        alone = steer(model, reward, config, prompts=[prompt],
                      generator=group_generator(SEED, group))
        assert torch.equal(expected["samples"][group], alone.samples[0])
        assert torch.equal(expected["log_evidence"][group], alone.log_evidence[0])


@pytest.mark.parametrize("scenario, case", [("particle-mixture", particle_mixture_case),
                                            ("particle-unet", particle_unet_case),
                                            ("particle-guided", particle_guided_case),
                                            ("particle-masked", particle_masked_case)])
def test_particle_parallel_on_two_ranks_equals_one_process_with_two_shards(
    two_ranks, scenario, case
):
    reference: dict = {}
    expected = result_record(case(Communicator(), reference))
    assert reference["transfers"] and all(t["bytes_sent"] == 0 for t in reference["transfers"])
    records = [load(two_ranks, scenario, rank) for rank in range(2)]
    for record in records:
        assert_same(record["result"], expected)
    transfers = records[0]["transfers"]
    assert transfers == records[1]["transfers"]
    assert sum(t["rows_sent"] for t in transfers) > 0  # particles did cross between the ranks
    for t in transfers:
        assert t["bytes_sent"] == t["rows_sent"] * t["row_bytes"] <= t["all_gather_bytes"]
        assert t["rows_sent"] <= t["slots_from_other_ranks"]


@pytest.mark.parametrize("scenario", ["error-particle", "error-prompt"])
def test_an_error_on_one_rank_stops_every_rank_with_that_error(two_ranks, scenario):
    for rank in range(2):
        record = load(two_ranks, scenario, rank)
        assert "result" not in record
        assert record["error_type"] == "RewardFailure"
        assert record["error"] == "boom on rank 1 at call 3"
    notes = load(two_ranks, scenario, 0)["notes"]
    assert notes and "raised on rank 1" in notes[0] and "RewardFailure" in notes[0]


def test_a_rank_that_dies_makes_the_others_fail_not_hang(tmp_path):
    processes = run_ranks(["dead-rank", str(tmp_path)], timeout=60, dist_timeout=10)
    assert processes[1].returncode == 3
    assert processes[0].returncode != 0
    record = load(tmp_path, "dead-rank", 0)
    assert "result" not in record and record["error_type"] == "RuntimeError"


def torchrun_fksteer(arguments: list[str]) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node 2 -m fksteer ARGUMENTS``, which must succeed within 180 s."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
               "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
               "-m", "fksteer", *arguments]
    try:
        process = subprocess.run(command, env=environment({"FKSTEER_DIST_TIMEOUT": "60"}),
                                 cwd=ROOT, capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        pytest.fail(f"torchrun fksteer {' '.join(arguments[:2])} did not finish in 180 s")
    assert process.returncode == 0, process.stderr[-4000:]
    return process


def test_torchrun_sample_writes_each_particle_once_and_equals_one_process(tmp_path, capsys):
    pytest.importorskip("diffusers")
    pytest.importorskip("PIL")
    from cli_helpers import run_cli

    arguments = ["sample", "sneaker", "bag", "dress", "--steps", "4", "--num-particles", "2"]
    out = tmp_path / "torchrun"
    process = torchrun_fksteer([*arguments, "--out", str(out)])
    assert process.stdout.count("best reward") == 3  # rank 0 alone reports
    images = sorted(path.name for path in (out / "images").iterdir())
    assert images == [f"g{g:03d}_k{k:03d}.png" for g in range(3) for k in range(2)]
    config = json.loads((out / "config.json").read_text())
    assert config["world_size"] == 2 and config["parallel"] == "prompts"
    assert not list(tmp_path.glob(".*"))  # no staging leftovers

    single = tmp_path / "single"
    code, _, stderr = run_cli([*arguments, "--per-group-seeds", "--out", single], capsys)
    assert code == 0, stderr
    lines = (out / "results.jsonl").read_text().splitlines()
    assert lines == (single / "results.jsonl").read_text().splitlines()
    for name in images:
        assert (out / "images" / name).read_bytes() == (single / "images" / name).read_bytes()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["log_evidence"] == json.loads((single / "summary.json").read_text())[
        "log_evidence"]


def test_torchrun_bench_shares_the_units_and_writes_what_one_process_writes(tmp_path, capsys):
    """`fksteer bench image --quick` on 2 processes: rank 0 appends every rank's lines in the
    order one process writes them; only the timings differ."""
    pytest.importorskip("diffusers")
    from cli_helpers import run_cli

    out = tmp_path / "torchrun"
    process = torchrun_fksteer(["bench", "image", "--quick", "--out", str(out)])
    assert process.stdout.count("# bench image") == 1  # rank 0 alone reports
    single = tmp_path / "single"
    code, _, stderr = run_cli(["bench", "image", "--quick", "--out", single], capsys)
    assert code == 0, stderr

    def lines(folder):
        records = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if "seconds" not in k} for r in records]

    assert lines(out) == lines(single) and len(lines(single)) > 0


@pytest.mark.parametrize("parallel", ["prompts", "particles"])
def test_torchrun_text_writes_each_particle_once(tmp_path, capsys, parallel):
    """`fksteer text` under torchrun in both modes; split by prompts it equals one process
    with per-group seeds, line for line."""
    pytest.importorskip("tokenizers")
    from cli_helpers import run_cli

    arguments = ["text", "The best", "You will", "--steps", "4", "--seq-len", "6",
                 "--num-particles", "4", "--reward", "profanity-words", "--no-report"]
    out = tmp_path / "torchrun"
    process = torchrun_fksteer([*arguments, "--parallel", parallel, "--out", str(out)])
    assert process.stdout.count("particles, NFE") == 1  # rank 0 alone reports
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [(line["group"], line["particle"]) for line in lines] == [
        (g, k) for g in range(2) for k in range(4)
    ]
    config = json.loads((out / "config.json").read_text())
    assert config["world_size"] == 2 and config["parallel"] == parallel
    if parallel == "prompts":
        single = tmp_path / "single"
        code, _, stderr = run_cli([*arguments, "--per-group-seeds", "--out", single], capsys)
        assert code == 0, stderr
        assert (out / "results.jsonl").read_text() == (single / "results.jsonl").read_text()
