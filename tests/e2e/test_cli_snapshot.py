"""`cellpipe snapshot list/restore`, `cellpipe reproduce`, `cellpipe.restore` and the size limit."""

from __future__ import annotations

import json

import pytest

import cellpipe

pytestmark = pytest.mark.e2e


@pytest.fixture
def one_run(examples, run_cli):
    nb = examples / "diamond" / "diamond.py"
    result = run_cli("run", nb, "--json")
    assert result.code == 0, result.err
    return examples / "diamond", json.loads(result.out.splitlines()[-1])["run_id"]


def test_snapshot_list(one_run, run_cli):
    project, run_id = one_run
    doc = run_cli("snapshot", "list", run_id, "--project", project, "--json").json()
    kinds = [(s["step"], s["kind"]) for s in doc["snapshots"]]
    assert kinds[0] == (None, "start")
    for step in "abcd":
        assert (step, "before") in kinds
        assert (step, "after") in kinds
    start = doc["snapshots"][0]
    assert start["file_count"] == 2  # diamond.ipynb and diamond.py; .cellpipe is never included


def test_snapshot_restore(one_run, run_cli, tmp_path):
    project, run_id = one_run
    target = tmp_path / "restored"
    result = run_cli("snapshot", "restore", run_id, "--to", target, "--project", project, "--json")
    assert result.code == 0, result.err
    assert result.json()["files"] == 2
    assert (target / "diamond.py").read_text() == (project / "diamond.py").read_text()
    again = run_cli("snapshot", "restore", run_id, "--to", target, "--project", project)
    assert again.code == 1
    assert "not empty" in again.err
    assert "--force" in again.err
    forced = run_cli("snapshot", "restore", run_id, "--to", target, "--project", project, "--force")
    assert forced.code == 0, forced.err

    after = run_cli(
        "snapshot", "restore", run_id, "--step", "b", "--after", "--to", tmp_path / "b",
        "--project", project, "--json",
    )  # fmt: skip
    assert after.code == 0, after.err
    doc = after.json()
    assert doc["kind"] == "after"
    assert set(doc["inputs"]) == {"numbers"}
    assert set(doc["outputs"]) == {"mean", "spread"}
    no_flag = run_cli("snapshot", "restore", run_id, "--after", "--to", tmp_path / "x",
                      "--project", project)  # fmt: skip
    assert no_flag.code == 1
    assert "need --step" in no_flag.err


def test_reproduce_reports_identical_outputs(one_run, run_cli):
    project, run_id = one_run
    result = run_cli("reproduce", run_id, "--project", project, "--json")
    assert result.code == 0, result.err
    doc = result.json()
    assert doc["identical"] is True
    assert doc["reproduced_run"] != run_id
    assert {s["step"] for s in doc["steps"]} == {"a", "b", "c", "d"}
    assert all(o["identical"] for s in doc["steps"] for o in s["outputs"])
    assert doc["environment_changes"] == []
    folder = project / ".cellpipe" / "reproduce" / run_id
    assert doc["folder"] == str(folder.resolve())
    assert (folder / ".cellpipe" / "cellpipe.db").exists()  # its own fresh store


def test_restore_loads_a_steps_inputs_and_parameters(one_run):
    project, run_id = one_run
    namespace: dict[str, object] = {}
    values = cellpipe.restore(run_id, "b", project=project, namespace=namespace)
    assert namespace == values
    assert set(values) == {"N", "SEED", "SCALE", "LABEL", "numbers"}
    assert len(values["numbers"]) == 200  # type: ignore[arg-type]


def test_restore_into_caller_globals(one_run):
    project, run_id = one_run
    cellpipe.restore(run_id, "c", project=project)
    assert len(globals().pop("numbers")) == 200
    for name in ("N", "SEED", "SCALE", "LABEL"):
        globals().pop(name)


def test_size_limit_and_cellpipeignore(examples, run_cli, monkeypatch):
    project = examples / "diamond"
    (project / "big").mkdir()
    (project / "big" / "blob.bin").write_bytes(b"0" * 50_000)
    monkeypatch.setenv("CELLPIPE_SNAPSHOT_MAX_BYTES", "40000")
    refused = run_cli("run", project / "diamond.py")
    assert refused.code == 1
    assert "over the snapshot limit" in refused.err
    assert "big/blob.bin" in refused.err
    assert ".cellpipeignore" in refused.err
    (project / ".cellpipeignore").write_text("# data we do not need\nbig/\n")
    accepted = run_cli("run", project / "diamond.py", "--json")
    assert accepted.code == 0, accepted.err
    run_id = json.loads(accepted.out.splitlines()[-1])["run_id"]
    snaps = run_cli("snapshot", "list", run_id, "--project", project, "--json").json()
    assert snaps["snapshots"][0]["file_count"] == 3  # the two notebooks and .cellpipeignore


def test_reproduce_marks_a_differing_value_no_step_read(tmp_path, run_cli):
    # A value stored only to be loadable later (here a fresh random token) differs on every
    # run: the verdict stays strict, and the row says nothing downstream read it.
    folder = tmp_path / "tokens"
    folder.mkdir()
    (folder / "tokens.py").write_text(
        '# %% tags=["step:make"]\n'
        "import secrets\n"
        "base = 21\n"
        "token = secrets.token_hex(8)\n"
        '# %% tags=["step:use"]\n'
        "answer = base * 2\n"
    )
    first = run_cli("run", folder / "tokens.py", "--json")
    assert first.code == 0, first.err
    run_id = json.loads(first.out.splitlines()[-1])["run_id"]
    result = run_cli("reproduce", run_id, "--project", folder, "--json")
    assert result.code == 1, result.err
    doc = result.json()
    assert doc["identical"] is False
    rows = {(s["step"], o["variable"]): o for s in doc["steps"] for o in s["outputs"]}
    assert rows["make", "token"]["identical"] is False
    assert rows["make", "token"]["read_downstream"] is False
    assert rows["make", "base"]["identical"] is True
    assert rows["make", "base"]["read_downstream"] is True
    assert rows["use", "answer"]["identical"] is True
    text = run_cli("reproduce", run_id, "--project", folder)
    assert "differs (not read downstream)" in text.out
