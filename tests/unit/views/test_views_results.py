"""The views: documents from records, the result objects' text, HTML (escaped) and pandas."""

from __future__ import annotations

import dataclasses
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cellpipe.errors import MissingDependencyError
from cellpipe.storage.protocols import ArtifactDigest
from cellpipe.storage.records import (
    ArtifactRef,
    RunRecord,
    RunStatus,
    StepRunRecord,
    StepStatus,
)
from cellpipe.views import html
from cellpipe.views.format import cell_ranges, dumps, plural, short_value, size_text
from cellpipe.views.results import Comparison, RunDetail, RunList, StepLog, WhyResult
from cellpipe.views.runs import (
    compare_document,
    compare_presence,
    displayed_outputs,
    runs_document,
    show_document,
    why_document,
)

EVIL = "<script>alert('x')</script>"
T0 = datetime(2026, 12, 3, 16, 0, tzinfo=UTC)


def _ref(n: int) -> ArtifactRef:
    return ArtifactRef(
        digest=ArtifactDigest("sha256:" + f"{n:064x}"),
        serializer="json",
        serializer_version=1,
        size=1536,
        type_name="builtins.int",
    )


def _run(run_id: str, **values: object) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        pipeline="nb",
        notebook="/p/nb.ipynb",
        notebook_digest="sha256:0",
        status=RunStatus.SUCCEEDED,
        started_at=T0,
        finished_at=T0 + timedelta(seconds=2.5),
        parameters={"A": values.get("A", 1), EVIL: "p"},
        metrics={"acc": values.get("acc", 0.5), "name": EVIL},
    )


def _steps(run_id: str) -> list[StepRunRecord]:
    a = StepRunRecord(
        run_id=run_id,
        step="a",
        status=StepStatus.SUCCEEDED,
        cache_reason=f"miss: {EVIL}",
        started_at=T0,
        finished_at=T0 + timedelta(seconds=1),
        outputs={"x": _ref(1), "unused": _ref(2)},
    )
    b = StepRunRecord(
        run_id=run_id,
        step="b",
        status=StepStatus.CACHED,
        cache_reason="hit: run r0",
        source_run="r0",
        inputs={"x": _ref(1)},
        input_sources={"x": "a"},
        outputs={"y": _ref(3)},
    )
    return [a, b]


def test_format_helpers() -> None:
    assert plural(1, "step") == "1 step"
    assert plural(2, "step") == "2 steps"
    assert cell_ranges([3, 4, 5, 8]) == "3-5, 8"
    assert short_value(0.123456789) == "0.123457"
    assert short_value(None) == "null"
    assert dumps({"x": float("nan")}) == '{"x": null}'
    assert size_text(1536) == "1.5 KiB"


def test_html_table_escapes_every_value_and_header() -> None:
    text = html.table([EVIL], [[EVIL, 1.5]], title=EVIL)
    assert "<script>" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    assert "<table" in text
    assert "http" not in text  # nothing fetched


def test_displayed_outputs_counts_the_richest_mime_type() -> None:
    notebook = {
        "cells": [
            {
                "outputs": [
                    {"output_type": "stream", "text": "hi"},
                    {"output_type": "display_data", "data": {"image/png": "..", "text/plain": ""}},
                    {"output_type": "execute_result", "data": {"text/html": "<table>"}},
                    {"output_type": "execute_result", "data": {"text/plain": "3"}},
                    {"output_type": "error", "ename": "E"},
                ]
            },
            {"cell_type": "markdown"},
        ]
    }
    assert displayed_outputs(notebook) == {"image/png": 1, "text/html": 1, "text/plain": 1}
    assert displayed_outputs(None) == {}


def test_run_list_text_html_and_pandas() -> None:
    result = RunList(runs_document([_run("r2", A=2, acc=0.9), _run("r1")]))
    assert result.to_dict() == runs_document([_run("r2", A=2, acc=0.9), _run("r1")])
    assert result.to_dict() is not result.to_dict()  # a copy each time
    assert "r2" in repr(result)
    assert "2 runs" in repr(result)
    page = result._repr_html_()
    assert "<table" in page
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    columns, rows = result.rows()
    assert columns[:4] == ["run", "status", "started (UTC)", "took"]
    assert rows[0][:4] == ["r2", "succeeded", "2026-12-03 16:00:00", "2.5s"]
    pd = pytest.importorskip("pandas")
    frame = result.to_pandas()
    assert list(frame["run_id"]) == ["r2", "r1"]
    assert list(frame["A"]) == [2, 1]
    assert list(frame["acc"]) == [0.9, 0.5]
    assert isinstance(frame, pd.DataFrame)


def test_to_pandas_without_pandas_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(MissingDependencyError) as caught:
        RunList(runs_document([_run("r1")])).to_pandas()
    assert caught.value.hint == "pip install pandas"
    assert "to_pandas" in caught.value.message


def test_show_document_lists_displayed_outputs_and_files_written(tmp_path: Path) -> None:
    run = _run("r1")
    document = show_document(
        run,
        _steps("r1"),
        tmp_path,
        changes=[{"step": "a", "file": "out.csv", "change": "added", "by": ["a"]}],
        displayed={"a": {"image/png": 2}},
        written={"a": [{"file": "out.csv", "change": "added", "source": "snapshot"}]},
    )
    a, b = document["steps"]
    assert a["displayed"] == {"image/png": 2}
    assert a["files_written"] == [{"file": "out.csv", "change": "added", "source": "snapshot"}]
    assert a["outputs_not_read_downstream"] == ["unused"]
    assert b["displayed"] == {}
    assert b["files_written"] == []
    detail = RunDetail(document)
    assert detail.displayed_rows() == [["a", "2 image/png", "out.csv (added)"]]
    page = detail._repr_html_()
    assert "<script>" not in page
    assert "out.csv" in page
    assert "image/png" in page
    assert "a=succeeded" in repr(detail)
    pytest.importorskip("pandas")
    assert list(detail.to_pandas()["step"]) == ["a", "b"]


def test_comparison_marks_differences_and_missing_values() -> None:
    one, two = _run("r1"), _run("r2", A=2)
    two = dataclasses.replace(two, metrics={"acc": 0.5})  # "name" missing in r2
    records = [one, two]
    result = Comparison(compare_document(records), compare_presence(records))
    rows = {cells[0]: (cells, differs) for cells, differs in result.rows("parameters")}
    assert rows["A"] == (["A", "1", "2"], True)
    page = result._repr_html_()
    assert "background:#fff8c5" in page
    assert "<script>" not in page
    assert "differs in A" in repr(result)
    names = {cells[0]: cells for cells, _ in result.rows("metrics")}
    assert names["name"][2] == "-"  # not recorded in r2, not a null
    pytest.importorskip("pandas")
    frame = result.to_pandas()
    assert frame.loc[("parameters", "A"), "differs"]


def test_why_and_logs_views() -> None:
    run = _run("r1")
    a, _ = _steps("r1")
    why = WhyResult(why_document(run, a, {"a": ["unused"]}))
    assert "unused (not read downstream)" in why.text()
    assert "&lt;script&gt;" in why._repr_html_()
    log = StepLog(
        {"run_id": "r1", "step": "a", "status": "succeeded", "source_run": None, "log": EVIL}
    )
    assert str(log) == EVIL
    assert "<script>" not in log._repr_html_()
