"""The live runs of the web UI: the run manager (real `cellpipe run --json` processes), the
store follower for runs started elsewhere, and the routes (start, cancel, events as SSE).

No test waits on time: the gated step waits for a file the test creates; every wait is for a
condition with a generous limit.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn
from live_helpers import LIMIT_S, make_gated_project, open_gate
from starlette.applications import Starlette

from cellpipe import api
from cellpipe.ui import live

_T = TypeVar("_T")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_gated_project(tmp_path)


@pytest.fixture
def manager(project: Path) -> Iterator[live.RunManager]:
    made = live.RunManager(project, grace_s=10.0)
    yield made
    made.shutdown()


def _wait_for(live_run: live.LiveRun, predicate: Any) -> None:
    """Wait (by condition, generous limit) until an event matches."""
    done = threading.Event()

    def check() -> bool:
        return any(predicate(e) for e in list(live_run.events))

    for _ in range(int(LIMIT_S / 0.05)):
        if check() or live_run.done:
            break
        done.wait(0.05)
    assert check(), [e.get("event") for e in live_run.events]


def _states(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["step"], e["status"]) for e in events if e.get("event") == "step"]


def test_a_run_starts_reports_in_order_and_finishes(
    project: Path, manager: live.RunManager
) -> None:
    started = manager.start("tiny.py", {"N": "5"})
    assert started.run_id
    _wait_for(started, lambda e: e.get("event") == "step" and e["step"] == "gated")
    open_gate(project)
    assert started.finished.wait(LIMIT_S)
    events = started.events
    assert events[0]["event"] == "run"
    assert events[0]["run_id"] == started.run_id
    assert events[0]["steps"] == ["first", "gated"]
    assert _states(events) == [
        ("first", "running"),
        ("first", "succeeded"),
        ("gated", "running"),
        ("gated", "succeeded"),
    ]
    outputs = [e["text"] for e in events if e.get("event") == "output"]
    assert outputs == ["first 5 0.5 False gate", "through the gate"]
    assert events[-1]["event"] == "summary"
    assert events[-1]["status"] == "succeeded"
    assert events[-1]["parameters"]["N"] == 5
    assert started.process.returncode == 0


def test_the_run_is_recorded_in_the_project(project: Path, manager: live.RunManager) -> None:
    open_gate(project)
    started = manager.start("tiny.py")
    assert started.finished.wait(LIMIT_S)
    progress = api.run_progress(started.run_id or "", project=project)
    assert progress["status"] == "succeeded"
    assert [s["step"] for s in progress["steps"]] == ["first", "gated"]


def test_cancel_stops_the_run_and_reaps_its_process(
    project: Path, manager: live.RunManager
) -> None:
    started = manager.start("tiny.py")
    _wait_for(started, lambda e: e.get("step") == "gated" and e.get("status") == "running")
    assert manager.cancel(started.run_id or "")
    assert started.finished.wait(LIMIT_S)
    assert started.events[-1]["event"] == "summary"
    assert started.events[-1]["status"] == "cancelled"
    assert started.process.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(started.process.pid, 0)
    assert api.run_progress(started.run_id or "", project=project)["status"] == "cancelled"
    assert not manager.cancel(started.run_id or "")


def test_replayed_output_is_capped_per_run(
    project: Path, manager: live.RunManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live, "MAX_REPLAYED_OUTPUT", 1)
    open_gate(project)
    started = manager.start("tiny.py")
    assert started.finished.wait(LIMIT_S)
    outputs = [e["text"] for e in started.events if e["event"] == "output"]
    assert outputs == ["first 3 0.5 False gate", "[more output: see the step's log]"]
    assert started.events[-1]["status"] == "succeeded"


def test_a_notebook_in_a_sub_folder_records_its_run_in_the_ui_project(
    project: Path, manager: live.RunManager
) -> None:
    (project / "sub").mkdir()
    (project / "sub" / "other.py").write_text('# %% tags=["step:only"]\nprint("hi")\nx = 1\n')
    started = manager.start("sub/other.py")
    assert started.finished.wait(LIMIT_S)
    assert started.events[-1]["status"] == "succeeded"
    progress = api.run_progress(started.run_id or "", project=project)
    assert progress["notebook"] == str(project / "sub" / "other.py")
    assert [e["text"] for e in started.events if e["event"] == "output"] == ["hi"]


def test_shutdown_stops_every_run_it_started(project: Path) -> None:
    manager = live.RunManager(project, grace_s=10.0)
    started = manager.start("tiny.py")
    manager.shutdown()
    assert started.done
    assert started.process.returncode is not None
    with pytest.raises(live.StartError):
        manager.start("tiny.py")


@pytest.mark.parametrize(
    ("notebook", "params", "message"),
    [
        ("tiny.py", {"N": "many"}, "'many' is not an int"),
        ("tiny.py", {"NOPE": "1"}, "no parameter 'NOPE'"),
        ("missing.py", {}, "no such notebook"),
        ("../tiny.py", {}, "not a notebook of this project"),
        (".cellpipe/x.py", {}, "inside .cellpipe"),
    ],
)
def test_a_bad_request_starts_nothing(
    manager: live.RunManager, notebook: str, params: dict[str, str], message: str
) -> None:
    with pytest.raises(api.CellpipeError, match=message):
        manager.start(notebook, params)


def test_a_process_that_dies_before_its_run_starts_is_a_start_error(
    project: Path, manager: live.RunManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Valid when checked, broken by the time the process reads it.
    original = api.run_command

    def broken(*args: Any, **kwargs: Any) -> api.RunCommand:
        command = original(*args, **kwargs)
        (project / "tiny.py").write_text('# %% tags=["step:a"]\nx = (\n')
        return command

    monkeypatch.setattr(api, "run_command", broken)
    with pytest.raises(live.StartError, match=r"tiny\.py"):
        manager.start("tiny.py")


# -- the store follower (a run started elsewhere) ---------------------------------------------


def _collect(run_id: str, project: Path) -> list[dict[str, Any]]:
    async def gather() -> list[dict[str, Any]]:
        return [e async for e in live.follow_store(run_id, project, poll_s=0.05)]

    return _in_own_loop(gather)


def _in_own_loop(make: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run a coroutine in a thread with its own event loop (Playwright's sync API may hold
    this thread's loop when the browser tests ran first in the session)."""
    box: list[_T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            box.append(asyncio.run(make()))
        except BaseException as error:  # re-raised in the test's thread
            errors.append(error)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(LIMIT_S * 2)
    if errors:
        raise errors[0]
    assert box, "the coroutine did not finish"
    return box[0]


def test_a_finished_run_from_the_store_replays_its_final_states(
    project: Path, manager: live.RunManager
) -> None:
    open_gate(project)
    started = manager.start("tiny.py")
    assert started.finished.wait(LIMIT_S)
    events = _collect(started.run_id or "", project)
    assert events[0] == {
        "event": "run",
        "step": None,
        "status": "running",
        "run_id": started.run_id,
        "steps": ["first", "gated"],
    }
    assert _states(events) == [
        ("first", "running"),
        ("first", "succeeded"),
        ("gated", "running"),
        ("gated", "succeeded"),
    ]
    assert events[-1]["event"] == "summary"
    assert events[-1]["status"] == "succeeded"
    # The same documents as the process printed (output lines before each step's end).
    assert _shape(events) == _shape(started.events)


def _shape(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (e["event"], e["step"], e["status"], e.get("text"), e.get("reason"))
        for e in events
        if e["event"] in ("step", "output")
    ]


def test_step_log_since_reads_whole_characters_and_only_run_folders(project: Path) -> None:
    folder = project / ".cellpipe" / "runs" / "r-1" / "steps" / "s"
    folder.mkdir(parents=True)
    (folder / "log.txt").write_bytes("café\n".encode()[:4])  # "caf" + half of "é"
    assert api.step_log_since("r-1", "s", project=project) == ("caf", 3)
    (folder / "log.txt").write_bytes("café\n".encode())
    assert api.step_log_since("r-1", "s", 3, project=project) == ("é\n", 6)
    assert api.step_log_since("r-1", "missing", project=project) == ("", 0)
    assert api.step_log_since("..", "s", project=project) == ("", 0)
    assert api.step_log_since("r-1/../r-1", "s", project=project) == ("", 0)


def test_a_running_run_from_the_store_is_followed_until_it_ends(
    project: Path, manager: live.RunManager
) -> None:
    started = manager.start("tiny.py")
    _wait_for(started, lambda e: e.get("step") == "gated" and e.get("status") == "running")
    seen: list[dict[str, Any]] = []

    async def follow() -> None:
        async for event in live.follow_store(started.run_id or "", project, poll_s=0.05):
            seen.append(event)
            if event.get("step") == "gated" and event.get("status") == "running":
                open_gate(project)  # only now: the follower saw it running first

    _in_own_loop(follow)
    assert ("gated", "running") in _states(seen)
    lines = [e["text"] for e in seen if e["event"] == "output"]
    assert lines == ["first 3 0.5 False gate", "through the gate"]
    assert _states(seen)[-1] == ("gated", "succeeded")
    assert seen[-1]["status"] == "succeeded"


# -- the routes ----------------------------------------------------------------------------------


class Client(httpx.Client):
    """An HTTP client of a real server (streams as a browser would; no ASGI buffering)."""

    app: Starlette


@pytest.fixture
def client(project: Path) -> Iterator[Client]:
    app = Starlette(routes=live.routes(), lifespan=live.lifespan)
    app.state.project = project
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(int(LIMIT_S / 0.05)):
        if server.started or not thread.is_alive():
            break
        threading.Event().wait(0.05)
    assert server.started
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        with Client(base_url=f"http://127.0.0.1:{port}", timeout=LIMIT_S) as http:
            http.app = app
            yield http
    finally:
        server.should_exit = True
        thread.join(LIMIT_S)


def _sse(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    for line in lines:
        if line.startswith("data: "):
            yield json.loads(line[len("data: ") :])


def test_start_then_events_stream_replays_and_follows_to_the_end(
    project: Path, client: Client
) -> None:
    response = client.post("/api/runs", json={"notebook": "tiny.py", "params": {"N": 4}})
    assert response.status_code == 200
    body = response.json()
    assert body["url"] == f"/runs/{body['run_id']}"
    events = []
    with client.stream("GET", f"/api/runs/{body['run_id']}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for event in _sse(stream.iter_lines()):
            events.append(event)
            if event.get("step") == "gated" and event.get("status") == "running":
                open_gate(project)
    assert events[0]["event"] == "run"
    assert _states(events) == [
        ("first", "running"),
        ("first", "succeeded"),
        ("gated", "running"),
        ("gated", "succeeded"),
    ]
    assert events[-1]["event"] == "summary"
    assert events[-1]["parameters"]["N"] == 4


def test_a_form_post_starts_a_run_and_cancel_stops_it(project: Path, client: Client) -> None:
    response = client.post(
        "/api/runs", data={"notebook": "tiny.py", "param.N": "2", "param.LOUD": "true"}
    )
    assert response.status_code == 200
    run_id = response.json()["run_id"]
    with client.stream("GET", f"/api/runs/{run_id}/events") as stream:
        for event in _sse(stream.iter_lines()):
            if event.get("step") == "gated" and event.get("status") == "running":
                cancelled = client.post(f"/api/runs/{run_id}/cancel")
                assert cancelled.json() == {"run_id": run_id, "cancelling": True}
            last = event
    assert last["event"] == "summary"
    assert last["status"] == "cancelled"
    assert client.post(f"/api/runs/{run_id}/cancel").status_code == 409


def test_a_closed_stream_unsubscribes(project: Path, client: Client) -> None:
    run_id = client.post("/api/runs", json={"notebook": "tiny.py"}).json()["run_id"]
    with client.stream("GET", f"/api/runs/{run_id}/events") as stream:
        for event in _sse(stream.iter_lines()):
            if event.get("step") == "gated" and event.get("status") == "running":
                break
    started = live.manager_of(client.app).get(run_id)
    assert started is not None
    gone = threading.Event()
    for _ in range(int(LIMIT_S / 0.05)):  # the server notices the closed connection
        if not started.subscribers:
            break
        gone.wait(0.05)
    assert started.subscribers == []
    assert client.post(f"/api/runs/{run_id}/cancel").status_code == 200
    assert started.finished.wait(LIMIT_S)


def test_a_bad_start_is_a_400_with_the_error(client: Client) -> None:
    response = client.post("/api/runs", json={"notebook": "tiny.py", "params": {"N": "x"}})
    assert response.status_code == 400
    assert "'x' is not an int" in response.json()["error"]
    assert client.post("/api/runs", json={"params": {}}).status_code == 400
    assert (
        client.post(
            "/api/runs", content=b"[", headers={"content-type": "application/json"}
        ).status_code
        == 400
    )


def test_events_of_an_unknown_run_are_a_404(client: Client) -> None:
    assert client.get("/api/runs/nope-123/events").status_code == 404


def test_events_of_a_run_started_elsewhere_come_from_the_store(
    project: Path, client: Client
) -> None:
    open_gate(project)
    other = live.RunManager(project)  # "another terminal": not this app's manager
    try:
        started = other.start("tiny.py")
        assert started.finished.wait(LIMIT_S)
    finally:
        other.shutdown()
    with client.stream("GET", f"/api/runs/{started.run_id}/events") as stream:
        events = list(_sse(stream.iter_lines()))
    assert _states(events)[-1] == ("gated", "succeeded")
    assert events[-1]["event"] == "summary"


def test_stopping_cellpipe_ui_cancels_the_runs_it_started(project: Path) -> None:
    import signal
    import subprocess
    import sys

    src = str(Path(live.__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": src}
    with subprocess.Popen(
        [sys.executable, "-m", "cellpipe", "ui", "--json", "--no-browser"],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as ui:
        try:
            run_id = _start_and_wait_running(ui)
            ui.send_signal(signal.SIGINT)
            assert ui.wait(LIMIT_S) == 0
        finally:
            if ui.poll() is None:
                ui.kill()
                ui.wait()
    assert api.run_progress(run_id, project=project)["status"] == "cancelled"


def _start_and_wait_running(ui: Any) -> str:
    """Through a running `cellpipe ui`: start tiny.py, return once its gated step runs."""
    text = ""
    for line in ui.stdout:  # the announcement: one JSON document, maybe indented
        text += line
        try:
            url = json.loads(text)["url"]
            break
        except ValueError:
            continue
    base, token = url.split("/?token=")
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=headers, timeout=LIMIT_S) as http:
        run_id = str(http.post("/api/runs", json={"notebook": "tiny.py"}).json()["run_id"])
        with http.stream("GET", f"/api/runs/{run_id}/events") as stream:
            for event in _sse(stream.iter_lines()):
                if event.get("step") == "gated" and event.get("status") == "running":
                    return run_id
    raise AssertionError("the run ended before its gated step ran")
