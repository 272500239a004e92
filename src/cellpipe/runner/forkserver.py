"""The warm parent of step processes: ``python -m cellpipe.runner.forkserver``.

Owns: the fork server's main loop. It runs the imports and functions cells once (with the
parameters bound), then forks one child per step it is asked to run; the child runs the step
(`cellpipe.runner.child.run_job`) and writes its result file, while the server reports when
each child started and how it exited.

Protocol (JSON lines; requests on stdin, replies on stdout)::

    (start-up)                          import the runner's child machinery and IPython
                                        and create the shell: no user code yet
    -> {"op": "init", "job": {...}, "log": "PATH"}
                                        warm up with this job's preamble and parameters;
                                        with "log", stdout and stderr go there from now on
    <- {"event": "ready", "failed": false}
    -> {"op": "run", "job": {...}}      fork a child for the job
    <- {"event": "started", "step": "train", "pid": 4242}
    <- {"event": "exited", "step": "train", "pid": 4242, "status": 0}   (a waitpid status)
    -> {"op": "cancel"}                 SIGKILL every child's process group and reap them
    <- {"event": "cancelled"}
    (EOF on stdin)                      kill the children, reap them, run the atexit
                                        handlers and exit (without interpreter teardown)

Invariants: the server is single-threaded and never starts threads itself, so fork is safe;
each child gets its own process group (so killing the group also kills what the step
started); every child is reaped by the server; the protocol descriptors are moved off fds 0
and 1 before any user code runs, so stray output cannot corrupt the protocol; the server
ignores SIGINT (the runner decides what Ctrl-C means) and children restore the default.

The runner may start a *bare* server (`start_bare`) before it knows the notebook's
preamble, so the interpreter's and IPython's start overlap the runner's own start-up; the
executor adopts it for the run's first setup (the preamble only runs on "init", after the
runner's start snapshot), and whoever started it kills it if it is never adopted.

Must not depend on: notebooks, the KFP compiler, the CLI or the UI. Importing this module is
cheap (the runner imports it to start a bare server): the child machinery and IPython are
only imported by `main`.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import json
import os
import select
import signal
import subprocess
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cellpipe.runner.jobs import MPL_BACKEND, StepJob

if TYPE_CHECKING:
    from cellpipe.runner.child import WarmState

__all__ = ["BareServer", "main", "start_bare", "step_env"]


def step_env() -> dict[str, str]:
    """The environment of step processes (and of the fork server)."""
    env = dict(os.environ)
    env["MPLBACKEND"] = MPL_BACKEND
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class BareServer:
    """A fork server started before its run's preamble is known (see `start_bare`).

    The executor takes it over with `adopt`; until then it only holds imports. `kill` (safe
    to call any number of times, a no-op once adopted) takes it down and reaps it.
    """

    def __init__(self, proc: subprocess.Popen[bytes], workdir: str) -> None:
        self.proc = proc
        self.workdir = workdir
        self._done = False

    def adopt(self, workdir: str) -> subprocess.Popen[bytes] | None:
        """Hand the process over for a setup in ``workdir``; None (and killed) if unfit."""
        if self._done:
            return None
        if self.proc.poll() is not None or str(Path(workdir).resolve()) != self.workdir:
            self.kill()
            return None
        self._done = True
        return self.proc

    def kill(self) -> None:
        """Kill the server (its whole process group) and reap it, unless it was adopted."""
        if self._done:
            return
        self._done = True
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        except PermissionError:  # not yet its own group leader
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self.proc.wait()


def start_bare(workdir: str, *, python: str | None = None) -> BareServer | None:
    """Start a fork server in ``workdir`` that imports its machinery and waits for "init".

    Returns None when it cannot be started (the executor then starts one as usual).
    """
    workdir = str(Path(workdir).resolve())
    try:
        proc = subprocess.Popen(
            [python or sys.executable, "-m", "cellpipe.runner.forkserver"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # until "init" names the run's log
            cwd=workdir,
            env=step_env(),
            start_new_session=True,  # Ctrl-C in the terminal reaches the runner only
        )
    except OSError:
        return None
    return BareServer(proc, workdir)


class _Server:
    def __init__(self, proto_in: int, proto_out: int) -> None:
        self.proto_in = proto_in
        self.proto_out = proto_out
        self.warm: WarmState | None = None
        self.children: dict[int, tuple[str, int | None]] = {}  # pid -> (step, pidfd)
        self.poller = select.poll()
        self.poller.register(proto_in, select.POLLIN)
        self.buffer = b""

    def send(self, message: dict[str, Any]) -> None:
        data = (json.dumps(message) + "\n").encode()
        while data:
            written = os.write(self.proto_out, data)
            data = data[written:]

    def handle(self, message: dict[str, Any]) -> None:
        op = message["op"]
        if op == "init":
            from cellpipe.runner.child import preload_serializers, prepare_process, warm_up

            log = message.get("log")
            if log is not None:
                _redirect_output(log)
            job = StepJob.from_json(message["job"])
            prepare_process(job.workdir)
            self.warm = warm_up(job, log_fd=2)
            if self.warm.failure is None:
                preload_serializers()
            # Everything alive now is shared with every child: keep the collector away from
            # it, so children do not copy pages just to update object headers.
            gc.freeze()
            self.send({"event": "ready", "failed": self.warm.failure is not None})
        elif op == "run":
            self.fork(StepJob.from_json(message["job"]))
        elif op == "cancel":
            self.kill_all()
            self.send({"event": "cancelled"})

    def fork(self, job: StepJob) -> None:
        warm = self.warm
        if warm is None:
            raise RuntimeError("the fork server got a job before 'init'")
        pid = os.fork()
        if pid == 0:
            self.run_child(job, warm)
        with contextlib.suppress(OSError):  # the child does it too; either may run first
            os.setpgid(pid, pid)
        pidfd: int | None = None
        if hasattr(os, "pidfd_open"):
            pidfd = os.pidfd_open(pid)
            self.poller.register(pidfd, select.POLLIN)
        self.children[pid] = (job.step, pidfd)
        self.send({"event": "started", "step": job.step, "pid": pid})

    def run_child(self, job: StepJob, warm: WarmState) -> None:
        from cellpipe.runner.child import run_job, write_result

        code = 1
        try:
            os.setpgid(0, 0)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            for fd in (self.proto_in, self.proto_out):
                os.close(fd)
            for _, pidfd in self.children.values():
                if pidfd is not None:
                    os.close(pidfd)
            result = run_job(job, warm, own_process=True)
            write_result(result, job.result_path)
            code = 0
        except BaseException:
            with contextlib.suppress(OSError):
                os.write(2, traceback.format_exc().encode("utf-8", "replace"))
        finally:
            os._exit(code)

    def reap(self, pid: int, *, block: bool) -> bool:
        done, status = os.waitpid(pid, 0 if block else os.WNOHANG)
        if done == 0:
            return False
        step, pidfd = self.children.pop(pid)
        if pidfd is not None:
            self.poller.unregister(pidfd)
            os.close(pidfd)
        self.send({"event": "exited", "step": step, "pid": pid, "status": status})
        return True

    def kill_all(self) -> None:
        for pid in list(self.children):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            except PermissionError:  # not yet in its own group: kill the process itself
                os.kill(pid, signal.SIGKILL)
        for pid in list(self.children):
            self.reap(pid, block=True)

    def serve(self) -> None:
        timeout = None if hasattr(os, "pidfd_open") else 10
        by_fd: dict[int, int] = {}
        while True:
            by_fd = {fd: pid for pid, (_, fd) in self.children.items() if fd is not None}
            for fd, _ in self.poller.poll(timeout):
                if fd == self.proto_in:
                    data = os.read(self.proto_in, 1 << 16)
                    if not data:
                        self.kill_all()
                        return
                    self.buffer += data
                    while b"\n" in self.buffer:
                        line, self.buffer = self.buffer.split(b"\n", 1)
                        if line.strip():
                            self.handle(json.loads(line))
                elif fd in by_fd:
                    self.reap(by_fd[fd], block=True)
            if timeout is not None:
                for pid in list(self.children):
                    self.reap(pid, block=False)


def _redirect_output(path: str) -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _preload() -> None:
    """Import what every warm-up needs and create the shell; runs no user code."""
    import cellpipe.runner.child  # noqa: F401
    from cellpipe.runner._capture import get_shell

    get_shell()


def main() -> int:
    """Serve until stdin closes; then run the atexit handlers and leave at once."""
    proto_in = os.dup(0)
    proto_out = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # stray output (C extensions, preamble) goes to the server log
    os.close(devnull)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _preload()
    _Server(proto_in, proto_out).serve()
    # The children are reaped. What the preamble registered still runs (atexit, and so
    # weakref.finalize: temporary folders are removed), but the interpreter's teardown of
    # a process holding pandas, sklearn and the like (0.1-0.2 s, which the runner waits
    # for at the end of every run) is skipped: it frees memory the exit frees anyway.
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)


if __name__ == "__main__":
    # Use the imported module, not this `__main__` copy: the warm-up replaces
    # sys.modules["__main__"] with the notebook's namespace.
    from cellpipe.runner import forkserver as _forkserver

    sys.exit(_forkserver.main())
