"""The options shared by `fksteer sample` and `fksteer text`: FKConfig fields and run settings.

    from fksteer.commands.options import add_run_options, resolve_options, build_fk_config
    add_run_options(parser, defaults)           # --num-particles, --lmbda, ..., --config, --out
    values = resolve_options(args, defaults)    # defaults < --config file < command line
    config = build_fk_config(values)            # FKConfig; errors name the option

Every option's parser default is None, so that ``resolve_options`` can tell what the command
line set; the command's own defaults fill what neither the file nor the command line gave.
Importing this module does not import torch (``fksteer --help`` stays fast): the functions
that need it import it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fksteer.commands.config_file import read_config_file
from fksteer.smc.config import (
    METHODS,
    POTENTIALS,
    SEARCH_METHODS,
    AdaptiveTilt,
    FKConfig,
    LargestTilt,
    LinearRamp,
    SearchConfig,
)
from fksteer.smc.resampling import RESAMPLING_SCHEMES

if TYPE_CHECKING:
    import torch

__all__ = [
    "FK_FIELDS",
    "SEARCH_FIELDS",
    "SEARCH_DEFAULTS",
    "add_run_options",
    "build_fk_config",
    "build_method",
    "check_seed",
    "named_fk_config",
    "parse_guidance",
    "parse_lambda",
    "parse_schedule",
    "parse_optional_float",
    "parse_optional_int",
    "resolve_device",
    "resolve_options",
    "set_threads",
    "torch_dtype",
]

#: FKConfig field -> its command-line option.
FK_FIELDS = {
    "num_particles": "--num-particles",
    "potential": "--potential",
    "lmbda": "--lmbda",
    "resampling": "--resampling",
    "ess_threshold": "--ess-threshold",
    "resample_every": "--resample-every",
    "resample_start": "--resample-start",
    "resample_end": "--resample-end",
    "guidance": "--reward-guidance",
}

#: the --dtype names (torch dtypes of the same name, see :func:`torch_dtype`)
DTYPES = ("bfloat16", "float16", "float32")

#: SearchConfig field -> its command-line option (used by --method svdd, code and beam).
SEARCH_FIELDS = {"candidates": "--candidates", "temperature": "--temperature", "block": "--block"}

#: The search options' defaults, SearchConfig's own.
SEARCH_DEFAULTS: dict[str, Any] = {field: getattr(SearchConfig(), field) for field in SEARCH_FIELDS}


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a --dtype name in :data:`DTYPES`."""
    import torch

    if name not in DTYPES:
        raise ValueError(f"--dtype {name!r}: choose one of {', '.join(DTYPES)}.")
    return getattr(torch, name)


def parse_lambda(value: Any) -> float | LinearRamp | AdaptiveTilt | LargestTilt:
    """A float, ``ramp:START:END`` (or a mapping ``{start, end}``) -> lambda or LinearRamp;
    ``adaptive:TARGET[:ESS]`` -> AdaptiveTilt (each scoring step's lambda chosen to keep a
    conditional ESS of ESS * K, default 0.5, ending at exactly TARGET);
    ``largest:CAP[:ESS]`` -> LargestTilt (the final lambda_hat <= CAP chosen per prompt so that
    the final ESS stays at least ESS * K, default 0.5: the target is p exp(lambda_hat r))."""
    if isinstance(value, (AdaptiveTilt, LargestTilt)):
        return value
    text = str(value).strip() if isinstance(value, str) else ""
    for prefix, build, usage in (
        ("adaptive:", AdaptiveTilt, "adaptive:TARGET or adaptive:TARGET:ESS, e.g. adaptive:10:0.5"),
        ("largest:", lambda cap, ess=0.5: LargestTilt(cap, final_ess=ess),
         "largest:CAP or largest:CAP:ESS, e.g. largest:100:0.5"),
    ):
        if not text.startswith(prefix):
            continue
        parts = text[len(prefix):].split(":")
        try:
            if len(parts) > 2:
                raise ValueError
            return build(*[float(part) for part in parts])
        except (TypeError, ValueError) as error:
            detail = f" ({error})" if str(error) else ""
            raise ValueError(f"--lmbda {value!r}: pass {usage}{detail}.") from None
    return parse_schedule(value, "--lmbda")


def parse_guidance(value: Any) -> float | LinearRamp:
    """As :func:`parse_lambda`, for ``--reward-guidance``."""
    return parse_schedule(value, "--reward-guidance")


def parse_schedule(value: Any, option: str) -> float | LinearRamp:
    """A float, ``ramp:START:END`` or a mapping ``{start, end}`` -> float or LinearRamp."""
    fix = "pass a number (e.g. 10) or ramp:START:END (e.g. ramp:0:10)."
    if isinstance(value, bool):
        raise ValueError(f"{option} {value!r} is not a number: {fix}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, dict) and set(value) == {"start", "end"}:
        return LinearRamp(start=float(value["start"]), end=float(value["end"]))
    text = str(value).strip()
    try:
        if text.startswith("ramp:"):
            start, end = text[len("ramp:") :].split(":")
            return LinearRamp(start=float(start), end=float(end))
        return float(text)
    except ValueError:
        raise ValueError(f"{option} {value!r} is not a number: {fix}") from None


def parse_optional_float(option: str) -> Callable[[Any], float | None]:
    """A parser of a float or ``none`` for ``option``; its ValueError names the option."""
    def parse(value: Any) -> float | None:
        if value is None or str(value).strip().lower() == "none":
            return None
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{option} {value!r}: pass a number or 'none'.") from None

    return parse


def parse_optional_int(option: str) -> Callable[[Any], int | None]:
    """A parser of an int or ``none`` for ``option``; its ValueError names the option."""
    def parse(value: Any) -> int | None:
        if value is None or str(value).strip().lower() == "none":
            return None
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ValueError(f"{option} {value!r}: pass an integer or 'none'.") from None

    return parse


def _argparse_type(parse: Callable[[Any], Any]) -> Callable[[str], Any]:
    """Turn a parser's ValueError into argparse's own error (exit 2, message verbatim)."""

    def wrapped(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return wrapped


#: How values that come from a config file (any type) are converted before validation.
_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "lmbda": parse_lambda,
    "guidance": parse_guidance,
    "ess_threshold": parse_optional_float("--ess-threshold"),
    "resample_end": parse_optional_int("--resample-end"),
}


def add_run_options(parser: argparse.ArgumentParser, defaults: dict[str, Any]) -> None:
    """Prompts, model, reward, every FKConfig field, method, device, seed, --config and --out."""
    parser.add_argument("prompts", nargs="*", metavar="PROMPT",
                        help=f"prompts, one group of particles each (default: "
                        f"{' | '.join(map(str, defaults['prompts']))})")
    parser.add_argument("--prompts-file", metavar="FILE",
                        help="prompts, one per line, or JSONL with a \"prompt\" field")
    parser.add_argument("--model", help=f"model (default: {defaults['model']})")
    parser.add_argument("--reward", help="reward: a registry name or package.module:function "
                        f"(default: {defaults['reward']})")
    fk = parser.add_argument_group("steering (FKConfig fields)")
    fk.add_argument("--num-particles", type=int, metavar="K",
                    help=f"particles per prompt (default: {defaults['num_particles']})")
    fk.add_argument("--potential", choices=POTENTIALS,
                    help=f"potential (default: {defaults['potential']})")
    fk.add_argument("--lmbda", "--lambda", dest="lmbda", type=_argparse_type(parse_lambda),
                    metavar="LAMBDA", help="tilt: a number, ramp:START:END for a linear "
                    "ramp, adaptive:TARGET[:ESS] to choose each step's lambda from the "
                    "particles, or largest:CAP[:ESS] for the largest final lambda <= CAP that "
                    f"keeps ESS * K (default: {defaults['lmbda']})")
    fk.add_argument("--resampling", choices=sorted(RESAMPLING_SCHEMES),
                    help=f"resampling scheme (default: {defaults['resampling']})")
    fk.add_argument("--ess-threshold", metavar="FRACTION",
                    type=_argparse_type(parse_optional_float("--ess-threshold")),
                    help="resample when ESS < FRACTION * K; 'none' resamples at every scoring "
                    f"step (default: {defaults['ess_threshold']})")
    fk.add_argument("--resample-every", type=int, metavar="N",
                    help=f"score every N steps (default: {defaults['resample_every']})")
    fk.add_argument("--resample-start", type=int, metavar="STEP",
                    help=f"first scored step (default: {defaults['resample_start']})")
    fk.add_argument("--resample-end", metavar="STEP",
                    type=_argparse_type(parse_optional_int("--resample-end")),
                    help="last scored step, or 'none' for the last step "
                    f"(default: {defaults['resample_end']})")
    fk.add_argument("--reward-guidance", dest="guidance", type=_argparse_type(parse_guidance),
                    metavar="STRENGTH", help="reward-gradient guidance of each step's proposal "
                    "(exact: the weights carry the density ratio); needs a differentiable reward "
                    "and a Gaussian sampler step; a number or ramp:START:END "
                    f"(default: {defaults['guidance']}, off)")
    searches = all(name in defaults for name in SEARCH_FIELDS)
    fk.add_argument("--method", choices=METHODS if searches else (
                        tuple(m for m in METHODS if m not in SEARCH_METHODS)),
                    help="fk steers; base, best_of_n and importance are baselines"
                    + ("; svdd, code and beam search over --candidates per particle (NFE x M)"
                       if searches else "") + f" (default: {defaults['method']})")
    if searches:
        _add_search_options(parser, defaults)
    run = parser.add_argument_group("run")
    run.add_argument("--steps", type=int, help=f"denoising steps (default: {defaults['steps']})")
    run.add_argument("--device", help=f"torch device, e.g. cpu, cuda (default: "
                     f"{defaults['device']})")
    run.add_argument("--dtype", choices=DTYPES,
                     help=f"model dtype (default: {defaults['dtype']})")
    run.add_argument("--seed", type=int, help=f"random seed (default: {defaults['seed']})")
    run.add_argument("--threads", type=int, help="torch CPU threads (default: 1 for embedded "
                     "models, else torch's choice)")
    run.add_argument("--no-report", dest="report", action="store_const", const=False,
                     help="do not write report.html (fksteer report DIR writes it later)")
    run.add_argument("--config", metavar="FILE", help="TOML (or YAML) file of these options; "
                     "the command line overrides it")
    run.add_argument("--out", metavar="DIR", help=f"output directory (default: {defaults['out']})")
    run.add_argument("--overwrite", action="store_const", const=True,
                     help="replace the results an earlier run left in --out (else refused)")


def _add_search_options(parser: argparse.ArgumentParser, defaults: dict[str, Any]) -> None:
    """--candidates, --temperature, --block: the options of --method svdd, code and beam (for
    the commands whose defaults hold them)."""
    search = parser.add_argument_group("search (--method svdd, code or beam)")
    search.add_argument("--candidates", type=int, metavar="M",
                        help="candidate next states per particle "
                        f"(default: {defaults['candidates']})")
    search.add_argument("--temperature", type=float, metavar="T",
                        help="svdd: keep a candidate by softmax(value / T); 0 keeps the best "
                        f"(default: {defaults['temperature']})")
    search.add_argument("--block", type=int, metavar="B",
                        help="choose among the candidates every B steps; code with B >= the "
                        f"steps is best-of-M (default: {defaults['block']})")


def resolve_options(args: argparse.Namespace, defaults: dict[str, Any]) -> dict[str, Any]:
    """defaults, then the ``--config`` file, then what the command line set."""
    values = dict(defaults)
    config_path = getattr(args, "config", None)
    if config_path is not None:
        from_file = read_config_file(config_path, set(defaults))
        for key, value in from_file.items():
            values[key] = _CONVERTERS[key](value) if key in _CONVERTERS else value
        values["config"] = str(config_path)
    for key in defaults:
        given = getattr(args, key, None)
        if key == "prompts" and not given:
            continue
        if given is not None:
            values[key] = given
    if isinstance(values.get("prompts"), str):
        values["prompts"] = [values["prompts"]]
    if values.get("steps") is not None and (
        isinstance(values["steps"], bool) or not isinstance(values["steps"], int)
        or values["steps"] < 1
    ):
        raise ValueError(f"--steps {values['steps']!r}: pass a positive int, e.g. 50.")
    check_seed(values.get("seed"))
    if not isinstance(values.get("overwrite", False), bool):
        raise ValueError(f"overwrite {values['overwrite']!r} in --config: pass true or false.")
    if values.get("method") not in METHODS:
        raise ValueError(f"--method {values.get('method')!r}: choose one of {', '.join(METHODS)}.")
    if values.get("dtype") not in DTYPES:
        raise ValueError(f"--dtype {values.get('dtype')!r}: choose one of {', '.join(DTYPES)}.")
    return values


def build_fk_config(values: dict[str, Any]) -> FKConfig:
    """FKConfig from the resolved values; its ValueError is re-raised naming the option."""
    fields = {name: values[name] for name in FK_FIELDS}
    for name, parse in (("lmbda", parse_lambda), ("guidance", parse_guidance)):
        if not callable(fields[name]):
            fields[name] = parse(fields[name])
    return named_fk_config(fields, FK_FIELDS)


def named_fk_config(fields: dict[str, Any], options: dict[str, str]) -> FKConfig:
    """``FKConfig(**fields)``; its ValueError about a field is re-raised naming the command-line
    option that set it (``options``: field -> option, e.g. ``{"num_particles": "--particles"}``)."""
    try:
        return FKConfig(**fields)
    except ValueError as error:
        message = str(error)
        for name, option in options.items():
            if message.startswith(f"FKConfig.{name}="):
                raise ValueError(f"{option}: {message}") from None
        raise


def build_method(values: dict[str, Any]) -> str | SearchConfig:
    """``--method``, or the SearchConfig of a search; its ValueError names the option."""
    method = values["method"]
    if method not in SEARCH_METHODS:
        return method
    try:
        return SearchConfig(method, **{name: values[name] for name in SEARCH_FIELDS})
    except ValueError as error:
        message = str(error)
        for name, option in SEARCH_FIELDS.items():
            if message.startswith(f"SearchConfig.{name}="):
                raise ValueError(f"{option}: {message}") from None
        raise


def resolve_device(name: str) -> torch.device:
    """A torch device that exists here, or a ValueError naming --device and the fix."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(
            f"--device {name!r} is not a torch device: pass e.g. cpu or cuda."
        ) from None
    if device.type == "cpu":
        return device
    if device.type == "mps":
        available, count = torch.backends.mps.is_available(), 1
    else:  # cuda, xpu, ...: the backend's module says whether it is built and has devices
        backend = getattr(torch, device.type, None)
        try:
            available = bool(backend.is_available())
            count = int(backend.device_count())
        except Exception:  # no such backend module, or not compiled into this torch
            available, count = False, 0
    if not available:
        raise ValueError(f"--device {name}: {device.type} is not available here; pass "
                         "--device cpu.")
    if device.index is not None and device.index >= count:
        raise ValueError(f"--device {name}: this machine has {count} {device.type} device(s) "
                         f"(0 .. {count - 1}); pass one of them.")
    return device


#: torch accepts seeds in [-2**63, 2**64); the command line takes the non-negative ones.
MAX_SEED = 2**64 - 1
#: More threads than this only costs: torch takes seconds to start 10**5 of them, then crashes.
MAX_THREADS = 1024


def check_seed(seed: Any) -> int:
    """``seed`` if it is an int in [0, 2**64), else a ValueError naming --seed."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"--seed {seed!r}: pass an int from 0 to 2**64 - 1, e.g. 0.")
    return seed


def set_threads(threads: int | None, embedded: bool) -> None:
    """Set torch's CPU threads: ``threads`` if given, else 1 for the small embedded models.

    The embedded models are so small that intra-op threads cost more than they give, and on a
    busy machine their spin-waiting is ruinous: one forward of the weak image UNet (24 rows)
    measured 0.027 s with 1 thread and 2.8 s with 2 threads on 2 cores with other work running.
    """
    import torch

    if threads is not None:
        if (isinstance(threads, bool) or not isinstance(threads, int)
                or not 1 <= threads <= MAX_THREADS):
            raise ValueError(f"--threads {threads!r}: pass an int from 1 to {MAX_THREADS} "
                             f"(this machine has {os.cpu_count()} CPUs).")
        torch.set_num_threads(threads)
    elif embedded:
        torch.set_num_threads(1)
