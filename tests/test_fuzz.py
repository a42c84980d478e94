"""Property-based fuzzing: configurations, resampling weights and command lines.

- ``FKConfig``: random valid values build; random invalid ones raise ValueError naming the field
  (never TypeError, KeyError or anything else).
- Every resampling scheme on random weight vectors (zeros, denormals, one-hot, huge and tiny
  values, float32 and float64, up to 10^5 particles): ancestors in range, of the right shape, and
  never a zero-weight particle; a row without weight is the documented ValueError.
- Random argument vectors for ``sample``, ``text``, ``demo`` and ``bench``, drawn from a grammar
  of the real options with wrong types, out-of-range values, missing files and bad config files:
  the real command line (``main``) either refuses them (exit 2, one line, nothing written) or
  validates them and reaches the point where it loads a model, where the test stops it (the
  validation before that point is what is fuzzed; models are not replaced).

CI runs a fixed, derandomised share (well under a minute). For a long run set
``FKSTEER_FUZZ_EXAMPLES`` (examples per test, random seeds), e.g.
``FKSTEER_FUZZ_EXAMPLES=2500 pytest tests/test_fuzz.py --hypothesis-show-statistics``.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fksteer.smc.config import FKConfig, LinearRamp  # noqa: E402
from fksteer.smc.potentials import POTENTIALS  # noqa: E402
from fksteer.smc.resampling import RESAMPLING_SCHEMES, resample  # noqa: E402
from fksteer.smc.rules import RESAMPLING_RULES  # noqa: E402

LONG = int(os.environ.get("FKSTEER_FUZZ_EXAMPLES", "0"))


def fuzz_settings(ci_examples: int) -> settings:
    """A fixed, derandomised share in CI; ``FKSTEER_FUZZ_EXAMPLES`` random examples otherwise."""
    return settings(
        max_examples=LONG or ci_examples, derandomize=not LONG, deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                               HealthCheck.data_too_large],
        database=None,
    )


# -- FKConfig ------------------------------------------------------------------------------------

JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(),
                                                         max_size=1),
)
VALID_FIELDS = {
    "num_particles": st.integers(1, 10**6),
    "potential": st.sampled_from(sorted(POTENTIALS)),
    "lmbda": st.one_of(st.floats(-1e6, 1e6),
                       st.builds(LinearRamp, st.floats(-1e3, 1e3), st.floats(-1e3, 1e3))),
    "resampling": st.sampled_from(sorted(RESAMPLING_SCHEMES)),
    "ess_threshold": st.one_of(st.none(), st.floats(1e-6, 1.0)),
    "resample_every": st.integers(1, 100),
    "resample_start": st.integers(0, 100),
    "guidance": st.one_of(st.floats(0, 1e3), st.builds(LinearRamp, st.floats(0, 10),
                                                       st.floats(0, 10))),
}


@fuzz_settings(300)
@given(st.fixed_dictionaries({}, optional={field: st.one_of(valid, JUNK)
                                           for field, valid in VALID_FIELDS.items()}
                             | {"resample_end": st.one_of(st.integers(-5, 200), JUNK),
                                "resampling_rule": st.one_of(
                                    st.sampled_from(sorted(RESAMPLING_RULES)), JUNK)}))
def test_fkconfig_builds_or_raises_a_value_error_naming_the_field(fields):
    try:
        config = FKConfig(**fields)
    except ValueError as error:
        assert str(error).startswith("FKConfig."), error
        assert str(error).split("=")[0].removeprefix("FKConfig.") in fields
        return
    json.dumps(config.to_dict(), default=str)
    for num_steps in (1, 7, 200):
        try:
            steps = config.scoring_steps(num_steps)
        except ValueError as error:
            assert "resample_" in str(error)
        else:
            assert all(0 <= step < num_steps for step in steps)


@fuzz_settings(150)
@given(st.fixed_dictionaries({}, optional=VALID_FIELDS))
def test_valid_fkconfig_values_always_build(fields):
    if fields.get("resample_start") is not None:
        fields["resample_end"] = fields["resample_start"] + 3
    FKConfig(**fields)


# -- resampling weights --------------------------------------------------------------------------

PATTERNS = ("uniform", "one-hot", "denormal", "sparse", "huge-and-tiny", "exponential", "zeros")


@st.composite
def weight_rows(draw):
    """(weights (G, N), pattern): drawn from a seed and a pattern, so 10^5 particles stay cheap
    for hypothesis to generate and shrink."""
    num_particles = draw(st.one_of(st.integers(1, 40), st.sampled_from([1000, 4096, 100_000])))
    groups = draw(st.integers(1, 3))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    pattern = draw(st.sampled_from(PATTERNS))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**32)))
    shape = (groups, num_particles)
    uniform = torch.rand(shape, generator=generator, dtype=torch.float64)
    tiny = torch.finfo(dtype).tiny
    if pattern == "uniform":
        weights = uniform
    elif pattern == "one-hot":
        weights = torch.zeros(shape, dtype=torch.float64)
        weights[torch.arange(groups), (uniform[:, 0] * num_particles).long()] = 1.0
    elif pattern == "denormal":  # below the smallest normal number: subnormal weights
        weights = uniform * tiny * 0.5 * (uniform > 0.3)
    elif pattern == "sparse":
        weights = uniform * (uniform > 0.9)
    elif pattern == "huge-and-tiny":
        weights = torch.where(uniform > 0.5, torch.finfo(dtype).max / (2 * num_particles),
                              tiny * uniform)
    elif pattern == "exponential":  # normalised from log-weights spread over 2000 nats
        weights = torch.softmax((uniform - 0.5) * 4000, dim=-1)
    else:
        weights = torch.zeros(shape, dtype=torch.float64)
    weights = weights.to(dtype)
    if draw(st.booleans()) and num_particles > 1:  # a dead particle in the first row
        weights[0, draw(st.integers(0, num_particles - 1))] = 0.0
    return weights, pattern


@fuzz_settings(100)
@given(weight_rows(), st.integers(1, 3), st.integers(0, 2**32))
def test_every_scheme_never_selects_a_zero_weight_particle(rows, samples_per_particle, seed):
    weights, pattern = rows
    groups, num_particles = weights.shape
    num_samples = min(samples_per_particle * num_particles, 200_000)
    for name in RESAMPLING_SCHEMES:
        generator = torch.Generator().manual_seed(seed)
        dead_row = bool((weights.double().sum(-1) == 0).any())
        if dead_row:
            with pytest.raises(ValueError, match="positive sum"):
                resample(weights, num_samples, name, generator)
            continue
        ancestors = resample(weights, num_samples, name, generator)
        assert ancestors.shape == (groups, num_samples) and ancestors.dtype == torch.int64
        assert int(ancestors.min()) >= 0 and int(ancestors.max()) < num_particles
        chosen = weights.gather(1, ancestors)
        assert bool((chosen > 0).all()), f"{name} chose a zero-weight particle ({pattern})"


@fuzz_settings(60)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=1,
                max_size=20), st.sampled_from(sorted(RESAMPLING_SCHEMES)))
def test_bad_weights_are_the_documented_value_error(values, name):
    weights = torch.tensor([values], dtype=torch.float32)
    generator = torch.Generator().manual_seed(0)
    finite = all(math.isfinite(v) for v in values)
    if finite and min(values) >= 0 and sum(values) > 0:
        ancestors = resample(weights, len(values), name, generator)
        assert bool((weights[0, ancestors[0]] > 0).all())
    else:
        with pytest.raises(ValueError, match="weights must"):
            resample(weights, len(values), name, generator)


# -- the command line ----------------------------------------------------------------------------


class ReachedModelLoad(BaseException):
    """Raised where a command would load its model: every check before it passed."""


def _stop(*args, **kwargs):
    raise ReachedModelLoad


def _drop_progress_bars() -> None:
    import tqdm

    for bar in list(tqdm.tqdm._instances):
        bar.leave = False
        bar.close()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Inputs the grammar points at: good and bad prompt and config files."""
    folder = tmp_path_factory.mktemp("fuzz-inputs")
    contents = {
        "prompts.txt": "sneaker\nbag\n", "prompts.jsonl": '{"prompt": "dress"}\n',
        "empty.txt": "", "broken.jsonl": '{"prompt": \n', "wrong-field.jsonl": '{"text": "a"}\n',
        "good.toml": "num_particles = 2\nlmbda = 3.0\n", "bad-syntax.toml": "num_particles = = 2",
        "unknown-key.toml": "colour = 'red'\n", "wrong-type.toml": "num_particles = 'many'\n",
        "lists.toml": "lmbda = [1, 2]\nsteps = 2.5\n", "top-array.yaml": "- 1\n- 2\n",
        "overwrite.toml": "overwrite = 'yes'\nseed = -3\n",
    }
    for name, text in contents.items():
        (folder / name).write_text(text)
    return folder


NUMBERS = ["0", "1", "2", "-1", "3.5", "abc", "", "nan", "inf", "-inf", "1e309", "none",
           "99999999999999999999999", "0x10", " 2 "]
LAMBDAS = NUMBERS + ["ramp:0:10", "ramp:1", "ramp:a:b", "ramp:nan:1", "ramp::"]
PLAUSIBLE = ["1", "2", "3", "0.5"]  # drawn 2 times in 3 for numeric options: deeper checks run


def value_for(draw, values: list[str]) -> str:
    if set(NUMBERS) <= set(values) and draw(st.integers(0, 2)):
        return draw(st.sampled_from(PLAUSIBLE))
    return draw(st.sampled_from(values))


def option_values(files: Path) -> dict[str, list[str]]:
    """Each option of sample and text with values a user might type, right and wrong."""
    paths = [str(files / name) for name in sorted(p.name for p in files.iterdir())]
    return {
        "--num-particles": NUMBERS, "--potential": ["difference", "max", "sum", "nope"],
        "--lmbda": LAMBDAS, "--resampling": ["systematic", "residual", "bogus"],
        "--ess-threshold": NUMBERS + ["0.5", "1.5"], "--resample-every": NUMBERS,
        "--resample-start": NUMBERS, "--resample-end": NUMBERS + ["none"],
        "--reward-guidance": LAMBDAS, "--method": ["fk", "base", "best_of_n", "importance", "x"],
        "--steps": NUMBERS, "--device": ["cpu", "cuda", "cuda:7", "mps", "xpu:3", "nope", ""],
        "--dtype": ["float32", "float16", "int8"], "--seed": NUMBERS + ["18446744073709551616"],
        "--threads": NUMBERS + ["100000"], "--config": paths + [str(files / "missing.toml")],
        "--prompts-file": paths + [str(files / "missing.txt")],
        "--reward": ["embedded-classifier", "toxicity", "sentiment", "clip-score", "aesthetic",
                     "nosuch", "no_such_module:fn", "fksteer.rewards:nothing_here", ":", "a:",
                     "fksteer.rewards.base:as_texts"],
    }


SAMPLE_ONLY = {"--model": ["embedded-weak", "embedded-strong", "./no/such/model", "org/model",
                           "/"],
               "--guidance-scale": NUMBERS, "--parallel": ["prompts", "particles", "ranks"]}
TEXT_ONLY = {"--model": ["embedded", "./no/such/model", "org/model"], "--seq-len": NUMBERS,
             "--num-x0-samples": NUMBERS}
DEMO = {"--particles": NUMBERS, "--steps": NUMBERS, "--lmbda": NUMBERS, "--runs": NUMBERS,
        "--seed": NUMBERS + ["18446744073709551616"], "--threads": NUMBERS + ["100000"]}
BENCH = {
    "exact": {"--particles": ["4", "4,8", "0", "a,b", "", "4,-1"], "--seeds": NUMBERS,
              "--replicas": NUMBERS, "--resample-every": NUMBERS},
    "vectorisation": {"--repeats": NUMBERS},
    "overhead": {"--particles": NUMBERS, "--steps": NUMBERS, "--repeats": NUMBERS},
    "text": {"--particles": ["4", "4,8", "0", "x"], "--methods": ["base", "fk,base", "nope", ""],
             "--seeds": NUMBERS, "--repeats": NUMBERS, "--x0-samples": ["1", "1,4", "0", "q"],
             "--lmbda": NUMBERS, "--potential": ["difference", "sum", "bad"],
             "--resample-every": NUMBERS, "--ess-threshold": NUMBERS + ["0.5"],
             "--perplexity": ["on", "auto", "off", "maybe"], "--threads": NUMBERS},
    "image": {"--models": ["weak", "weak,strong", "medium", ""], "--methods": [
        "base", "fk-difference", "fk-nope", ""], "--particles": ["2", "2,4", "0", "y"],
        "--seeds": NUMBERS, "--repeats": NUMBERS, "--steps": NUMBERS,
        "--guidance-scale": NUMBERS, "--lmbda": NUMBERS, "--resample-every": NUMBERS,
        "--threads": NUMBERS},
    "all": {"--threads": NUMBERS},
}
PROMPTS = st.lists(st.sampled_from(["sneaker", "bag", "You will", "spaceship", "", "0", "--",
                                    "ünïcode ✓", "The best"]), max_size=3)


@st.composite
def command_lines(draw, files: Path):
    """(argv, out): a command of sample/text/demo/bench with random options, and where its
    --out points: nowhere given (its default), a file, or a folder with an earlier run's files."""
    command = draw(st.sampled_from(["sample", "text", "demo", "bench"]))
    if command in ("sample", "text"):
        grammar = {**option_values(files), **(SAMPLE_ONLY if command == "sample" else TEXT_ONLY)}
        argv = [command, *draw(PROMPTS)]
    elif command == "demo":
        grammar = DEMO
        argv = ["demo", *draw(st.lists(st.sampled_from(["sneaker", "bag", "dragon"]),
                                       max_size=2))]
        if draw(st.booleans()):
            argv.append("--exact")
    else:
        suite = draw(st.sampled_from(sorted(BENCH)))
        grammar = BENCH[suite]
        argv = ["bench", suite] + (["--quick"] if draw(st.booleans()) else [])
    chosen = draw(st.lists(st.sampled_from(sorted(grammar)), max_size=5, unique=True))
    for option in chosen:
        argv += [option, value_for(draw, grammar[option])]
    if draw(st.integers(0, 19)) == 0:
        argv.append(draw(st.sampled_from(["--no-such-option", "--num-particles"])))
    return argv, draw(st.sampled_from(["fresh", "fresh", "a-file", "earlier-run"]))


@pytest.fixture
def stopped_at_model_load(monkeypatch):
    """Stop each command where it would load its model (or start computing), never before."""
    import fksteer.bench.exact
    import fksteer.bench.image
    import fksteer.bench.overhead
    import fksteer.bench.text
    import fksteer.bench.vectorisation
    import fksteer.commands.demo_exact
    import fksteer.commands.image_models
    import fksteer.commands.text
    import fksteer.embedded.image_model

    for module, name in ((fksteer.commands.image_models, "load_image_runner"),
                         (fksteer.commands.text, "load_text_runner"),
                         (fksteer.embedded.image_model, "load_image_model"),
                         (fksteer.commands.demo_exact, "_run_methods"),
                         (fksteer.bench.exact, "run_one"),
                         (fksteer.bench.vectorisation, "time_one"),
                         (fksteer.bench.overhead, "build_pipeline"),
                         (fksteer.bench.text, "_TextUnits"),
                         (fksteer.bench.image, "_ImageUnits")):
        monkeypatch.setattr(module, name, _stop)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # a hub id is refused from the cache
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@fuzz_settings(150)
@given(data=st.data())
def test_random_command_lines_exit_2_with_one_line_or_reach_the_model(
        data, files, stopped_at_model_load, tmp_path_factory, monkeypatch, capsys):
    from fksteer.cli import main

    work = tmp_path_factory.mktemp("fuzz-run")
    monkeypatch.chdir(work)  # default --out folders (runs/...) land here
    (work / "a-file").write_text("x")
    (work / "earlier-run").mkdir()
    (work / "earlier-run" / "config.json").write_text("{}")
    argv, out = data.draw(command_lines(files))
    if out != "fresh":
        argv += ["--out", str(work / out)]
    before = sorted(p.name for p in files.iterdir())
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse: unknown option, bad choice, bad int
        code = exit_.code
        assert code == 2, argv
        assert "error:" in capsys.readouterr().err
        event(f"{argv[0]}: refused by argparse")
        return
    except ReachedModelLoad:
        event(f"{argv[0]}: valid, stopped at the model load")
        _drop_progress_bars()  # the stopped run's bar is not the next example's
        return
    finally:
        torch.set_num_threads(1)
    err = capsys.readouterr().err
    assert code == 2, (argv, err)
    event(f"{argv[0]}: refused, exit 2")
    lines = [line for line in re.split(r"[\r\n]", err) if line.strip()]  # bars end with \r
    assert lines[-1].startswith("fksteer: error: "), (argv, err)
    assert sum("error" in line for line in lines) == 1 and "Traceback" not in err, (argv, err)
    if argv[0] != "bench":  # refused runs write nothing; benches keep their resumable records
        assert not (work / "runs").exists(), argv
        assert sorted(p.name for p in files.iterdir()) == before
        assert (work / "a-file").read_text() == "x"
        assert sorted(p.name for p in (work / "earlier-run").iterdir()) == ["config.json"]
