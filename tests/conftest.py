"""Shared pytest options and fixtures.

`--update-golden` rewrites golden files instead of comparing against them (see `make golden`).
The `postgres_*` and `s3_*` fixtures start real servers (see backend_services.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from backend_services import PostgresServer, S3Service, find_pg_bindir

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
