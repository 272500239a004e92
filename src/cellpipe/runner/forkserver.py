"""The warm parent of step processes: ``python -m cellpipe.runner.forkserver``.

Owns: the fork server's main loop. It runs the imports and functions cells once (with the
parameters bound), then forks one child per step it is asked to run; the child runs the step
(`cellpipe.runner.child.run_job`) and writes its result file, while the server reports when
each child started and how it exited.

Protocol (JSON lines; requests on stdin, replies on stdout)::

    (start-up)                          import the runner's child machinery: no user code
    -> {"op": "prepare", "shell": true} (optional, before "init") build the IPython shell
                                        now, while the runner plans the run
    -> {"op": "init", "job": {...}, "log": "PATH"}
                                        warm up with this job's preamble and parameters
                                        (building the shell first if the job asks for it);
                                        with "log", stdout and stderr go there from now on
    <- {"event": "ready", "failed": false}
    -> {"op": "run", "job": {...}}      fork a child for the job
    <- {"event": "started", "step": "train", "pid": 4242}
    <- {"event": "reported", "step": "train", "pid": 4242}  (the child's result file is
                                        there; it still stores the values nothing downstream
                                        reads before it exits. Each child writes one byte to
                                        a pipe of its own, which the server relays, so user
                                        code never holds the protocol's descriptor)
    <- {"event": "exited", "step": "train", "pid": 4242, "status": 0}   (a waitpid status)
    -> {"op": "cancel"}                 SIGKILL every child's process group and reap them
    <- {"event": "cancelled"}
    (EOF on stdin)                      kill the children, reap them, let what ended
                                        steps left behind finish its grace, run the
                                        atexit handlers and exit (without teardown)

Invariants: the server is single-threaded and never starts threads itself, so fork is safe;
each child gets its own process group (so killing the group also kills what the step
started), and when a child exits its group is stopped (SIGTERM before the child is reaped,
SIGKILL after a grace for what is left: `cellpipe.runner._groups`) unless its job has
``keep_processes``; every child is reaped by the server; the protocol descriptors are moved
off fds 0 and 1 before any user code runs, so stray output cannot corrupt the protocol; the server
ignores SIGINT (the runner decides what Ctrl-C means) and children restore the default.

The runner may start a *bare* server (`cellpipe.runner._bare.start_bare`) before it knows
the notebook's preamble, so the interpreter's start overlaps the runner's own start-up; the
executor adopts it for the run's first setup (the preamble only runs on "init", after the
runner's start snapshot), and whoever started it kills it if it is never adopted. IPython is
imported only when the pipeline's code needs a shell (`cellpipe.runner.jobs.needs_shell`).

Must not depend on: notebooks, the KFP compiler, the CLI or the UI. Importing this module is
cheap: the child machinery is only imported by `main`.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import json
import os
import select
import signal
import sys
import traceback
from typing import TYPE_CHECKING, Any

from cellpipe.runner._groups import StepGroups

if TYPE_CHECKING:
    from cellpipe.runner.child import WarmState
    from cellpipe.runner.jobs import StepJob

__all__ = ["main"]


class _Server:
    def __init__(self, proto_in: int, proto_out: int) -> None:
        self.proto_in = proto_in
        self.proto_out = proto_out
        self.warm: WarmState | None = None
        self.children: dict[int, tuple[str, int | None]] = {}  # pid -> (step, pidfd)
        # read end of each child's report pipe -> (pid, step): "reported" comes through it
        self.reports: dict[int, tuple[int, str]] = {}
        self.keep: set[int] = set()  # children whose processes may outlive them
        self.groups = StepGroups()
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
        if op == "prepare":
            if message.get("shell"):
                from cellpipe.runner._capture import get_shell

                get_shell()
        elif op == "init":
            from cellpipe.runner.child import preload_serializers, prepare_process, warm_up
            from cellpipe.runner.jobs import StepJob

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
            from cellpipe.runner.jobs import StepJob

            self.fork(StepJob.from_json(message["job"]))
        elif op == "cancel":
            self.kill_all()
            self.send({"event": "cancelled"})

    def fork(self, job: StepJob) -> None:
        warm = self.warm
        if warm is None:
            raise RuntimeError("the fork server got a job before 'init'")
        report_r, report_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(report_r)
            self.run_child(job, warm, report_w)
        os.close(report_w)
        os.set_blocking(report_r, False)  # a stale poll event for a reused number: no wait
        self.reports[report_r] = (pid, job.step)
        self.poller.register(report_r, select.POLLIN)
        with contextlib.suppress(OSError):  # the child does it too; either may run first
            os.setpgid(pid, pid)
        pidfd: int | None = None
        if hasattr(os, "pidfd_open"):
            pidfd = os.pidfd_open(pid)
            self.poller.register(pidfd, select.POLLIN)
        self.children[pid] = (job.step, pidfd)
        if job.keep_processes:
            self.keep.add(pid)
        self.send({"event": "started", "step": job.step, "pid": pid})

    def close_report(self, fd: int) -> None:
        self.reports.pop(fd, None)
        self.poller.unregister(fd)
        os.close(fd)

    def relay_report(self, fd: int) -> None:
        """A child wrote to its report pipe (or closed it): pass "reported" on, once."""
        pid, step = self.reports[fd]
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        if data:
            self.send({"event": "reported", "step": step, "pid": pid})
        self.close_report(fd)

    def run_child(self, job: StepJob, warm: WarmState, report_fd: int) -> None:
        from cellpipe.runner.child import (
            extra_values_pending,
            report_result,
            run_job,
            store_extra_values,
        )

        code = 1
        try:
            os.setpgid(0, 0)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            for fd in (self.proto_in, self.proto_out, *self.reports):
                os.close(fd)
            for _, pidfd in self.children.values():
                if pidfd is not None:
                    os.close(pidfd)
            result = run_job(job, warm, own_process=True)
            code = report_result(result, job.result_path)
            # The result is there: dependants may start while this process stores the
            # values nothing downstream reads. The server relays one byte as "reported".
            extras = code == 0 and extra_values_pending()
            if extras:
                with contextlib.suppress(OSError):
                    os.write(report_fd, b"r")
            os.close(report_fd)
            if extras:
                store_extra_values()
        except BaseException:
            with contextlib.suppress(OSError):
                os.write(2, traceback.format_exc().encode("utf-8", "replace"))
        finally:
            os._exit(code)

    def reap(self, pid: int, *, block: bool) -> bool:
        flags = os.WEXITED | os.WNOWAIT | (0 if block else os.WNOHANG)
        if os.waitid(os.P_PID, pid, flags) is None:
            return False
        # Exited, not reaped yet: its pid still names its group and no new process can take
        # it, so the signal reaches what the step started (and nothing else).
        keep = pid in self.keep
        self.keep.discard(pid)
        if not keep:
            self.groups.ending(pid)
        _, status = os.waitpid(pid, 0)
        if not keep:
            self.groups.ended(pid)
        step, pidfd = self.children.pop(pid)
        if pidfd is not None:
            self.poller.unregister(pidfd)
            os.close(pidfd)
        for fd, (child, _) in list(self.reports.items()):
            if child == pid:  # "exited" says it all: a report not relayed yet is moot
                self.close_report(fd)
        self.send({"event": "exited", "step": step, "pid": pid, "status": status})
        return True

    def kill_all(self, *, grace: bool = False) -> None:
        """SIGKILL every running child's group and reap them.

        Groups of steps that already ended are killed at once too, or, with ``grace`` (the
        run is over, not cancelled), get the rest of their grace first.
        """
        if not grace:
            self.groups.kill_due(live=self.children, every=True)
        for pid in list(self.children):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            except PermissionError:  # not yet in its own group: kill the process itself
                os.kill(pid, signal.SIGKILL)
        for pid in list(self.children):
            self.reap(pid, block=True)
        self.groups.close()

    def serve(self) -> None:
        fallback = None if hasattr(os, "pidfd_open") else 10  # ms; without pidfds: poll
        by_fd: dict[int, int] = {}
        while True:
            by_fd = {fd: pid for pid, (_, fd) in self.children.items() if fd is not None}
            timeout = fallback
            grace = self.groups.timeout()
            if grace is not None:
                ms = int(grace * 1000) + 1
                timeout = ms if timeout is None else min(timeout, ms)
            for fd, _ in self.poller.poll(timeout):
                if fd == self.proto_in:
                    data = os.read(self.proto_in, 1 << 16)
                    if not data:
                        self.kill_all(grace=True)
                        return
                    self.buffer += data
                    while b"\n" in self.buffer:
                        line, self.buffer = self.buffer.split(b"\n", 1)
                        if line.strip():
                            self.handle(json.loads(line))
                elif fd in self.reports:
                    self.relay_report(fd)
                elif fd in by_fd and by_fd[fd] in self.children:
                    self.reap(by_fd[fd], block=True)
            self.groups.kill_due(live=self.children)
            if fallback is not None:
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
    """Import what every warm-up needs; runs no user code and builds no shell yet."""
    import cellpipe.runner.child  # noqa: F401


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
