"""``cellpipe run``: printed output as ``output`` events, why a step re-runs, progress lines.

Issue 11's CLI paper cuts: ``--json`` carries the steps' printed lines; the text view says
why a step runs (not only why one is reused); a line rewritten with ``\\r`` is one line.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from run_helpers import BASIC, json_lines, write_notebook

pytestmark = pytest.mark.e2e

PROGRESS = (
    ["step:e", "prev:d"],
    'import sys\nprint("start")\nfor i in range(0, 101, 25):\n'
    '    print(f"\\r{i:3d}%", end="", flush=True)\nprint()\n'
    'print("to stderr", file=sys.stderr)\nprint("no newline", end="")',
)


@pytest.fixture
def notebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return write_notebook(tmp_path / "proj", [*BASIC[:-1], PROGRESS, BASIC[-1]])


def test_json_has_one_output_event_per_printed_line_before_the_step_ends(run_cli, notebook):
    result = run_cli("run", notebook, "--json", "-j", "1")
    assert result.code == 0, result.err
    events = json_lines(result.out)
    outputs = [(e["step"], e["text"]) for e in events if e["event"] == "output"]
    assert outputs == [
        ("d", "total 24"),
        ("e", "start"),
        ("e", "100%"),  # the progress line: only its final state
        ("e", "to stderr"),
        ("e", "no newline"),  # the step's last line, ended by the step
    ]
    assert all(e["stream"] == "log" for e in events if e["event"] == "output")
    kinds = [(e["event"], e.get("step"), e.get("status")) for e in events]
    last_output = max(i for i, e in enumerate(events) if e["event"] == "output")
    assert kinds.index(("step", "e", "succeeded")) > last_output
    assert events[-1]["event"] == "summary"


def test_why_a_step_runs_is_in_the_json_and_the_text_view(run_cli, notebook):
    first = run_cli("run", notebook)
    assert first.code == 0, first.err
    lines = first.out.splitlines()
    assert "▶ a running (first run of this step)" in lines
    # Not a terminal: the progress line shows only its final state.
    assert "  [e] 100%" in lines
    assert not any("25%" in line for line in lines)
    result = run_cli("run", notebook, "--json", "-p", "A=2")
    assert result.code == 0, result.err
    running = {
        e["step"]: e["reason"]
        for e in json_lines(result.out)
        if e["event"] == "step" and e["status"] == "running"
    }
    assert running["a"] == "miss: parameter A changed 1 → 2"
    assert running["b"].startswith("miss: input x changed")
    assert "e" not in running  # cached: it reads nothing that changed
    result = run_cli("run", notebook, "-p", "A=3")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert "▶ a running (parameter A changed 2 → 3)" in lines
    assert any(line.startswith("▶ b running (input x changed") for line in lines)
    assert any(line.startswith("↺ e cached (hit: ") for line in lines)
