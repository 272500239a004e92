"""The bare fork server `run_notebook` starts early: adopted when a step runs, else killed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cellpipe.api import run_notebook
from cellpipe.errors import DefinitionError, ParameterError
from cellpipe.runner import forkserver
from cellpipe.runner.forkserver import BareServer

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork server")

NOTEBOOK = (
    '# %% tags=["pipeline-parameters"]\nN = 1\n'
    '# %% tags=["step:a"]\nx = N\n'
    '# %% tags=["step:b"]\ny = x + 1\n'
)


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[BareServer]:
    """Every bare server `run_notebook` starts."""
    servers: list[BareServer] = []
    real = forkserver.start_bare

    def recording(workdir: str, *, python: str | None = None) -> BareServer | None:
        server = real(workdir, python=python)
        assert server is not None
        servers.append(server)
        return server

    monkeypatch.setattr(forkserver, "start_bare", recording)
    return servers


def _gone(server: BareServer) -> bool:
    """Reaped (so no process is left): Popen has its exit status."""
    return server.proc.returncode is not None


def test_the_first_run_adopts_the_bare_server(tmp_path: Path, started: list[BareServer]) -> None:
    nb = tmp_path / "nb.py"
    nb.write_text(NOTEBOOK)
    report = run_notebook(nb)
    assert report.run.status.value == "succeeded"
    [server] = started
    assert server.proc.returncode == 0  # closed by the executor after serving, not killed
    assert list(report.run_dir.rglob("forkserver-*.log"))


def test_a_fully_cached_run_kills_the_bare_server(tmp_path: Path, started: list[BareServer]):
    nb = tmp_path / "nb.py"
    nb.write_text(NOTEBOOK)
    run_notebook(nb)
    report = run_notebook(nb)
    assert {r.status.value for r in report.steps.values()} == {"cached"}
    assert len(started) == 2
    assert _gone(started[1])
    assert started[1].proc.returncode == -9


def test_an_invalid_notebook_kills_the_bare_server(tmp_path: Path, started: list[BareServer]):
    nb = tmp_path / "nb.py"
    nb.write_text('# %% tags=["step:a"]\nx = undefined_name\n')
    with pytest.raises(DefinitionError):
        run_notebook(nb)
    [server] = started
    assert _gone(server)


def test_a_bad_parameter_kills_the_bare_server(tmp_path: Path, started: list[BareServer]):
    nb = tmp_path / "nb.py"
    nb.write_text(NOTEBOOK)
    with pytest.raises(ParameterError):
        run_notebook(nb, text_params=["NOPE=3"])
    [server] = started
    assert _gone(server)


def test_other_executors_start_no_bare_server(tmp_path: Path, started: list[BareServer]):
    nb = tmp_path / "nb.py"
    nb.write_text(NOTEBOOK)
    assert run_notebook(nb, executor="spawn").run.status.value == "succeeded"
    assert started == []


def test_kill_is_idempotent_and_adopt_after_kill_is_refused(tmp_path: Path) -> None:
    server = forkserver.start_bare(str(tmp_path))
    assert server is not None
    server.kill()
    server.kill()
    assert _gone(server)
    assert server.adopt(str(tmp_path)) is None


def test_a_bare_server_in_another_folder_is_not_adopted(tmp_path: Path) -> None:
    server = forkserver.start_bare(str(tmp_path))
    assert server is not None
    other = tmp_path / "other"
    other.mkdir()
    assert server.adopt(str(other)) is None
    assert _gone(server)
