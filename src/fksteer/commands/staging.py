"""An output directory that appears whole or not at all: `staged_directory`.

    from fksteer.commands.staging import check_writable, staged_directory
    with staged_directory("runs/sample") as work:    # a hidden sibling, renamed at the end
        (work / "summary.json").write_text("{}")

The work happens in a temporary sibling of the target; on success it takes the target's place;
on any error (Ctrl-C included) it is deleted, with any parent directories this call created, so
a failed command leaves nothing behind. A target that already holds files (an earlier run's
results) is refused unless ``overwrite`` is given; then it is replaced. Folders are created with
the usual permissions (the umask's), not a temporary folder's owner-only ones.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
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


def check_writable(target: str | Path, *, overwrite: bool = False) -> None:
    """Raise a ValueError naming ``--out`` unless ``target`` can be created (or, with
    ``overwrite``, replaced)."""
    with staged_directory(target, commit=False, overwrite=overwrite):
        pass


def _check_target(target: Path, overwrite: bool) -> None:
    if target.name in ("", ".", ".."):
        raise ValueError(f"--out {target}: name a folder of its own, e.g. runs/first.")
    if target.exists() and not target.is_dir():
        raise ValueError(f"--out {target}: exists and is not a directory; pick another path.")
    if not overwrite and target.is_dir() and any(target.iterdir()):
        raise ValueError(
            f"--out {target} already holds files (an earlier run's results?): pass --overwrite "
            "to replace them, or another --out."
        )


@contextlib.contextmanager
def staged_directory(target: str | Path, *, commit: bool = True,
                     overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary sibling of ``target``; rename it to ``target`` on success.

    Refuses (ValueError naming ``--out``) a target that is a file, or a folder holding files
    unless ``overwrite``.
    """
    target = Path(target)
    _check_target(target, overwrite)
    created = _missing_parents(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        work = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
        work.mkdir()  # the umask's permissions, as any folder the user makes
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
