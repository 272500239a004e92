"""Real backend servers for tests: a throwaway PostgreSQL cluster and moto's S3 server.

Both listen on 127.0.0.1 only, live in temporary folders and are stopped by the fixtures in
tests/conftest.py that start them. Nothing here is imported by cellpipe itself.

PostgreSQL refuses to run as root, so under root (as in CI) `initdb` and `postgres` run as an
unprivileged user (``nobody`` unless ``CELLPIPE_TEST_PG_USER`` names another) through
`subprocess.Popen(user=...)`, and the cluster lives in a fresh folder under the system temp
dir that this user owns (pytest's own tmp folders are private to root).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

PG_READY_TIMEOUT_S = 60.0

SERVICE_PIDS: set[int] = set()
"""Processes that outlive the test that started them on purpose (session-wide servers): the
leaked-process guard of tests/conftest.py leaves them alone."""


def find_pg_bindir() -> Path | None:
    """Return the folder holding `initdb` and `postgres`, or None when PostgreSQL is absent."""
    found = shutil.which("initdb")
    if found:
        bindir = Path(found).resolve().parent
        if (bindir / "postgres").exists():
            return bindir
    versions = Path("/usr/lib/postgresql").glob("*/bin/initdb")
    candidates = sorted(versions, key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    for candidate in reversed(candidates):
        bindir = candidate.parent
        if (bindir / "postgres").exists():
            return bindir
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    """A PostgreSQL cluster started by `start`, stopped by `stop`."""

    bindir: Path
    base: Path = field(init=False)
    port: int = 0
    user: str | None = None  # OS user the server runs as (None: the current user)
    proc: subprocess.Popen[bytes] | None = None
    _databases: int = 0

    @property
    def log_file(self) -> Path:
        return self.base / "postgres.log"

    def _run_as(self) -> dict[str, Any]:
        if self.user is None:
            return {}
        entry = pwd.getpwnam(self.user)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def start(self) -> None:
        if os.geteuid() == 0:
            self.user = os.environ.get("CELLPIPE_TEST_PG_USER", "nobody")
        self.base = Path(tempfile.mkdtemp(prefix="cellpipe-pg-"))
        (self.base / "sock").mkdir()
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            for path in (self.base, self.base / "sock"):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        subprocess.run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.base / "data"),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            env=env,
            cwd=self.base,
            **self._run_as(),
        )
        for _attempt in range(5):  # a free port can be taken by another worker before we bind
            self.port = free_port()
            if self._launch(env):
                return
        raise RuntimeError(f"PostgreSQL did not start; log:\n{self._log()}")

    def _launch(self, env: dict[str, str]) -> bool:
        log = self.log_file.open("ab")
        self.proc = subprocess.Popen(
            [
                str(self.bindir / "postgres"),
                "-D",
                str(self.base / "data"),
                "-p",
                str(self.port),
                "-k",
                str(self.base / "sock"),
                "-c",
                "listen_addresses=127.0.0.1",
                # A throwaway cluster: durability buys nothing, speed does.
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.base,
            **self._run_as(),
        )
        log.close()
        SERVICE_PIDS.add(self.proc.pid)
        deadline = time.monotonic() + PG_READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if "in use" in self._log():
                    return False
                raise RuntimeError(f"PostgreSQL exited at start; log:\n{self._log()}")
            try:
                with self.connect():
                    return True
            except Exception:
                time.sleep(0.1)
        raise RuntimeError(f"PostgreSQL not ready after {PG_READY_TIMEOUT_S} s:\n{self._log()}")

    def _log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return "(no log)"

    def connect(self, dbname: str = "postgres") -> Any:
        import psycopg

        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user="postgres",
            dbname=dbname,
            autocommit=True,
            connect_timeout=2,
        )

    def url(self, dbname: str) -> str:
        """The URL users write (normalised to psycopg 3 by cellpipe's backend table)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self) -> str:
        """Create an empty database and return its URL."""
        self._databases += 1
        name = f"cellpipe_test_{os.getpid()}_{self._databases}"
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # "fast" shutdown: disconnect clients, exit
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.base, ignore_errors=True)


@dataclass
class S3Service:
    """moto's S3 server in a thread of this process, with one bucket."""

    bucket: str = "cellpipe-test"
    endpoint_url: str = ""
    server: Any = None

    @property
    def storage_options(self) -> dict[str, Any]:
        """s3fs options: the local endpoint and moto's fake credentials."""
        return {
            "endpoint_url": self.endpoint_url,
            "key": "testing",
            "secret": "testing",
            "client_kwargs": {"region_name": "us-east-1"},
        }

    def start(self) -> None:
        import boto3
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        client.create_bucket(Bucket=self.bucket)
        client.close()

    def new_url(self) -> str:
        """A fresh, empty prefix in the bucket."""
        return f"s3://{self.bucket}/{uuid.uuid4().hex}"

    def stop(self) -> None:
        if self.server is not None:
            with contextlib.suppress(Exception):
                self.server.stop()


# The metadata store implementations every contract suite runs against:
# name -> (make(request, tmp_path), marks). `request.getfixturevalue` reaches servers; a
# function-scoped fixture value is shared by every store a test makes, so a reopened store
# sees the same database.
def _memory_store(request: Any, tmp: Path) -> Any:
    from cellpipe.storage.metadata import MemoryMetadataStore

    return MemoryMetadataStore()


def _sqlite_store(request: Any, tmp: Path) -> Any:
    from cellpipe.storage.metadata import SqlMetadataStore

    return SqlMetadataStore(f"sqlite:///{tmp / 'cellpipe.db'}")


def _postgres_store(request: Any, tmp: Path) -> Any:
    from cellpipe.storage.backends import open_metadata_store

    return open_metadata_store(request.getfixturevalue("postgres_url"))


METADATA_BACKENDS: dict[str, tuple[Callable[[Any, Path], Any], tuple[Any, ...]]] = {
    "memory": (_memory_store, ()),
    "sqlite": (_sqlite_store, ()),
    "postgresql": (_postgres_store, (pytest.mark.postgres,)),
}


def metadata_backend_params() -> list[Any]:
    """``pytest.param`` per metadata backend, with its marks, for a parametrized fixture."""
    return [pytest.param(n, id=n, marks=m) for n, (_, m) in METADATA_BACKENDS.items()]
