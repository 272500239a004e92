"""`cellpipe run` end to end: caching granularity, files, failure and resume, selection,
parameters, metrics, JSON events, outputs, corrupted artifacts (in process, real stores)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import nbformat
import pytest
from run_helpers import (
    json_lines,
    reasons,
    replace_cell,
    script_metrics,
    statuses,
    summary,
    write_notebook,
)

pytestmark = pytest.mark.e2e

ALL_CACHED = {"a": "cached", "b": "cached", "c": "cached", "d": "cached"}


@pytest.mark.slow
def test_second_run_is_all_cached_and_why_says_hit(run_cli, project):
    first = run_cli("run", project, "--json")
    assert first.code == 0, first.err
    assert set(statuses(first.out).values()) == {"succeeded"}
    second = run_cli("run", project, "--json")
    assert second.code == 0
    assert statuses(second.out) == ALL_CACHED
    first_id = summary(first.out)["run_id"]
    assert all(
        r.startswith(f"hit: same code, parameters and inputs as run {first_id}")
        for r in reasons(second.out).values()
    )
    why = run_cli("why", summary(second.out)["run_id"], "b")
    assert why.code == 0
    assert "cached" in why.out
    assert "hit:" in why.out


@pytest.mark.slow
def test_parameter_change_reruns_only_readers_and_descendants(run_cli, project):
    assert run_cli("run", project).code == 0
    result = run_cli("run", project, "-p", "B=5", "--json")
    assert result.code == 0
    assert statuses(result.out) == {
        "a": "cached",
        "b": "succeeded",
        "c": "cached",
        "d": "succeeded",
    }
    why = run_cli("why", summary(result.out)["run_id"], "b", "--json")
    assert why.json()["reason"] == "miss: parameter B changed 2 → 5"
    assert why.json()["hit"] is False
    assert reasons(result.out)["d"] == "miss: input y changed"
    assert summary(result.out)["metrics"]["total"] == 2 + 5 + 20


@pytest.mark.slow
def test_code_change_reruns_the_step_and_descendants(run_cli, project):
    assert run_cli("run", project).code == 0
    replace_cell(project, 7, "z = x * 100")
    result = run_cli("run", project, "--json")
    assert statuses(result.out) == {
        "a": "cached",
        "b": "cached",
        "c": "succeeded",
        "d": "succeeded",
    }
    assert reasons(result.out)["c"] == "miss: code of cell 7 changed"


@pytest.mark.slow
def test_comment_and_whitespace_edits_keep_everything_cached(run_cli, project):
    assert run_cli("run", project).code == 0
    replace_cell(project, 7, "# tens\nz  =  x*10   # comment\n\n")
    replace_cell(project, 4, 'def double(v):\n    """Twice v."""\n    return 2*v')
    result = run_cli("run", project, "--json")
    assert statuses(result.out) == ALL_CACHED


@pytest.mark.slow
def test_early_cutoff_identical_output_leaves_downstream_cached(run_cli, project):
    assert run_cli("run", project).code == 0
    replace_cell(project, 7, "z = x * 5 * 2")
    result = run_cli("run", project, "--json")
    assert statuses(result.out) == {"a": "cached", "b": "cached", "c": "succeeded", "d": "cached"}


DATA_NB = [
    (["imports"], "import csv"),
    (["step:read"], "with open('data.csv') as f:\n    rows = list(csv.reader(f))\nn = len(rows)"),
    (["step:live", "cache:false"], "stamp = 1"),
    (["step:after"], "m = n + stamp"),
    (["pipeline-metrics"], "m"),
]


@pytest.mark.slow
def test_editing_a_read_file_reruns_its_reader_and_cache_false_always_runs(
    run_cli, tmp_path, monkeypatch
):
    folder = tmp_path / "data"
    path = write_notebook(folder, DATA_NB)
    (folder / "data.csv").write_text("a,b\n1,2\n")
    monkeypatch.chdir(folder)
    first = run_cli("run", path, "--json")
    assert first.code == 0, first.err
    assert summary(first.out)["metrics"]["m"] == 3
    second = run_cli("run", path, "--json")
    assert statuses(second.out) == {"read": "cached", "live": "succeeded", "after": "cached"}
    assert reasons(second.out)["live"] == "miss: caching is off for this step (cache:false tag)"
    (folder / "data.csv").write_text("a,b\n1,2\n3,4\n")
    third = run_cli("run", path, "--json")
    assert statuses(third.out) == {"read": "succeeded", "live": "succeeded", "after": "succeeded"}
    assert reasons(third.out)["read"] == "miss: file data.csv changed"
    assert summary(third.out)["metrics"]["m"] == 4
    why = run_cli("why", summary(third.out)["run_id"], "read")
    assert "data.csv" in why.out
    show = run_cli("show", summary(third.out)["run_id"], "--json").json()
    read = next(s for s in show["steps"] if s["step"] == "read")
    assert list(read["files_read"]) == ["data.csv"]


FAILING = [
    (["imports"], "import math"),
    (["step:a"], "x = 1"),
    (["step:bad", "prev:a"], "y = x + 1\nraise ValueError('boom')"),
    (["step:after_bad"], "w = y * 2"),
    (["step:good", "prev:a"], "z = x + 2"),
    (["pipeline-metrics"], "z"),
]


@pytest.mark.slow
def test_failure_skips_descendants_points_at_the_cell_and_resume_runs_only_the_rest(
    run_cli, tmp_path, monkeypatch
):
    folder = tmp_path / "fail"
    path = write_notebook(folder, FAILING)
    monkeypatch.chdir(folder)
    result = run_cli("run", path, "--json")
    assert result.code == 1
    assert statuses(result.out) == {
        "a": "succeeded",
        "bad": "failed",
        "after_bad": "skipped",
        "good": "succeeded",
    }
    doc = summary(result.out)
    assert doc["status"] == "failed"
    failure = doc["failures"][0]
    assert failure["step"] == "bad"
    assert "ValueError: boom (nb.ipynb, cell 3, line 2)" in failure["error"]
    assert 'nb.ipynb [cell 3]", line 2' in failure["traceback"]
    assert "raise ValueError('boom')" in failure["traceback"]
    assert "cellpipe" not in failure["traceback"].replace("nb.ipynb", "")
    failed_event = next(e for e in json_lines(result.out) if e.get("status") == "failed")
    assert failed_event["step"] == "bad"
    assert "[cell 3]" in failed_event["traceback"]
    assert reasons(result.out)["after_bad"] == "upstream step 'bad' failed"

    text = run_cli("run", path)
    assert text.code == 1
    assert "step 'bad' failed: ValueError: boom (nb.ipynb, cell 3, line 2)" in text.err
    # The traceback is printed once: with the step's output, not again in the summary (issue 11).
    assert (text.out + text.err).count('nb.ipynb [cell 3]", line 2') == 1

    replace_cell(path, 3, "y = x + 1")
    fixed = run_cli("run", path, "--json")
    assert fixed.code == 0
    assert statuses(fixed.out) == {
        "a": "cached",
        "bad": "succeeded",
        "after_bad": "succeeded",
        "good": "cached",
    }
    assert reasons(fixed.out)["bad"] == "miss: code of cell 3 changed"


@pytest.mark.slow
def test_from_only_no_cache_and_jobs_1(run_cli, project):
    only_first = run_cli("run", project, "--only", "d", "--json")
    assert only_first.code == 1
    assert "--only d needs the outputs of step 'a', but they are not in the cache" in (
        only_first.err
    )
    assert "hint: run the pipeline without --only first" in only_first.err

    assert run_cli("run", project, "--jobs", "1").code == 0
    only = run_cli("run", project, "--only", "d", "--json")
    assert only.code == 0, only.err
    assert statuses(only.out) == {"a": "cached", "b": "cached", "c": "cached", "d": "succeeded"}
    assert reasons(only.out)["d"] == "miss: selected to re-run with --only"

    from_b = run_cli("run", project, "--from", "b", "--json")
    assert statuses(from_b.out) == {
        "a": "cached",
        "b": "succeeded",
        "c": "cached",
        "d": "succeeded",
    }
    no_cache = run_cli("run", project, "--no-cache", "--json")
    assert set(statuses(no_cache.out).values()) == {"succeeded"}
    assert set(reasons(no_cache.out).values()) == {"miss: caching switched off (--no-cache)"}

    unknown = run_cli("run", project, "--only", "dd")
    assert unknown.code != 0
    assert "has no step 'dd'" in unknown.err
    assert "did you mean 'd'" in unknown.err
    bad_jobs = run_cli("run", project, "--jobs", "0")
    assert bad_jobs.code == 2
    assert "must be at least 1" in bad_jobs.err


@pytest.mark.slow
def test_spawn_executor_runs_the_diamond(run_cli, examples):
    path = examples / "diamond" / "diamond.ipynb"
    result = run_cli("run", path, "--executor", "spawn", "--json")
    assert result.code == 0, result.err
    assert set(statuses(result.out).values()) == {"succeeded"}
    assert summary(result.out)["metrics"] == script_metrics(path)


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("A=one", "parameter A is an int (default 1, cell 3); 'one' is not an int"),
        ("AA=1", "has no parameter 'AA'"),
        ("A", "'A' is not a parameter assignment"),
    ],
    ids=["bad-type", "unknown-name", "no-equals"],
)
def test_bad_parameters_exit_2_and_record_nothing(run_cli, project, arg, message):
    result = run_cli("run", project, "-p", arg, "--json")
    assert result.code == 2
    assert message in result.err
    assert result.out == ""
    assert not (project.parent / ".cellpipe").exists()


@pytest.mark.slow
def test_parameters_reach_the_step_as_values(run_cli, project):
    value = "it's \"quoted\"\nand 'multi'\nline"
    result = run_cli("run", project, "-p", f"NAME={value}", "-p", "A=3", "--json")
    assert result.code == 0
    assert summary(result.out)["parameters"]["NAME"] == value
    assert summary(result.out)["parameters"]["A"] == 3


ECHO = [
    (["pipeline-parameters"], 'NAME = "plain"\nRATE = 0.5'),
    (["step:echo"], "got = NAME\nkind = type(RATE).__name__"),
    (["step:check"], "same = got == NAME"),
    (["pipeline-metrics"], "same\nkind"),
]


@pytest.mark.slow
def test_str_parameter_with_quotes_and_newlines_arrives_intact(run_cli, tmp_path, monkeypatch):
    import cellpipe

    path = write_notebook(tmp_path / "echo", ECHO)
    monkeypatch.chdir(path.parent)
    value = "it's \"quoted\"\nline two\\n'''"
    result = run_cli("run", path, "-p", f"NAME={value}", "-p", "RATE=2", "--json")
    assert result.code == 0, result.err
    run_id = summary(result.out)["run_id"]
    assert cellpipe.load(run_id, "echo", "got") == value
    assert summary(result.out)["metrics"] == {"same": True, "kind": "float"}


@pytest.mark.slow
def test_metrics_in_summary_and_show(run_cli, project):
    result = run_cli("run", project, "--json")
    metrics = summary(result.out)["metrics"]
    assert metrics == {"total": 24, "twice": 48}
    assert metrics == script_metrics(project)
    show = run_cli("show", summary(result.out)["run_id"], "--json").json()
    assert show["metrics"] == metrics
    d = next(s for s in show["steps"] if s["step"] == "d")
    assert d["metrics"] == {"total": 24, "log:twice": 48}
    cached = run_cli("run", project, "--json")
    assert summary(cached.out)["metrics"] == metrics


@pytest.mark.slow
@pytest.mark.parametrize(
    "notebook", ["wine/wine.ipynb", "diamond/diamond.ipynb", "diamond/diamond.py"]
)
def test_every_example_run_metrics_equal_the_plain_script(run_cli, examples, notebook):
    if notebook.startswith("wine"):
        pytest.importorskip("sklearn")
    path = examples / notebook
    result = run_cli("run", path, "--json")
    assert result.code == 0, result.err
    got = summary(result.out)["metrics"]
    assert got
    assert got == script_metrics(path)


@pytest.mark.slow
def test_json_event_lines(run_cli, project):
    result = run_cli("run", project, "--json")
    lines = json_lines(result.out)
    allowed = {"running", "succeeded", "cached", "failed", "skipped", "cancelled"}
    for line in lines:
        assert {"event", "step", "status"} <= set(line), line
    for line in lines[:-1]:
        assert line["status"] in allowed
    last = lines[-1]
    assert last["event"] == "summary"
    assert {"run_id", "status", "metrics"} <= set(last)
    step_events = [(e["step"], e["status"]) for e in lines if e["event"] == "step"]
    for name in "abcd":
        assert (name, "running") in step_events
        assert (name, "succeeded") in step_events


UNSERIALIZABLE = [
    (["step:opener"], "handle = open('f.txt', 'w')"),
    (["step:gen"], "numbers = (i for i in range(3))"),
    (["step:use"], "both = (handle, numbers)"),
]


@pytest.mark.slow
def test_unserializable_outputs_fail_naming_step_and_variable(run_cli, tmp_path, monkeypatch):
    path = write_notebook(tmp_path / "ser", UNSERIALIZABLE)
    monkeypatch.chdir(path.parent)
    result = run_cli("run", path, "--json")
    assert result.code == 1
    failures = {f["step"]: f for f in summary(result.out)["failures"]}
    assert set(failures) == {"opener", "gen"}
    assert statuses(result.out)["use"] == "skipped"
    assert "'handle'" in failures["opener"]["error"]
    assert "opener" in failures["opener"]["error"]
    assert "'numbers'" in failures["gen"]["error"]
    assert "gen" in failures["gen"]["error"]
    assert all(f["hint"] for f in failures.values())


@pytest.mark.slow
def test_executed_notebooks_are_valid_and_hold_the_wine_figure(run_cli, examples):
    pytest.importorskip("sklearn")
    path = examples / "wine" / "wine.ipynb"
    result = run_cli("run", path, "--json")
    assert result.code == 0, result.err
    run_nb = Path(summary(result.out)["notebook"])
    nb = nbformat.read(run_nb, as_version=4)
    nbformat.validate(nb)
    pngs = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if "image/png" in o.get("data", {})
    ]
    assert pngs
    step_nb = run_nb.parent / "steps" / "evaluate" / "executed.ipynb"
    evaluate = nbformat.read(step_nb, as_version=4)
    nbformat.validate(evaluate)
    assert any(
        "image/png" in o.get("data", {})
        for c in evaluate.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    )
    # The cached run's notebook is joined from the stored step notebooks: still valid.
    cached = run_cli("run", path, "--json")
    nbformat.validate(nbformat.read(Path(summary(cached.out)["notebook"]), as_version=4))


def _flip_byte(path: Path) -> None:
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    path.chmod(0o444)


def _artifact(project: Path, digest: str) -> Path:
    hex_ = digest.removeprefix("sha256:")
    return project.parent / ".cellpipe" / "artifacts" / "sha256" / hex_[:2] / hex_


@pytest.mark.slow
def test_corrupted_output_is_a_miss_and_the_producer_repairs_it(run_cli, project):
    first = run_cli("run", project, "--json")
    show = run_cli("show", summary(first.out)["run_id"], "--json").json()
    a = next(s for s in show["steps"] if s["step"] == "a")
    _flip_byte(_artifact(project, a["outputs"]["x"]["digest"]))

    again = run_cli("run", project, "--json")
    assert again.code == 0, again.err
    assert reasons(again.out)["a"] == "miss: output x corrupted in the artifact store"
    # The recomputed value has the same bytes: the steps below stay cached.
    assert statuses(again.out) == {"a": "succeeded", "b": "cached", "c": "cached", "d": "cached"}
    third = run_cli("run", project, "--json")
    assert statuses(third.out) == ALL_CACHED


@pytest.mark.slow
def test_corrupted_input_with_only_is_a_clear_error(run_cli, project):
    first = run_cli("run", project, "--json")
    show = run_cli("show", summary(first.out)["run_id"], "--json").json()
    a = next(s for s in show["steps"] if s["step"] == "a")
    _flip_byte(_artifact(project, a["outputs"]["x"]["digest"]))
    result = run_cli("run", project, "--only", "b")
    assert result.code == 1
    assert "--only b needs the outputs of step 'a'" in result.err
    assert "output x corrupted" in result.err


def test_corrupted_input_read_by_a_running_step_is_a_clear_error(tmp_path):
    from cellpipe.runner.child import run_job, warm_up
    from cellpipe.runner.jobs import StepJob
    from cellpipe.storage.artifacts import LocalArtifactStore
    from cellpipe.storage.records import ArtifactRef
    from cellpipe.storage.serializers import serialize

    store = LocalArtifactStore(tmp_path / "artifacts")
    serializer, file = serialize([1, 2, 3], store.scratch_dir(), variable="x", step="a")
    digest = store.put_file(file, move=True)
    _flip_byte(store.path_for(digest))
    ref = ArtifactRef(
        digest=digest,
        serializer=serializer.name,
        serializer_version=serializer.version,
        size=7,
        type_name="list",
    )
    job = StepJob(
        step="b",
        cells=(),
        preamble=(),
        notebook=str(tmp_path / "nb.ipynb"),
        workdir=str(tmp_path),
        params={},
        inputs={"x": ref},
        outputs=(),
        artifact_root=str(store.root),
        scratch_dir=str(tmp_path / "scratch"),
    )
    cwd = Path.cwd()
    try:
        result = run_job(
            job, warm_up(job, log_fd=os.open(os.devnull, os.O_WRONLY)), own_process=False
        )
    finally:
        os.chdir(cwd)
    assert result.status == "failed"
    assert "step 'b' cannot load its input 'x'" in (result.error or "")
    assert "corrupted" in (result.error or "")
    assert result.hint


@pytest.mark.slow
def test_unknown_run_is_a_clear_error(run_cli, project):
    assert run_cli("run", project, "--only", "a").code == 0  # creates .cellpipe
    for args in (["show", "nope"], ["why", "nope", "a"], ["show", "nope", "--json"]):
        result = run_cli(*args)
        assert result.code == 1
        assert "no run 'nope'" in result.err


def test_runs_outside_a_project_is_a_clear_error(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_cli("runs")
    assert result.code == 1
    assert "no cellpipe project" in result.err
