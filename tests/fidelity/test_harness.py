"""The fidelity harness itself: its parser, what it compares, and that it can fail."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from fidelity_harness import (
    Execution,
    compare,
    compared_cells,
    metric_names,
    percent_to_notebook,
    printed,
    run_both,
)

pytestmark = [pytest.mark.fidelity]

SCRIPT = '''\
# ---
# jupyter:
#   kernelspec:
#     name: python3
# ---
"""A docstring header."""

# %% [markdown]
# # Title

# %% tags=["imports"]
import math

# %% tags=["step:a"]
# %%time
x = math.sqrt(4)


# %%
print(x)

# %% tags=["skip"]
x = 0

# %% tags=["pipeline-metrics"]
print(x)
y
'''


def test_percent_scripts_convert_like_jupytext() -> None:
    nb = percent_to_notebook(SCRIPT)
    kinds = [c.cell_type for c in nb.cells]
    assert kinds == ["code", "markdown", "code", "code", "code", "code", "code"]
    assert nb.cells[0].source == '"""A docstring header."""'
    assert nb.cells[1].source == "# Title"
    assert nb.cells[3].metadata["tags"] == ["step:a"]
    assert nb.cells[3].source == "%%time\nx = math.sqrt(4)"  # commented magic uncommented
    assert nb.cells[4].source == "print(x)"  # trailing blank lines trimmed
    assert "tags" not in nb.cells[4].metadata


def test_metric_names_and_compared_cells() -> None:
    nb = percent_to_notebook(SCRIPT)
    assert metric_names(nb) == ["x", "y"]
    assert compared_cells(nb) == [4, 5]  # the step's cells; not imports, skip, metrics, header


def test_printed_keeps_stdout_lines_and_drops_timing() -> None:
    outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="a\nCPU times: user 1 ms\n"),
        nbformat.v4.new_output("stream", name="stderr", text="warning\n"),
        nbformat.v4.new_output("stream", name="stdout", text="Wall time: 2 ms\nb\n"),
    ]
    assert printed(outputs) == ["a", "b"]


def write_script(tmp_path: Path) -> Path:
    path = tmp_path / "nb.py"
    path.write_text(SCRIPT, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("ours", "theirs", "equal"),
    [
        (2, 2.0, True),
        (0.30000000000000004, 0.3, False),
        (True, 1, False),
        ([1, [2.5]], [1, [2.5]], True),
        ({"a": 1}, {"a": 1, "b": 2}, False),
        ("x", "x", True),
    ],
)
def test_metrics_compare_exactly(tmp_path: Path, ours: object, theirs: object, equal: bool) -> None:
    notebook = write_script(tmp_path)
    jupyter = Execution(metrics={"x": theirs, "y": 1}, printed={4: ["2.0"], 5: []})
    pipeline = Execution(metrics={"x": ours, "y": 1}, printed={4: ["2.0"], 5: []})
    differences = compare(notebook, jupyter, pipeline)
    assert (differences == []) is equal, differences


def test_missing_metrics_and_printed_lines_are_differences(tmp_path: Path) -> None:
    notebook = write_script(tmp_path)
    jupyter = Execution(metrics={"x": 2.0, "y": 1}, printed={4: ["2.0"], 5: ["2.0"]})
    pipeline = Execution(metrics={"x": 2.0}, printed={4: ["2.0"], 5: ["1.0"]})
    differences = compare(notebook, jupyter, pipeline)
    assert differences == [
        "metric 'y': Jupyter 1, pipeline did not record it",
        "cell 5 printed: Jupyter ['2.0'], pipeline ['1.0']",
    ]
    failed = compare(notebook, jupyter, Execution(metrics={}, error="boom"))
    assert failed == ["the pipeline did not finish: boom"]


@pytest.mark.slow
@pytest.mark.e2e
def test_a_notebook_that_runs_the_same_both_ways_compares_equal(
    repo_root: Path, tmp_path: Path, kernels: Path
) -> None:
    """Positive control on the bundled diamond example (standard library only)."""
    comparison = run_both(repo_root / "examples" / "diamond" / "diamond.ipynb", kernels)
    assert comparison.differences == []
    assert comparison.jupyter.metrics == comparison.pipeline.metrics
    assert set(comparison.jupyter.metrics) == {"mean", "rms"}
    assert comparison.jupyter.printed[9] == comparison.pipeline.printed[9] != []


@pytest.mark.slow
@pytest.mark.e2e
def test_a_changed_result_is_caught(tmp_path: Path, kernels: Path) -> None:
    """Negative control: a step whose printed value and metric depend on the process differ."""
    folder = tmp_path / "nb"
    folder.mkdir()
    (folder / "nb.py").write_text(
        '# %% tags=["imports"]\nimport os\n\n'
        '# %% tags=["step:a"]\nwho = "kernel" if "JPY_PARENT_PID" in os.environ else "other"\n'
        "print(who)\n\n"
        '# %% tags=["pipeline-metrics"]\nwho\n',
        encoding="utf-8",
    )
    comparison = run_both(folder / "nb.py", kernels)
    assert comparison.differences == [
        "metric 'who': Jupyter 'kernel', pipeline 'other'",
        "cell 2 printed: Jupyter ['kernel'], pipeline ['other']",
    ]
