"""Helpers of the CLI tests: run ``fksteer`` in-process and capture its exit code and stderr."""

from __future__ import annotations

from fksteer.cli import main


def run_cli(argv, capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``fksteer argv``, argparse's own exits included."""
    try:
        code = main([str(arg) for arg in argv])
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err

