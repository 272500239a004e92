"""The live view's state model and renderings: pure functions of runner events (issue 11)."""

from __future__ import annotations

import io
import sys
import types
from typing import Any

import pytest

from cellpipe.runner.events import (
    RunFinished,
    RunStarted,
    StepCached,
    StepFailed,
    StepOutput,
    StepSkipped,
    StepStarted,
    StepSucceeded,
)
from cellpipe.runner.jobs import StepResult
from cellpipe.storage.records import RunStatus, StepStatus
from cellpipe.views.live import (
    MAX_LINES,
    LiveState,
    NotebookLiveView,
    StepRow,
    TextLiveView,
    live_html,
    rich_outputs,
    run_html,
    state_text,
)
from cellpipe.views.live_lines import ProgressLines, collapse_cr, reason_text


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _ok(step: str, duration: float = 1.5) -> StepSucceeded:
    result = StepResult(step=step, status=StepStatus.SUCCEEDED, duration_s=duration)
    return StepSucceeded(step=step, duration_s=duration, outputs={}, result=result)


def _failed(step: str) -> StepFailed:
    tb = (
        "Traceback (most recent call last):\n"
        '  File "nb.ipynb [cell 5]", line 1\n'
        "ZeroDivisionError\n"
    )
    result = StepResult(
        step=step,
        status=StepStatus.FAILED,
        error="ZeroDivisionError: division by zero (nb.ipynb, cell 5, line 1)",
        traceback=tb,
        hint="look at <cell 5>",
    )
    return StepFailed(step=step, error=result.error or "", log_path=None, result=result)


def _cached(step: str, reason: str) -> StepCached:
    result = StepResult(step=step, status=StepStatus.CACHED, error=reason)
    return StepCached(step=step, reason=reason, result=result)


# -- \r progress lines -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain", "plain"),
        ("10%\r50%\r100%", "100%"),
        ("10%\r50%\r", "50%"),
        ("abc\r", "abc"),
        ("\r\r", ""),
    ],
)
def test_a_line_rewritten_with_cr_shows_its_latest_text(raw: str, shown: str) -> None:
    assert collapse_cr(raw) == shown


def test_progress_lines_keep_a_rewritten_line_as_one_line() -> None:
    lines = ProgressLines()
    assert lines.feed("epoch 1\n  0%") == ["epoch 1"]
    assert lines.current == "  0%"
    for percent in range(10, 100, 10):
        assert lines.feed(f"\r {percent}%") == []
    assert lines.current == " 90%"
    assert lines.feed("\r100%\nnext") == ["100%"]
    assert lines.flush() == ["next"]
    assert lines.flush() == []


def test_progress_lines_treat_crlf_as_a_newline_also_across_chunks() -> None:
    lines = ProgressLines()
    assert lines.feed("a\r") == []
    assert lines.feed("\nb\r\n") == ["a", "b"]


def test_reasons_are_shown_without_hit_or_miss() -> None:
    assert reason_text("miss: parameter LR changed 0.1 → 0.2") == "parameter LR changed 0.1 → 0.2"
    assert reason_text("hit: same code") == "same code"
    assert reason_text("code changed") == "code changed"


# -- the state model ---------------------------------------------------------------------------


def test_state_follows_the_events_with_reasons_and_durations() -> None:
    clock = Clock()
    state = LiveState(clock=clock)
    assert state.apply(RunStarted(run_id="r1", steps=("a", "b", "c", "d"), jobs=2))
    assert {v.state for v in state.steps.values()} == {"waiting"}
    assert state.apply(_cached("a", "hit: same code, parameters and inputs as run r0"))
    assert state.apply(StepStarted(step="b", reason="miss: parameter LR changed 0.1 → 0.2"))
    clock.now += 2.0
    assert state.step_elapsed(state.steps["b"]) == 2.0
    assert not state.apply(StepOutput(step="b", stream="log", text="loss 1\n 10%\r 99%"))
    assert state.steps["b"].shown_lines() == ["loss 1", " 99%"]
    assert state.apply(_ok("b", 2.5))
    assert state.apply(_failed("c"))
    reason = "upstream step 'c' failed"
    skipped = StepResult(step="d", status=StepStatus.SKIPPED, error=reason)
    assert state.apply(StepSkipped(step="d", reason=reason, result=skipped))
    assert state.apply(RunFinished(run_id="r1", status=RunStatus.FAILED, duration_s=3.0, counts={}))
    a, b, c, d = (state.steps[n] for n in "abcd")
    assert (a.state, a.reason) == ("cached", "same code, parameters and inputs as run r0")
    assert (b.state, b.reason, b.duration_s) == (
        "succeeded",
        "parameter LR changed 0.1 → 0.2",
        2.5,
    )
    assert b.lines == ["loss 1", " 99%"]  # the unfinished line was ended with the step
    assert c.state == "failed"
    assert "cell 5" in c.traceback
    assert (d.state, d.reason) == ("skipped", reason)
    assert state.status == "failed"
    assert state.elapsed() == 3.0
    assert state.counts() == {"cached": 1, "succeeded": 1, "failed": 1, "skipped": 1}


def test_only_the_latest_output_lines_are_kept() -> None:
    state = LiveState()
    state.apply(RunStarted(run_id="r", steps=("a",), jobs=1))
    state.apply(StepStarted(step="a"))
    state.apply(StepOutput(step="a", stream="log", text="".join(f"{i}\n" for i in range(500))))
    assert len(state.steps["a"].lines) == MAX_LINES
    assert state.steps["a"].lines[-1] == "499"


# -- HTML and text -----------------------------------------------------------------------------


def _finished_state() -> LiveState:
    state = LiveState(clock=Clock())
    state.apply(RunStarted(run_id="r<1>", steps=("a", "b", "c"), jobs=1))
    state.apply(StepStarted(step="a", reason="miss: parameter X changed '<b>' → 'y'"))
    state.apply(StepOutput(step="a", stream="log", text="<script>alert(1)</script>\n"))
    state.apply(_ok("a"))
    state.apply(_failed("b"))
    state.apply(_cached("c", "hit: same code"))
    state.apply(RunFinished(run_id="r<1>", status=RunStatus.FAILED, duration_s=1.0, counts={}))
    return state


def test_html_shows_states_reasons_output_and_the_traceback_escaped() -> None:
    html = live_html(_finished_state(), edges=[("a", "b", "x"), ("a", "zz", "gone")], title="n&b")
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "parameter X changed &#x27;&lt;b&gt;&#x27;" in html
    assert "r&lt;1&gt;" in html
    assert "n&amp;b" in html
    assert "<svg" in html
    assert "failed" in html
    assert "nb.ipynb [cell 5]" in html
    assert "hint: look at &lt;cell 5&gt;" in html
    assert "http" not in html.replace("http://www.w3.org/2000/svg", "")  # nothing fetched


def test_text_shows_every_step_with_its_reason_and_the_traceback() -> None:
    text = state_text(_finished_state())
    assert "✓ a succeeded 1.5s (parameter X changed '<b>' → 'y')" in text
    assert "↺ c cached (same code)" in text
    assert "step 'b' failed:" in text
    assert "nb.ipynb [cell 5]" in text


def test_text_view_prints_why_a_step_runs_and_a_traceback_once() -> None:
    out = io.StringIO()
    view = TextLiveView(out, clock=Clock())
    view.emit(RunStarted(run_id="r1", steps=("a", "b"), jobs=1))
    view.emit(StepStarted(step="a", reason="miss: code changed"))
    view.emit(StepOutput(step="a", stream="log", text=" 1%\r 50%\r100%\n"))
    view.emit(_ok("a"))
    view.emit(StepStarted(step="b", reason="miss: no cached result"))
    view.emit(StepOutput(step="b", stream="log", text=_failed("b").result.traceback or ""))
    view.emit(_failed("b"))
    view.close()
    lines = out.getvalue().splitlines()
    assert "▶ a running (code changed)" in lines
    assert "  [a] 100%" in lines
    assert not any("50%" in line for line in lines)
    assert "✓ a succeeded in 1.5s" in lines
    assert sum("Traceback (most recent call last):" in line for line in lines) == 1


def test_run_html_has_the_steps_table_and_graph_escaped() -> None:
    html = run_html(
        run_id="r1",
        status="succeeded",
        parameters={"LR": "<0.1>"},
        metrics={"acc": 0.912345678},
        steps=[
            StepRow(
                step="a", status="cached", duration_s=None, reason="hit: same", source_run="r0"
            ),
            StepRow(step="b", status="succeeded", duration_s=2.0, reason="miss: code changed"),
        ],
        edges=[("a", "b", "x")],
    )
    assert "&lt;0.1&gt;" in html
    assert "0.912346" in html
    assert "(from r0)" in html
    assert "2.0s" in html
    assert "<svg" in html


def test_rich_outputs_are_taken_per_step_from_the_run_notebook() -> None:
    document: dict[str, Any] = {
        "cells": [
            {"metadata": {"cellpipe": {"role": "preamble", "cell": 1}}, "outputs": []},
            {
                "metadata": {"cellpipe": {"step": "plot", "cell": 4}},
                "outputs": [
                    {"output_type": "stream", "name": "stdout", "text": "hi"},
                    {
                        "output_type": "display_data",
                        "data": {"image/png": "iVBOR", "text/plain": ["<Figure>"]},
                    },
                ],
            },
            {"metadata": {}, "cell_type": "markdown"},
        ]
    }
    assert rich_outputs(document) == [("plot", [{"image/png": "iVBOR", "text/plain": "<Figure>"}])]


# -- the notebook sink, with a stand-in for IPython's display --------------------------------


class _Handle:
    def __init__(self, shown: list[tuple[str, Any]]) -> None:
        self.shown = shown

    def update(self, obj: Any) -> None:
        self.shown.append(("update", obj))


def test_notebook_view_updates_one_display_throttled_but_at_once_on_state_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shown: list[tuple[str, Any]] = []

    def display(obj: Any, display_id: bool = False) -> _Handle:
        assert display_id is True
        shown.append(("display", obj))
        return _Handle(shown)

    fake = types.ModuleType("IPython.display")
    fake.display = display  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython.display", fake)
    clock = Clock()
    pending: list[tuple[float, Any]] = []

    def later(delay: float, fn: Any) -> Any:
        pending.append((delay, fn))
        return lambda: pending.remove((delay, fn))

    view = NotebookLiveView(steps=("a",), edges=(), clock=clock, later=later)
    assert [kind for kind, _ in shown] == ["display"]
    view.emit(RunStarted(run_id="r", steps=("a",), jobs=1))
    view.emit(StepStarted(step="a"))
    assert len(shown) == 3  # state changes: at once
    for i in range(100):  # a chatty step, all within one throttle interval
        view.emit(StepOutput(step="a", stream="log", text=f"line {i}\n"))
    assert len(shown) == 3
    # What was held back is drawn when the interval is over, by one timer; another one
    # redraws every second while the run goes (the elapsed times).
    assert sorted(delay for delay, _ in pending) == [pytest.approx(0.1), 1.0]
    flush = next(p for p in pending if p[0] != 1.0)
    pending.remove(flush)
    clock.now += 0.1
    flush[1]()
    assert len(shown) == 4
    tick = next(p for p in pending if p[0] == 1.0)
    pending.remove(tick)
    clock.now += 1.0
    tick[1]()
    assert len(shown) == 5
    assert "1.1s" in repr(shown[-1][1])  # the running step's time moved on
    assert [delay for delay, _ in pending] == [1.0]  # and the next tick is due
    assert "line 99" in shown[-1][1]._repr_html_()
    clock.now += 1.0
    view.emit(StepOutput(step="a", stream="log", text="later\n"))
    assert len(shown) == 6
    view.emit(StepOutput(step="a", stream="log", text="held back\n"))
    assert len(pending) == 2
    view.emit(_ok("a"))
    view.close()
    view.close()
    assert pending == []  # the close cancelled the timers
    assert len(shown) == 8
    final = shown[-1][1]
    assert "a succeeded" in repr(final)
    assert "later" in final._repr_html_()
