"""Kale notebooks: where cellpipe is as lenient as Kale (warnings), and where it must stop (errors).

The shapes come from Kale's own public examples (dog-breed-katib, open-vaccine, serving/xgboost):
setup code before the first step, ``skip`` cells that keep their ``prev:`` tags, Katib metadata.
Runs are compared with IPython's `InteractiveShell` running the cells the pipeline keeps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell
from run_helpers import write_notebook

import cellpipe

pytestmark = pytest.mark.e2e

KALE_SHAPED = [
    ([], "!echo setting up\n%pip install -q requests==2.31.0"),
    (["markdown"], "# Dog breeds"),
    ([], "x = 'left out, as Kale does'"),
    (["imports"], "import json"),
    (["pipeline-parameters"], "N = 3"),
    (["step:load"], "data = list(range(N))"),
    (["skip", "prev:load"], "data.append(100)"),
    (["step:train", "prev:load"], "total = sum(data)\nreport = json.dumps({'t': total})"),
    (["pipeline-metrics"], "total"),
]


def _jupyter(cells: list[tuple[list[str], str]], names: list[str]) -> dict[str, Any]:
    shell = InteractiveShell.instance()
    try:
        for _, source in cells:
            assert shell.run_cell(source, store_history=False).success
        return {name: shell.user_ns[name] for name in names}
    finally:
        InteractiveShell.clear_instance()


def test_a_kale_shaped_notebook_checks_with_warnings(run_cli, tmp_path: Path) -> None:
    notebook = write_notebook(tmp_path, KALE_SHAPED)
    result = run_cli("check", notebook, "--json")
    assert result.code == 0, result.out
    warnings = {w["code"]: w for w in result.json()["warnings"]}
    assert {"code-before-first-step", "skip-with-step-tags"} <= warnings.keys()
    assert warnings["code-before-first-step"]["message"].startswith("cells 1, 3 have code")
    assert warnings["skip-with-step-tags"]["cell"] == 7


@pytest.mark.slow
def test_a_kale_shaped_notebook_runs_like_its_kept_cells(tmp_path: Path, monkeypatch) -> None:
    notebook = write_notebook(tmp_path / "proj", KALE_SHAPED)
    monkeypatch.chdir(tmp_path)
    run = cellpipe.run(notebook)
    assert run.status == "succeeded", run
    kept = [KALE_SHAPED[i] for i in (3, 4, 5, 7)]
    assert run.metrics == _jupyter(kept, ["total"]) == {"total": 3}
    packages = cellpipe.load_pipeline(notebook).step("train").packages
    assert ("requests", "2.31.0") in {(p.distribution, p.version) for p in packages}


def test_a_step_name_used_again_stops_check(run_cli, tmp_path: Path) -> None:
    notebook = write_notebook(
        tmp_path,
        [(["step:a"], "x = [1]"), (["step:b"], "x.append(2)"), (["step:a"], "y = len(x)")],
    )
    result = run_cli("check", notebook, "--json")
    assert result.code == 2
    (error,) = result.json()["errors"]
    assert error["code"] == "duplicate-step"
    assert error["cell"] == 3
    assert "first cell 1" in error["message"]
