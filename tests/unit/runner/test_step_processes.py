"""What a step starts ends with the step (issue 10, item 11), unless it is tagged processes:keep.

Every check waits for a state (a file written, a process gone) with a generous bound, never
for a fixed time; every process a test causes is killed in a ``finally``, pass or fail.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from runner_testkit import Runner, pipeline, step

import cellpipe
from cellpipe.pipeline.model import StepSettings
from cellpipe.storage.records import StepStatus

BOUND_S = 60.0  # an upper bound for a loaded machine, not an expected duration


def _state(pid: int) -> str | None:
    """The process's state letter, or None when there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan killed here waits for init to reap it)."""
    return _state(pid) not in (None, "Z", "X")


def _gone_within(pid: int, bound: float = BOUND_S) -> bool:
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        if not _running(pid):
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def started_pids() -> Iterator[list[int]]:
    """Pids a test learnt about; each is SIGKILLed at the end, whatever the outcome."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _pids(path: Path) -> list[int]:
    return [int(p) for p in path.read_text().split()]


SLEEPER = (
    "import subprocess\n"
    "child = subprocess.Popen(['sleep', '1000'])\n"
    "open('sleeper.pid', 'w').write(str(child.pid))\n"
)

# The shell and its sleep ignore SIGTERM: only the SIGKILL after the grace stops them.
STUBBORN = (
    "import subprocess\n"
    "child = subprocess.Popen(['sh', '-c', 'trap \"\" TERM; sleep 1000 & echo $! > stubborn.pid;"
    " wait'])\n"
    "import time\n"
    "while not open('stubborn.pid', 'a+').tell(): time.sleep(0.01)\n"
)


def test_a_process_the_step_started_is_stopped_when_the_step_ends(
    runner: Runner, started_pids: list[int]
) -> None:
    pipe = pipeline(step("spawner", 4, SLEEPER), step("after", 5, "x = 1", after=["spawner"]))
    outcome, _ = runner.run(pipe)
    started_pids.extend(_pids(runner.workdir / "sleeper.pid"))
    assert outcome.results["spawner"].status is StepStatus.SUCCEEDED
    assert outcome.results["after"].status is StepStatus.SUCCEEDED
    assert _gone_within(started_pids[0]), "the step's sleep outlived the step"


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace(
    runner: Runner, started_pids: list[int]
) -> None:
    outcome, _ = runner.run(pipeline(step("stubborn", 4, STUBBORN)))
    started_pids.extend(_pids(runner.workdir / "stubborn.pid"))
    assert outcome.results["stubborn"].status is StepStatus.SUCCEEDED
    assert _gone_within(started_pids[0]), "a process ignoring SIGTERM outlived the step"


def test_processes_keep_leaves_the_step_s_processes_running(
    runner: Runner, started_pids: list[int]
) -> None:
    keeper = dataclasses.replace(
        step("daemon", 4, SLEEPER), settings=StepSettings(keep_processes=True)
    )
    outcome, _ = runner.run(pipeline(keeper))
    started_pids.extend(_pids(runner.workdir / "sleeper.pid"))
    assert outcome.results["daemon"].status is StepStatus.SUCCEEDED
    assert _running(started_pids[0]), "processes:keep did not keep the step's process"


NOTEBOOK = """\
# %% tags=["imports"]
import subprocess

# %% tags=["step:daemon", "processes:keep"]
server = subprocess.Popen(["sleep", "1000"])
open("daemon.pid", "w").write(str(server.pid))

# %% tags=["step:worker"]
helper = subprocess.Popen(["sleep", "1000"])
open("worker.pid", "w").write(str(helper.pid))
"""


def test_the_processes_keep_tag_works_through_cellpipe_run(
    tmp_path: Path, started_pids: list[int]
) -> None:
    notebook = tmp_path / "nb.py"
    notebook.write_text(NOTEBOOK)
    run = cellpipe.run(notebook)
    started_pids.extend(_pids(tmp_path / "daemon.pid") + _pids(tmp_path / "worker.pid"))
    assert run.status == "succeeded"
    daemon, worker = started_pids
    assert _gone_within(worker), "the untagged step's process outlived the run"
    assert _running(daemon), "the step tagged processes:keep lost its process"
