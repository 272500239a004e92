"""The runtime file guard (issue 9, item 8): a file one step writes and an unordered step
reads stops the run, also when both steps are cache hits."""

from __future__ import annotations

from pathlib import Path

import pytest
from runner_testkit import pipeline, step

from cellpipe.errors import CellpipeError
from cellpipe.pipeline.model import FileRef
from cellpipe.runner.execute import InProcessExecutor
from cellpipe.runner.orchestrate import RunOptions, RunReport, run_pipeline
from cellpipe.storage.artifacts import LocalArtifactStore
from cellpipe.storage.metadata import MemoryMetadataStore
from cellpipe.storage.records import RunStatus, StepStatus


@pytest.fixture
def project(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (workdir / "train.ipynb").write_text("{}")
    monkeypatch.chdir(workdir)
    return workdir


def _run(project: Path, metadata: MemoryMetadataStore, pipe, **options) -> RunReport:
    with InProcessExecutor() as executor:
        return run_pipeline(
            pipe,
            params={},
            artifacts=LocalArtifactStore(project / ".cellpipe" / "artifacts"),
            metadata=metadata,
            state_dir=project / ".cellpipe",
            options=RunOptions(**options),
            executor=executor,
        )


WRITE = "with open('data.csv', 'w') as f:\n    f.write('42')\nwrote = True"
READ = "with open('data.csv') as f:\n    value = int(f.read())"


def _pipe(*, ordered: bool, reader_first: bool = False):
    writer_cell, reader_cell = (5, 4) if reader_first else (4, 5)
    files = (FileRef(path="data.csv", producer="make"),) if ordered else ()
    return pipeline(
        step("make", writer_cell, WRITE, outputs=["wrote"]),
        step("use", reader_cell, READ, outputs=["value"], after=["make"] if ordered else [],
             files=files),
    )  # fmt: skip


def _expect_conflict(exc: pytest.ExceptionInfo[CellpipeError], *, earlier: str, later: str):
    message = exc.value.message
    assert "step 'use' read the file 'data.csv' that step 'make' wrote in this run" in message
    assert "neither step runs after the other" in message
    assert exc.value.hint == (
        f"add prev:{earlier} to step '{later}' (a tag on its first cell), "
        f"so '{later}' runs after '{earlier}'"
    )


def test_a_reader_not_ordered_after_the_writer_stops_the_run(project: Path) -> None:
    (project / "data.csv").write_text("7")  # an old copy: the reader may silently read it
    metadata = MemoryMetadataStore()
    with pytest.raises(CellpipeError) as exc:
        _run(project, metadata, _pipe(ordered=False))
    _expect_conflict(exc, earlier="make", later="use")
    (run,) = metadata.list_runs()
    assert run.status is RunStatus.FAILED
    steps = {s.step: s for s in metadata.step_runs(run.run_id)}
    # the reader's outputs may come from the wrong file: never reused by the cache
    assert steps["use"].status is StepStatus.FAILED
    assert steps["make"].status is StepStatus.SUCCEEDED


def test_the_fix_named_in_the_error_works(project: Path) -> None:
    report = _run(project, MemoryMetadataStore(), _pipe(ordered=True))
    assert report.run.status is RunStatus.SUCCEEDED


def test_a_writer_after_the_reader_in_notebook_order_is_a_conflict_too(project: Path) -> None:
    (project / "data.csv").write_text("7")
    with pytest.raises(CellpipeError) as exc:
        _run(project, MemoryMetadataStore(), _pipe(ordered=False, reader_first=True))
    _expect_conflict(exc, earlier="use", later="make")


def test_cache_hits_do_not_bypass_the_guard(project: Path) -> None:
    metadata = MemoryMetadataStore()
    first = _run(project, metadata, _pipe(ordered=True))
    assert first.run.status is RunStatus.SUCCEEDED
    # The same code without the ordering: both steps are cache hits (the keys do not
    # include the graph), and the recorded files still show the race.
    with pytest.raises(CellpipeError) as exc:
        _run(project, metadata, _pipe(ordered=False))
    _expect_conflict(exc, earlier="make", later="use")


def test_steps_that_share_no_file_run_as_before(project: Path) -> None:
    pipe = pipeline(
        step("make", 4, WRITE.replace("data.csv", "other.csv"), outputs=["wrote"]),
        step("use", 5, "value = 1", outputs=["value"]),
    )
    assert _run(project, MemoryMetadataStore(), pipe).run.status is RunStatus.SUCCEEDED
