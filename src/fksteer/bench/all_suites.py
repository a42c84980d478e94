"""`fksteer bench all`: every suite in turn, each into its own folder.

    from fksteer.bench.all_suites import run_all_benches
    reports = run_all_benches("runs/bench", quick=True)   # {suite: its report.md}

It sits above the suites it runs (they import :mod:`fksteer.bench.suite`, never this module).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fksteer.bench.exact import ExactBenchConfig, run_exact_bench
from fksteer.bench.image import ImageBenchConfig, run_image_bench
from fksteer.bench.overhead import OverheadBenchConfig, run_overhead_bench
from fksteer.bench.text import TextBenchConfig, run_text_bench
from fksteer.distributed.communicator import Communicator

__all__ = ["run_all_benches"]

logger = logging.getLogger(__name__)


def run_all_benches(out_dir: str | Path, quick: bool,
                    progress: Callable[[str], Any] | None = None) -> dict[str, str]:
    """`fksteer bench all`: text, image, exact and overhead into ``out_dir/<suite>``.

    ``progress(name)`` gives each suite its progress wrapper. Returns each suite's report (on
    rank 0; under torchrun the text and image units are shared among the ranks, and exact and
    overhead run on rank 0 alone).
    """
    out_dir = Path(out_dir)
    suites = (
        ("text", TextBenchConfig, run_text_bench),
        ("image", ImageBenchConfig, run_image_bench),
        ("exact", ExactBenchConfig, run_exact_bench),
        ("overhead", OverheadBenchConfig, run_overhead_bench),
    )
    communicator = Communicator.current()
    reports = {}
    for name, config_class, run in suites:
        bench = config_class.quick() if quick else config_class()
        logger.info("bench all: %s", name)
        if name in ("exact", "overhead") and communicator.distributed:
            # timings and exact replicas: one process (rank 0) while the others wait
            if communicator.is_root:
                run(bench, out_dir / name, progress=progress(f"bench {name}") if progress
                    else None)
            communicator.barrier()
        else:
            run(bench, out_dir / name, progress=progress(f"bench {name}") if progress else None)
        if communicator.is_root:
            reports[name] = (out_dir / name / "report.md").read_text()
    return reports
