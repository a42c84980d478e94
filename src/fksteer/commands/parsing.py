"""What the subcommands' parsers and handlers share: ``--no-report``, progress bars, int lists.

    from fksteer.commands.parsing import add_no_report, write_report, progress, int_list

Importing this module imports nothing heavy (``fksteer --help`` stays fast): the report writer
and tqdm are imported when used.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_no_report", "int_list", "progress", "write_report"]


def progress(description: str):
    """A progress-bar wrapper for a list of work items (tqdm when installed, else none)."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return lambda items: tqdm(items, desc=description, unit="run")


def int_list(text: str) -> tuple[int, ...]:
    """``"4,16,64"`` as ``(4, 16, 64)``: the argparse type of a comma-separated list of N."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive ints, got {text!r}")
    return values


def write_report(args: argparse.Namespace, out: str | Path) -> None:
    """report.html in ``out``, unless --no-report."""
    if getattr(args, "report", True):
        from fksteer.report import write_report as write_html

        write_html(out)


def add_no_report(parser: argparse.ArgumentParser) -> None:
    """The ``--no-report`` flag (``args.report`` False: no report.html)."""
    parser.add_argument(
        "--no-report",
        dest="report",
        action="store_false",
        help="do not write report.html (fksteer report DIR writes it later)",
    )
