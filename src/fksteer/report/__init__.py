"""Self-contained HTML reports of runs: `write_report`, `write_comparison`.

    from fksteer.report import write_report, write_comparison
    write_report("runs/sample")                       # -> runs/sample/report.html
    write_comparison("runs/base", "runs/fk")          # -> runs/base/compare-fk.html

A report is one HTML file that opens from disk and fetches nothing: images are inlined as
``data:`` URIs, plots are inline SVG drawn by matplotlib (without matplotlib the page says so
and shows the traces as tables), no script. It is rebuilt from the folder alone
(:mod:`fksteer.report.folder` says which files), so ``fksteer report RUN_DIR`` gives the page
the command wrote at the end of the run. Modules: ``folder`` (reading and checking a folder),
``genealogy`` (lineages from the ancestors), ``samples`` (sample cards, thumbnails),
``figures`` (the plots), ``page`` and ``template`` (the page).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from fksteer.report.folder import RunFolderError, load_folder

__all__ = ["write_report", "write_comparison", "RunFolderError", "REPORT_FILE"]

REPORT_FILE = "report.html"


def _write_atomically(path: Path, text: str) -> Path:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        stream.write(text)
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)
    return path


def write_report(run_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None
                 ) -> Path:
    """Write the report of ``run_dir`` to ``out`` (default ``run_dir/report.html``)."""
    from fksteer.report.page import render_folder

    folder = load_folder(run_dir)
    path = Path(out) if out is not None else Path(run_dir) / REPORT_FILE
    return _write_atomically(path, render_folder(folder))


def _run_of(path: str | os.PathLike[str]):
    folder = load_folder(path)
    if folder.run is None:
        raise RunFolderError(
            f"{path} is a benchmark summary, not a steering run: compare the folders of "
            "fksteer sample or text runs (or a demo's methods/<method>)."
        )
    return folder.run


def write_comparison(first_dir: str | os.PathLike[str], second_dir: str | os.PathLike[str],
                     out: str | os.PathLike[str] | None = None) -> Path:
    """Write two runs of the same prompts side by side to ``out`` (default
    ``first_dir/compare-<second folder's name>.html``)."""
    from fksteer.report.page import render_comparison

    first, second = _run_of(first_dir), _run_of(second_dir)
    path = (Path(out) if out is not None
            else Path(first_dir) / f"compare-{Path(second_dir).resolve().name}.html")
    return _write_atomically(path, render_comparison(first, second))
