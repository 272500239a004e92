"""run_pipeline: cache decisions, records, selection errors, Ctrl-C, corrupted outputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from runner_testkit import pipeline, step

from cellpipe.errors import CellpipeError
from cellpipe.runner.events import CollectingSink, StepCached, StepStarted
from cellpipe.runner.execute import InProcessExecutor
from cellpipe.runner.orchestrate import RunCancelled, RunOptions, RunReport, run_pipeline
from cellpipe.storage.artifacts import LocalArtifactStore
from cellpipe.storage.metadata import MemoryMetadataStore
from cellpipe.storage.records import RunStatus, StepStatus


@pytest.fixture
def project(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (workdir / "train.ipynb").write_text("{}")
    monkeypatch.chdir(workdir)
    return workdir


@pytest.fixture
def metadata() -> MemoryMetadataStore:
    return MemoryMetadataStore()


def _pipe(b_code: str = "y = x + P"):
    return pipeline(
        step("a", 4, "x = 1", outputs=["x"]),
        step("b", 5, b_code, inputs={"x": "a"}, outputs=["y"], parameters=["P"]),
        step("c", 6, "z = y * 2", inputs={"y": "b"}, outputs=["z"]),
        params={"P": 1},
    )


def _run(project: Path, metadata, pipe=None, *, params=None, sink=None, **options) -> RunReport:
    with InProcessExecutor() as executor:
        return run_pipeline(
            pipe or _pipe(),
            params=params or {"P": 1},
            artifacts=LocalArtifactStore(project / ".cellpipe" / "artifacts"),
            metadata=metadata,
            state_dir=project / ".cellpipe",
            options=RunOptions(**options),
            sink=sink,
            executor=executor,
        )


def _statuses(report: RunReport) -> dict[str, str]:
    return {name: rec.status.value for name, rec in report.steps.items()}


def test_second_run_is_all_hits_with_the_source_run(project, metadata):
    first = _run(project, metadata)
    assert first.run.status is RunStatus.SUCCEEDED
    sink = CollectingSink()
    second = _run(project, metadata, sink=sink)
    assert _statuses(second) == {"a": "cached", "b": "cached", "c": "cached"}
    assert not sink.of_type(StepStarted)
    for event in sink.of_type(StepCached):
        assert event.reason == f"hit: same code, parameters and inputs as run {first.run.run_id}"
    assert second.steps["c"].source_run == first.run.run_id


def test_parameter_change_names_old_and_new_value(project, metadata):
    _run(project, metadata)
    report = _run(project, metadata, params={"P": 3})
    assert _statuses(report) == {"a": "cached", "b": "succeeded", "c": "succeeded"}
    assert report.steps["b"].cache_reason == "miss: parameter P changed 1 → 3"
    assert report.steps["c"].cache_reason == "miss: input y changed"


def test_only_without_cached_upstream_is_an_error_and_the_run_is_recorded_failed(project, metadata):
    with pytest.raises(CellpipeError, match="--only c needs the outputs of step 'a'") as info:
        _run(project, metadata, only=("c",))
    assert "--from a" in (info.value.hint or "")
    (run,) = metadata.list_runs()
    assert run.status is RunStatus.FAILED
    assert run.error is not None
    assert "--only c" in run.error


def test_ctrl_c_records_cancelled_and_raises_with_the_report(project, metadata):
    def interrupt(event):
        if isinstance(event, StepStarted) and event.step == "b":
            raise KeyboardInterrupt

    with pytest.raises(RunCancelled) as info:
        _run(project, metadata, sink=interrupt)
    report = info.value.report
    assert isinstance(info.value, KeyboardInterrupt)
    assert report.run.status is RunStatus.CANCELLED
    assert _statuses(report) == {"a": "succeeded", "b": "cancelled", "c": "cancelled"}
    resumed = _run(project, metadata)
    assert _statuses(resumed) == {"a": "cached", "b": "succeeded", "c": "succeeded"}


def test_missing_output_artifact_is_a_miss(project, metadata):
    first = _run(project, metadata)
    store = LocalArtifactStore(project / ".cellpipe" / "artifacts")
    path = store.path_for(first.steps["a"].outputs["x"].digest)
    path.unlink()
    report = _run(project, metadata)
    assert report.steps["a"].cache_reason == "miss: output x no longer in the artifact store"
    assert report.steps["a"].status is StepStatus.SUCCEEDED
    assert path.is_file()


def test_unknown_executor_is_a_clear_error(project, metadata):
    with pytest.raises(CellpipeError, match="unknown executor 'thread'"):
        run_pipeline(
            _pipe(),
            params={"P": 1},
            artifacts=LocalArtifactStore(project / "a"),
            metadata=metadata,
            state_dir=project / ".cellpipe",
            options=RunOptions(executor="thread"),
        )
    assert not metadata.list_runs()


@pytest.mark.slow
def test_a_fully_cached_run_never_imports_the_executors(project):
    code = """
import sys
from cellpipe.api import run_notebook
report = run_notebook(sys.argv[1])
assert report.run.status.value == "succeeded", report.run
print(",".join(sorted(m for m in sys.modules
                      if m in ("cellpipe.runner.execute", "IPython", "nbformat"))))
"""
    nb = project / "nb.py"
    nb.write_text('# %% tags=["step:a"]\nx = 1\n# %% tags=["step:b"]\ny = x + 1\n')
    first = subprocess.run(
        [sys.executable, "-c", code, str(nb)], capture_output=True, text=True, check=True
    )
    assert "cellpipe.runner.execute" in first.stdout
    second = subprocess.run(
        [sys.executable, "-c", code, str(nb)], capture_output=True, text=True, check=True
    )
    assert second.stdout.strip() == ""


class _WarmingExecutor(InProcessExecutor):
    """Records the jobs the runner asked it to warm up for."""

    def __init__(self) -> None:
        super().__init__()
        self.warmed: list[str] = []

    def warm(self, job) -> None:
        self.warmed.append(job.step)


def test_the_executor_is_warmed_early_only_when_a_step_will_run(project, metadata):
    def run(**options) -> tuple[RunReport, list[str]]:
        with _WarmingExecutor() as executor:
            report = run_pipeline(
                _pipe(),
                params={"P": 1},
                artifacts=LocalArtifactStore(project / ".cellpipe" / "artifacts"),
                metadata=metadata,
                state_dir=project / ".cellpipe",
                options=RunOptions(**options),
                executor=executor,
            )
            return report, executor.warmed

    cold, warmed = run()
    assert cold.run.status is RunStatus.SUCCEEDED
    assert warmed == ["a"]
    cached, warmed = run()
    assert set(_statuses(cached).values()) == {"cached"}
    assert warmed == []
    _, warmed = run(from_step="b")  # 'a' is a hit; 'b' has inputs: no early warm-up
    assert warmed == []
    _, warmed = run(use_cache=False)
    assert warmed == ["a"]
