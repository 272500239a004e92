"""A project is found the same way everywhere: explicit project, CELLPIPE_PROJECT, the cwd."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import cellpipe
from cellpipe.errors import ProjectNotFoundError, StorageError

if TYPE_CHECKING:
    from conftest import RunCli  # the e2e conftest (not importable by name in a full run)

pytestmark = pytest.mark.e2e


@pytest.fixture
def ran(project: Path, run_cli: RunCli) -> Path:
    """The BASIC project after one run; returns its folder."""
    result = run_cli("run", project)
    assert result.code == 0, result.err
    return project.parent


def test_cellpipe_project_env_is_honoured_by_cli_and_python(
    ran: Path, tmp_path: Path, run_cli: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert run_cli("runs").code != 0  # no project at or above the working directory

    monkeypatch.setenv("CELLPIPE_PROJECT", str(ran))
    listed = run_cli("runs", "--json")
    assert listed.code == 0, listed.err
    assert len(listed.json()["runs"]) == 1
    assert cellpipe.load("latest", "d", "total") == 2 * 1 + 2 + 2 * 1 * 10
    assert cellpipe.api.find_project().root == ran.resolve()


def test_explicit_project_wins_over_the_environment(
    ran: Path, tmp_path: Path, run_cli: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("CELLPIPE_PROJECT", str(empty))
    monkeypatch.chdir(tmp_path)
    assert run_cli("runs", "--project", ran, "--json").code == 0
    assert cellpipe.load("latest", "a", "x", project=ran) == 2
    missed = run_cli("runs")
    assert missed.code == 1
    assert "CELLPIPE_PROJECT" in missed.err


def test_a_miss_names_the_folders_searched_and_the_fixes(
    tmp_path: Path, run_cli: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CELLPIPE_PROJECT", raising=False)
    folder = tmp_path / "a" / "b"
    folder.mkdir(parents=True)
    monkeypatch.chdir(folder)
    with pytest.raises(ProjectNotFoundError) as caught:
        cellpipe.load("latest", "a", "x")
    error = caught.value
    assert isinstance(error, StorageError)
    assert "the working directory" in error.message
    assert str(folder.resolve()) in error.message
    assert str(folder.resolve().parent) in error.message  # the folders above were searched
    assert error.hint is not None
    assert "CELLPIPE_PROJECT" in error.hint
    assert "--project" in error.hint
    result = run_cli("runs")
    assert result.code == 1
    assert "no cellpipe project" in result.err
    assert "Traceback" not in result.err

    monkeypatch.setenv("CELLPIPE_PROJECT", str(folder))
    with pytest.raises(ProjectNotFoundError, match="CELLPIPE_PROJECT"):
        cellpipe.restore("latest", "a", namespace={})


def test_a_project_folder_that_does_not_exist_is_a_miss(ran: Path, run_cli: RunCli) -> None:
    # The working directory is a project, but a mistyped --project must not fall back to it.
    result = run_cli("runs", "--project", "no-such-folder")
    assert result.code == 1
    assert "no-such-folder (the folder given, which does not exist)" in result.err
    with pytest.raises(ProjectNotFoundError, match="does not exist"):
        cellpipe.load("latest", "a", "x", project=ran / "typo")
