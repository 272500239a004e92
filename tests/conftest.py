"""Shared pytest options and fixtures.

`--update-golden` rewrites golden files instead of comparing against them (see `make golden`).
The `postgres_*` and `s3_*` fixtures start real servers (see backend_services.py).

A guard reports the processes a test started and left running after its teardown: they are
listed at the end of the session ("leaked processes") and killed, so they cannot disturb the
tests after it. Session servers (`backend_services.SERVICE_PIDS`) are exempt.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend_services import SERVICE_PIDS, PostgresServer, S3Service, find_pg_bindir

pytest_plugins = ["ci_skips"]

REPO_ROOT = Path(__file__).resolve().parent.parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite golden files with the current output instead of comparing",
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    """True when the run should rewrite golden files (`pytest --update-golden`)."""
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture
def repo_root() -> Path:
    """The repository root (examples/, tests/ and benchmarks/ live under it)."""
    return REPO_ROOT


# -- real backend servers (issue 5: team storage) ---------------------------------------------
# PostgreSQL and moto's S3 server are started once per test process (per xdist worker) by
# session fixtures; each test gets a fresh database or bucket prefix. See backend_services.py.


def _unavailable(what: str) -> None:
    """Fail under CI (CI=true), where a missing service is a broken setup; skip otherwise."""
    from ci_skips import in_ci

    message = f"{what}; run scripts/test-services.sh (as root) to install it"
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server on a free 127.0.0.1 port, for the whole test session."""
    bindir = find_pg_bindir()
    if bindir is None:
        _unavailable("PostgreSQL is not installed (no initdb on PATH or in /usr/lib/postgresql)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed (pip install -e '.[dev]')")
    assert bindir is not None
    server = PostgresServer(bindir=bindir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A ``postgresql://`` URL of a new, empty database."""
    return postgres_server.create_database()


@pytest.fixture(scope="session")
def s3_service() -> Iterator[S3Service]:
    """moto's S3 server on a free 127.0.0.1 port with one bucket, for the whole session."""
    try:
        import boto3  # noqa: F401
        import moto.server  # noqa: F401
        import s3fs  # noqa: F401
    except ImportError as exc:
        _unavailable(f"the S3 test stack is not installed ({exc}; pip install -e '.[dev]')")
    service = S3Service()
    try:
        service.start()
        yield service
    finally:
        service.stop()


@pytest.fixture
def s3_url(s3_service: S3Service) -> str:
    """An ``s3://bucket/prefix`` URL of a fresh, empty prefix."""
    return s3_service.new_url()


# -- leaked processes ---------------------------------------------------------------------------
# A process a test started (a CLI run, a step, a server) and left running can fail the tests
# after it (a busy port, a locked file, load). Each test's call is bracketed: a live child of
# this process that appeared during the call and is still there after the teardown (given a
# bounded moment to exit) is reported and killed with its process group.

_CHILDREN_BEFORE = pytest.StashKey[set[int]]()
_LEAKS = pytest.StashKey[list[str]]()
LEAK_GRACE_S = 10.0
INTERPRETER_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")
"""Helpers Python starts on first use and keeps for the life of this interpreter: not leaks
(killing the resource tracker makes every later user warn that it "died unexpectedly")."""


def _live_children() -> dict[int, str]:
    """This process's live (not zombie) children: pid -> command line."""
    me = os.getpid()
    pids: set[int] = set()
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{me}/task").iterdir():
            with contextlib.suppress(OSError):
                text = (task / "children").read_text()
                pids.update(int(p) for p in text.split())
    found: dict[int, str] = {}
    for pid in pids - SERVICE_PIDS:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        command = raw.replace(b"\0", b" ").decode(errors="replace").strip()
        if state not in ("Z", "X") and not any(h in command for h in INTERPRETER_HELPERS):
            found[pid] = command
    return found


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    item.stash[_CHILDREN_BEFORE] = set(_live_children())
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    yield
    before = item.stash.get(_CHILDREN_BEFORE, None)
    if before is None:
        return
    leaked = {p: c for p, c in _live_children().items() if p not in before}
    deadline = time.monotonic() + LEAK_GRACE_S
    while leaked and time.monotonic() < deadline:  # one that is exiting is not a leak
        time.sleep(0.05)
        alive = _live_children()
        leaked = {p: c for p, c in leaked.items() if p in alive}
    if not leaked:
        return
    reports = item.config.stash.setdefault(_LEAKS, [])
    for pid, command in leaked.items():
        reports.append(f"{item.nodeid}: pid {pid}: {command}")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(pid) != os.getpgid(0):
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    reports = terminalreporter.config.stash.get(_LEAKS, [])
    if reports:
        terminalreporter.section("leaked processes (killed after the test)")
        for line in reports:
            terminalreporter.write_line(line)
