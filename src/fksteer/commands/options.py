"""The options shared by `fksteer sample` and `fksteer text`: FKConfig fields and run settings.

    from fksteer.commands.options import add_run_options, resolve_options, build_fk_config
    add_run_options(parser, defaults)           # --num-particles, --lmbda, ..., --config, --out
    values = resolve_options(args, defaults)    # defaults < --config file < command line
    config = build_fk_config(values)            # FKConfig; errors name the option

Every option's parser default is None, so that ``resolve_options`` can tell what the command
line set; the command's own defaults fill what neither the file nor the command line gave.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import torch

from fksteer.commands.config_file import read_config_file
from fksteer.smc.config import (
    METHODS,
    POTENTIALS,
    SEARCH_METHODS,
    AdaptiveTilt,
    FKConfig,
    LinearRamp,
    SearchConfig,
)
from fksteer.smc.resampling import RESAMPLING_SCHEMES

__all__ = [
    "FK_FIELDS",
    "SEARCH_FIELDS",
    "SEARCH_DEFAULTS",
    "add_run_options",
    "build_fk_config",
    "build_method",
    "parse_guidance",
    "parse_lambda",
    "parse_schedule",
    "parse_optional_float",
    "parse_optional_int",
    "resolve_device",
    "resolve_options",
    "set_threads",
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

#: SearchConfig field -> its command-line option (used by --method svdd, code and beam).
SEARCH_FIELDS = {"candidates": "--candidates", "temperature": "--temperature", "block": "--block"}

#: The search options' defaults, SearchConfig's own.
SEARCH_DEFAULTS: dict[str, Any] = {field: getattr(SearchConfig(), field) for field in SEARCH_FIELDS}

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def parse_lambda(value: Any) -> float | LinearRamp | AdaptiveTilt:
    """A float, ``ramp:START:END`` (or a mapping ``{start, end}``) -> lambda or LinearRamp;
    ``adaptive:TARGET[:ESS]`` -> AdaptiveTilt (each scoring step's lambda chosen to keep a
    conditional ESS of ESS * K, default 0.5, ending at exactly TARGET)."""
    if isinstance(value, AdaptiveTilt):
        return value
    text = str(value).strip() if isinstance(value, str) else ""
    if text.startswith("adaptive:"):
        parts = text[len("adaptive:"):].split(":")
        try:
            if len(parts) > 2:
                raise ValueError
            numbers = [float(part) for part in parts]
            return AdaptiveTilt(*numbers)
        except (TypeError, ValueError) as error:
            detail = f" ({error})" if str(error) else ""
            raise ValueError(
                f"--lmbda {value!r}: pass adaptive:TARGET or adaptive:TARGET:ESS, e.g. "
                f"adaptive:10:0.5{detail}."
            ) from None
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
                    "ramp, or adaptive:TARGET[:ESS] to choose each step's lambda from the "
                    f"particles (default: {defaults['lmbda']})")
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
    fk.add_argument("--method", choices=METHODS,
                    help="fk steers; base, best_of_n and importance are baselines; svdd, code "
                    "and beam search over --candidates per particle (NFE x M) "
                    f"(default: {defaults['method']})")
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
    run = parser.add_argument_group("run")
    run.add_argument("--steps", type=int, help=f"denoising steps (default: {defaults['steps']})")
    run.add_argument("--device", help=f"torch device, e.g. cpu, cuda (default: "
                     f"{defaults['device']})")
    run.add_argument("--dtype", choices=sorted(DTYPES),
                     help=f"model dtype (default: {defaults['dtype']})")
    run.add_argument("--seed", type=int, help=f"random seed (default: {defaults['seed']})")
    run.add_argument("--threads", type=int, help="torch CPU threads (default: 1 for embedded "
                     "models, else torch's choice)")
    run.add_argument("--no-report", dest="report", action="store_const", const=False,
                     help="do not write report.html (fksteer report DIR writes it later)")
    run.add_argument("--config", metavar="FILE", help="TOML (or YAML) file of these options; "
                     "the command line overrides it")
    run.add_argument("--out", metavar="DIR", help=f"output directory (default: {defaults['out']})")


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
    try:
        return FKConfig(**fields)
    except ValueError as error:
        message = str(error)
        for name, option in FK_FIELDS.items():
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
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(
            f"--device {name!r} is not a torch device: pass e.g. cpu or cuda."
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available here; pass --device cpu.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: MPS is not available here; pass --device cpu.")
    return device


def set_threads(threads: int | None, embedded: bool) -> None:
    """Set torch's CPU threads: ``threads`` if given, else 1 for the small embedded models.

    The embedded models are so small that intra-op threads cost more than they give, and on a
    busy machine their spin-waiting is ruinous: one forward of the weak image UNet (24 rows)
    measured 0.027 s with 1 thread and 2.8 s with 2 threads on 2 cores with other work running.
    """
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"--threads {threads!r}: pass a positive int.")
        torch.set_num_threads(threads)
    elif embedded:
        torch.set_num_threads(1)
