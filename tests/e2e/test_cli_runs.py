"""`cellpipe runs`, `show`, `why` (JSON shapes, prefixes, errors) and the runner's processes:
kill -9 of a step or of the runner, and Ctrl-C, through the installed `cellpipe` command."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from run_helpers import json_lines, statuses, summary, write_notebook

pytestmark = pytest.mark.e2e

CELLPIPE = str(Path(sys.executable).parent / "cellpipe")


@pytest.mark.slow
def test_runs_show_why_json_shapes_and_prefixes(run_cli, project):
    first = summary(run_cli("run", project, "--json").out)
    second = summary(run_cli("run", project, "-p", "A=2", "--json").out)
    runs = run_cli("runs", "--json").json()["runs"]
    assert [r["run_id"] for r in runs] == [second["run_id"], first["run_id"]]
    assert set(runs[0]) >= {
        "run_id",
        "pipeline",
        "notebook",
        "status",
        "started_at",
        "finished_at",
        "duration_s",
        "parameters",
        "metrics",
        "error",
    }
    assert runs[0]["parameters"]["A"] == 2
    assert runs[0]["metrics"] == second["metrics"]

    prefix = second["run_id"][: len(second["run_id"]) - 2]
    show = run_cli("show", prefix, "--json")
    assert show.code == 0, show.err
    doc = show.json()
    assert doc["run_id"] == second["run_id"]
    assert [s["step"] for s in doc["steps"]] == ["a", "b", "c", "d"]
    step = doc["steps"][0]
    assert set(step) >= {
        "step",
        "status",
        "cache_reason",
        "cache_key",
        "source_run",
        "inputs",
        "outputs",
        "metrics",
        "files_read",
        "log_path",
        "error",
    }
    assert step["outputs"]["x"]["serializer"] == "json"
    assert Path(doc["executed_notebook"]).is_file()

    why = run_cli("why", prefix, "a", "--json").json()
    assert why == {
        "run_id": second["run_id"],
        "step": "a",
        "status": "succeeded",
        "hit": False,
        "reason": "miss: parameter A changed 1 → 2",
        "source_run": None,
        "cache_key": why["cache_key"],
        "fields": why["fields"],
        "outputs": ["x"],  # issue 11: x is read by b and c
        "outputs_not_read_downstream": [],
    }
    assert why["fields"]["param:A"] == "2"

    text = run_cli("runs")
    assert second["run_id"] in text.out
    assert "succeeded" in text.out
    assert "miss: parameter A changed 1 → 2" in run_cli("show", prefix).out

    ambiguous = run_cli("show", "nb-")
    assert ambiguous.code == 1
    assert "ambiguous" in ambiguous.err
    no_step = run_cli("why", prefix, "zz")
    assert no_step.code == 2  # a usage error (issue 11)
    assert "has no step 'zz'" in no_step.err


SLEEPY = [
    (["imports"], "import os\nimport time\nfrom pathlib import Path"),
    (["step:quick"], "q = 1"),
    (
        ["step:sleepy", "prev:quick"],
        "Path('pid.txt').write_text(str(os.getpid()))\n"
        "time.sleep(float(os.environ.get('NAP', '0')))\n"
        "s = q + 1",
    ),
    (["step:last"], "t = s + 1"),
    (["pipeline-metrics"], "t"),
]


# Upper bounds for a loaded machine, never expected durations: each wait is for a state (a
# file written, a process gone, the command ended) and only a broken run reaches a bound.
BOUND_S = 300.0


class Runs:
    """`cellpipe run` processes started by a test; `close` kills whatever is left of them."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        self.step_pids: list[int] = []

    def start(self, path: Path, *args: str, nap: str = "60") -> subprocess.Popen[str]:
        # PYTHONFAULTHANDLER: a run that hangs past the bound gets SIGABRT and prints where.
        env = {**os.environ, "NAP": nap, "PYTHONFAULTHANDLER": "1"}
        proc = subprocess.Popen(
            [CELLPIPE, "run", str(path), "--json", *args],
            cwd=path.parent,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.procs.append(proc)
        return proc

    def wait_for_pid(self, folder: Path, proc: subprocess.Popen[str]) -> int:
        """Wait until the sleepy step wrote its pid (it runs then)."""
        deadline = time.monotonic() + BOUND_S
        pid_file = folder / "pid.txt"
        while time.monotonic() < deadline:
            text = pid_file.read_text() if pid_file.exists() else ""
            if text.strip():
                self.step_pids.append(int(text))
                return int(text)
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        raise AssertionError(f"the step never started in {BOUND_S} s")

    @staticmethod
    def finish(proc: subprocess.Popen[str]) -> tuple[str, str]:
        """Wait for the command to end; past the bound, fail with the stacks it was stuck in."""
        try:
            return proc.communicate(timeout=BOUND_S)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
            _, err = proc.communicate()
            raise AssertionError(f"cellpipe run still running after {BOUND_S} s:\n{err}") from None

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
        for pid in self.step_pids:  # a step process leads its own group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


@pytest.fixture
def runs() -> Iterator[Runs]:
    started = Runs()
    try:
        yield started
    finally:
        started.close()


def _gone(pid: int, timeout: float = 60) -> bool:
    """Whether the process ended (a zombie waiting for init to reap it counts as ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def _wait_for_record(folder: Path, step: str, status: str) -> None:
    """Wait until a run of the project recorded ``step`` with ``status``."""
    from cellpipe.storage.backends import open_metadata_store

    database = folder / ".cellpipe" / "cellpipe.db"
    deadline = time.monotonic() + BOUND_S
    while time.monotonic() < deadline:
        if database.exists():
            store = open_metadata_store(f"sqlite:///{database}")
            try:
                for run in store.list_runs():
                    if any(
                        s.step == step and s.status.value == status
                        for s in store.step_runs(run.run_id)
                    ):
                        return
            finally:
                store.close()
        time.sleep(0.05)
    raise AssertionError(f"step '{step}' was never recorded {status}")


@pytest.fixture
def sleepy(tmp_path: Path) -> Path:
    return write_notebook(tmp_path / "sleepy", SLEEPY)


@pytest.mark.slow
def test_kill_9_of_a_step_process_fails_the_step_and_the_run(sleepy, runs):
    proc = runs.start(sleepy)
    pid = runs.wait_for_pid(sleepy.parent, proc)
    os.kill(pid, signal.SIGKILL)
    out, err = runs.finish(proc)
    assert proc.returncode == 1, err
    assert statuses(out) == {"quick": "succeeded", "sleepy": "failed", "last": "skipped"}
    failure = summary(out)["failures"][0]
    assert failure["error"] == "step process died from SIGKILL (signal 9)"


@pytest.mark.slow
def test_kill_9_of_the_runner_leaves_an_interrupted_run_that_resumes(
    run_cli, sleepy, monkeypatch, runs
):
    proc = runs.start(sleepy)
    pid = runs.wait_for_pid(sleepy.parent, proc)
    # A step's record is written while the next steps run: wait until 'quick' has its own,
    # or the kill may (rightly) lose it and 'quick' runs again on resume.
    _wait_for_record(sleepy.parent, "quick", "succeeded")
    os.kill(proc.pid, signal.SIGKILL)
    runs.finish(proc)
    assert _gone(pid), "the step process outlived the runner"
    monkeypatch.chdir(sleepy.parent)
    listed = run_cli("runs", "--json").json()["runs"]
    assert [r["status"] for r in listed] == ["interrupted"]
    show = run_cli("show", listed[0]["run_id"], "--json").json()
    assert {s["step"]: s["status"] for s in show["steps"]} == {
        "quick": "succeeded",
        "sleepy": "cancelled",
    }
    tmp = sleepy.parent / ".cellpipe" / "artifacts" / "sha256"
    for artifact in tmp.rglob("*"):
        if artifact.is_file() and not artifact.name.endswith(".ok"):
            assert len(artifact.name) == 64  # only complete, content-named artifacts
    monkeypatch.setenv("NAP", "0")
    again = run_cli("run", sleepy, "--json")
    assert again.code == 0, again.err
    assert statuses(again.out) == {"quick": "cached", "sleepy": "succeeded", "last": "succeeded"}


@pytest.mark.slow
def test_ctrl_c_cancels_the_run_and_kills_every_step_process(run_cli, sleepy, monkeypatch, runs):
    proc = runs.start(sleepy)
    pid = runs.wait_for_pid(sleepy.parent, proc)
    proc.send_signal(signal.SIGINT)
    out, err = runs.finish(proc)
    assert proc.returncode == 130, err
    assert _gone(pid)
    lines = json_lines(out)
    assert lines[-1]["status"] == "cancelled"
    assert statuses(out)["sleepy"] == "cancelled"
    assert "cancelled (Ctrl-C)" in err
    monkeypatch.chdir(sleepy.parent)
    runs = run_cli("runs", "--json").json()["runs"]
    assert runs[0]["status"] == "cancelled"
    show = run_cli("show", runs[0]["run_id"], "--json").json()
    assert {s["step"]: s["status"] for s in show["steps"]} == {
        "quick": "succeeded",
        "sleepy": "cancelled",
        "last": "cancelled",
    }
    assert json.loads(json.dumps(show))  # a plain JSON document
