"""Issue 10, items 1 and 14 through the CLI: `check`/`run` name the secrets they left out,
`snapshot restore` refuses links out of its folder, and `snapshot changes` says which of two
parallel steps changed which file."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.e2e

NOTEBOOK = """\
# %% tags=["imports"]
import pathlib
import time

# %% tags=["step:a"]
pathlib.Path("a.txt").write_text("from a")
_deadline = time.monotonic() + 120
while not pathlib.Path("b.txt").exists():  # both steps run at once: each waits for the other
    assert time.monotonic() < _deadline, "step b never wrote b.txt"
    time.sleep(0.01)
x = 1

# %% tags=["step:b"]
pathlib.Path("b.txt").write_text("from b")
_deadline = time.monotonic() + 120
while not pathlib.Path("a.txt").exists():
    assert time.monotonic() < _deadline, "step a never wrote a.txt"
    time.sleep(0.01)
y = 2
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "pair.py").write_text(NOTEBOOK)
    monkeypatch.chdir(folder)
    return folder


def test_check_and_run_are_quiet_without_secrets(project, run_cli):
    check = run_cli("check", project / "pair.py")
    assert check.code == 0, check.err
    assert "secret" not in check.out
    assert run_cli("check", project / "pair.py", "--json").json()["secrets_left_out"] == []


def test_check_and_run_name_the_secrets_they_left_out(project, run_cli):
    (project / ".env").write_text("TOKEN=do-not-copy-me\n")
    (project / ".aws").mkdir()
    (project / ".aws" / "credentials").write_text("[default]\n")
    check = run_cli("check", project / "pair.py")
    assert check.code == 0, check.err
    assert "left out of snapshots as secrets: .aws/, .env" in check.out
    doc = run_cli("check", project / "pair.py", "--json").json()
    assert doc["secrets_left_out"] == [".aws/", ".env"]

    ran = run_cli("run", project / "pair.py", "-j", "2")
    assert ran.code == 0, ran.err
    assert "left out of snapshots as secrets: .aws/, .env" in ran.out
    ran = run_cli("run", project / "pair.py", "--no-cache", "-j", "2", "--json")
    summary = json.loads(ran.out.splitlines()[-1])
    assert summary["secrets_left_out"] == [".aws/", ".env"]
    for path in (project / ".cellpipe" / "artifacts").rglob("*"):
        assert not path.is_file() or b"do-not-copy-me" not in path.read_bytes()


def test_parallel_steps_each_get_their_own_file(project, run_cli):
    ran = run_cli("run", project / "pair.py", "-j", "2", "--json")
    assert ran.code == 0, ran.err
    run_id = json.loads(ran.out.splitlines()[-1])["run_id"]
    a = run_cli("snapshot", "changes", run_id, "a", "--json").json()["changes"]
    b = run_cli("snapshot", "changes", run_id, "b", "--json").json()["changes"]
    assert a["a.txt"] == {"change": "added", "by": ["a"], "attribution": "seen"}
    assert b["b.txt"] == {"change": "added", "by": ["b"], "attribution": "seen"}
    # The other step's file may appear in a window too, but is never given to the wrong step.
    assert "b.txt" not in a or a["b.txt"]["by"] in (["b"], ["a", "b"])
    assert "a.txt" not in b or b["a.txt"]["by"] in (["a"], ["b", "a"])
    shown = run_cli("show", run_id, "--json").json()["file_changes"]
    assert {"step": "a", "file": "a.txt", "change": "added", "by": ["a"],
            "attribution": "seen"} in shown  # fmt: skip
    assert "Files changed" in run_cli("show", run_id).out
    text = run_cli("snapshot", "changes", run_id, "a")
    assert text.code == 0, text.err
    assert "a.txt" in text.out
    assert "seen" in text.out


def test_restore_refuses_a_link_out_of_the_folder(project, run_cli, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("do-not-copy-me")
    (project / "escape.txt").symlink_to(outside)
    (project / "alias.py").symlink_to("pair.py")
    ran = run_cli("run", project / "pair.py", "-j", "2", "--json")
    assert ran.code == 0, ran.err
    run_id = json.loads(ran.out.splitlines()[-1])["run_id"]
    target = tmp_path / "restored"
    refused = run_cli("snapshot", "restore", run_id, "--to", target)
    assert refused.code == 1
    assert "symbolic link" in refused.err
    assert "escape.txt -> " in refused.err
    assert "manifest" not in refused.err
    done = run_cli("snapshot", "restore", run_id, "--to", target, "--skip-outside-links", "--json")
    assert done.code == 0, done.err
    assert done.json()["links_skipped"] == ["escape.txt"]
    assert (target / "alias.py").is_symlink()
    assert (target / "alias.py").read_text() == NOTEBOOK
    assert not (target / "escape.txt").exists()


def test_reproduce_does_not_recreate_a_link_out_of_the_workspace(project, run_cli, tmp_path):
    (tmp_path / "outside.txt").write_text("elsewhere")
    (project / "escape.txt").symlink_to(tmp_path / "outside.txt")
    ran = run_cli("run", project / "pair.py", "-j", "2", "--json")
    assert ran.code == 0, ran.err
    run_id = json.loads(ran.out.splitlines()[-1])["run_id"]
    again = run_cli("reproduce", run_id, "-j", "2", "--json")
    assert again.code == 0, again.err
    doc = again.json()
    assert doc["identical"] is True
    assert doc["links_skipped"] == ["escape.txt"]
    assert not (project / ".cellpipe" / "reproduce" / run_id / "escape.txt").exists()
