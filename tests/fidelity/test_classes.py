"""One small notebook per class of issue 9, run in Jupyter and as a pipeline, or checked.

Each notebook under classes/ is written as a user would write it. A `same` case must give equal
metrics and equal printed output both ways (see fidelity_harness). A `check` case asserts what
`cellpipe check NB --json` says: the exit code and a problem code (with what its message must
name). Every class of issue 9 passes; a regression fails here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from fidelity_harness import (
    Execution,
    cellpipe,
    check_problems,
    compare,
    problem_codes,
    run_both,
    run_in_jupyter,
    two_copies,
)

CLASSES = Path(__file__).parent / "classes"

pytestmark = [pytest.mark.fidelity]


def assert_same(notebook: str, kernels: Path) -> None:
    comparison = run_both(CLASSES / notebook, kernels)
    assert comparison.differences == [], "\n".join(comparison.differences)


def assert_check(
    notebook: str, *, exit_code: int, code: str, kind: str, mentions: tuple[str, ...] = ()
) -> dict[str, Any]:
    """`cellpipe check NB --json` exits ``exit_code`` and reports ``code`` in ``kind``."""
    status, document = check_problems(CLASSES / notebook)
    shown = json.dumps(document, indent=1)
    assert code in problem_codes(document, kind), f"no {kind[:-1]} {code!r} in:\n{shown}"
    assert status == exit_code, f"check exited {status}, not {exit_code}:\n{shown}"
    problem = next(p for p in document[kind] if p.get("code") == code)
    text = f"{problem.get('message')} {problem.get('hint')}"
    for word in mentions:
        assert word in text, f"the {code} message does not name {word!r}: {text}"
    return document


# -- silent differences ---------------------------------------------------------------------

SAME = [
    "c01a_loop_alias.py",
    "c01b_assign_alias.py",
    "c01c_helper_mutates.py",
    "c01d_mutator_calls.py",
    "c02a_numpy_seed.py",
    "c02b_random_seed_in_step.py",
    "c06_nonscalar_metrics.py",
    "c08_file_edge.py",
    "c09_notebook_class_pickle.py",
    "c10_figure_render_error.py",
    "c11_cell_magic.ipynb",
    "c11b_cell_magic_percent.py",
    "c12_code_before_first_step.ipynb",
    "c13_skip_with_step_tags.ipynb",
    "c14_parameter_metric.py",
    "c15_katib_metadata.ipynb",
    "also_modules_not_data.py",
    "also_reimport_no_warning.py",
    "also_docstring_header.py",
]


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize("notebook", SAME)
def test_pipeline_computes_what_jupyter_computes(notebook: str, kernels: Path) -> None:
    assert_same(notebook, kernels)


@pytest.mark.slow
@pytest.mark.e2e
def test_a_change_the_analysis_misses_stops_the_run_or_is_carried(kernels: Path) -> None:
    """Item 1's safety net: equal results, or a run that stops naming the step and variable."""
    notebook = CLASSES / "c01e_guard.py"
    with two_copies(notebook) as (jupyter_dir, pipeline_dir):
        jupyter = run_in_jupyter(jupyter_dir / notebook.name, jupyter_dir, kernels)
        assert jupyter.error is None, jupyter.error
        assert jupyter.metrics == {"mode": "fast"}
        result = cellpipe(["run", notebook.name, "--json"], pipeline_dir)
    if result.code == 0:
        summary = json.loads(result.out.splitlines()[-1])
        differences = compare(notebook, jupyter, Execution(metrics=summary["metrics"]))
        assert [d for d in differences if d.startswith("metric")] == [], differences
        return
    said = result.out + result.err
    assert "tweak" in said, said
    assert "settings" in said, said


# -- what check says ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("notebook", ["c02a_numpy_seed.py", "c02b_random_seed_in_step.py"])
def test_check_warns_about_a_seeded_global_generator(notebook: str) -> None:
    assert_check(notebook, exit_code=0, code="random-state", kind="warnings")


@pytest.mark.slow
def test_check_warns_about_process_state_changed_in_a_step() -> None:
    document = assert_check(
        "c03_process_state.py",
        exit_code=0,
        code="process-state",
        kind="warnings",
        mentions=("imports",),
    )
    lines = {(p["cell"], p["line"]) for p in document["warnings"] if p["code"] == "process-state"}
    assert (2, 1) in lines, lines  # os.environ["MODE"] = ...
    assert (2, 2) in lines, lines  # np.set_printoptions(...)


@pytest.mark.slow
def test_check_refuses_prev_siblings_changing_the_same_object() -> None:
    assert_check(
        "c04_prev_siblings.py",
        exit_code=2,
        code="ambiguous-producer",
        kind="errors",
        mentions=("left", "right", "rng"),
    )


@pytest.mark.slow
def test_check_refuses_a_step_name_used_again() -> None:
    document = assert_check(
        "c05_duplicate_step.py", exit_code=2, code="duplicate-step", kind="errors"
    )
    problem = next(p for p in document["errors"] if p["code"] == "duplicate-step")
    assert "1" in problem["message"], problem  # the first cell of 'a'
    assert problem["cell"] == 3, problem  # the cell that uses the name again


@pytest.mark.slow
def test_check_shows_the_file_edge() -> None:
    """`check --json` has the edge write -> read carrying data.txt (item 8: shown as file edges)."""
    status, document = check_problems(CLASSES / "c08_file_edge.py")
    assert status == 0, document
    edges = {(e["from"], e["to"]): e for e in document["edges"]}
    assert ("write", "read") in edges, document["edges"]
    assert edges["write", "read"].get("files") == ["data.txt"], document["edges"]
    upstream = {s["name"]: s["upstream"] for s in document["steps"]}
    assert "write" in upstream["read"], upstream


@pytest.mark.slow
def test_check_warns_about_code_before_the_first_step() -> None:
    assert_check(
        "c12_code_before_first_step.ipynb",
        exit_code=0,
        code="code-before-first-step",
        kind="warnings",
        mentions=("2", "3"),
    )


@pytest.mark.slow
def test_check_warns_about_a_skip_cell_with_step_tags() -> None:
    assert_check(
        "c13_skip_with_step_tags.ipynb",
        exit_code=0,
        code="skip-with-step-tags",
        kind="warnings",
        mentions=("3",),
    )


@pytest.mark.slow
def test_check_keeps_katib_metadata_quietly() -> None:
    status, document = check_problems(CLASSES / "c15_katib_metadata.ipynb")
    assert status == 0, document
    assert "katib" not in json.dumps(document.get("warnings", [])), document["warnings"]


@pytest.mark.slow
def test_not_installed_hint_names_the_distribution() -> None:
    _, document = check_problems(CLASSES / "c16_dist_hint.py")
    said = json.dumps(document)
    assert "cv2" in said, document
    assert "pip install opencv-python" in said, document
    assert "pip install cv2" not in said, document


@pytest.mark.slow
def test_modules_are_not_data() -> None:
    status, document = check_problems(CLASSES / "also_modules_not_data.py")
    assert status == 0, document
    upstream = {s["name"]: set(s["upstream"]) for s in document["steps"]}
    assert upstream["left"] == set(), upstream
    assert upstream["right"] == set(), upstream
    assert upstream["join"] == {"load", "left", "right"}, upstream


@pytest.mark.slow
def test_reimporting_a_shared_module_is_not_worth_a_warning() -> None:
    status, document = check_problems(CLASSES / "also_reimport_no_warning.py")
    assert status == 0, document
    assert document["warnings"] == [], document["warnings"]


@pytest.mark.slow
def test_a_percent_script_docstring_is_not_code_before_the_first_step() -> None:
    status, document = check_problems(CLASSES / "also_docstring_header.py")
    assert status == 0, document
    assert document["warnings"] == [], document["warnings"]


# -- lineage --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.e2e
def test_lineage_names_the_producer_of_each_equal_output() -> None:
    notebook = CLASSES / "c07_lineage_equal_outputs.py"
    with two_copies(notebook) as (_, folder):
        run = cellpipe(["run", notebook.name, "--json"], folder)
        assert run.code == 0, run.out + run.err
        run_id = json.loads(run.out.splitlines()[-1])["run_id"]
        graph = cellpipe(["lineage", run_id, "--json"], folder)
        assert graph.code == 0, graph.out + graph.err
        edges = json.loads(graph.out)["edges"]
        x_digest = next(
            e["target"].removeprefix("artifact:")
            for e in edges
            if e["label"] == "x" and e["source"].endswith("/left")
        )
        text = cellpipe(["lineage", x_digest], folder)
    assert text.code == 0, text.out + text.err
    sources = dict(re.findall(r"^\s*in\s+(\w+) = \S+.* from (\w+) in ", text.out, re.MULTILINE))
    assert sources == {"x": "left", "y": "right"}, text.out
