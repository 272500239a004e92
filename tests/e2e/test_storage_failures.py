"""A read-only workspace and a full disk, for real (issue 10, items 5 and 6).

Read-only: as a normal user the project is ``chmod -R a-w`` (restored in ``finally``); as root,
which ignores file modes, the CLI runs in its own mount namespace with the project bind-mounted
read-only over itself (``unshare -m``), so every write fails with EROFS. Full disk: the CLI runs
with a lowered ``RLIMIT_FSIZE`` (a file size limit, inherited by the fork server and the step
processes), so writes past it fail with EFBIG, which cellpipe reports like ENOSPC.

Every CLI process runs in its own session and the whole group is killed if it outlives the
test, pass or fail.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from cellpipe.storage.metadata import SCHEMA_VERSION
from conftest import CliResult, RunCli

pytestmark = pytest.mark.e2e

TIMEOUT_S = 300

ReadOnly = Callable[[Sequence[str]], CliResult]


def _cli(
    args: Sequence[str],
    *,
    cwd: Path,
    prefix: Sequence[str] = (),
    file_size_limit: int | None = None,
) -> CliResult:
    def limit() -> None:
        if file_size_limit is not None:
            _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, hard))

    with subprocess.Popen(
        [*prefix, sys.executable, "-m", "cellpipe.cli.main", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=limit,
    ) as proc:
        try:
            out, err = proc.communicate(timeout=TIMEOUT_S)
        finally:
            with contextlib.suppress(ProcessLookupError):  # the fork server, steps, if any
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return CliResult(code=proc.returncode, out=out, err=err)


def _can_mount_read_only(folder: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", 'mount --bind -o ro "$0" "$0"', str(folder)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    return probe.returncode == 0


def _chmod_tree(folder: Path, *, writable: bool) -> None:
    for path in [folder, *folder.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        path.chmod(mode | stat.S_IWUSR if writable else mode & ~0o222)


@pytest.fixture
def project(run_cli: RunCli, examples: Path) -> Path:
    """The diamond example with one finished run."""
    folder = examples / "diamond"
    result = run_cli("run", folder / "diamond.ipynb")
    assert result.code == 0, result.err
    return folder


@pytest.fixture
def read_only(project: Path) -> Iterator[ReadOnly]:
    """Run the CLI in ``project`` made read-only (for real; see the module docstring)."""
    if os.geteuid() == 0:
        if not _can_mount_read_only(project):
            pytest.skip("running as root without a mount namespace: cannot make it read-only")
        script = 'mount --bind -o ro "$0" "$0" && cd "$0" && exec "$@"'
        prefix = ["unshare", "-m", "sh", "-c", script, str(project)]
        yield lambda args: _cli(args, cwd=project, prefix=prefix)
        return
    made_read_only = []

    def run(args: Sequence[str]) -> CliResult:
        if not made_read_only:  # at the first command: the test may prepare the project first
            made_read_only.append(True)
            _chmod_tree(project, writable=False)
        return _cli(args, cwd=project)

    try:
        yield run
    finally:
        if made_read_only:
            _chmod_tree(project, writable=True)


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    return int(proc.stdout)


def _sql(database: Path, statement: str, *params: object) -> None:
    conn = sqlite3.connect(database)
    try:
        with conn:
            conn.execute(statement, params)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def _clean(result: CliResult) -> None:
    assert "Traceback" not in result.err, result.err
    assert "bug in cellpipe" not in result.err, result.err
    assert "database server" not in result.err, result.err


def test_read_commands_work_on_a_read_only_project(read_only: ReadOnly, project: Path) -> None:
    runs = read_only(["runs", "--json"])
    assert runs.code == 0, runs.err
    run_id = runs.json()["runs"][0]["run_id"]
    for args in (
        ["show", run_id, "--json"],
        ["why", run_id, "d", "--json"],
        ["lineage", run_id],
        ["check", "diamond.ipynb", "--json"],
        ["graph", "diamond.ipynb"],
        ["models", "list"],
    ):
        result = read_only(args)
        assert result.code == 0, (args, result.err)
        _clean(result)
    assert not (project / ".cellpipe" / "cellpipe.db-wal").exists()


def test_a_read_only_project_lists_a_run_whose_runner_died(
    read_only: ReadOnly, project: Path
) -> None:
    # Marking the run interrupted would be a write: the listing must not depend on it.
    database = project / ".cellpipe" / "cellpipe.db"
    _sql(database, "UPDATE runs SET status = 'running', pid = ?", _dead_pid())
    result = read_only(["runs", "--json"])
    assert result.code == 0, result.err
    _clean(result)
    assert [r["status"] for r in result.json()["runs"]] == ["running"]


def test_a_read_only_database_that_needs_a_migration_says_so(
    read_only: ReadOnly, project: Path
) -> None:
    database = project / ".cellpipe" / "cellpipe.db"
    _sql(database, "DELETE FROM schema_version WHERE version = ?", SCHEMA_VERSION)
    result = read_only(["runs"])
    assert result.code == 1
    _clean(result)
    assert "read-only" in result.err
    assert "migrated" in result.err
    assert str(database) in result.err


@pytest.mark.parametrize(
    ("args", "path"),
    [
        (["run", "diamond.ipynb"], ".cellpipe"),
        (["compile", "diamond.ipynb", "-o", "diamond.yaml"], "diamond.yaml"),
        (["snapshot", "restore", "diamond", "--to", "restored"], "restored"),
        (["models", "register", "m", "--run", "diamond", "--step", "b", "--var", "mean"], "db"),
    ],
)
def test_writing_commands_say_what_is_read_only(
    read_only: ReadOnly, project: Path, args: list[str], path: str
) -> None:
    result = read_only(args)
    assert result.code == 1, result.err
    _clean(result)
    assert "read-only" in result.err
    assert path in result.err
    assert "hint:" in result.err


BIG = """\
# %% tags=["step:a"]
small = [1, 2, 3]

# %% tags=["step:b", "prev:a"]
big = "x" * 3_000_000

# %% tags=["step:c", "prev:a"]
tiny = sum(small)

# %% tags=["step:d"]
n = len(big) + tiny
"""


def test_an_output_past_the_disk_limit_fails_its_step_with_disk_full(project: Path) -> None:
    (project / "big.py").write_text(BIG)
    result = _cli(["run", "big.py"], cwd=project, file_size_limit=1_000_000)
    assert result.code == 1
    _clean(result)
    shown = result.out + result.err
    assert "disk full" in shown
    assert str(project / ".cellpipe" / "artifacts") in shown
    assert "picklable" not in shown
    runs = _cli(["runs", "--json"], cwd=project)
    assert runs.code == 0, runs.err
    newest = runs.json()["runs"][0]
    assert newest["status"] == "failed"
    show = _cli(["show", newest["run_id"], "--json"], cwd=project).json()
    status = {s["step"]: s["status"] for s in show["steps"]}
    assert status == {"a": "succeeded", "b": "failed", "c": "succeeded", "d": "skipped"}


FAILING = """\
# %% tags=["step:a"]
small = [1, 2, 3]

# %% tags=["step:b", "prev:a"]
raise ValueError("the step's own error")
"""


def test_a_database_past_the_disk_limit_keeps_the_steps_error_and_earlier_runs(
    project: Path,
) -> None:
    (project / "failing.py").write_text(FAILING)
    database = project / ".cellpipe" / "cellpipe.db"
    before = _cli(["runs", "--json"], cwd=project).json()["runs"]
    limit = database.stat().st_size // 2  # below the database: its WAL cannot grow
    result = _cli(["run", "failing.py"], cwd=project, file_size_limit=limit)
    assert result.code == 1
    _clean(result)
    assert "disk full" in result.err
    assert str(database) in result.err
    assert "the step's own error" in result.err
    after = _cli(["runs", "--json"], cwd=project, file_size_limit=limit)  # still full
    assert after.code == 0, after.err
    ids = [r["run_id"] for r in after.json()["runs"]]
    assert all(r["run_id"] in ids for r in before)
    show = _cli(["show", before[0]["run_id"], "--json"], cwd=project)
    assert show.code == 0, show.err
    assert [s["status"] for s in show.json()["steps"]] == ["succeeded"] * 4


SHOWN = """\
# %% tags=["step:a"]
small = [1, 2, 3]

# %% tags=["step:b", "prev:a"]
big = "y" * 2_000_000
big
"""


def test_an_executed_notebook_past_the_disk_limit_is_disk_full(project: Path) -> None:
    # The shown value makes the step's executed notebook larger than the limit.
    (project / "shown.py").write_text(SHOWN)
    result = _cli(["run", "shown.py"], cwd=project, file_size_limit=1_000_000)
    assert result.code == 1
    _clean(result)
    shown = result.out + result.err
    assert "disk full: cannot write the executed notebook" in shown
    assert "without reporting a result" not in shown
    runs = _cli(["runs", "--json"], cwd=project)
    assert runs.code == 0, runs.err
    newest = runs.json()["runs"][0]
    show = _cli(["show", newest["run_id"], "--json"], cwd=project).json()
    assert {s["step"]: s["status"] for s in show["steps"]} == {"a": "succeeded", "b": "failed"}


LIMITED_AT_THE_END = """\
# %% tags=["step:a"]
small = [1, 2, 3]

# %% tags=["step:b", "prev:a"]
import resource
import signal

total = sum(small)
# From here on this step process cannot write a byte: its notebook and result cannot be saved.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
"""


def test_a_step_that_cannot_write_its_result_says_so_not_exited_without_a_result(
    project: Path,
) -> None:
    (project / "limited.py").write_text(LIMITED_AT_THE_END)
    result = _cli(["run", "limited.py"], cwd=project)
    assert result.code == 1
    _clean(result)
    shown = result.out + result.err
    assert "but its result could not be written" in shown
    assert "disk full or read-only" in shown
    assert "without reporting a result" not in shown
    runs = _cli(["runs", "--json"], cwd=project)
    show = _cli(["show", runs.json()["runs"][0]["run_id"], "--json"], cwd=project).json()
    assert {s["step"]: s["status"] for s in show["steps"]} == {"a": "succeeded", "b": "failed"}
