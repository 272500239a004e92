"""A step process that cannot write its result says whether the step succeeded (issue 10, item 6).

The result reaches the runner as a file; on a full or read-only disk it cannot, and the runner
used to say only "exited with code 1 without reporting a result". The exit code now carries the
outcome, and the runner names the cause.
"""

from __future__ import annotations

import os
import resource
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from cellpipe.runner.child import report_result
from cellpipe.runner.execute import _died
from cellpipe.runner.jobs import (
    EXIT_RESULT_UNWRITABLE_FAILED,
    EXIT_RESULT_UNWRITABLE_OK,
    StepJob,
    StepResult,
)
from cellpipe.storage.records import StepStatus


@contextmanager
def _no_bytes_can_be_written() -> Iterator[None]:
    """RLIMIT_FSIZE 0 in this process: every write to a regular file fails with EFBIG."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def _result(status: StepStatus, error: str | None = None) -> StepResult:
    return StepResult(step="train", status=status, error=error)


def test_a_written_result_exits_zero(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    assert report_result(_result(StepStatus.SUCCEEDED), path) == 0
    assert path.exists()


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (StepStatus.SUCCEEDED, EXIT_RESULT_UNWRITABLE_OK),
        (StepStatus.FAILED, EXIT_RESULT_UNWRITABLE_FAILED),
    ],
)
def test_an_unwritable_result_exits_with_the_step_s_outcome(
    tmp_path: Path, status: StepStatus, code: int
) -> None:
    path = tmp_path / "result.json"
    with _no_bytes_can_be_written():
        assert report_result(_result(status, error="ValueError: bad"), path) == code
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no half-written temp file


def _exit_status(code: int) -> int:
    pid = os.posix_spawn(sys.executable, [sys.executable, "-c", f"raise SystemExit({code})"], {})
    _, status = os.waitpid(pid, 0)
    return status


def _job(tmp_path: Path) -> StepJob:
    return StepJob(
        step="train",
        cells=(),
        preamble=(),
        notebook=str(tmp_path / "nb.py"),
        workdir=str(tmp_path),
        params={},
        inputs={},
        outputs=(),
        artifact_root=str(tmp_path / "artifacts"),
        scratch_dir=str(tmp_path),
    )


@pytest.mark.parametrize(
    ("code", "outcome"),
    [(EXIT_RESULT_UNWRITABLE_OK, "succeeded"), (EXIT_RESULT_UNWRITABLE_FAILED, "failed")],
)
def test_the_runner_names_the_cause_and_the_outcome(tmp_path: Path, code: int, outcome: str):
    result = _died(_job(tmp_path), _exit_status(code))
    assert result.status is StepStatus.FAILED
    assert result.error is not None
    assert f"step {outcome}, but its result could not be written" in result.error
    assert "disk full or read-only" in result.error
    assert "free space" in (result.hint or "")


def test_any_other_exit_code_is_still_reported_as_such(tmp_path: Path) -> None:
    result = _died(_job(tmp_path), _exit_status(3))
    assert result.error == "step process exited with code 3 without reporting a result"
