"""A step's duration counts the time its imports took (issue 11, CLI paper cuts).

No wall clock: the step's clock is a fake the notebook's own cells move, so the test says
exactly which code the duration covers.
"""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import pytest

from cellpipe.pipeline.model import CodeChunk
from cellpipe.runner import child
from cellpipe.runner.jobs import StepJob


class _Clock(types.ModuleType):
    """Stands in for the ``time`` module of `cellpipe.runner.child`: only cells move it."""

    def __init__(self) -> None:
        super().__init__("_fake_clock")
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now


def _chunk(cell: int, source: str) -> CodeChunk:
    return CodeChunk(cell=cell, source=source, python=source)


def test_the_duration_includes_the_imports_cell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = _Clock()
    monkeypatch.setitem(sys.modules, "_fake_clock", clock)
    monkeypatch.setattr(child, "time", clock)
    job = StepJob(
        step="train",
        # The imports cell "takes" 100 s, the step's own cell 1 s.
        preamble=(_chunk(1, "import _fake_clock\n_fake_clock.now += 100"),),
        cells=(_chunk(2, "import _fake_clock\n_fake_clock.now += 1"),),
        notebook=str(tmp_path / "nb.ipynb"),
        workdir=str(tmp_path),
        params={},
        inputs={},
        outputs=(),
        artifact_root=str(tmp_path / "artifacts"),
        scratch_dir=str(tmp_path / "scratch"),
    )
    cwd = Path.cwd()
    main = sys.modules.get("__main__")
    try:
        warm = child.warm_up(job, log_fd=os.open(os.devnull, os.O_WRONLY))
        assert warm.failure is None
        assert warm.seconds == 100.0
        result = child.run_job(job, warm, own_process=False)
    finally:
        os.chdir(cwd)
        if main is not None:
            sys.modules["__main__"] = main
    assert result.status == "succeeded", result.error
    assert result.duration_s == 101.0
