"""Steps whose cells use Python-body magics (``%%time``, ``%%capture``...) compute what Jupyter
does.

Each notebook is run by cellpipe and, top to bottom, by IPython's own `InteractiveShell` (the
kernel's machinery); the metrics must be equal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell
from run_helpers import write_notebook

import cellpipe

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CASES = {
    "time": ("%%time\ntotal = sum(data)\ndata.append(4)", "n = len(data)"),
    "capture": (
        '%%capture out\nprint("hello")\ntotal = sum(data)',
        "n = len(out.stdout)",
    ),
    "prun": ("%%prun -q\ntotal = sum(data)\ndata.extend([7, 8])", "n = len(data)"),
    "timeit": ("%%timeit -n 3 -r 1\ndata.append(0)\ntotal = 99", "n = len(data)\ntotal = 6"),
    "line-time": ("%time total = sum(data)\ndata.append(5)", "n = len(data)"),
}


def _cells(magic_cell: str, use_cell: str) -> list[tuple[list[str], str]]:
    return [
        (["step:load"], "data = [3, 1, 2]"),
        (["step:magic"], magic_cell),
        (["step:use"], use_cell),
        (["pipeline-metrics"], "total\nn"),
    ]


def _jupyter(cells: list[tuple[list[str], str]], metrics: list[str]) -> dict[str, Any]:
    shell = InteractiveShell.instance()
    try:
        shell.user_ns.clear()
        shell.init_user_ns()
        for tags, source in cells:
            if "pipeline-metrics" in tags:
                continue
            result = shell.run_cell(source, store_history=False)
            assert result.success, result.error_in_exec
        return {name: shell.user_ns[name] for name in metrics}
    finally:
        InteractiveShell.clear_instance()


@pytest.mark.parametrize("case", CASES, ids=CASES)
def test_a_magic_step_gives_the_notebook_s_metrics(case: str, tmp_path: Path, monkeypatch) -> None:
    magic_cell, use_cell = CASES[case]
    cells = _cells(magic_cell, use_cell)
    notebook = write_notebook(tmp_path / "proj", cells)
    monkeypatch.chdir(tmp_path)
    run = cellpipe.run(notebook)
    assert run.status == "succeeded", run
    expected = _jupyter(cells, ["total", "n"])
    assert run.metrics == expected
