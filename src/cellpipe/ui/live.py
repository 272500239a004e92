"""Live runs in the UI: start, cancel and follow runs (server-sent events).

Owns: `RunManager` (the ``cellpipe run NOTEBOOK --json`` processes this UI started: each in
the notebook's folder and its own process group, its JSON lines read in a thread, kept for
late subscribers and fanned out to the event streams) and the routes ``POST /api/runs``,
``POST /api/runs/{run_id}/cancel`` and ``GET /api/runs/{run_id}/events``.

Invariants: an event stream's ``data:`` lines are the JSON documents ``cellpipe run --json``
prints (``run``, ``step`` with a status, ``output``, then ``summary``), replayed from the
start, then followed; the stream ends after ``summary``. A run this UI did not start (the CLI
in another terminal) is followed through the metadata store (`cellpipe.api.run_progress`,
polled by the server, never by the page) and the same documents are synthesised. Every
process started here is stopped when the app shuts down (SIGINT to its group, SIGKILL after
a grace period) and reaped. The page never polls.

Must not depend on: cli, the stores (everything goes through `cellpipe.api`).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import signal
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from cellpipe import api
from cellpipe.errors import CellpipeError
from cellpipe.views.live_lines import ProgressLines

__all__ = [
    "FINAL_EVENT",
    "LiveRun",
    "RunManager",
    "StartError",
    "follow_store",
    "lifespan",
    "manager_of",
    "routes",
    "shutdown",
]

FINAL_EVENT = "summary"
"""The ``event`` of the last document of a run (``cellpipe run --json``'s summary)."""
GRACE_S = 10.0
"""How long a cancelled run gets to record its cancellation before SIGKILL."""
START_TIMEOUT_S = 600.0
"""At most this long for a started run to name itself (its first JSON line)."""
STORE_POLL_S = 0.5
"""How often the server reads the store for a run another process runs."""
KEEPALIVE_S = 15.0
"""An SSE comment this often keeps an idle stream open (and notices a closed browser)."""
MAX_REPLAYED_OUTPUT = 20_000
"""Output lines kept per run for late subscribers; later ones are only sent live (the step's
log has them all)."""
TERMINAL = frozenset({"succeeded", "cached", "failed", "skipped", "cancelled"})


class StartError(CellpipeError):
    """A run could not start: the process ended before naming its run (its error text)."""

    headline = "the run did not start"


@dataclass(eq=False)
class LiveRun:
    """One ``cellpipe run --json`` process started by this UI.

    Attributes:
        notebook: the notebook, relative to the project.
        process: the process (leader of its own process group).
        run_id: the run's id, from its first JSON line (None until then).
        events: every JSON document it printed so far, in order (plus a synthesised
            ``summary`` when it died without one).
        stderr: its error output.
        done: the process ended and every event is in ``events``.
        cancelled: the UI asked it to stop.
    """

    notebook: str
    process: subprocess.Popen[bytes]
    run_id: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    done: bool = False
    cancelled: bool = False
    outputs_kept: int = 0
    started: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    subscribers: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[dict[str, Any] | None]]] = (
        field(default_factory=list)
    )
    threads: list[threading.Thread] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The run's page."""
        return f"/runs/{self.run_id}"


class RunManager:
    """The runs this UI started: start, follow (replay + fan-out), cancel, stop them all.

    Args:
        project: the folder passed as ``project=`` to the api functions (None: the usual
            search from ``CELLPIPE_PROJECT`` or the working directory).
        grace_s: how long a cancelled run gets before SIGKILL.
    """

    def __init__(self, project: str | Path | None, *, grace_s: float = GRACE_S) -> None:
        self.project = project
        self.grace_s = grace_s
        self._lock = threading.Lock()
        self._runs: dict[str, LiveRun] = {}
        self._all: list[LiveRun] = []
        self._closed = False
        _MANAGERS.add(self)

    # -- starting ---------------------------------------------------------------------------

    def start(self, notebook: str, params: Mapping[str, str] | None = None) -> LiveRun:
        """Start a run of ``notebook`` (project-relative) and return once it has its id.

        Raises:
            CellpipeError: the notebook is not one of the project's, is not a valid pipeline
                or a parameter is unknown or ill-typed (checked before anything starts);
                `StartError` when the process ended before naming its run.
        """
        command = api.run_command(notebook, params, project=self.project)
        env = {**os.environ, **command.env, "PYTHONUNBUFFERED": "1"}
        with self._lock:
            if self._closed:
                raise StartError("the UI is shutting down")
            process = subprocess.Popen(
                list(command.argv),
                cwd=command.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # its own group: SIGINT reaches the runner only
            )
            live = LiveRun(notebook=str(notebook), process=process)
            self._all.append(live)
        for target, name in ((self._read_stdout, "stdout"), (self._read_stderr, "stderr")):
            thread = threading.Thread(
                target=target, args=(live,), name=f"cellpipe-ui-run-{name}", daemon=True
            )
            live.threads.append(thread)
            thread.start()
        live.started.wait(START_TIMEOUT_S)
        if live.run_id is None:
            self._stop(live)
            live.finished.wait(self.grace_s * 2)
            raise StartError(_error_text(live.stderr) or "the run ended before it started")
        return live

    def _read_stdout(self, live: LiveRun) -> None:
        assert live.process.stdout is not None
        try:
            for raw in live.process.stdout:
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                if not line.strip():
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    event = None
                if not isinstance(event, dict):  # not a JSON document: show it as output
                    event = {"event": "output", "step": None, "stream": "log", "text": line}
                self._publish(live, event)
        finally:
            live.process.stdout.close()
            live.process.wait()
            for thread in live.threads:
                if thread is not threading.current_thread():
                    thread.join()
            self._end(live)

    def _read_stderr(self, live: LiveRun) -> None:
        assert live.process.stderr is not None
        with live.process.stderr:
            for raw in live.process.stderr:
                live.stderr.append(raw.decode("utf-8", errors="replace"))
                del live.stderr[:-200]  # the end says what went wrong

    def _publish(self, live: LiveRun, event: dict[str, Any]) -> None:
        with self._lock:
            if live.run_id is None and isinstance(event.get("run_id"), str) and event["run_id"]:
                live.run_id = event["run_id"]
                self._runs[live.run_id] = live
                live.started.set()
            if event.get("event") != "output":
                live.events.append(event)
            elif live.outputs_kept < MAX_REPLAYED_OUTPUT:
                live.outputs_kept += 1
                live.events.append(event)
            elif live.outputs_kept == MAX_REPLAYED_OUTPUT:
                live.outputs_kept += 1
                live.events.append(
                    {
                        "event": "output",
                        "step": event.get("step"),
                        "status": "running",
                        "stream": "log",
                        "text": "[more output: see the step's log]",
                    }
                )
            subscribers = list(live.subscribers)
        for loop, queue in subscribers:
            with contextlib.suppress(RuntimeError):  # that stream's loop is closed
                loop.call_soon_threadsafe(queue.put_nowait, event)

    def _end(self, live: LiveRun) -> None:
        if not any(e.get("event") == FINAL_EVENT for e in live.events) and live.run_id:
            code = live.process.returncode
            cancelled = live.cancelled or code in (130, -signal.SIGINT, -signal.SIGKILL)
            self._publish(
                live,
                {
                    "event": FINAL_EVENT,
                    "step": None,
                    "run_id": live.run_id,
                    "status": "cancelled" if cancelled else "failed",
                    "error": _error_text(live.stderr) or f"the run process exited with {code}",
                },
            )
        with self._lock:
            live.done = True
            subscribers = list(live.subscribers)
            live.subscribers.clear()
        for loop, queue in subscribers:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(queue.put_nowait, None)
        live.started.set()
        live.finished.set()

    # -- following --------------------------------------------------------------------------

    def get(self, run_id: str) -> LiveRun | None:
        """Return the run this UI started with that id, or None."""
        with self._lock:
            return self._runs.get(run_id)

    def subscribe(
        self, live: LiveRun
    ) -> tuple[list[dict[str, Any]], asyncio.Queue[dict[str, Any] | None] | None]:
        """Return the events so far and a queue for the ones to come (None when it ended).

        Call from the event loop that will read the queue; `unsubscribe` when done. The queue
        gets each new event, then None after the last one.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        with self._lock:
            replay = list(live.events)
            if live.done:
                return replay, None
            live.subscribers.append((loop, queue))
        return replay, queue

    def unsubscribe(self, live: LiveRun, queue: asyncio.Queue[dict[str, Any] | None]) -> None:
        """Stop sending events to ``queue``."""
        with self._lock:
            live.subscribers[:] = [s for s in live.subscribers if s[1] is not queue]

    # -- stopping ---------------------------------------------------------------------------

    def cancel(self, run_id: str) -> bool:
        """Ask a run this UI started to stop (SIGINT, as Ctrl-C); False when not ours/ended."""
        live = self.get(run_id)
        if live is None or live.done:
            return False
        self._stop(live)
        return True

    def _stop(self, live: LiveRun) -> None:
        live.cancelled = True
        _signal_group(live.process, signal.SIGINT)
        timer = threading.Thread(
            target=self._kill_later, args=(live,), name="cellpipe-ui-run-kill", daemon=True
        )
        timer.start()

    def _kill_later(self, live: LiveRun) -> None:
        if not live.finished.wait(self.grace_s):
            _signal_group(live.process, signal.SIGKILL)

    def shutdown(self) -> None:
        """Stop every run still going (SIGINT, SIGKILL after the grace period) and reap it."""
        with self._lock:
            self._closed = True
            running = [live for live in self._all if not live.done]
        for live in running:
            self._stop(live)
        for live in running:
            if not live.finished.wait(self.grace_s + 5.0):
                _signal_group(live.process, signal.SIGKILL)
                live.finished.wait(self.grace_s)
        _MANAGERS.discard(self)


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    if process.returncode is not None:
        return  # reaped: its pid (and group id) may be someone else's now
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def _error_text(lines: list[str]) -> str:
    text = "".join(lines).strip()
    return text.removeprefix("error: ")


_MANAGERS: set[RunManager] = set()
"""Every manager not shut down yet (held strongly: its processes must not outlive it)."""


@atexit.register
def _stop_all() -> None:  # a last resort when the app's lifespan did not run
    for manager in list(_MANAGERS):
        manager.shutdown()


# -- runs started elsewhere: the store, polled by the server ----------------------------------


async def follow_store(
    run_id: str, project: str | Path | None, *, poll_s: float = STORE_POLL_S
) -> AsyncIterator[dict[str, Any]]:
    """Yield the ``cellpipe run --json`` documents of a run from its records, until it ends.

    A ``run`` document first, then a ``step`` document each time a step's state changes, a
    ``summary`` last. A finished run gives its final states at once.

    Raises:
        CellpipeError: no such run (`RunNotFoundError`) or no project.
    """
    seen: dict[str, str] = {}
    logs: dict[str, tuple[int, ProgressLines]] = {}
    first = True
    while True:
        progress = await run_in_threadpool(api.run_progress, run_id, project=project)
        if first:
            yield {
                "event": "run",
                "step": None,
                "status": "running",
                "run_id": progress["run_id"],
                "steps": [s["step"] for s in progress["steps"]],
            }
            first = False
        for step in progress["steps"]:
            for doc in _step_documents(step, seen):
                if doc["status"] != "running":  # its last lines before its end
                    for line in await _log_lines(progress["run_id"], step, logs, project):
                        yield line
                yield doc
            if step["status"] == "running":
                for line in await _log_lines(progress["run_id"], step, logs, project):
                    yield line
        if progress["status"] != "running":
            yield _summary(progress)
            return
        await asyncio.sleep(poll_s)


async def _log_lines(
    run_id: str,
    step: dict[str, Any],
    logs: dict[str, tuple[int, ProgressLines]],
    project: str | Path | None,
) -> list[dict[str, Any]]:
    """``output`` documents for what the step's log gained since the last look."""
    name = step["step"]
    offset, buffer = logs.get(name, (0, ProgressLines()))
    if offset < 0:
        return []  # ended: its lines were sent
    text, offset = await run_in_threadpool(
        api.step_log_since, run_id, name, offset, project=project
    )
    lines = buffer.feed(text)
    ended = step["status"] != "running"
    if ended:
        lines += buffer.flush()
    logs[name] = (-1 if ended else offset, buffer)
    return [
        {"event": "output", "step": name, "status": "running", "stream": "log", "text": line}
        for line in lines
    ]


def _step_documents(step: dict[str, Any], seen: dict[str, str]) -> Iterator[dict[str, Any]]:
    name, status = step["step"], step["status"]
    before = seen.get(name)
    if before == status:
        return
    if status in ("succeeded", "failed", "cancelled") and before is None:
        # It started and ended between two looks: say it ran first.
        yield {"event": "step", "step": name, "status": "running", "reason": step["reason"]}
    seen[name] = status
    doc: dict[str, Any] = {"event": "step", "step": name, "status": status}
    if status in ("running", "cached", "skipped"):
        doc["reason"] = step["reason"]
    if status in TERMINAL and step["duration_s"] is not None:
        doc["duration_s"] = step["duration_s"]
    if status == "failed":
        doc["error"] = step["error"]
    yield doc


def _summary(progress: dict[str, Any]) -> dict[str, Any]:
    return {
        "event": FINAL_EVENT,
        "step": None,
        "run_id": progress["run_id"],
        "status": progress["status"],
        "metrics": progress["metrics"],
        "parameters": progress["parameters"],
        "steps": {
            s["step"]: {"status": s["status"], "reason": s["reason"]} for s in progress["steps"]
        },
        "notebook": progress["notebook"],
        "error": progress["error"],
    }


# -- the app's side: one manager per app, its routes ------------------------------------------


def manager_of(app: Starlette) -> RunManager:
    """The app's run manager (made on first use)."""
    manager: RunManager | None = getattr(app.state, "run_manager", None)
    if manager is None:
        manager = RunManager(getattr(app.state, "project", None))
        app.state.run_manager = manager
    return manager


def shutdown(app: Starlette) -> None:
    """Stop and reap every run the app started (for servers that run no lifespan)."""
    manager: RunManager | None = getattr(app.state, "run_manager", None)
    if manager is not None:
        manager.shutdown()


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """The app's lifespan: on shutdown, every run this UI started is stopped and reaped."""
    try:
        yield
    finally:
        await run_in_threadpool(shutdown, app)


def sse(event: dict[str, Any]) -> bytes:
    """One server-sent event whose data is the JSON document (one line)."""
    return b"data: " + json.dumps(event, default=str).encode() + b"\n\n"


async def _request_fields(request: Request) -> tuple[str, dict[str, str]]:
    """The notebook and the parameters of a start request (JSON or a form)."""
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            body = await request.json()
        except ValueError:
            raise StartError("the request body is not JSON") from None
        if not isinstance(body, dict):
            raise StartError('send {"notebook": PATH, "params": {NAME: VALUE}}')
        params = body.get("params") or {}
        if not isinstance(params, dict):
            raise StartError("params must be an object of NAME: VALUE")
        return str(body.get("notebook") or ""), {str(k): _param_text(v) for k, v in params.items()}
    return form_fields(await request.body())


def form_fields(body: bytes) -> tuple[str, dict[str, str]]:
    """The notebook and ``param.NAME`` fields of a url-encoded form (the last value wins).

    Parsed here: the form is plain ``application/x-www-form-urlencoded`` (no files), and
    Starlette's form parser needs an extra package.
    """
    from urllib.parse import parse_qsl

    fields = parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    notebook = ""
    params: dict[str, str] = {}
    for key, value in fields:
        if key == "notebook":
            notebook = value
        elif key.startswith("param."):
            params[key[len("param.") :]] = value  # a checkbox after its hidden "false"
    return notebook, params


def _param_text(value: object) -> str:
    """A JSON value as ``-p`` text (strings as they are, the rest as JSON)."""
    return value if isinstance(value, str) else json.dumps(value)


async def start_run(request: Request) -> Response:
    """``POST /api/runs``: start a run; ``{"run_id", "url"}``, or 400 ``{"error"}``."""
    try:
        notebook, params = await _request_fields(request)
        if not notebook:
            raise StartError("name a notebook of the project")
        live = await run_in_threadpool(manager_of(request.app).start, notebook, params)
    except CellpipeError as error:
        return JSONResponse({"error": str(error), "type": type(error).__name__}, status_code=400)
    return JSONResponse({"run_id": live.run_id, "url": live.url})


async def cancel_run(request: Request) -> Response:
    """``POST /api/runs/{run_id}/cancel``: SIGINT to a run this UI started."""
    run_id = request.path_params["run_id"]
    if manager_of(request.app).cancel(run_id):
        return JSONResponse({"run_id": run_id, "cancelling": True})
    return JSONResponse(
        {"error": f"run {run_id} is not running from this UI", "run_id": run_id},
        status_code=409,
    )


async def run_events(request: Request) -> Response:
    """``GET /api/runs/{run_id}/events``: the run's JSON documents as server-sent events."""
    run_id = request.path_params["run_id"]
    manager = manager_of(request.app)
    live = manager.get(run_id)
    if live is not None:
        return _stream(_follow_live(manager, live))
    project = request.app.state.project
    try:  # an unknown run is a 404 now, not an error in the middle of a stream
        await run_in_threadpool(api.run_progress, run_id, project=project)
    except CellpipeError as error:
        return JSONResponse({"error": str(error)}, status_code=404)
    return _stream(_follow_store_events(run_id, project))


def _stream(events: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    return StreamingResponse(
        _with_keepalive(events),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _with_keepalive(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    yield b"retry: 3000\n\n"
    iterator = events.__aiter__()
    pending: asyncio.Task[dict[str, Any]] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(iterator.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=KEEPALIVE_S)
            if not done:
                yield b": keepalive\n\n"
                continue
            try:
                event = pending.result()
            except StopAsyncIteration:
                return
            finally:
                pending = None
            yield sse(event)
    finally:
        if pending is not None:
            pending.cancel()
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()


async def _follow_live(manager: RunManager, live: LiveRun) -> AsyncIterator[dict[str, Any]]:
    replay, queue = manager.subscribe(live)
    try:
        for event in replay:
            yield event
        if queue is None:
            return
        while True:
            new = await queue.get()
            if new is None:
                return
            yield new
    finally:
        if queue is not None:
            manager.unsubscribe(live, queue)


async def _follow_store_events(
    run_id: str, project: str | Path | None
) -> AsyncIterator[dict[str, Any]]:
    try:
        async for event in follow_store(run_id, project):
            yield event
    except CellpipeError as error:  # the store went away mid-stream: say so, end
        yield {
            "event": FINAL_EVENT,
            "step": None,
            "run_id": run_id,
            "status": "unknown",
            "error": str(error),
        }


def routes() -> list[BaseRoute]:
    """The live routes: start, cancel, follow."""
    return [
        Route("/api/runs", start_run, methods=["POST"]),
        Route("/api/runs/{run_id}/cancel", cancel_run, methods=["POST"]),
        Route("/api/runs/{run_id}/events", run_events, methods=["GET"]),
    ]
