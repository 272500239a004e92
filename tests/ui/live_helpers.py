"""Helpers of the live-run UI tests: a tiny project whose second step waits for a file."""

from __future__ import annotations

from pathlib import Path

GATED_NOTEBOOK = """\
# %% tags=["pipeline-parameters"]
N = 3
RATE = 0.5
LOUD = False
NAME = "gate"

# %% tags=["step:first"]
print("first", N, RATE, LOUD, NAME)
value = N * 2

# %% tags=["step:gated"]
import os, time
while not os.path.exists(NAME + ".open"):
    time.sleep(0.02)
print("through the gate")
total = value + 1
"""
"""Two steps; ``gated`` waits until the file ``NAME.open`` exists in the project (the test
opens the gate when it has seen the step running: no test waits on time)."""

LIMIT_S = 120.0


def make_gated_project(folder: Path) -> Path:
    """A project in ``folder`` with ``tiny.py`` (the gated notebook); returns the folder."""
    (folder / ".cellpipe").mkdir(parents=True, exist_ok=True)
    (folder / "tiny.py").write_text(GATED_NOTEBOOK)
    return folder


def open_gate(project: Path, name: str = "gate") -> None:
    """Let the ``gated`` step of runs with ``NAME=name`` finish."""
    (project / f"{name}.open").write_text("")
