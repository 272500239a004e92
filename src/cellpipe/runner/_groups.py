"""What a step started dies with the step: its process group is stopped when it ends.

Owns: `StepGroups`, the bookkeeping of ended steps' process groups, used by the fork server
(for the children it forks) and the spawn executor (for the interpreters it starts). Every
step process leads its own process group, so what it starts (``subprocess.Popen``,
``multiprocessing`` workers it never joined) is in that group unless it moved itself out.

How a step's end goes:

1. The step process has exited but is not reaped yet (a zombie): its pid, which is the
   group's id, cannot be taken by a new process, so ``killpg(pgid, SIGTERM)`` reaches exactly
   the step's group. Then the step process is reaped.
2. ``killpg(pgid, 0)`` says whether anything is left in the group. Nothing (the common case):
   done, no waiting. Otherwise the group gets SIGKILL after `GRACE_S`, from the owner's event
   loop (`StepGroups.timeout`, `StepGroups.kill_due`), or at once when the owner closes.

While a group still has members its id stays allocated (Linux frees a pid only when no
process uses it as pid, group or session id), so the delayed SIGKILL reaches the same group;
a group id that is again a live step's pid is never signalled.

Not covered: a process that left the group itself (``setsid``, ``setpgid``: a daemon does),
and the in-process executor (its steps share the caller's process group). The
``processes:keep`` tag (`cellpipe.runner.jobs.StepJob.keep_processes`) skips all of this for
a step that starts a process on purpose.

Must not depend on: anything but the standard library (the fork server imports it early).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Container

__all__ = ["GRACE_S", "StepGroups", "group_alive"]

GRACE_S = 1.0
"""How long the processes a step left behind get to exit after SIGTERM, before SIGKILL."""


def group_alive(pgid: int) -> bool:
    """Return whether any process (zombies included) is in process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member we may not signal: it exists
        return True
    return True


def _signal(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


class StepGroups:
    """The process groups of ended steps that may still hold processes the step started."""

    def __init__(self, grace_s: float = GRACE_S) -> None:
        self.grace_s = grace_s
        self._due: dict[int, float] = {}  # pgid -> when it gets SIGKILL (monotonic)

    def ending(self, pgid: int) -> None:
        """Terminate the group of a step process that exited and is NOT reaped yet."""
        _signal(pgid, signal.SIGTERM)

    def ended(self, pgid: int) -> None:
        """The step process was reaped: watch its group if anything is left in it."""
        if group_alive(pgid):
            self._due[pgid] = time.monotonic() + self.grace_s

    def timeout(self) -> float | None:
        """Seconds until the next group is due for SIGKILL (None when none is waiting)."""
        if not self._due:
            return None
        return max(0.0, min(self._due.values()) - time.monotonic())

    def kill_due(self, *, live: Container[int] = (), every: bool = False) -> None:
        """SIGKILL the groups whose grace is over (``every``: all of them, now).

        Args:
            live: pids of step processes running now; a group id among them is a new step
                that reused the number, and is left alone.
            every: kill every watched group, due or not (the owner is closing).
        """
        now = time.monotonic()
        for pgid, due in list(self._due.items()):
            if every or due <= now:
                del self._due[pgid]
                if pgid not in live:
                    _signal(pgid, signal.SIGKILL)

    def close(self, *, live: Container[int] = ()) -> None:
        """Wait out the grace of the watched groups (stopping early once they are empty)."""
        while self._due:
            for pgid in list(self._due):
                if not group_alive(pgid):
                    del self._due[pgid]
            remaining = self.timeout()
            if remaining is None:
                return
            if remaining <= 0:
                self.kill_due(live=live, every=True)
                return
            time.sleep(min(remaining, 0.02))
