"""`cellpipe check` end to end: exit codes, the --json document and the human report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import cellpipe

pytestmark = pytest.mark.e2e

REQUIRED_STEP_KEYS = {"name", "upstream", "inputs", "outputs", "packages"}
REQUIRED_ERROR_KEYS = {"message", "cell", "line"}


def edges_of(document: dict[str, Any]) -> dict[tuple[str, str], list[str]]:
    return {(e["from"], e["to"]): e["variables"] for e in document["edges"]}


def step(document: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in document["steps"] if s["name"] == name)


def all_messages(errors: list[dict[str, Any]]) -> str:
    return "\n".join(f"{e['message']} {e.get('hint') or ''}" for e in errors)


def test_wine_json_has_steps_edges_parameters_metrics(run_cli, examples):
    result = run_cli("check", examples / "wine" / "wine.ipynb", "--json")

    assert result.code == 0, result.err
    doc = result.json()
    assert doc["ok"] is True
    assert doc["errors"] == []
    assert doc["warnings"] == []
    assert [s["name"] for s in doc["steps"]] == [
        "load_data",
        "split",
        "train_forest",
        "train_logreg",
        "evaluate",
    ]
    for s in doc["steps"]:
        assert s.keys() >= REQUIRED_STEP_KEYS
    edges = edges_of(doc)
    assert edges[("load_data", "split")] == ["data"]
    split_vars = ["X_test", "X_train", "y_test", "y_train"]
    assert edges[("split", "train_forest")] == split_vars
    assert edges[("split", "train_logreg")] == split_vars
    assert edges[("train_forest", "evaluate")] == ["forest", "forest_acc"]
    assert edges[("train_logreg", "evaluate")] == ["logreg", "logreg_acc"]
    assert ("train_forest", "train_logreg") not in edges
    evaluate = step(doc, "evaluate")
    assert {"train_forest", "train_logreg"} <= set(evaluate["upstream"])
    assert {"name": "forest", "from": "train_forest"} in evaluate["inputs"]
    assert step(doc, "train_logreg")["parameters"] == ["C"]
    assert step(doc, "split")["parameters"] == ["SEED", "TEST_SIZE"]
    assert [(p["name"], p["type"], p["default"]) for p in doc["parameters"]] == [
        ("TEST_SIZE", "float", 0.25),
        ("SEED", "int", 42),
        ("N_ESTIMATORS", "int", 100),
        ("MAX_DEPTH", "int", 4),
        ("C", "float", 1.0),
    ]
    assert [(m["name"], m["step"]) for m in doc["metrics"]] == [
        ("forest_acc", "train_forest"),
        ("logreg_acc", "train_logreg"),
    ]
    distributions = {p["distribution"] for p in step(doc, "train_forest")["packages"]}
    assert {"scikit-learn", "matplotlib"} <= distributions


def test_diamond_function_reading_a_parameter_makes_the_caller_read_it(run_cli, examples):
    result = run_cli("check", examples / "diamond" / "diamond.ipynb", "--json")

    assert result.code == 0, result.err
    doc = result.json()
    assert edges_of(doc) == {
        ("a", "b"): ["numbers"],
        ("a", "c"): ["numbers"],
        ("b", "d"): ["mean", "spread"],
        ("c", "d"): ["rms"],
    }
    assert step(doc, "b")["parameters"] == ["SCALE"]
    assert step(doc, "a")["parameters"] == ["N", "SEED"]
    assert step(doc, "d")["upstream"] == ["b", "c"]
    assert all(s["packages"] == [] for s in doc["steps"]), "stdlib modules are not packages"
    assert [(m["name"], m["step"]) for m in doc["metrics"]] == [("mean", "b"), ("rms", "c")]


def test_percent_script_gives_the_same_pipeline_as_the_notebook(run_cli, examples):
    from_notebook = run_cli("check", examples / "diamond" / "diamond.ipynb", "--json")
    from_script = run_cli("check", examples / "diamond" / "diamond.py", "--json")

    assert from_notebook.code == from_script.code == 0, from_script.err
    notebook_doc, script_doc = from_notebook.json(), from_script.json()
    del notebook_doc["path"], script_doc["path"]
    assert script_doc == notebook_doc


@pytest.fixture
def mistakes_without_tag_typo(examples: Path) -> Path:
    """The mistakes notebook with its unknown tag fixed, so the analysis errors show."""
    import nbformat

    source = examples / "mistakes" / "mistakes.ipynb"
    nb = nbformat.read(source, as_version=4)
    (cell,) = [c for c in nb.cells if "pipeline-metric" in c.metadata.get("tags", [])]
    cell.metadata["tags"] = ["pipeline-metrics"]
    target = source.with_name("analysis_mistakes.ipynb")
    nbformat.write(nb, target)
    return target


def test_mistakes_json_lists_every_mistake(run_cli, examples):
    result = run_cli("check", examples / "mistakes" / "mistakes.ipynb", "--json")

    assert result.code == 2
    text = all_messages(result.json()["errors"])
    for expected in ("featurs", "'features'", "BATCH", "lod", "pipeline-metric"):
        assert expected in text
    assert "records" in text
    assert "add_default" in text
    assert "sort_records" in text


def test_mistakes_json_is_a_failure_document_with_locations(run_cli, examples):
    result = run_cli("check", examples / "mistakes" / "mistakes.ipynb", "--json")

    assert result.code == 2
    doc = result.json()
    assert doc["ok"] is False
    assert isinstance(doc["warnings"], list)
    assert doc["errors"]
    for error in doc["errors"]:
        assert error.keys() >= REQUIRED_ERROR_KEYS
        assert error["cell"] is not None, error
    assert "'pipeline-metric'" in all_messages(doc["errors"])
    assert "did you mean 'pipeline-metrics'?" in all_messages(doc["errors"])


def test_every_analysis_error_is_reported_at_once(run_cli, mistakes_without_tag_typo):
    result = run_cli("check", mistakes_without_tag_typo, "--json")

    assert result.code == 2
    errors = result.json()["errors"]
    for error in errors:
        assert error.keys() >= REQUIRED_ERROR_KEYS
    by_code = {e["code"]: e for e in errors}
    assert by_code["bad-parameter"]["cell"] == 3
    assert by_code["bad-parameter"]["line"] == 2
    assert "BATCH" in by_code["bad-parameter"]["message"]
    assert "Did you mean 'load'?" in by_code["unknown-step"]["message"]
    assert by_code["undefined-name"]["cell"] == 8
    assert by_code["undefined-name"]["line"] == 1
    assert "Did you mean 'features'?" in by_code["undefined-name"]["message"]


def test_mistakes_report_goes_to_stderr_with_exit_2(run_cli, examples, mistakes_without_tag_typo):
    tag_typo = run_cli("check", examples / "mistakes" / "mistakes.ipynb")
    analysis = run_cli("check", mistakes_without_tag_typo)

    assert tag_typo.code == analysis.code == 2
    assert tag_typo.out == analysis.out == ""
    assert tag_typo.err.startswith("error: ")
    assert "cell 9" in tag_typo.err
    assert analysis.err.startswith("error: the pipeline has errors (5 errors)")
    assert "(cell 8, line 1) reads" in analysis.err
    assert "featurs" in analysis.err
    assert "hint: " in analysis.err


def test_human_report_shows_each_section_without_escape_codes(run_cli, examples):
    result = run_cli("check", examples / "wine" / "wine.ipynb")

    assert result.code == 0, result.err
    for heading in ("Steps (in run order)", "Edges", "Parameters", "Metrics", "Packages"):
        assert heading in result.out
    assert "X_train (split)" in result.out
    assert "forest_acc" in result.out
    assert "scikit-learn" in result.out
    assert "\x1b[" not in result.out


def test_missing_notebook_is_a_clear_error_with_a_suggestion(run_cli, examples):
    result = run_cli("check", examples / "wine" / "wine.ipynbb")

    assert result.code == 2
    assert "no such notebook: " in result.err
    assert "did you mean" in result.err
    assert "wine.ipynb?" in result.err
    assert "Traceback" not in result.err


def test_missing_notebook_with_json_is_one_json_document(run_cli, examples):
    result = run_cli("check", "nowhere.ipynb", "--json")

    assert result.code == 2
    doc = result.json()
    assert doc["ok"] is False
    assert doc["errors"][0]["code"] == "no-such-notebook"
    assert doc["errors"][0]["message"] == "no such notebook: nowhere.ipynb"


def test_folder_instead_of_notebook(run_cli, examples):
    result = run_cli("check", examples / "wine")

    assert result.code == 2
    assert "folder" in result.err
    assert "wine.ipynb" in result.err


def test_unreadable_notebook_is_a_definition_error(run_cli, tmp_path):
    broken = tmp_path / "broken.ipynb"
    broken.write_text("{ this is not json", encoding="utf-8")

    result = run_cli("check", broken, "--json")

    assert result.code == 2
    doc = result.json()
    assert doc["ok"] is False
    assert doc["path"] == str(broken)
    assert doc["errors"][0]["code"] == "parse-error"
    assert doc["errors"][0]["message"].startswith("not valid JSON")

    human = run_cli("check", broken)
    assert human.code == 2
    assert human.err.startswith("error: cannot read the notebook\n")
    assert f"{broken}: not valid JSON" in human.err


def test_debug_shows_the_traceback_before_or_after_the_command(run_cli, tmp_path):
    before = run_cli("--debug", "check", tmp_path / "nope.ipynb")
    after = run_cli("check", tmp_path / "nope.ipynb", "--debug")

    for result in (before, after):
        assert result.code == 2
        assert "Traceback" in result.err
        assert "no such notebook" in result.err


def test_unexpected_exception_is_reported_as_a_bug(run_cli, examples, monkeypatch):
    def explode(path):
        raise RuntimeError("boom")

    monkeypatch.setattr("cellpipe.notebook.analyze_notebook", explode)

    result = run_cli("check", examples / "wine" / "wine.ipynb")

    assert result.code == 1
    assert "Traceback" in result.err
    assert "RuntimeError: boom" in result.err
    assert "this is a bug in cellpipe" in result.err


@pytest.mark.parametrize("command", ["check", "graph"])
def test_every_command_has_help_with_an_example(run_cli, command):
    result = run_cli(command, "--help")

    assert result.code == 0
    assert f"cellpipe {command} " in result.out
    assert "examples:" in result.out


def test_version(run_cli):
    result = run_cli("--version")

    assert result.code == 0
    assert result.out.strip() == f"cellpipe {cellpipe.__version__}"


def test_no_command_prints_usage_and_exits_2(run_cli):
    result = run_cli()

    assert result.code == 2
    assert "usage: cellpipe" in result.err


def test_unknown_option_is_a_usage_error(run_cli):
    result = run_cli("check", "nb.ipynb", "--jsn")

    assert result.code == 2
    assert "unrecognized arguments: --jsn" in result.err


def _entry_point() -> str:
    beside_python = Path(sys.executable).parent / "cellpipe"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("cellpipe")
    if found is None:
        pytest.skip("the cellpipe entry point is not installed")
    return found


def test_installed_entry_point_checks_the_examples(examples):
    env = {**os.environ, "TERM": "dumb"}
    ok = subprocess.run(
        [_entry_point(), "check", str(examples / "wine" / "wine.ipynb"), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["ok"] is True

    failed = subprocess.run(
        [_entry_point(), "check", str(examples / "mistakes" / "mistakes.ipynb")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert failed.returncode == 2
    assert "pipeline-metric" in failed.stderr

    # The fast-start rule: checking with --json never loads rich.
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from cellpipe.cli.main import main; "
            f"code = main(['check', {str(examples / 'diamond' / 'diamond.ipynb')!r}, '--json']); "
            "assert code == 0, code; "
            "assert not any(m == 'rich' or m.startswith('rich.') for m in sys.modules), 'rich'",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr


def test_a_too_long_step_name_fails_check_and_run_cleanly(run_cli, tmp_path):
    """Issue 10, item 7: check passed and run crashed with "File name too long"."""
    notebook = tmp_path / "long.py"
    notebook.write_text(f'# %% tags=["step:{"s" * 300}"]\nx = 1\n')
    for command in ("check", "run"):
        result = run_cli(command, notebook)
        assert result.code == 2, result.err
        assert "is 300 characters long; step names are limited to 63" in result.err
        assert "this is a bug" not in result.err


def test_the_text_form_of_a_syntax_error_shows_cell_line_and_source(run_cli, tmp_path):
    """Issue 10, item 10: the text said "cell 1 (step 'a') does not parse: ..." without the
    line (only --json had it) or the code that does not parse."""
    notebook = tmp_path / "syntax.py"
    notebook.write_text('# %% tags=["step:a"]\nx = 1\nif x\n    y = 2\n')
    result = run_cli("check", notebook)
    assert result.code == 2
    assert "cell 1, line 2 (step 'a') does not parse: expected ':' in `if x`" in result.err
    params = tmp_path / "params.py"
    params.write_text(
        '# %% tags=["pipeline-parameters"]\nA = 1\nB = [1,\n\n# %% tags=["step:a"]\nx = A\n'
    )
    result = run_cli("check", params)
    assert "(cell 1, line 2) does not parse: '[' was never closed in `B = [1,`" in result.err


def test_a_notebook_name_near_the_file_name_limit_runs(run_cli, tmp_path):
    """Issue 10, item 7: the run id (the run's folder) was the file name plus 23 characters."""
    notebook = tmp_path / f"{'n' * 240}.py"
    notebook.write_text('# %% tags=["step:a"]\nx = 1\n')
    result = run_cli("run", notebook, "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out.splitlines()[-1])["run_id"].startswith("n" * 100 + "-")
