"""``cellpipe run``'s text view: why a step runs, and a ``\\r`` progress line as one line.

On a terminal the line being rewritten is part of the live table (updated in place); when the
output is not a terminal only the line's final state is printed.
"""

from __future__ import annotations

import io

import pytest

from cellpipe.cli.run import _TextView
from cellpipe.runner.events import RunStarted, StepOutput, StepStarted, StepSucceeded
from cellpipe.runner.jobs import StepResult
from cellpipe.storage.records import StepStatus


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _events() -> list[object]:
    done = StepResult(step="fit", status=StepStatus.SUCCEEDED, duration_s=2.0)
    return [
        RunStarted(run_id="r1", steps=("fit",), jobs=1),
        StepStarted(step="fit", reason="miss: parameter LR changed 0.1 → 0.2"),
        StepOutput(step="fit", stream="log", text="epoch 1\n  0%"),
        *(StepOutput(step="fit", stream="log", text=f"\r{p:3d}%") for p in range(10, 100, 10)),
        StepOutput(step="fit", stream="log", text="\r100%\n"),
        StepSucceeded(step="fit", duration_s=2.0, outputs={}, result=done),
    ]


def test_piped_output_has_the_final_state_of_a_progress_line_and_the_reason() -> None:
    out = io.StringIO()
    view = _TextView(out, io.StringIO())
    for event in _events():
        view.on_event(event)  # type: ignore[arg-type]
    view.close()
    lines = out.getvalue().splitlines()
    assert "▶ fit running (parameter LR changed 0.1 → 0.2)" in lines
    assert "  [fit] epoch 1" in lines
    assert "  [fit] 100%" in lines
    assert not any("50%" in line for line in lines)
    assert "✓ fit succeeded in 2.0s" in lines


def test_on_a_terminal_the_progress_line_is_rewritten_in_the_live_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv("COLUMNS", "100")
    out = _Terminal()
    view = _TextView(out, io.StringIO())
    shown: list[str] = []
    for event in _events():
        view.on_event(event)  # type: ignore[arg-type]
        shown.append(_render(view._table()))
    view.close()
    text = out.getvalue()
    # While it runs the live table's last row is the line being rewritten, one row.
    mid = shown[7]
    assert "[fit]  50%" in mid
    assert "40%" not in mid
    assert "parameter LR changed" in mid
    assert "[fit]" not in shown[-1]  # the step ended: no progress row
    assert text.count("[fit] 100%") == 1  # printed once, when the line ended
    assert "[fit]  50%\n" not in text  # never printed as a line of its own


def _render(renderable: object) -> str:
    from rich.console import Console

    buffer = io.StringIO()
    Console(file=buffer, width=100, color_system=None).print(renderable)
    return buffer.getvalue()
