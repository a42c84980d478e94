"""The `fksteer` command line.

    fksteer demo                       steer the exact rare-mode fixture, compare with the truth
    fksteer bench exact [--quick]      error to an exact target vs particles, FK vs importance
    fksteer bench vectorisation        cost of 512 groups against 1

Every command writes its results (config.json, results.jsonl or summary.json, report.md, a PNG)
into ``--out`` and prints the report. ``python -m fksteer`` is the same program.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _progress(description: str):
    """A progress-bar wrapper for a list of work items (tqdm when installed, else none)."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return lambda items: tqdm(items, desc=description, unit="run")


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive ints, got {text!r}")
    return values


def _demo(args: argparse.Namespace) -> None:
    from fksteer.demo import run_demo

    print(run_demo(args.out, num_particles=args.particles, num_runs=args.runs, seed=args.seed))
    print(f"results in {args.out}/ (report.md, summary.json, samples.png)")


def _bench_exact(args: argparse.Namespace) -> None:
    from dataclasses import replace

    from fksteer.bench.exact import ExactBenchConfig, run_exact_bench

    bench = ExactBenchConfig.quick() if args.quick else ExactBenchConfig()
    overrides = {
        name: value
        for name, value in (
            ("particles", args.particles),
            ("seeds", args.seeds),
            ("replicas", args.replicas),
            ("resample_every", args.resample_every),
        )
        if value is not None
    }
    bench = replace(bench, **overrides)
    run_exact_bench(bench, args.out, progress=_progress("bench exact"))
    print(Path(args.out, "report.md").read_text())


def _bench_vectorisation(args: argparse.Namespace) -> None:
    from fksteer.bench.vectorisation import VectorisationBenchConfig, run_vectorisation_bench

    bench = VectorisationBenchConfig(repeats=args.repeats)
    run_vectorisation_bench(bench, args.out, progress=_progress("bench vectorisation"))
    print(Path(args.out, "report.md").read_text())


def build_parser() -> argparse.ArgumentParser:
    from fksteer import __version__

    parser = argparse.ArgumentParser(
        prog="fksteer",
        description="Steer diffusion models towards high reward with Feynman-Kac particles.",
    )
    parser.add_argument("--version", action="version", version=f"fksteer {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="steer the exact rare-mode fixture and compare every method with the truth",
        description="Steer a 2-D Gaussian-mixture diffusion whose tilted target is known in "
        "closed form; print base, best-of-K, importance sampling and FK beside the exact answer.",
    )
    demo.add_argument("--out", default="runs/demo", help="output directory (default: %(default)s)")
    demo.add_argument("--particles", type=int, default=16, help="K per run (default: 16)")
    demo.add_argument("--runs", type=int, default=64, help="independent runs (default: 64)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.set_defaults(handler=_demo)

    bench = commands.add_parser("bench", help="benchmarks that write JSONL, markdown and PNG")
    suites = bench.add_subparsers(dest="suite", required=True, metavar="SUITE")

    exact = suites.add_parser(
        "exact",
        help="error to an exact rare target vs particles: FK (each potential) vs importance",
        description="Error to the exact tilted target and to log Z against N, for FK with each "
        "potential and for importance sampling and best-of-N at equal NFE. Resumes if rerun.",
    )
    exact.add_argument("--out", default="runs/bench-exact", help="output directory")
    exact.add_argument("--quick", action="store_true", help="small variant (seconds)")
    exact.add_argument("--particles", type=_int_list, help="comma-separated N, e.g. 4,16,64")
    exact.add_argument("--seeds", type=int, help="seeds per cell (default 3; quick 2)")
    exact.add_argument("--replicas", type=int, help="independent runs per seed (default 100)")
    exact.add_argument("--resample-every", type=int, help="FK scoring stride (default 1)")
    exact.set_defaults(handler=_bench_exact)

    vectorisation = suites.add_parser(
        "vectorisation",
        help="time of 512 groups x 16 particles over 1 group x 16 (mixture fixture, 50 steps)",
    )
    vectorisation.add_argument("--out", default="runs/bench-vectorisation")
    vectorisation.add_argument("--repeats", type=int, default=5, help="timed repeats per G")
    vectorisation.set_defaults(handler=_bench_vectorisation)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        args.handler(args)
    except ValueError as error:
        print(f"fksteer: error: {error}", file=sys.stderr)
        return 2
    return 0
