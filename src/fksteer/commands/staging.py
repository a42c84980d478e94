"""An output directory that appears whole or not at all: `staged_directory`.

    from fksteer.commands.staging import check_writable, staged_directory
    with staged_directory("runs/sample") as work:    # a hidden sibling, renamed at the end
        (work / "summary.json").write_text("{}")

The work happens in a temporary sibling of the target; on success it replaces the target (an
earlier run's directory is removed); on any error it is deleted, with any parent directories
this call created, so a failed command leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["check_writable", "staged_directory"]


def _missing_parents(target: Path) -> list[Path]:
    missing = []
    parent = target.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    return missing


def check_writable(target: str | Path) -> None:
    """Raise a ValueError naming ``--out`` unless ``target`` can be created or replaced."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise ValueError(f"--out {target}: exists and is not a directory; pick another path.")
    with staged_directory(target, commit=False):
        pass


@contextlib.contextmanager
def staged_directory(target: str | Path, *, commit: bool = True) -> Iterator[Path]:
    """Yield a fresh temporary sibling of ``target``; rename it to ``target`` on success."""
    target = Path(target)
    created = _missing_parents(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as error:
        _remove_parents(created)
        raise ValueError(
            f"--out {target}: cannot write there ({error.strerror or error}); pick a writable "
            "directory."
        ) from None
    try:
        yield work
        if commit:
            old = None
            if target.exists():
                old = target.with_name(f".{target.name}.old-{work.name}")
                target.rename(old)
            work.rename(target)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        _remove_parents(created)
        raise
    else:
        if not commit:
            shutil.rmtree(work, ignore_errors=True)
            _remove_parents(created)


def _remove_parents(created: list[Path]) -> None:
    for folder in created:  # deepest first
        with contextlib.suppress(OSError):
            folder.rmdir()
