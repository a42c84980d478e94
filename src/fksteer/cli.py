"""The `fksteer` command line.

    fksteer sample [PROMPT ...]        steer an image model (embedded by default), save images
    fksteer text [PROMPT ...]          steer a masked text model (embedded by default), save texts
    fksteer gibbs [--sweeps S]         particle Gibbs sweeps (--budget-nfe N, --budget-seconds T)
    fksteer demo                       base vs best-of-K vs FK on the embedded image model
    fksteer demo --exact               steer the exact rare-mode fixture, compare with the truth
    fksteer bench exact [--quick]      error to an exact target vs particles, FK vs importance
    fksteer bench vectorisation        cost of 512 groups against 1
    fksteer bench overhead [--quick]   steered / stock time of a diffusers pipeline
    fksteer bench text [--quick]       rare attribute on the embedded text model: base/best-of-K/FK
    fksteer bench image [--quick]      embedded image models: every potential, judge, compute
    fksteer bench all [--quick]        text, image, exact and overhead into --out/<suite>
    fksteer report RUN_DIR [RUN_B]     (re)write RUN_DIR/report.html, or compare two runs

Every command writes its results (config.json, results.jsonl or summary.json, report.md, a PNG)
into ``--out``, prints the report and writes ``report.html`` there (``--no-report``: not).
``python -m fksteer`` is the same program. Each subcommand's work lives in
:mod:`fksteer.commands` (``bench``'s parsers and handlers in :mod:`fksteer.commands.bench`); this
module builds the parser, none of whose imports loads torch (``fksteer --help`` stays fast).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from fksteer.commands.parsing import add_no_report, write_report

__all__ = ["build_parser", "main"]


def _report(args: argparse.Namespace) -> None:
    from fksteer.report import write_comparison, write_report

    if args.run_b is None:
        path = write_report(args.run_dir, args.out)
    else:
        path = write_comparison(args.run_dir, args.run_b, args.out)
    print(f"report in {path} ({path.stat().st_size / 1024:.0f} KiB)")


def _demo(args: argparse.Namespace) -> None:
    from fksteer.commands.options import check_seed, set_threads

    set_threads(args.threads, embedded=not args.exact)
    check_seed(args.seed)
    if args.exact:
        from fksteer.commands.demo_exact import run_demo

        particles = 16 if args.particles is None else args.particles
        out = args.out or "runs/demo-exact"
        print(run_demo(out, num_particles=particles, num_runs=args.runs, seed=args.seed,
                       overwrite=args.overwrite))
        write_report(args, out)
        print(f"results in {out}/ (report.md, summary.json, samples.png)")
        return
    from fksteer.commands.demo_image import DEMO_PROMPTS, run_image_demo

    out = args.out or "runs/demo"
    print(run_image_demo(out, num_particles=4 if args.particles is None else args.particles,
                         prompts=args.prompts or DEMO_PROMPTS, num_steps=args.steps,
                         lmbda=args.lmbda, seed=args.seed, overwrite=args.overwrite))
    write_report(args, out)
    print(f"results in {out}/ (grid.png, report.md, summary.json, config.json, methods/)")


def _sample(args: argparse.Namespace) -> None:
    from fksteer.commands.options import resolve_options
    from fksteer.commands.sample import SAMPLE_DEFAULTS, run_sample

    report = run_sample(resolve_options(args, SAMPLE_DEFAULTS))
    if report:  # under torchrun only rank 0 reports
        print(report)


def _text(args: argparse.Namespace) -> None:
    from fksteer.commands.options import resolve_options
    from fksteer.commands.text import TEXT_DEFAULTS, run_text

    report = run_text(resolve_options(args, TEXT_DEFAULTS))
    if report:  # under torchrun only rank 0 reports
        print(report)


def _gibbs(args: argparse.Namespace) -> int:
    from fksteer.commands.gibbs import GIBBS_DEFAULTS, run_gibbs
    from fksteer.commands.options import resolve_options
    from fksteer.distributed.launch import refuse_distributed

    refuse_distributed("gibbs")
    report, code = run_gibbs(resolve_options(args, GIBBS_DEFAULTS))
    print(report)
    return code


def _add_parallel_options(parser: argparse.ArgumentParser) -> None:
    """--parallel and --per-group-seeds: how a torchrun launch splits the run."""
    parser.add_argument("--parallel", choices=("prompts", "particles"),
                        help="under torchrun: split the prompts (default) or every prompt's "
                        "particles over the processes")
    parser.add_argument("--per-group-seeds", action="store_const", const=True,
                        help="derive each prompt's randomness from (seed, prompt index), as "
                        "distributed runs do: reproduces a torchrun run in one process")


_DEBUG_HELP = "on an error, show the traceback (also: FKSTEER_DEBUG=1)"


class _DebugParser(argparse.ArgumentParser):
    """A subcommand's parser, and of its own subcommands: each takes ``--debug`` too."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                          help=_DEBUG_HELP)


def _add_sample(commands: argparse._SubParsersAction) -> None:
    """`fksteer sample`: the run options and the image command's own."""
    from fksteer.commands.options import add_run_options
    from fksteer.commands.sample import SAMPLE_DEFAULTS

    sample = commands.add_parser(
        "sample",
        help="steer an image model and save every particle, grids and records",
        description="Steer an image diffusion model with FK particles. With no arguments: the "
        "embedded weak Fashion-MNIST model, a few class names as prompts, and the embedded "
        "steering classifier as the reward. Writes images/, grid_*.png, results.jsonl, "
        "summary.json and config.json into --out.",
    )
    add_run_options(sample, SAMPLE_DEFAULTS)
    sample.add_argument("--guidance-scale", type=float,
                        help="classifier-free guidance scale (default: 1.0)")
    _add_parallel_options(sample)
    sample.set_defaults(handler=_sample)


def _add_text(commands: argparse._SubParsersAction) -> None:
    """`fksteer text`: the run options and the masked text command's own."""
    from fksteer.commands.options import add_run_options
    from fksteer.commands.text import TEXT_DEFAULTS

    text = commands.add_parser(
        "text",
        help="steer a masked diffusion language model and save the texts and records",
        description="Steer a masked diffusion LM with FK particles. With no arguments: the "
        "embedded fortunes model, a few openings as prompts, and the toxicity reward (the FK "
        "steering paper's rare-attribute demo). --model takes embedded, embedded-minilm (MiniLM "
        "with an MDLM-trained top, experimental), a transformers "
        "masked-LM id or a folder. Writes results.jsonl, texts.md, summary.json and "
        "config.json into --out.",
    )
    add_run_options(text, TEXT_DEFAULTS)
    text.add_argument("--seq-len", type=int, help="tokens to generate (default: 32)")
    text.add_argument("--num-x0-samples", type=int,
                      help="clean-sample draws scored per particle (default: 1)")
    _add_parallel_options(text)
    text.set_defaults(handler=_text)


def _add_gibbs(commands: argparse._SubParsersAction) -> None:
    """`fksteer gibbs`: the run options and the chain's."""
    from fksteer.commands.gibbs import GIBBS_DEFAULTS
    from fksteer.commands.options import add_run_options

    gibbs = commands.add_parser(
        "gibbs",
        help="particle Gibbs: sweeps of conditional SMC under a sweep count or a budget",
        description="Run particle Gibbs (conditional SMC sweeps; the first is FK steering) with "
        "--chains chains per prompt until --sweeps, --budget-nfe or --budget-seconds stops it; "
        "Ctrl-C stops it the same way (exit 130). --model exact (default: the rare-mode "
        "mixture, compared with its closed form) or an embedded image model. Writes "
        "chain.jsonl, summary.json and config.json (with the sweeps made, to replay the run).",
    )
    add_run_options(gibbs, GIBBS_DEFAULTS)
    chain = gibbs.add_argument_group("chain")
    chain.add_argument("--sweeps", type=int, metavar="S", help="number of sweeps")
    chain.add_argument("--budget-nfe", type=int, metavar="N",
                       help="run the whole sweeps N denoiser evaluations pay for")
    chain.add_argument("--budget-seconds", type=float, metavar="T",
                       help="start no sweep after T seconds (the one in progress finishes)")
    chain.add_argument("--chains", type=int, help="chains per prompt (default: 4)")
    chain.add_argument("--burn-in", type=int, metavar="B",
                       help="sweeps dropped from the diagnostics (default: 0)")
    chain.add_argument("--thin", type=int, metavar="N", help="keep every N-th sweep (default: 1)")
    gibbs.set_defaults(handler=_gibbs)


def _add_demo(commands: argparse._SubParsersAction) -> None:
    """`fksteer demo` (and ``--exact``)."""
    demo = commands.add_parser(
        "demo",
        help="base vs best-of-K vs FK on the embedded image model (--exact: the exact fixture)",
        description="Run base sampling, best-of-K and FK steering at equal K on the embedded "
        "weak image model; print steering reward, held-out judge accuracy, wall time and NFE; "
        "write grid.png, report.md, summary.json, config.json. With --exact: steer a 2-D "
        "Gaussian-mixture diffusion whose tilted target is known in closed form.",
    )
    demo.add_argument("prompts", nargs="*", metavar="PROMPT",
                      help="class names (default: the ten Fashion-MNIST classes)")
    demo.add_argument("--exact", action="store_true",
                      help="the exact Gaussian-mixture demo instead of the image demo")
    demo.add_argument("--out", help="output directory (default: runs/demo; --exact: "
                      "runs/demo-exact)")
    demo.add_argument("--overwrite", action="store_true",
                      help="replace the results an earlier run left in --out (else refused)")
    demo.add_argument("--particles", type=int, help="K per prompt (default: 4; --exact: 16)")
    demo.add_argument("--steps", type=int, default=50, help="denoising steps (default: 50)")
    demo.add_argument("--lmbda", "--lambda", dest="lmbda", type=float, default=10.0,
                      help="tilt lambda (default: 10)")
    demo.add_argument("--runs", type=int, default=64, help="--exact: independent runs (64)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument("--threads", type=int, help="torch CPU threads (default: 1, fastest for "
                      "the small embedded model; --exact: torch's choice)")
    add_no_report(demo)
    demo.set_defaults(handler=_demo)


def _add_report(commands: argparse._SubParsersAction) -> None:
    """`fksteer report RUN_DIR [RUN_B]`."""
    report = commands.add_parser(
        "report",
        help="write a run folder's report.html, or put two runs side by side",
        description="Write RUN_DIR/report.html: one self-contained page (no network, images "
        "inlined) with the samples by weight, the ESS, reward, lambda and time traces, the "
        "genealogy, log Z, the configuration and the command that reruns the run; for bench "
        "folders their tables, verdicts and plots. With RUN_B: both runs (same prompts) side "
        "by side, written to RUN_DIR/compare-<RUN_B's name>.html.",
    )
    report.add_argument("run_dir", metavar="RUN_DIR", help="the --out folder of a run")
    report.add_argument("run_b", metavar="RUN_B", nargs="?", help="a second run to compare")
    report.add_argument("--out", metavar="FILE", help="where to write the page")
    report.set_defaults(handler=_report)


def build_parser() -> argparse.ArgumentParser:
    """The `fksteer` parser: every subcommand with its options, each handler set as ``handler``."""
    from fksteer import __version__

    parser = argparse.ArgumentParser(
        prog="fksteer",
        description="Steer diffusion models towards high reward with Feynman-Kac particles.",
    )
    parser.add_argument("--version", action="version", version=f"fksteer {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     parser_class=_DebugParser)

    from fksteer.commands.bench import add_bench_parser

    for add in (_add_sample, _add_text, _add_gibbs, _add_demo, add_bench_parser, _add_report):
        add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; mistakes end in one line and exit status 2 (Ctrl-C: 130), see
    :mod:`fksteer.commands.errors`; ``--debug`` or FKSTEER_DEBUG=1 shows the traceback."""
    from fksteer.commands.errors import debug_requested, end_with

    try:
        args = build_parser().parse_args(argv)
    except KeyboardInterrupt as interrupt:  # Ctrl-C while the parser's modules import
        return end_with(interrupt)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        code = args.handler(args)
    except (Exception, KeyboardInterrupt) as error:
        if debug_requested(getattr(args, "debug", False)):
            raise
        return end_with(error)
    return code or 0
