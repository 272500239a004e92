"""Run metrics (issue 9): non-scalar values recorded, unconvertible ones warned, parameters."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from runner_testkit import pipeline, step

from cellpipe.pipeline.model import Metric, Pipeline
from cellpipe.runner.events import CollectingSink, StepOutput
from cellpipe.runner.execute import ForkServerExecutor, InProcessExecutor
from cellpipe.runner.orchestrate import RunOptions, RunReport, run_pipeline
from cellpipe.storage.artifacts import LocalArtifactStore
from cellpipe.storage.metadata import SqlMetadataStore
from cellpipe.storage.records import RunStatus

_IMPORTS = "import numpy as np\nimport pandas as pd"
_CODE = """\
cm = np.array([[5, 1], [0, 4]])
report = {"0": {"precision": np.float64(0.9), "support": np.int64(3)}, "accuracy": 0.75}
per_class = pd.Series([0.5, float("nan")], index=["cat", "dog"])
acc = np.float64(0.75)
model = object()
"""


def _with_metrics(pipe: Pipeline, *names: tuple[str, str]) -> Pipeline:
    metrics = tuple(
        Metric(name=name, producer=producer, cell=9, line=i + 1)
        for i, (name, producer) in enumerate(names)
    )
    # A parameter metric's producer is "": the analysis's validation accepts it; built here.
    return dataclasses.replace(pipe, metrics=metrics)


def _run(workdir: Path, pipe: Pipeline, kind: str, **params: object) -> tuple[RunReport, str]:
    sink = CollectingSink()
    executor = InProcessExecutor() if kind == "inprocess" else ForkServerExecutor()
    store = SqlMetadataStore(f"sqlite:///{workdir / 'meta.db'}")
    try:
        with executor:
            report = run_pipeline(
                pipe,
                params={**{p.name: p.default for p in pipe.parameters}, **params},
                artifacts=LocalArtifactStore(workdir / ".cellpipe" / "artifacts"),
                metadata=store,
                state_dir=workdir / ".cellpipe",
                options=RunOptions(),
                sink=sink,
                executor=executor,
            )
        stored = store.get_run(report.run.run_id)
        assert dict(stored.metrics) == dict(report.run.metrics)  # read back from SQL
    finally:
        store.close()
    output = "".join(e.text for e in sink.of_type(StepOutput))
    return report, output


@pytest.fixture
def project(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (workdir / "train.ipynb").write_text("{}")
    monkeypatch.chdir(workdir)
    return workdir


@pytest.mark.parametrize("kind", ["inprocess", "fork"])
def test_array_dict_series_metrics_are_recorded_and_objects_warned(project: Path, kind: str):
    pipe = _with_metrics(
        pipeline(
            step("evaluate", 4, _CODE, outputs=["acc", "cm", "model", "per_class", "report"]),
            imports=_IMPORTS,
        ),
        ("acc", "evaluate"),
        ("cm", "evaluate"),
        ("report", "evaluate"),
        ("per_class", "evaluate"),
        ("model", "evaluate"),
    )
    report, output = _run(project, pipe, kind)
    assert report.run.status is RunStatus.SUCCEEDED
    assert dict(report.run.metrics) == {
        "acc": 0.75,
        "cm": [[5, 1], [0, 4]],
        "report": {"0": {"precision": 0.9, "support": 3}, "accuracy": 0.75},
        "per_class": {"cat": 0.5, "dog": None},
    }
    warning = (
        "cellpipe warning: metric 'model' of step 'evaluate' was not recorded: "
        "model is of type object, which has no JSON form"
    )
    assert warning in output  # the run's output ...
    log = project / ".cellpipe" / "runs" / report.run.run_id / "steps" / "evaluate" / "log.txt"
    assert warning in log.read_text()  # ... and the step's log
    assert dict(report.steps["evaluate"].metrics)["cm"] == [[5, 1], [0, 4]]


def test_cached_step_keeps_its_non_scalar_metrics(project: Path):
    pipe = _with_metrics(
        pipeline(step("evaluate", 4, _CODE, outputs=["cm"]), imports=_IMPORTS),
        ("cm", "evaluate"),
    )
    _run(project, pipe, "inprocess")
    again, _ = _run(project, pipe, "inprocess")
    assert again.steps["evaluate"].status.value == "cached"
    assert dict(again.run.metrics) == {"cm": [[5, 1], [0, 4]]}


def test_a_parameter_named_as_a_metric_records_the_runs_value(project: Path):
    pipe = _with_metrics(
        pipeline(
            step("train", 4, "score = LR * 2", outputs=["score"], parameters=["LR"]),
            params={"LR": 0.1},
        ),
        ("score", "train"),
        ("LR", ""),
    )
    first, _ = _run(project, pipe, "inprocess")
    assert dict(first.run.metrics) == {"score": 0.2, "LR": 0.1}
    second, _ = _run(project, pipe, "inprocess", LR=0.5)
    assert dict(second.run.metrics) == {"score": 1.0, "LR": 0.5}
