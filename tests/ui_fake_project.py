"""A project folder with recorded runs, written straight into its stores (no notebook runs)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cellpipe.api import open_project
from cellpipe.config import Settings
from cellpipe.storage.records import ArtifactRef, RunRecord, RunStatus, StepRunRecord, StepStatus

T0 = datetime(2026, 1, 14, 9, 12, tzinfo=UTC)

EXECUTED = {
    "nbformat": 4,
    "nbformat_minor": 5,
    "metadata": {},
    "cells": [
        {
            "cell_type": "code",
            "source": "print('hello <b>world</b>')",
            "metadata": {},
            "execution_count": 1,
            "outputs": [
                {"output_type": "stream", "name": "stdout", "text": "hello <b>world</b>\n"},
                {
                    "output_type": "display_data",
                    "metadata": {},
                    "data": {
                        "text/html": "<table id='frame-html'><tr><td>42</td></tr></table>",
                        "text/plain": "a table",
                    },
                },
                {
                    "output_type": "execute_result",
                    "execution_count": 1,
                    "metadata": {},
                    "data": {"text/plain": "<script>alert(1)</script>"},
                },
            ],
        }
    ],
}


@dataclass
class FakeRun:
    """One run to record: its id, status, parameters, metrics and steps."""

    run_id: str
    status: str = "succeeded"
    parameters: Mapping[str, Any] = field(default_factory=lambda: {"MAX_DEPTH": 4})
    metrics: Mapping[str, Any] = field(default_factory=lambda: {"acc": 0.9})
    steps: Sequence[str] = ("load", "train")
    minutes: int = 0
    error: str | None = None
    step_error: str | None = None


def make_project(folder: Path, runs: Sequence[FakeRun]) -> Path:
    """Record ``runs`` in ``folder``'s stores (``.cellpipe/``); return ``folder``."""
    (folder / "train.ipynb").write_text(json.dumps({"cells": [], "nbformat": 4}))
    settings = Settings.for_notebook(folder / "train.ipynb")
    with open_project(settings) as project:
        log = project.artifacts.put_bytes(b"step log line\n\x1b[31mred\x1b[0m <not a tag>\n")
        notebook = project.artifacts.put_bytes(json.dumps(EXECUTED).encode())
        value = project.artifacts.put_bytes(b"the value's bytes")
        for run in runs:
            running = run.status == "running"
            started = T0 + timedelta(minutes=run.minutes)
            project.metadata.start_run(
                RunRecord(
                    run_id=run.run_id,
                    pipeline="train",
                    notebook=str(folder / "train.ipynb"),
                    notebook_digest=str(notebook),
                    status=RunStatus.RUNNING,
                    started_at=started,
                    parameters=dict(run.parameters),
                    pid=os.getpid(),
                )
            )
            previous: str | None = None
            for i, step in enumerate(run.steps):
                ref = ArtifactRef(
                    digest=value,
                    serializer="json",
                    serializer_version=1,
                    size=17,
                    type_name="dict",
                )
                project.metadata.record_step_run(
                    StepRunRecord(
                        run_id=run.run_id,
                        step=step,
                        status=StepStatus.RUNNING if running and i else StepStatus.SUCCEEDED,
                        cache_key=f"sha256:{i:064x}",
                        cache_fields={"code": "c1"},
                        cache_reason="miss: first run of this step",
                        started_at=started,
                        finished_at=None if running and i else started + timedelta(seconds=3),
                        inputs={"x": ref} if previous else {},
                        input_sources={"x": previous} if previous else {},
                        outputs={"y": ref},
                        log_digest=log,
                        notebook_digest=notebook,
                        error=run.step_error,
                    )
                )
                previous = step
            if not running:
                project.metadata.finish_run(
                    run.run_id,
                    status=RunStatus(run.status),
                    finished_at=started + timedelta(seconds=9),
                    metrics=dict(run.metrics),
                    error=run.error,
                )
    return folder
