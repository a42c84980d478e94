"""Errors that stop every rank, not just one: `Lockstep`.

    from fksteer.distributed.lockstep import Lockstep
    lockstep = Lockstep(communicator)
    rewards = lockstep.run(score_my_particles, step)     # an exception is kept, not raised
    everyone = lockstep.sync(rewards)                    # raises on every rank if any rank failed

A collective waits for every rank; a rank that raised and left would make the others wait
forever (or until the process group's timeout). So the drivers never let an exception escape
between two collectives: :meth:`Lockstep.run` keeps it and skips the remaining local work, and
the next :meth:`Lockstep.sync` (an ``all_gather_object`` of each rank's status with its payload,
the collective the driver needed anyway) tells every rank. Then every rank raises the error of
the lowest failing rank: that rank re-raises its own exception; the others raise a copy of it
(same type and message, unpickled) with a note naming the rank and carrying its traceback, or a
:class:`RankFailedError` when the exception cannot be pickled. Only ``Exception`` is caught;
a rank killed outright (signal, ``os._exit``) is seen by the others as a failed collective
(gloo: connection closed) or, at worst, the process group's timeout.
"""

from __future__ import annotations

import pickle
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fksteer.distributed.communicator import Communicator

__all__ = ["Lockstep", "RankFailedError"]


class RankFailedError(RuntimeError):
    """Another rank raised an exception that could not be sent as itself.

    Attributes:
        rank: the rank that failed.
        error_type: the exception's class name.
        remote_traceback: the formatted traceback on that rank.
    """

    def __init__(self, rank: int, error_type: str, message: str, remote_traceback: str):
        super().__init__(f"rank {rank} failed with {error_type}: {message}")
        self.rank = rank
        self.error_type = error_type
        self.remote_traceback = remote_traceback


@dataclass(frozen=True)
class _Failure:
    rank: int
    error_type: str
    message: str
    traceback: str
    pickled: bytes | None


class Lockstep:
    """Run local work that may fail; agree at each collective on whether every rank succeeded."""

    def __init__(self, communicator: Communicator | None = None) -> None:
        self.communicator = communicator or Communicator.current()
        self.error: BaseException | None = None

    @property
    def failed(self) -> bool:
        """Whether an error was seen on any rank."""
        return self.error is not None

    def run(self, work: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``work(*args, **kwargs)``, or None when it raised or an earlier call failed."""
        if self.error is not None:
            return None
        try:
            return work(*args, **kwargs)
        except Exception as error:
            self.error = error
            return None

    def sync(self, payload: Any = None) -> list[Any]:
        """Every rank's payload in rank order; raises everywhere if any rank has failed."""
        gathered = self.communicator.all_gather_object((self._failure(), payload))
        self._raise_first([status for status, _ in gathered])
        return [item for _, item in gathered]

    def gather(self, payload: Any = None, root: int = 0) -> list[Any] | None:
        """Agree on success (a small all-gather), then gather the payloads on ``root`` only."""
        self.check()
        return self.communicator.gather_object(payload, root)

    def check(self) -> None:
        """Raise on every rank if any rank has failed."""
        self.sync(None)

    def _failure(self) -> _Failure | None:
        error = self.error
        if error is None:
            return None
        try:
            pickled = pickle.dumps(error)
            pickle.loads(pickled)
        except Exception:
            pickled = None
        return _Failure(
            rank=self.communicator.rank,
            error_type=type(error).__name__,
            message=str(error),
            traceback="".join(traceback.format_exception(error)),
            pickled=pickled,
        )

    def _raise_first(self, statuses: list[_Failure | None]) -> None:
        failures = [status for status in statuses if status is not None]
        if not failures:
            return
        first = failures[0]
        if first.rank == self.communicator.rank and self.error is not None:
            raise self.error
        copy: BaseException | None = None
        if first.pickled is not None:
            try:
                copy = pickle.loads(first.pickled)
            except Exception:
                copy = None
        if not isinstance(copy, BaseException):
            raise RankFailedError(first.rank, first.error_type, first.message, first.traceback)
        if hasattr(copy, "add_note"):
            copy.add_note(
                f"(raised on rank {first.rank}; its traceback follows)\n{first.traceback}"
            )
        raise copy
