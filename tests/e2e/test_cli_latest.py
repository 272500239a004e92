"""`latest` and `latest~N` wherever a run id is taken: the CLI's run arguments and the Python
API (issue 11). Resolution itself is tested in tests/unit/storage/test_latest.py."""

from __future__ import annotations

import pytest
from run_helpers import summary

import cellpipe

pytestmark = pytest.mark.e2e


@pytest.mark.slow
def test_latest_works_in_every_command_and_the_api(run_cli, project, tmp_path):
    missing = run_cli("show", "latest")
    assert missing.code != 0
    assert "no cellpipe project" in missing.err
    first = summary(run_cli("run", project, "--json").out)["run_id"]
    second = summary(run_cli("run", project, "-p", "A=2", "--json").out)["run_id"]

    assert run_cli("show", "latest", "--json").json()["run_id"] == second
    assert run_cli("show", "latest~1", "--json").json()["run_id"] == first
    assert run_cli("why", "latest~1", "a", "--json").json()["run_id"] == first
    assert run_cli("compare", "latest", "latest~1", "--json").json()["runs"] == [second, first]
    assert run_cli("logs", "latest", "d", "--json").json()["run_id"] == second
    assert run_cli("lineage", "latest", "--json").code == 0
    got = run_cli("artifacts", "get", "latest", "a", "x", "-o", tmp_path / "x.json", "--json")
    assert got.json()["run_id"] == second
    assert run_cli("snapshot", "list", "latest~1", "--json").json()["run_id"] == first
    registered = run_cli("models", "register", "m", "--run", "latest~1", "--step", "a",
                         "--var", "x", "--json")  # fmt: skip
    assert registered.json()["run_id"] == first, registered.err
    assert cellpipe.load("latest", "a", "x") == 4
    assert cellpipe.load("latest~1", "a", "x") == 2

    too_far = run_cli("show", "latest~2")
    assert too_far.code == 1
    assert "no run 'latest~2': the project has only 2 runs" in too_far.err
    # lineage falls back to artifact digests for a non-run: not for `latest~N`.
    lineage = run_cli("lineage", "latest~5")
    assert "the project has only 2 runs" in lineage.err
