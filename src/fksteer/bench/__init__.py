"""Benchmarks behind `fksteer bench`: each writes config.json, results.jsonl, report.md and a PNG.

    from fksteer.bench.exact import ExactBenchConfig, run_exact_bench
    from fksteer.bench.vectorisation import VectorisationBenchConfig, run_vectorisation_bench
    from fksteer.bench.overhead import OverheadBenchConfig, run_overhead_bench
    from fksteer.bench.text import TextBenchConfig, run_text_bench
    from fksteer.bench.image import ImageBenchConfig, run_image_bench

``records`` is the one records module (resumable JSONL, the JSON writers every folder uses,
markdown tables, intervals; it imports nothing from fksteer); ``suite`` the parts the
prompt-level suites share (units of work, shared among the processes of a torchrun launch;
per-seed aggregates; the resume check); ``matched`` methods compared at matched compute (a
budget of model rows per prompt); ``all_suites`` runs them all (`fksteer bench all`) and sits
above them, so no suite imports it.
The suites' command-line parsers are :mod:`fksteer.commands.bench`'s: bench never imports
commands.
"""
