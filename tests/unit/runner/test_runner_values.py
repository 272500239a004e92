"""Jobs, results, events and the step context: the values around the engine."""

from __future__ import annotations

import json

import numpy as np
import pytest
from runner_testkit import Orchestrator, pipeline, step

from cellpipe.runner import InProcessExecutor, SpawnExecutor, StepJob, StepResult
from cellpipe.runner.context import (
    StepContext,
    activate,
    current_step,
    log_metric,
    metrics_outside_run,
)
from cellpipe.runner.events import (
    CollectingSink,
    RunFinished,
    StepCached,
    StepFailed,
    StepStarted,
    StepSucceeded,
    to_sink,
)
from cellpipe.runner.execute import ForkServerExecutor, default_executor
from cellpipe.storage.protocols import ArtifactDigest
from cellpipe.storage.records import ArtifactRef, RunStatus, StepStatus

REF = ArtifactRef(
    digest=ArtifactDigest("sha256:" + "ab" * 32),
    serializer="json",
    serializer_version=1,
    size=3,
    type_name="list",
)


def test_step_job_round_trips_through_json(tmp_path) -> None:
    pipe = pipeline(
        step("a", 4, "%time x = 1", outputs=["x"]), imports="import os", params={"LR": 0.1}
    )
    job = Orchestrator(pipe, tmp_path)(pipe.steps[0], {})
    assert isinstance(job, StepJob)
    job = StepJob.from_json({**job.to_json(), "inputs": {"y": REF.to_json()}})
    again = StepJob.from_json(json.loads(json.dumps(job.to_json())))
    assert again == job
    assert again.inputs["y"] == REF
    assert again.params == {"LR": 0.1}
    assert again.log_path == tmp_path / ".cellpipe" / "runs" / "r1" / "a" / "log.txt"


def test_setup_key_changes_with_parameters_not_with_the_step(tmp_path) -> None:
    pipe = pipeline(step("a", 4, "x = 1"), step("b", 5, "y = 2"), params={"LR": 0.1})
    a = Orchestrator(pipe, tmp_path)(pipe.steps[0], {})
    b = Orchestrator(pipe, tmp_path)(pipe.steps[1], {})
    other = Orchestrator(pipe, tmp_path, params={"LR": 0.2})(pipe.steps[0], {})
    assert isinstance(a, StepJob)
    assert isinstance(b, StepJob)
    assert isinstance(other, StepJob)
    assert a.setup_key() == b.setup_key()
    assert a.setup_key() != other.setup_key()


def test_step_result_round_trips_and_cached_factory() -> None:
    result = StepResult(
        step="a",
        status=StepStatus.FAILED,
        outputs={"x": REF},
        metrics={"acc": 0.5},
        error="boom",
        traceback="Traceback...",
        files_read=("data.csv",),
        duration_s=1.5,
        hint="fix it",
    )
    assert StepResult.from_json(json.loads(json.dumps(result.to_json()))) == result
    cached = StepResult.cached("a", {"x": REF}, reason="hit: same key")
    assert cached.status is StepStatus.CACHED
    assert cached.ok
    assert not result.ok


def test_events_render_as_json_lines_with_event_step_and_status() -> None:
    ok = StepResult(step="a", status=StepStatus.SUCCEEDED, outputs={"x": REF}, metrics={"m": 1})
    lines = [
        StepStarted(step="a").to_json(),
        StepSucceeded(step="a", duration_s=0.25, outputs=ok.outputs, result=ok).to_json(),
        StepCached(step="a", reason="hit", result=ok).to_json(),
        StepFailed(step="a", error="e", log_path="/l", result=ok).to_json(),
        RunFinished(run_id="r", status=RunStatus.FAILED, duration_s=1, counts={}).to_json(),
    ]
    assert [(line["event"], line.get("status")) for line in lines] == [
        ("step_started", "running"),
        ("step_succeeded", "succeeded"),
        ("step_cached", "cached"),
        ("step_failed", "failed"),
        ("run_finished", "failed"),
    ]
    assert lines[1]["outputs"]["x"]["serializer"] == "json"
    assert lines[1]["metrics"] == {"m": 1}
    json.dumps(lines)


def test_a_callable_is_a_sink() -> None:
    seen: list[object] = []
    sink = to_sink(seen.append)
    event = StepStarted(step="a")
    sink.emit(event)
    assert seen == [event]
    collecting = CollectingSink()
    assert to_sink(collecting) is collecting


def test_log_metric_outside_a_run_keeps_values_in_the_process() -> None:
    log_metric("outside_metric", np.int64(3))
    assert metrics_outside_run()["outside_metric"] == 3
    assert current_step() is None


def test_log_metric_inside_a_step_goes_to_its_context() -> None:
    context = StepContext(step="a", run_id="r", notebook="nb.ipynb", workdir=".")
    with activate(context):
        assert current_step() is context
        log_metric("acc", 0.5)
        log_metric("acc", 0.75)
    assert context.metrics == {"acc": 0.75}
    assert "acc" not in metrics_outside_run()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("acc", [1, 2], "a metric must be a number, string or boolean, not list"),
        ("", 1, "the name must be a non-empty string"),
    ],
    ids=["list-value", "empty-name"],
)
def test_log_metric_rejects_non_scalars(name: str, value: object, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        log_metric(name, value)


@pytest.mark.parametrize(
    ("kind", "cls"),
    [("fork", ForkServerExecutor), ("spawn", SpawnExecutor), ("inprocess", InProcessExecutor)],
    ids=["fork", "spawn", "inprocess"],
)
def test_default_executor_by_name(kind: str, cls: type) -> None:
    executor = default_executor(kind)
    assert isinstance(executor, cls)
    executor.close()


def test_default_executor_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown executor 'threads'"):
        default_executor("threads")


def test_unknown_selected_step_is_a_key_error(tmp_path) -> None:
    from cellpipe.runner import run_steps

    pipe = pipeline(step("a", 4, "x = 1"))
    with pytest.raises(KeyError):
        run_steps(
            pipe,
            prepare=Orchestrator(pipe, tmp_path),
            executor=InProcessExecutor(),
            steps=["nope"],
        )
