"""The doctor's checks and its rebuild from run folders (issue 10, item 4).

Run folders are written here in the runner's format (``run.ipynb`` with cellpipe metadata and
an ``injected-parameters`` cell, ``steps/<step>/result.json``), so each case the rebuild must
handle honestly is explicit: a failed step keeps its error, an output whose artifact is gone is
left out and noted, an unreadable result is noted, a folder with nothing in it is skipped.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cellpipe.storage.artifacts import LocalArtifactStore
from cellpipe.storage.doctor import check_project, repair_project
from cellpipe.storage.metadata import SqlMetadataStore
from cellpipe.storage.records import RunStatus, StepStatus

RUN = "demo-20260102-030405-abcdef"


def _result(step: str, status: str, **extra: Any) -> dict[str, Any]:
    return {
        "step": step,
        "status": status,
        "outputs": {},
        "metrics": {},
        "pipeline_metrics": {},
        "error": None,
        "traceback": None,
        "notebook_path": None,
        "log_path": None,
        "duration_s": 0.5,
        **extra,
    }


@pytest.fixture
def state(tmp_path: Path) -> Path:
    state = tmp_path / ".cellpipe"
    store = LocalArtifactStore(state / "artifacts")
    kept = store.put_bytes(b"[1, 2, 3]")
    gone = "sha256:" + "0" * 64
    run = state / "runs" / RUN
    (run / "steps" / "a").mkdir(parents=True)
    (run / "steps" / "b").mkdir()
    (run / "steps" / "c").mkdir()
    log = run / "steps" / "b" / "log.txt"
    log.write_text("Traceback ...\nValueError: boom\n")
    notebook = {
        "cells": [
            {
                "cell_type": "code",
                "metadata": {"tags": ["injected-parameters"]},
                "source": ["N = 5\n", "LABEL = 'x'\n", "BAD = object()\n"],
            }
        ],
        "metadata": {"cellpipe": {"run_id": RUN, "notebook": "/p/demo.ipynb"}},
    }
    (run / "run.ipynb").write_text(json.dumps(notebook))
    ref = {"serializer": "json", "serializer_version": 1, "size": 9, "type": "list"}
    a = _result(
        "a",
        "succeeded",
        outputs={"xs": {"digest": kept, **ref}, "lost": {"digest": gone, **ref}},
        pipeline_metrics={"total": 6},
        metrics={"loss": 0.5},
    )
    b = _result(
        "b", "failed", error="ValueError: boom", traceback="Traceback ...", log_path=str(log)
    )
    (run / "steps" / "a" / "result.json").write_text(json.dumps(a))
    (run / "steps" / "b" / "result.json").write_text(json.dumps(b))
    (run / "steps" / "c" / "result.json").write_text("{not json")
    (state / "runs" / "empty-20260101-000000-000000").mkdir()
    return state


def test_repair_rebuilds_only_what_the_run_folders_prove(state: Path) -> None:
    url = f"sqlite:///{state / 'cellpipe.db'}"
    store = LocalArtifactStore(state / "artifacts")
    report = repair_project(db_url=url, state_dir=state, artifacts=store)
    assert report.moved_to is None  # there was no database: a new one is started
    assert report.runs_rebuilt == (RUN,)
    assert report.step_runs_rebuilt == 2
    assert any("empty-20260101-000000-000000" in s for s in report.skipped)
    assert any("'lost' is not in the store" in n for n in report.notes)
    assert any("c: result.json unreadable" in n for n in report.notes)

    metadata = SqlMetadataStore(url)
    try:
        run = metadata.get_run(RUN)
        steps = {s.step: s for s in metadata.step_runs(RUN)}
    finally:
        metadata.close()
    assert run.status is RunStatus.FAILED
    assert run.pipeline == "demo"
    assert run.notebook == "/p/demo.ipynb"
    assert run.started_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert dict(run.parameters) == {"N": 5, "LABEL": "x"}  # not a literal: not invented
    assert dict(run.metrics) == {"total": 6}
    assert set(steps) == {"a", "b"}
    assert steps["a"].status is StepStatus.SUCCEEDED
    assert set(steps["a"].outputs) == {"xs"}
    assert dict(steps["a"].metrics) == {"total": 6, "log:loss": 0.5}
    assert steps["a"].cache_key is None  # never guessed: the next run re-runs it
    assert steps["b"].status is StepStatus.FAILED
    assert steps["b"].error is not None
    assert "ValueError: boom" in steps["b"].error
    assert steps["b"].log_digest is not None


def test_repair_leaves_a_healthy_database_alone(state: Path) -> None:
    url = f"sqlite:///{state / 'cellpipe.db'}"
    SqlMetadataStore(url).close()
    before = (state / "cellpipe.db").read_bytes()
    report = repair_project(
        db_url=url, state_dir=state, artifacts=LocalArtifactStore(state / "artifacts")
    )
    assert report.moved_to is None
    assert "nothing to repair" in report.message
    assert (state / "cellpipe.db").read_bytes() == before


def test_check_reports_a_damaged_database_and_writes_nothing(state: Path) -> None:
    database = state / "cellpipe.db"
    database.write_bytes(b"SQLite format 3\x00" + b"\xff" * 5000)
    report = check_project(
        db_url=f"sqlite:///{database}", artifacts_root=state / "artifacts", state_dir=state
    )
    assert not report.ok
    assert report.damaged_database
    assert sorted(p.name for p in state.iterdir()) == ["artifacts", "cellpipe.db", "runs"]
    found = {f.check: f.status for f in report.findings}
    assert found["database"] == "error"
    assert found["artifacts"] == "ok"
    assert found["digests"] == "ok"


def test_repair_moves_the_damaged_file_aside_with_a_timestamp(state: Path) -> None:
    database = state / "cellpipe.db"
    database.write_bytes(b"garbage" * 1000)
    report = repair_project(
        db_url=f"sqlite:///{database}",
        state_dir=state,
        artifacts=LocalArtifactStore(state / "artifacts"),
        now=datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC),
    )
    moved = state / "cellpipe.db.damaged-20260506T070809Z"
    assert report.moved_to == str(moved)
    assert moved.read_bytes() == b"garbage" * 1000
    assert report.runs_rebuilt == (RUN,)
