"""The bare fork server started early (by `run_notebook` or the CLI): adopted, else killed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cellpipe import api
from cellpipe.api import run_notebook
from cellpipe.cli.main import main
from cellpipe.errors import DefinitionError, ParameterError
from cellpipe.runner import _bare
from cellpipe.runner._bare import BareServer

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
    real = _bare.start_bare

    def recording(*, python: str | None = None) -> BareServer | None:
        server = real(python=python)
        assert server is not None
        servers.append(server)
        return server

    monkeypatch.setattr(_bare, "start_bare", recording)
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


def test_kill_is_idempotent_and_adopt_after_kill_is_refused() -> None:
    server = _bare.start_bare()
    assert server is not None
    server.kill()
    server.kill()
    assert _gone(server)
    assert server.adopt() is None


def test_a_server_started_elsewhere_runs_steps_in_the_notebook_folder(
    tmp_path: Path, started: list[BareServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI starts its server before it knows the notebook: "init" moves it there.

    The folder it started in is not on ``sys.path`` (a module there must not shadow anything),
    the notebook's folder is, first, and is the working directory, as in Jupyter.
    """
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "only_elsewhere.py").write_text("VALUE = 'wrong folder'\n")
    project = tmp_path / "project"
    project.mkdir()
    (project / "local_helper.py").write_text("VALUE = 42\n")
    nb = project / "nb.py"
    nb.write_text(
        '# %% tags=["imports"]\nimport importlib.util\nimport os\nimport local_helper\n'
        '# %% tags=["step:a"]\ncwd = os.getcwd()\nvalue = local_helper.VALUE\n'
        'shadowed = importlib.util.find_spec("only_elsewhere") is not None\n'
        '# %% tags=["step:b"]\nseen = (cwd, value, shadowed)\n'
    )
    monkeypatch.chdir(elsewhere)
    report = run_notebook(nb)
    assert report.run.status.value == "succeeded"
    [server] = started
    assert server.proc.returncode == 0  # it was adopted and served the step
    run_id = report.run.run_id
    assert api.load(run_id, "a", "cwd", project=project) == str(project)
    assert api.load(run_id, "a", "value", project=project) == 42
    assert api.load(run_id, "a", "shadowed", project=project) is False


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["run", "NB", "--jobs", "0"], 0),  # a usage error: argparse exits, the server dies
        (["run", "NB", "--help"], None),  # no server for help
        (["run", "NB", "--executor", "spawn"], None),
        (["run", "NB", "--executor=inprocess"], None),
        (["check", "NB"], None),
    ],
)
def test_the_cli_starts_the_server_only_for_a_fork_run_and_never_leaks_it(
    tmp_path: Path,
    started: list[BareServer],
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    expected: int | None,
) -> None:
    nb = tmp_path / "nb.py"
    nb.write_text(NOTEBOOK)
    main([str(nb) if word == "NB" else word for word in argv])
    capsys.readouterr()
    if expected is None:
        assert started == []
    else:
        [server] = started
        assert _gone(server)


def test_the_cli_hands_its_early_server_to_the_run(
    tmp_path: Path, started: list[BareServer], capsys: pytest.CaptureFixture[str]
) -> None:
    nb = tmp_path / "nb.py"
    nb.write_text(NOTEBOOK)
    assert main(["run", str(nb), "--json"]) == 0
    capsys.readouterr()
    [server] = started
    assert server.proc.returncode == 0  # adopted and closed after serving, not killed


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[bool] = []

    def prepare(self, *, shell: bool) -> None:
        self.calls.append(shell)


@pytest.mark.parametrize(
    ("code", "shell"),
    [
        ("x = N", False),
        ("x = N\nx", True),  # a shown value
        ("%time x = N", True),  # a magic (not transformed by this quick look)
        ("from IPython.display import display\nx = N", True),
    ],
)
def test_the_cli_asks_for_a_shell_only_when_a_cell_may_need_one(
    tmp_path: Path, code: str, shell: bool
) -> None:
    from cellpipe.cli.run import _prepare_shell

    nb = tmp_path / "nb.py"
    nb.write_text(f'# %% tags=["pipeline-parameters"]\nN = 1\n# %% tags=["step:a"]\n{code}\n')
    recorder = _Recorder()
    _prepare_shell(recorder, nb)  # type: ignore[arg-type]
    assert recorder.calls == [shell]
    broken = tmp_path / "broken.ipynb"
    broken.write_text("{not json")
    _prepare_shell(recorder, broken)  # type: ignore[arg-type]
    assert recorder.calls == [shell]  # unreadable: no hint sent, the run reports the error
