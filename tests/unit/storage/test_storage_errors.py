"""Damaged, read-only and full storage become StorageErrors naming the file (issue 10, 4-6).

Real failures, no mocks: damaged SQLite files written byte by byte, ``/dev/full`` for a real
ENOSPC, and a lowered ``RLIMIT_FSIZE`` for a real "file too large" (EFBIG) at the write sites
(Python ignores SIGXFSZ, so the write fails instead of killing the process).
"""

from __future__ import annotations

import errno
import os
import random
import resource
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cellpipe.errors import (
    DamagedDatabaseError,
    ReadOnlyStorageError,
    SerializationError,
    StorageError,
    StorageFullError,
)
from cellpipe.storage.artifacts import LocalArtifactStore
from cellpipe.storage.metadata import SqlMetadataStore
from cellpipe.storage.os_errors import sqlite_storage_error, storage_error_for
from cellpipe.storage.records import RunRecord, RunStatus
from cellpipe.storage.serializers import serialize


def _store(path: Path) -> SqlMetadataStore:
    return SqlMetadataStore(f"sqlite:///{path}")


def _run(run_id: str) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        pipeline="p",
        notebook="/nb.ipynb",
        notebook_digest="sha256:" + "0" * 64,
        status=RunStatus.RUNNING,
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        parameters={"A": 1},
    )


@pytest.fixture
def database(tmp_path: Path) -> Path:
    """A real database with a few runs, closed (no -wal file left)."""
    path = tmp_path / "cellpipe.db"
    store = _store(path)
    try:
        for i in range(30):
            store.start_run(_run(f"p-20260101-000000-{i:06x}"))
    finally:
        store.close()
    return path


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _random_bytes(path: Path) -> None:
    path.write_bytes(random.Random(1).randbytes(20_000))


def _damaged_pages(path: Path) -> None:
    # A valid 100-byte header and first page; every page after it overwritten with noise.
    data = bytearray(path.read_bytes())
    rng = random.Random(2)
    for i in range(4096, len(data)):
        data[i] = rng.randrange(256)
    path.write_bytes(bytes(data))


def _read_everything(path: Path) -> None:
    store = _store(path)
    try:
        for run in store.list_runs(limit=100):
            store.step_runs(run.run_id)
    finally:
        store.close()


DAMAGES = {"truncated": _truncate, "random-bytes": _random_bytes, "damaged-pages": _damaged_pages}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_database_is_a_storage_error_naming_the_file(database: Path, damage: str) -> None:
    DAMAGES[damage](database)
    with pytest.raises(DamagedDatabaseError) as info:
        _read_everything(database)
    error = info.value
    assert error.path == str(database)
    assert str(database) in error.message
    assert error.hint is not None
    assert "intact" in error.hint
    assert "cellpipe doctor" in error.hint
    assert isinstance(error.__cause__, sqlite3.DatabaseError)


def test_a_locked_or_constraint_error_is_not_translated(database: Path) -> None:
    store = _store(database)
    try:
        with pytest.raises(StorageError, match="already exists") as info:
            store.start_run(_run("p-20260101-000000-000000"))
        assert not isinstance(info.value, DamagedDatabaseError)
    finally:
        store.close()


def test_a_real_enospc_is_a_disk_full_error_naming_the_path() -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    with (
        pytest.raises(OSError, match="No space left") as info,
        Path("/dev/full").open("wb", buffering=0) as f,
    ):
        f.write(b"x")
    assert info.value.errno == errno.ENOSPC
    error = storage_error_for(info.value, "/data/.cellpipe/artifacts")
    assert isinstance(error, StorageFullError)
    assert error.path == "/data/.cellpipe/artifacts"
    assert error.message.startswith("disk full: ")
    assert "/data/.cellpipe/artifacts" in error.message
    assert error.hint is not None
    assert "space" in error.hint


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (errno.ENOSPC, StorageFullError),
        (errno.EDQUOT, StorageFullError),
        (errno.EFBIG, StorageFullError),
        (errno.EROFS, ReadOnlyStorageError),
        (errno.EACCES, ReadOnlyStorageError),
    ],
)
def test_write_errnos_translate_and_others_do_not(code: int, kind: type[StorageError]) -> None:
    error = storage_error_for(OSError(code, os.strerror(code), "/p/f"))
    assert isinstance(error, kind)
    assert "/p/f" in error.message
    assert storage_error_for(OSError(errno.EIO, "I/O error", "/p/f")) is None


@contextmanager
def _file_size_limit(limit: int) -> Iterator[None]:
    """Lower this process's RLIMIT_FSIZE (soft) for the block; always restored."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    if hard != resource.RLIM_INFINITY and hard < limit:
        pytest.skip("the hard file size limit is below the test's limit")
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_artifact_put_beyond_the_file_size_limit_is_disk_full(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")
    store.put_bytes(b"small")  # the folders exist before the limit
    with _file_size_limit(100_000), pytest.raises(StorageFullError) as info:
        store.put_bytes(b"x" * 300_000)
    assert str(tmp_path / "artifacts") in info.value.message
    assert not any((tmp_path / "artifacts" / "tmp").iterdir())  # no partial file left


def test_serializing_beyond_the_file_size_limit_is_disk_full_not_unpicklable(
    tmp_path: Path,
) -> None:
    with _file_size_limit(100_000), pytest.raises(StorageFullError) as info:
        serialize("x" * 300_000, tmp_path, variable="big", step="b")
    assert not isinstance(info.value, SerializationError)
    assert "picklable" not in str(info.value)
    assert str(tmp_path) in info.value.message


def test_a_database_write_beyond_the_file_size_limit_is_disk_full(database: Path) -> None:
    store = _store(database)
    try:
        size = database.stat().st_size
        with _file_size_limit(size), pytest.raises(StorageFullError) as info:  # noqa: PT012
            for i in range(200):  # the WAL grows past the limit
                store.start_run(_run(f"q-20260101-000000-{i:06x}"))
        assert info.value.path == str(database)
        runs = store.list_runs(limit=1000)  # what was written before stays readable
        assert len(runs) >= 30
    finally:
        store.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file modes")
def test_a_read_only_database_is_read_but_not_written(database: Path) -> None:
    folder = database.parent
    database.chmod(0o444)
    folder.chmod(0o555)
    try:
        store = _store(database)
        try:
            assert len(store.list_runs(limit=100)) == 30
            with pytest.raises(ReadOnlyStorageError) as info:
                store.start_run(_run("p-20260101-000000-ffffff"))
            assert info.value.path == str(database)
            assert "database server" not in str(info.value)
        finally:
            store.close()
        assert sorted(p.name for p in folder.iterdir()) == ["cellpipe.db"]  # no -wal, -shm
    finally:
        folder.chmod(0o755)
        database.chmod(0o644)


@pytest.mark.parametrize(
    ("code", "kind", "words"),
    [
        (11, DamagedDatabaseError, "damaged"),  # SQLITE_CORRUPT
        (26, DamagedDatabaseError, "damaged"),  # SQLITE_NOTADB
        (13, StorageFullError, "disk full"),  # SQLITE_FULL
        (778, StorageFullError, "disk full"),  # SQLITE_IOERR_WRITE (what EFBIG gives)
        (266, StorageError, "cannot read"),  # SQLITE_IOERR_READ: not called a full disk
        (8, ReadOnlyStorageError, "read-only"),  # SQLITE_READONLY
    ],
)
def test_sqlite_result_codes_translate(code: int, kind: type[StorageError], words: str) -> None:
    exc = sqlite3.OperationalError("some sqlite message")
    exc.sqlite_errorcode = code  # type: ignore[attr-defined]
    error = sqlite_storage_error(exc, "/p/cellpipe.db")
    assert type(error) is kind
    assert error is not None
    assert words in error.message
    assert "/p/cellpipe.db" in error.message


@pytest.mark.parametrize("code", [5, 6, 19, 1])  # BUSY, LOCKED, CONSTRAINT, plain SQL error
def test_sqlite_errors_the_user_cannot_fix_here_pass_through(code: int) -> None:
    exc = sqlite3.OperationalError("database is locked")
    exc.sqlite_errorcode = code  # type: ignore[attr-defined]
    assert sqlite_storage_error(exc, "/p/cellpipe.db") is None
