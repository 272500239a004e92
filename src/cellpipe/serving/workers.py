"""Pre-forked server processes: a parent that forks children and supervises them.

Owns: `Supervisor`: ``spawn`` forks a child running a function (a uvicorn worker on the
shared socket, or the gRPC server), ``supervise`` waits until SIGINT/SIGTERM or a child's
unexpected end, ``stop`` ends every child (SIGTERM, then SIGKILL after a grace period) and
reaps it.

Invariants: a child never returns into the parent's code: it ends with ``os._exit``; it asks
the kernel for SIGTERM when the parent dies (Linux), so no worker outlives the command. A child
that ends while the supervisor is not stopping is reported (logger ``cellpipe.serving``,
ERROR) and started again, unless `MAX_RESTARTS` restarts happened within `RESTART_WINDOW`
seconds (a crash loop: the supervisor stops everything and raises `ServingError`). Every
child is gone when `stop` returns. The parent must not have started threads before it forks
(the caller's duty: models load in the parent, threads start in the children).

Must not depend on: the web stack, grpc, the runner, kfp, notebooks, config or api.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

from cellpipe.errors import CellpipeError, ServingError

__all__ = ["MAX_RESTARTS", "RESTART_WINDOW", "Supervisor"]

logger = logging.getLogger("cellpipe.serving")

MAX_RESTARTS = 5
"""Children restarted within `RESTART_WINDOW` seconds before the supervisor gives up (a child
that fails as it starts would fail again: a crash loop stops the server instead)."""

RESTART_WINDOW = 60.0

STOP_GRACE = 15.0
"""Seconds children have to finish their requests after SIGTERM before SIGKILL."""


class _Stop(Exception):
    pass


@dataclass(slots=True)
class _Child:
    role: str
    target: Callable[[], None]
    started: float
    restartable: bool


def _die_with_parent() -> None:
    """Ask Linux to send this process SIGTERM when its parent dies (no orphan workers)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the parent's stop() still ends them
        pass


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = str(number)
        return f"was killed by signal {number} ({name})"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


class Supervisor:
    """Forks and watches the server's child processes (see the module docstring)."""

    def __init__(self, on_exit: Callable[[int], None] | None = None) -> None:
        self.children: dict[int, _Child] = {}
        self._on_exit = on_exit
        self._restarts: list[float] = []
        self._parent = os.getpid()
        self._stopping = False

    def spawn(self, role: str, target: Callable[[], None], *, restartable: bool = True) -> int:
        """Fork a child that runs ``target`` and exits; return its pid."""
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                signal.signal(signal.SIGINT, signal.default_int_handler)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                _die_with_parent()
                if os.getppid() != self._parent:  # the parent died before prctl
                    os._exit(0)
                target()
                code = 0
            except KeyboardInterrupt:
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except CellpipeError as exc:
                hint = f" (hint: {exc.hint})" if exc.hint else ""
                logger.error("%s: %s%s", role, exc.message, hint)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self.children[pid] = _Child(role, target, time.monotonic(), restartable)
        return pid

    def supervise(self) -> None:
        """Wait until SIGINT/SIGTERM (return normally) or a child cannot be restarted.

        Raises:
            ServingError: a child ended right after starting, or a child that cannot be
                restarted ended.
        """

        def stop(signum: int, frame: FrameType | None) -> None:
            raise _Stop

        # SIGINT too, explicitly: a command started with `&` from a script inherits SIGINT
        # ignored, and Python then keeps it ignored (Ctrl-C and `kill -INT` would do nothing).
        previous = signal.signal(signal.SIGTERM, stop)
        previous_int = signal.signal(signal.SIGINT, stop)
        try:
            while self.children:
                pid, status = os.wait()
                child = self.children.pop(pid, None)
                if child is None:
                    continue
                self._exited(pid)
                self._ended(pid, child, status)
        except (_Stop, KeyboardInterrupt):
            return
        finally:
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, previous_int)

    def _exited(self, pid: int) -> None:
        if self._on_exit is not None:
            try:
                self._on_exit(pid)
            except Exception:  # cleaning up after a child must not stop the others
                logger.exception("cleaning up after pid %d failed", pid)

    def _ended(self, pid: int, child: _Child, status: int) -> None:
        how = _describe(status)
        now = time.monotonic()
        self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW]
        if len(self._restarts) >= MAX_RESTARTS:
            raise ServingError(
                f"{child.role} (pid {pid}) {how}, after {len(self._restarts)} restarts within "
                f"{RESTART_WINDOW:g} s",
                hint="its error is above; the other processes were stopped",
            )
        if not child.restartable:
            raise ServingError(
                f"{child.role} (pid {pid}) {how}", hint="the other processes were stopped"
            )
        self._restarts.append(now)
        new = self.spawn(child.role, child.target)
        logger.error("%s (pid %d) %s; started it again (pid %d)", child.role, pid, how, new)

    def stop(self, grace: float = STOP_GRACE) -> None:
        """End every child: SIGTERM, then SIGKILL after ``grace`` seconds; reap them all."""
        self._stopping = True
        for pid in list(self.children):
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.children and time.monotonic() < deadline:
            for pid in list(self.children):
                done, _ = os.waitpid(pid, os.WNOHANG)
                if done:
                    self.children.pop(pid, None)
                    self._exited(pid)
            if self.children:
                time.sleep(0.05)
        for pid in list(self.children):
            _signal(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            self.children.pop(pid, None)
            self._exited(pid)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)
