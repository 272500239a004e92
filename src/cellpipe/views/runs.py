"""The documents of the run history: a run, a step run, ``show``, ``why``, ``logs``, ``compare``.

Owns: turning run and step-run records (and what api gathered beside them: file changes, the
steps' displayed outputs) into the plain dicts that are the ``--json`` output of ``runs``,
``show``, ``why``, ``logs`` and ``compare``, and counting a step's displayed outputs by mime
type from its executed notebook.

Invariants: pure functions of their arguments (no store is opened here); key order is the
documents' stable order.

Must not depend on: api, cli, ui.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cellpipe.storage.records import RunRecord, StepRunRecord

# The mime types a front end shows in preference to the others, richest first (as Jupyter
# picks them): a DataFrame is counted as text/html, a figure as image/png.
_RICH_ORDER = (
    "application/vnd.jupyter.widget-view+json",
    "application/javascript",
    "text/html",
    "text/markdown",
    "text/latex",
    "image/svg+xml",
    "image/png",
    "image/jpeg",
    "application/json",
    "text/plain",
)


def _time(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def run_document(run: RunRecord) -> dict[str, Any]:
    """Return a run as a JSON-ready dict."""
    duration = None
    if run.finished_at is not None:
        duration = round((run.finished_at - run.started_at).total_seconds(), 3)
    return {
        "run_id": run.run_id,
        "pipeline": run.pipeline,
        "notebook": run.notebook,
        "status": run.status.value,
        "started_at": _time(run.started_at),
        "finished_at": _time(run.finished_at),
        "duration_s": duration,
        "parameters": dict(run.parameters),
        "metrics": dict(run.metrics),
        "error": run.error,
    }


def runs_document(runs: Sequence[RunRecord]) -> dict[str, Any]:
    """Return the ``cellpipe runs --json`` document."""
    return {"runs": [run_document(r) for r in runs]}


def unread_outputs(
    steps: Sequence[StepRunRecord], metrics: Mapping[str, Any]
) -> dict[str, list[str]]:
    """Step -> its outputs no other step run of the run read and that are no metric.

    Every value a step binds is stored to load later (issue 11); these are the ones stored
    only for that.
    """
    read = {(producer, name) for s in steps for name, producer in s.input_sources.items()}
    return {
        s.step: sorted(n for n in s.outputs if (s.step, n) not in read and n not in metrics)
        for s in steps
    }


def step_document(
    record: StepRunRecord,
    state_dir: Path,
    unread: Sequence[str] = (),
    *,
    displayed: Mapping[str, int] | None = None,
    files_written: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Return a step run as a JSON-ready dict.

    Args:
        record: the step run.
        state_dir: the project's ``.cellpipe`` folder (for the step's log file).
        unread: its outputs no later step read (see `unread_outputs`).
        displayed: with ``show``: mime type -> how many outputs of that type the step
            displayed (see `displayed_outputs`).
        files_written: with ``show``: the workspace files the step wrote, each
            ``{"file", "change", "source"}``.
    """
    duration = None
    if record.started_at is not None and record.finished_at is not None:
        duration = round((record.finished_at - record.started_at).total_seconds(), 3)
    scratch = state_dir / "runs" / record.run_id / "steps" / record.step
    document: dict[str, Any] = {
        "step": record.step,
        "status": record.status.value,
        "cache_reason": record.cache_reason,
        "cache_key": record.cache_key,
        "source_run": record.source_run,
        "duration_s": duration,
        "inputs": {k: v.to_json() for k, v in record.inputs.items()},
        "outputs": {k: v.to_json() for k, v in record.outputs.items()},
        "outputs_not_read_downstream": list(unread),
        "metrics": dict(record.metrics),
        "files_read": dict(record.files_read),
        "log": record.log_digest,
        "log_path": str(scratch / "log.txt") if (scratch / "log.txt").exists() else None,
        "notebook": record.notebook_digest,
        "error": record.error,
    }
    if displayed is not None:
        document["displayed"] = dict(displayed)
    if files_written is not None:
        document["files_written"] = [dict(f) for f in files_written]
    return document


def displayed_outputs(notebook: Mapping[str, Any] | None) -> dict[str, int]:
    """Count an executed notebook's displayed outputs by the mime type a front end shows.

    Streams (printed text) and errors are not counted: ``cellpipe logs`` has them. Each
    ``display_data`` or ``execute_result`` counts once, under its richest mime type (a
    DataFrame as ``text/html``, a matplotlib figure as ``image/png``).

    Args:
        notebook: the notebook as JSON (nbformat 4), or None.

    Returns:
        Mime type -> count, sorted by mime type.
    """
    counts: dict[str, int] = {}
    if not notebook:
        return counts
    for cell in notebook.get("cells", []):
        for output in cell.get("outputs", []) or []:
            if output.get("output_type") not in ("display_data", "execute_result"):
                continue
            data = output.get("data") or {}
            mime = next((m for m in _RICH_ORDER if m in data), None)
            if mime is None and data:
                mime = sorted(data)[0]
            if mime is not None:
                counts[mime] = counts.get(mime, 0) + 1
    return dict(sorted(counts.items()))


def show_document(
    run: RunRecord,
    steps: Sequence[StepRunRecord],
    state_dir: Path,
    *,
    changes: Sequence[Mapping[str, Any]],
    displayed: Mapping[str, Mapping[str, int]],
    written: Mapping[str, Sequence[Mapping[str, Any]]],
) -> dict[str, Any]:
    """Return the ``cellpipe show RUN --json`` document.

    Args:
        run: the run.
        steps: its step runs.
        state_dir: the project's ``.cellpipe`` folder.
        changes: the workspace files each step changed (from its after snapshot).
        displayed: step -> mime type -> count of its displayed outputs.
        written: step -> the files it wrote.
    """
    document = run_document(run)
    unread = unread_outputs(steps, run.metrics)
    document["steps"] = [
        step_document(
            s,
            state_dir,
            unread[s.step],
            displayed=displayed.get(s.step, {}),
            files_written=written.get(s.step, []),
        )
        for s in steps
    ]
    document["file_changes"] = [dict(c) for c in changes]
    notebook = state_dir / "runs" / run.run_id / "run.ipynb"
    document["executed_notebook"] = str(notebook) if notebook.exists() else None
    return document


def why_document(
    run: RunRecord, record: StepRunRecord, unread: Mapping[str, Sequence[str]]
) -> dict[str, Any]:
    """Return the ``cellpipe why RUN STEP --json`` document."""
    return {
        "run_id": run.run_id,
        "step": record.step,
        "status": record.status.value,
        "hit": record.status.value == "cached",
        "reason": record.cache_reason,
        "source_run": record.source_run,
        "cache_key": record.cache_key,
        "fields": dict(record.cache_fields),
        "outputs": sorted(record.outputs),
        "outputs_not_read_downstream": list(unread.get(record.step, [])),
    }


def logs_document(run: RunRecord, record: StepRunRecord, text: str) -> dict[str, Any]:
    """Return the ``cellpipe logs RUN STEP --json`` document."""
    return {
        "run_id": run.run_id,
        "step": record.step,
        "status": record.status.value,
        "source_run": record.source_run,
        "log": text,
    }


def _same(values: list[Any]) -> bool:
    texts = {json.dumps(v, sort_keys=True) for v in values}
    return len(texts) <= 1


def compare_document(runs: Sequence[RunRecord]) -> dict[str, Any]:
    """Return the comparison of ``runs`` as a JSON-ready dict (see `compare_presence`)."""
    document: dict[str, Any] = {"runs": [r.run_id for r in runs]}
    for section, attr in (("parameters", "parameters"), ("metrics", "metrics")):
        names: list[str] = []
        for run in runs:
            names.extend(n for n in getattr(run, attr) if n not in names)
        rows = []
        for name in names:
            values = [getattr(run, attr).get(name) for run in runs]
            present = [name in getattr(run, attr) for run in runs]
            rows.append(
                {
                    "name": name,
                    "values": values,
                    "differs": not (all(present) and _same(values)),
                }
            )
        document[section] = rows
    return document


def compare_presence(runs: Sequence[RunRecord]) -> dict[str, dict[str, list[bool]]]:
    """Section -> name -> in which runs it is recorded (a missing value is not a null)."""
    found: dict[str, dict[str, list[bool]]] = {}
    for section in ("parameters", "metrics"):
        names: dict[str, list[bool]] = {}
        for run in runs:
            for name in getattr(run, section):
                names.setdefault(name, [n in getattr(r, section) for r in runs for n in [name]])
        found[section] = names
    return found
