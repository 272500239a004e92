"""An early fork server: started before the run knows its notebook's preamble.

Owns: `start_bare` and `BareServer` (a ``python -m cellpipe.runner.forkserver`` process that
has imported its machinery and waits for its first request), `step_env` (the environment of
step processes and of the fork server) and `MPL_BACKEND`.

The runner starts a bare server at the top of ``cellpipe run`` so that the interpreter's
start and the server's imports overlap the runner's own start-up; the fork server executor
adopts it for the run's first setup. Once the runner knows the pipeline it may say whether
the steps need an IPython shell (`BareServer.prepare`), so the server builds the shell while
the runner is still planning instead of when the first step is due.

Invariants: importing this module costs nothing beyond the standard library (it runs before
the CLI's own imports); whoever starts a bare server kills it (`BareServer.kill`, a no-op
once adopted) on every path where it is not adopted.

Must not depend on: anything in cellpipe.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys

__all__ = ["MPL_BACKEND", "BareServer", "server_command", "start_bare", "step_env"]

MPL_BACKEND = "module://cellpipe.runner._mpl_backend"
"""``MPLBACKEND`` of step processes: Agg rendering, figures shown as PNG outputs."""


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

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self._done = False

    def adopt(self) -> subprocess.Popen[bytes] | None:
        """Hand the process over to the executor; None (and killed) if it died."""
        if self._done:
            return None
        if self.proc.poll() is not None:
            self.kill()
            return None
        self._done = True
        return self.proc

    def prepare(self, *, shell: bool) -> None:
        """Tell the server, before "init", whether the steps need an IPython shell.

        With ``shell`` the server imports IPython and builds the shell now, while the
        runner plans; without, it builds none unless the run's first job asks for it.
        Ignored (the server is then killed at adoption) when the server has died.
        """
        if self._done or self.proc.stdin is None:
            return
        with contextlib.suppress(OSError):
            self.proc.stdin.write((json.dumps({"op": "prepare", "shell": shell}) + "\n").encode())
            self.proc.stdin.flush()

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


def server_command(python: str | None = None) -> list[str]:
    """The fork server's command line.

    ``-P``: the folder it starts in is not put on ``sys.path`` (a bare server starts before
    the notebook's folder is known, and a ``json.py`` there must not shadow the server's
    own imports); "init" puts the notebook's folder first, as Jupyter does.
    """
    return [python or sys.executable, "-P", "-m", "cellpipe.runner.forkserver"]


def start_bare(*, python: str | None = None) -> BareServer | None:
    """Start a fork server that imports its machinery and waits for "init".

    It starts in the current folder; "init" moves it to the notebook's folder. Returns None
    when it cannot be started (the executor then starts one as usual).
    """
    try:
        proc = subprocess.Popen(
            server_command(python),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # until "init" names the run's log
            env=step_env(),
            start_new_session=True,  # Ctrl-C in the terminal reaches the runner only
        )
    except OSError:
        return None
    return BareServer(proc)
