"""Benchmarks behind `fksteer bench`: each writes config.json, results.jsonl, report.md and a PNG.

    from fksteer.bench.exact import ExactBenchConfig, run_exact_bench
    from fksteer.bench.vectorisation import VectorisationBenchConfig, run_vectorisation_bench

``records`` holds the shared result-file helpers (resumable JSONL, markdown tables, intervals).
"""
