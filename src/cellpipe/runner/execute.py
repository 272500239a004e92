"""Executors: where and how a `StepJob` runs.

Owns: the `Executor` protocol the scheduler drives, and three implementations:

* `ForkServerExecutor` (the default on Linux): one warm server process per run
  (``python -m cellpipe.runner.forkserver``, a clean interpreter) runs the imports and
  functions cells once, then forks a child per step. Per-step start-up is a fork, not an
  interpreter start plus imports.
* `SpawnExecutor`: a fresh ``python -m cellpipe.runner.child`` per step; it pays the imports
  every step but never forks a process that may hold threads or locks. For platforms or
  libraries where fork is unsafe.
* `InProcessExecutor`: runs the step in the calling process, one at a time; for debugging
  and tests. No isolation of C-level state, no parallelism.

Invariants: every step process runs in its own process group, and `Executor.cancel` kills
every group and reaps every process before it returns; when a step process ends, its group
(what the step started and left running) is stopped (`cellpipe.runner._groups`), unless the
job has ``keep_processes`` or the executor is the in-process one; a step process that dies from
a signal is reported as a failed `StepResult` naming the signal and its usual cause ("step
process died from SIGSEGV (signal 11)": a native crash; only SIGKILL hints at kill -9 or the
out-of-memory killer),
never a hang; jobs and results cross the process boundary as JSON; step processes get
``MPLBACKEND`` set to cellpipe's capturing backend.

Must not depend on: notebooks, the KFP compiler, the CLI or the UI. Imports nothing heavy:
IPython is only imported by the in-process executor when it runs a step.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol, Self

from cellpipe.runner._bare import BareServer, server_command, step_env
from cellpipe.runner._groups import StepGroups
from cellpipe.runner.jobs import (
    EXIT_RESULT_UNWRITABLE_FAILED,
    EXIT_RESULT_UNWRITABLE_OK,
    MPL_BACKEND,
    StepJob,
    StepResult,
)
from cellpipe.storage.records import StepStatus

__all__ = [
    "MPL_BACKEND",
    "Executor",
    "ForkServerExecutor",
    "InProcessExecutor",
    "SpawnExecutor",
    "default_executor",
]

logger = logging.getLogger(__name__)

_CANCEL_TIMEOUT_S = 10.0


class Executor(Protocol):
    """Runs step jobs; the scheduler submits, polls, and cancels on Ctrl-C."""

    def submit(self, job: StepJob) -> None:
        """Start running ``job`` (returns at once, except for the in-process executor)."""
        ...

    def poll(self, timeout: float) -> list[StepResult]:
        """Wait up to ``timeout`` seconds for steps to finish; return the finished ones."""
        ...

    def cancel(self) -> list[str]:
        """Kill every running step process, reap it, and return the steps that were running."""
        ...

    def close(self) -> None:
        """Release processes and pipes (cancelling whatever still runs)."""
        ...


_step_env = step_env


# Why a step process dies from a signal, said the way a user can act on it. SIGKILL is the only
# signal the out-of-memory killer sends; a segfault is a crash in native code, not a kill.
_SIGNAL_CAUSES = {
    "SIGKILL": "it was killed with SIGKILL (kill -9, or the out-of-memory killer: check "
    "`dmesg` or the memory the step needs)",
    "SIGSEGV": "it crashed with a segmentation fault, a bug or a version mismatch in native "
    "code it called (a C extension, a library built for another numpy or Python)",
    "SIGBUS": "it crashed with a bus error: native code read memory it cannot reach (often a "
    "memory-mapped file that was truncated, or a full /dev/shm)",
    "SIGABRT": "it aborted (native code called abort(), often after a failed assertion or a "
    "corrupted heap)",
    "SIGFPE": "it crashed with an arithmetic error in native code (an integer division by zero)",
    "SIGILL": "it crashed with an illegal instruction: native code built for another CPU",
    "SIGTERM": "it was asked to stop with SIGTERM (kill, a container or job timeout)",
    "SIGINT": "it was interrupted (Ctrl-C or SIGINT)",
}


_UNWRITABLE = {EXIT_RESULT_UNWRITABLE_OK: "succeeded", EXIT_RESULT_UNWRITABLE_FAILED: "failed"}
"""Exit codes of a step process that could not write its result, and the step's outcome."""


def _died(job: StepJob, status: int) -> StepResult:
    """The result of a step process that ended without writing a result (or with an error)."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        error = f"step process died from {name} (signal {number})"
        cause = _SIGNAL_CAUSES.get(name, "it got a signal it did not handle")
        hint = f"{cause}; see its log {job.log_path}"
    elif os.WIFEXITED(status) and os.WEXITSTATUS(status) in _UNWRITABLE:
        outcome = _UNWRITABLE[os.WEXITSTATUS(status)]
        error = (
            f"step {outcome}, but its result could not be written to {job.result_path} "
            "(disk full or read-only), so its outputs are lost"
        )
        hint = (
            f"free space on (or make writable) the file system of {job.result_path} and run "
            f"again; the step's own error, if any, is at the end of its log {job.log_path}"
        )
    else:
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else status
        error = f"step process exited with code {code} without reporting a result"
        hint = f"see its log {job.log_path}"
    notebook = job.notebook_path
    return StepResult(
        step=job.step,
        status=StepStatus.FAILED,
        error=error,
        hint=hint,
        log_path=str(job.log_path),
        notebook_path=str(notebook) if notebook.exists() else None,
    )


def _finished(job: StepJob, status: int) -> StepResult:
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        try:
            return StepResult.from_json(json.loads(job.result_path.read_text()))
        except (OSError, ValueError, KeyError):
            logger.debug("no readable result for step %s", job.step, exc_info=True)
    return _died(job, status)


def _cancelled(job: StepJob) -> StepResult:
    return StepResult(
        step=job.step,
        status=StepStatus.CANCELLED,
        error="the run was cancelled",
        log_path=str(job.log_path),
    )


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    except PermissionError:  # not (yet) a group leader: kill the process itself
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# -- fork server -----------------------------------------------------------------------------


@dataclass(slots=True)
class _ServerHandle:
    proc: subprocess.Popen[bytes]
    stdin: IO[bytes]
    stdout_fd: int
    log_path: Path
    jobs: dict[str, StepJob] = field(default_factory=dict)  # running steps
    # reported their result, still storing the values nothing downstream reads
    finishing: dict[str, StepJob] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    buffer: bytes = b""
    replies: list[dict[str, Any]] = field(default_factory=list)
    dead: bool = False
    used: bool = False  # a job was submitted to it (else it may be killed at close)

    def send(self, message: dict[str, Any]) -> None:
        self.stdin.write((json.dumps(message) + "\n").encode())
        self.stdin.flush()

    def read(self) -> None:
        """Read what the server wrote (the fd is readable); sets ``dead`` on EOF."""
        data = os.read(self.stdout_fd, 1 << 16)
        if not data:
            self.dead = True
            return
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            if line.strip():
                self.replies.append(json.loads(line))


def _exits_within(server: _ServerHandle, timeout: float) -> bool:
    """Wait for the server to close its end of the protocol pipe, as it does when it exits.

    Waiting on the pipe wakes up the moment the server is gone (``Popen.wait`` with a
    timeout polls, with sleeps of up to 50 ms, at the end of every run).
    """
    deadline = time.monotonic() + timeout
    while not server.dead:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        ready, _, _ = select.select([server.stdout_fd], [], [], remaining)
        if ready:
            server.read()  # replies still in the pipe are dropped: the run is over
    return True


class _Closing:
    """Context-manager support shared by the executors: leaving the block closes them."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class ForkServerExecutor(_Closing):
    """Runs each step in a child forked from a warm server (the default on Linux).

    One server is started per distinct preamble/parameters/workdir (normally one per run) on
    the first job, or earlier by `warm`; its log is ``forkserver-<key>.log`` beside the first
    job's scratch folder.

    Args:
        python: the interpreter for the server (default: this one).
        bare: a server started early (`cellpipe.runner._bare.start_bare`); the first setup
            adopts it (its "init" moves it to the job's folder); closing kills it if unused.

    Example::

        with ForkServerExecutor() as executor:
            outcome = run_steps(pipeline, prepare=prepare, executor=executor, sink=sink)
    """

    def __init__(self, *, python: str | None = None, bare: BareServer | None = None) -> None:
        self._python = python or sys.executable
        self._bare = bare
        self._servers: dict[str, _ServerHandle] = {}
        self._results: list[StepResult] = []

    def _server_for(self, job: StepJob) -> _ServerHandle:
        key = job.setup_key()
        server = self._servers.get(key)
        if server is not None and not server.dead:
            return server
        log_dir = Path(job.scratch_dir).parent
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"forkserver-{key[:8]}.log"
        server = self._adopt_bare(job, log_path)
        if server is not None:
            self._servers[key] = server
            return server
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                server_command(self._python),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=job.workdir,
                env=_step_env(),
                start_new_session=True,  # Ctrl-C in the terminal reaches the runner only
            )
        assert proc.stdin is not None
        assert proc.stdout is not None
        server = _ServerHandle(
            proc=proc, stdin=proc.stdin, stdout_fd=proc.stdout.fileno(), log_path=log_path
        )
        self._servers[key] = server
        server.send({"op": "init", "job": job.to_json()})
        return server

    def _adopt_bare(self, job: StepJob, log_path: Path) -> _ServerHandle | None:
        """Take over the early server for ``job``'s setup (None if there is none, or unfit)."""
        bare, self._bare = self._bare, None
        if bare is None:
            return None
        proc = bare.adopt()
        if proc is None:
            return None
        assert proc.stdin is not None
        assert proc.stdout is not None
        server = _ServerHandle(
            proc=proc, stdin=proc.stdin, stdout_fd=proc.stdout.fileno(), log_path=log_path
        )
        try:
            server.send({"op": "init", "job": job.to_json(), "log": str(log_path)})
        except BrokenPipeError:  # it died starting: start a fresh one, which logs why
            _kill_group(proc.pid)
            proc.wait()
            proc.stdout.close()
            with contextlib.suppress(OSError):
                proc.stdin.close()
            return None
        return server

    def warm(self, job: StepJob) -> None:
        """Start the server for ``job``'s setup now, so it warms up while the runner plans.

        Nothing runs: the server imports and runs the preamble, then waits for `submit`. A
        server that never gets a job is killed (not waited for) at `close`.
        """
        self._server_for(job)

    def submit(self, job: StepJob) -> None:
        """Ask the warm server to fork a child for ``job``."""
        Path(job.scratch_dir).mkdir(parents=True, exist_ok=True)
        job.result_path.unlink(missing_ok=True)
        server = self._server_for(job)
        server.used = True
        server.jobs[job.step] = job
        try:
            server.send({"op": "run", "job": job.to_json()})
        except BrokenPipeError:
            server.dead = True
            self._bury(server)

    def _handle_replies(self, server: _ServerHandle) -> None:
        replies, server.replies = server.replies, []
        for reply in replies:
            event = reply.get("event")
            if event == "started":
                server.pids[reply["step"]] = int(reply["pid"])
            elif event == "reported":
                # The result file is written: the step is over for the scheduler, its
                # process goes on storing the values nothing downstream reads.
                step = reply["step"]
                job = server.jobs.pop(step, None)
                if job is not None:
                    server.finishing[step] = job
                    self._results.append(_finished(job, 0))
            elif event == "exited":
                step = reply["step"]
                job = server.jobs.pop(step, None)
                server.pids.pop(step, None)
                server.finishing.pop(step, None)
                if job is not None:
                    self._results.append(_finished(job, int(reply["status"])))

    def _bury(self, server: _ServerHandle) -> None:
        """The server died: every step it was running failed."""
        code = server.proc.wait()
        for step, job in list(server.jobs.items()):
            pid = server.pids.get(step)
            if pid is not None:
                _kill_group(pid)
            self._results.append(
                StepResult(
                    step=step,
                    status=StepStatus.FAILED,
                    error=f"the fork server died (exit status {code}) while the step ran",
                    hint=f"see {server.log_path}",
                    log_path=str(job.log_path),
                )
            )
        server.jobs.clear()
        server.pids.clear()

    def poll(self, timeout: float) -> list[StepResult]:
        """Wait up to ``timeout`` seconds for a step to finish; return the finished steps."""
        deadline = time.monotonic() + timeout
        while not self._results:
            live = {s.stdout_fd: s for s in self._servers.values() if s.jobs and not s.dead}
            if not live:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            poller = select.poll()
            for fd in live:
                poller.register(fd, select.POLLIN)
            for fd, _ in poller.poll(remaining * 1000):
                server = live[fd]
                server.read()
                self._handle_replies(server)
                if server.dead:
                    self._bury(server)
        results, self._results = self._results, []
        return results

    def drain(self) -> None:
        """Wait until the step processes that reported their results have exited.

        They store the values nothing downstream reads after their result (see
        `cellpipe.runner.child.store_extra_values`); closing the servers first would kill
        them. A server that dies meanwhile ends the wait for its steps.
        """
        for server in self._servers.values():
            while server.finishing and not server.dead:
                ready, _, _ = select.select([server.stdout_fd], [], [], 1.0)
                if ready:
                    server.read()
                    self._handle_replies(server)
            server.finishing.clear()

    def _wait_for(self, server: _ServerHandle, event: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not server.dead:
            if any(r.get("event") == event for r in server.replies):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            ready, _, _ = select.select([server.stdout_fd], [], [], remaining)
            if ready:
                server.read()
        return False

    def cancel(self) -> list[str]:
        """Kill every step process (their whole process groups) and reap them."""
        cancelled: list[str] = []
        for server in self._servers.values():
            server.finishing.clear()  # their values are lost with the run: stop them too
            if not server.jobs and not server.pids:
                continue
            for pid in server.pids.values():
                _kill_group(pid)
            if not server.dead:
                try:
                    server.send({"op": "cancel"})
                except BrokenPipeError:
                    server.dead = True
            if not self._wait_for(server, "cancelled", _CANCEL_TIMEOUT_S) and not server.dead:
                _kill_group(server.proc.pid)  # unresponsive server: take it down with its group
                server.dead = True
            steps = list(server.jobs)
            self._handle_replies(server)
            cancelled.extend(steps)
            server.jobs.clear()
            server.pids.clear()
        self._results = [r for r in self._results if r.step not in cancelled]
        return cancelled

    def close(self) -> None:
        """Stop the servers: closing a server's stdin makes it kill its children and exit.

        Step processes still storing the values nothing downstream reads are waited for
        first (`drain`).
        """
        self.drain()
        if self._bare is not None:
            self._bare.kill()
            self._bare = None
        for server in self._servers.values():
            if not server.used and not server.dead:
                # Warmed up for nothing (every step was cached, or the run stopped early):
                # no child to wait for, and its warm-up may still be importing.
                _kill_group(server.proc.pid)
            with contextlib.suppress(BrokenPipeError):
                server.stdin.close()
            if not _exits_within(server, _CANCEL_TIMEOUT_S):
                _kill_group(server.proc.pid)
            server.proc.wait()
            assert server.proc.stdout is not None
            server.proc.stdout.close()
        self._servers.clear()


# -- spawn -----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Spawned:
    job: StepJob
    proc: subprocess.Popen[bytes]
    pidfd: int | None


class SpawnExecutor(_Closing):
    """Runs each step in a fresh interpreter (``python -m cellpipe.runner.child``).

    Slower to start than the fork server (every step imports and runs the preamble), but it
    never forks; use it where fork is unsafe.

    Args:
        python: the interpreter for step processes (default: this one).
    """

    def __init__(self, *, python: str | None = None) -> None:
        self._python = python or sys.executable
        self._running: dict[str, _Spawned] = {}
        self._groups = StepGroups()

    def submit(self, job: StepJob) -> None:
        """Start a fresh step process for ``job``."""
        scratch = Path(job.scratch_dir)
        scratch.mkdir(parents=True, exist_ok=True)
        job.result_path.unlink(missing_ok=True)
        job_file = scratch / "job.json"
        job_file.write_text(json.dumps(job.to_json()))
        with job.log_path.open("ab") as log:
            proc = subprocess.Popen(
                [self._python, "-m", "cellpipe.runner.child", str(job_file)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=job.workdir,
                env=_step_env(),
                start_new_session=True,
            )
        pidfd = os.pidfd_open(proc.pid) if hasattr(os, "pidfd_open") else None
        self._running[job.step] = _Spawned(job=job, proc=proc, pidfd=pidfd)

    def _reap(self, step: str) -> _Spawned:
        spawned = self._running.pop(step)
        pid = spawned.proc.pid
        keep = spawned.job.keep_processes
        if spawned.proc.returncode is None:
            # Wait for the exit without reaping: while the process is a zombie its pid still
            # names its group, so stopping the group reaches what the step started.
            with contextlib.suppress(ChildProcessError):
                os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
            if not keep:
                self._groups.ending(pid)
        spawned.proc.wait()
        if not keep:
            self._groups.ended(pid)
        if spawned.pidfd is not None:
            os.close(spawned.pidfd)
        return spawned

    def _exited(self, spawned: _Spawned) -> bool:
        if spawned.proc.returncode is not None:
            return True
        try:
            found = os.waitid(os.P_PID, spawned.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped elsewhere
            return spawned.proc.poll() is not None
        return found is not None

    def poll(self, timeout: float) -> list[StepResult]:
        """Wait up to ``timeout`` seconds for a step process to exit; return finished steps."""
        deadline = time.monotonic() + timeout
        while self._running:
            self._groups.kill_due(live={r.proc.pid for r in self._running.values()})
            done = [s for s, r in self._running.items() if self._exited(r)]
            if done:
                results = []
                for step in done:
                    spawned = self._reap(step)
                    status = spawned.proc.returncode
                    # Popen reports a signal as a negative return code; rebuild a wait status.
                    wait_status = -status if status < 0 else status << 8
                    results.append(_finished(spawned.job, wait_status))
                return results
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            grace = self._groups.timeout()
            if grace is not None:
                remaining = min(remaining, grace + 0.001)
            fds = [r.pidfd for r in self._running.values() if r.pidfd is not None]
            if fds:
                select.select(fds, [], [], remaining)
            else:
                time.sleep(min(remaining, 0.005))
        return []

    def cancel(self) -> list[str]:
        """Kill every step process group and reap the processes."""
        steps = list(self._running)
        for spawned in self._running.values():
            _kill_group(spawned.proc.pid)
        for step in steps:
            self._reap(step)
        self._groups.kill_due(every=True)
        return steps

    def close(self) -> None:
        """Kill whatever still runs; what ended steps left behind gets the rest of its grace."""
        steps = list(self._running)
        for spawned in self._running.values():
            _kill_group(spawned.proc.pid)
        for step in steps:
            self._reap(step)
        self._groups.close()


# -- in process ------------------------------------------------------------------------------


class InProcessExecutor(_Closing):
    """Runs each step in this process, when it is submitted; for debugging and tests.

    The working directory, ``sys.path``, ``sys.modules["__main__"]`` and the standard streams
    are restored after each step. Steps run one after another; there is no isolation of
    module-level state between steps (imported modules stay imported).
    """

    def __init__(self) -> None:
        self._results: list[StepResult] = []

    def submit(self, job: StepJob) -> None:
        """Run ``job`` now; its result is returned by the next `poll`."""
        from cellpipe.runner import child

        cwd = Path.cwd()
        path = list(sys.path)
        main = sys.modules.get("__main__")
        backend = os.environ.get("MPLBACKEND")
        try:
            if "matplotlib" not in sys.modules:
                os.environ["MPLBACKEND"] = MPL_BACKEND
            child.prepare_process(job.workdir)
            Path(job.scratch_dir).mkdir(parents=True, exist_ok=True)
            log_fd = os.open(job.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                warm = child.warm_up(job, log_fd=log_fd)
            finally:
                os.close(log_fd)
            self._results.append(child.run_job(job, warm, own_process=False))
            child.store_extra_values()  # in this process: before the next step runs
        finally:
            os.chdir(cwd)
            sys.path[:] = path
            if main is not None:
                sys.modules["__main__"] = main
            if backend is None:
                os.environ.pop("MPLBACKEND", None)
            else:
                os.environ["MPLBACKEND"] = backend

    def poll(self, timeout: float) -> list[StepResult]:
        """Return the results of the steps run since the last poll."""
        del timeout
        results, self._results = self._results, []
        return results

    def cancel(self) -> list[str]:
        """Nothing runs in the background; return no steps."""
        return []

    def close(self) -> None:
        """Nothing to release."""


def default_executor(kind: str | None = None) -> Executor:
    """Return an executor by name: ``fork`` (default where available), ``spawn`` or ``inprocess``.

    Args:
        kind: the executor's name; None picks ``fork`` on Linux and ``spawn`` elsewhere.

    Raises:
        ValueError: for an unknown name.
    """
    if kind is None:
        kind = "fork" if sys.platform.startswith("linux") else "spawn"
    if kind == "fork":
        return ForkServerExecutor()
    if kind == "spawn":
        return SpawnExecutor()
    if kind in ("inprocess", "in-process"):
        return InProcessExecutor()
    raise ValueError(f"unknown executor {kind!r}; choose fork, spawn or inprocess")
