"""How the command line ends when something goes wrong: one line, the fix, and an exit status.

    from fksteer.commands.errors import QuotedReward, end_with, debug_requested
    reward = QuotedReward(reward, "mymod:score")      # its errors are quoted, type and message
    status = end_with(error)                          # prints one line, returns 2 (or 1, 130)

Mistakes a user can fix (a bad option, a missing file or package, weights not downloaded, a
reward that raised or gave no finite value) end with ``fksteer: error: <what and the fix>`` and
exit status 2; Ctrl-C ends with exit status 130 (the commands' staged output folders are removed
on the way out, so nothing half-written is left); anything else is a bug of fksteer, told in one
line too, with exit status 1. ``--debug`` or ``FKSTEER_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["DEBUG_VARIABLE", "QuotedReward", "RewardError", "debug_requested", "end_with"]

#: The environment variable that, set to anything but "" or "0", shows tracebacks.
DEBUG_VARIABLE = "FKSTEER_DEBUG"

_DEBUG_HINT = f"rerun with --debug (or {DEBUG_VARIABLE}=1) for the traceback"


class RewardError(Exception):
    """The reward raised while scoring; the message quotes its type and message."""

    def __init__(self, name: str, error: BaseException):
        detail = " ".join(str(error).split()) or "(no message)"
        super().__init__(
            f"{name} raised {type(error).__name__}: {detail}. Fix the reward function; "
            f"{_DEBUG_HINT} into it."
        )


class QuotedReward:
    """``reward`` whose exceptions become :class:`RewardError` naming ``name`` (e.g.
    ``"--reward mymod:score"``).

    Errors that already say how to fix them (missing weights or packages) pass unchanged, and so
    does Ctrl-C. Every other attribute (``batch_size``, ``differentiable`` ...) is the reward's.
    """

    def __init__(self, reward: Any, name: str):
        self.reward = reward
        self.name = name

    def __call__(self, samples: Any, prompts: Sequence[Any] | None = None) -> Any:
        """The wrapped reward's values; an exception it raises is quoted as a RewardError."""
        return _quoted(self.reward, self.name, samples, prompts)

    def __getattr__(self, attribute: str) -> Any:
        value = getattr(self.reward, attribute)
        if attribute == "differentiable":
            return lambda: _QuotedCall(value(), self.name)
        return value


class _QuotedCall:
    def __init__(self, call: Any, name: str):
        self.call, self.name = call, name

    def __call__(self, samples: Any, prompts: Sequence[Any] | None) -> Any:
        return _quoted(self.call, self.name, samples, prompts)


def _quoted(call: Any, name: str, samples: Any, prompts: Any) -> Any:
    try:
        return call(samples, prompts)
    except (ImportError, OSError):  # missing packages or weights: their message has the fix
        raise
    except Exception as error:
        raise RewardError(name, error) from error


def debug_requested(flag: bool) -> bool:
    """``--debug`` given, or FKSTEER_DEBUG set to anything but "" or "0"."""
    return flag or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")


def _clear_errors() -> tuple[type[BaseException], ...]:
    from fksteer.smc.particles import AllParticlesDeadError

    return (ValueError, OSError, ImportError, RewardError, AllParticlesDeadError)


def end_with(error: BaseException) -> int:
    """Print one line for ``error`` on stderr and return the exit status (2, 130 or 1)."""
    _close_progress_bars()
    if isinstance(error, KeyboardInterrupt):
        print("fksteer: interrupted; the unfinished run left no half-written files (rerun the "
              "command to start again; a bench resumes where it stopped).", file=sys.stderr)
        return 130
    from fksteer.extras import with_install_hint

    message = " ".join(with_install_hint(error).split())  # one line; a missing extra named
    if isinstance(error, _clear_errors()):
        print(f"fksteer: error: {message}", file=sys.stderr)
        return 2
    print(f"fksteer: internal error: {type(error).__name__}: {message} ({_DEBUG_HINT}, and "
          "please report it)", file=sys.stderr)
    return 1


def _close_progress_bars() -> None:
    """Remove unfinished progress bars, so the error line starts a line of its own."""
    tqdm = sys.modules.get("tqdm")
    if tqdm is None:
        return
    for bar in list(getattr(tqdm.tqdm, "_instances", ())):
        bar.leave = False
        bar.close()
