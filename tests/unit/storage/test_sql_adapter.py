"""The connection adapter under SqlMetadataStore: stdlib sqlite3 for SQLite files."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cellpipe.errors import StorageError
from cellpipe.storage._sql import SqliteDatabase, open_database, sqlite_path
from cellpipe.storage.metadata import SqlMetadataStore
from cellpipe.storage.records import RunRecord, RunStatus

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _run(run_id: str) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        pipeline="p",
        notebook="/nb.ipynb",
        notebook_digest="sha256:" + "0" * 64,
        status=RunStatus.RUNNING,
        started_at=T0,
        parameters={"A": 1},
    )


def test_using_a_sqlite_store_does_not_import_sqlalchemy(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        from datetime import UTC, datetime
        from cellpipe.storage.backends import open_metadata_store
        from cellpipe.storage.lineage import history_for, run_lineage
        from cellpipe.storage.records import RunRecord, RunStatus, StepRunRecord, StepStatus

        store = open_metadata_store({f"sqlite:///{tmp_path / 'c.db'}"!r})
        t = datetime(2026, 1, 1, tzinfo=UTC)
        store.start_run(RunRecord(run_id="r1", pipeline="p", notebook="/nb.ipynb",
            notebook_digest="sha256:00", status=RunStatus.RUNNING, started_at=t))
        store.record_step_run(StepRunRecord(run_id="r1", step="s", status=StepStatus.SUCCEEDED,
            cache_key="k", started_at=t, finished_at=t))
        store.finish_run("r1", status=RunStatus.SUCCEEDED, finished_at=t, metrics={{"m": 1}})
        assert [r.run_id for r in store.list_runs()] == ["r1"]
        assert store.find_cached("s", "k") is not None
        history = history_for(store)
        history.snapshots("r1")
        run_lineage(store, history, "r1")
        store.close()
        loaded = sorted(m for m in sys.modules if m.split(".")[0] == "sqlalchemy")
        assert not loaded, loaded
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///rel.db", "rel.db"),
        ("sqlite:////abs/c.db", "/abs/c.db"),
        ("sqlite+pysqlite:///a%20b.db", "a b.db"),
        ("sqlite://", None),
        ("sqlite:///:memory:", None),
        ("sqlite:///c.db?timeout=3", None),
        ("postgresql+psycopg://u:p@h/db", None),
    ],
)
def test_only_plain_sqlite_files_take_the_stdlib_adapter(url: str, path: str | None) -> None:
    assert sqlite_path(url) == path


def test_in_memory_sqlite_goes_through_sqlalchemy() -> None:
    store = SqlMetadataStore("sqlite://")
    try:
        store.start_run(_run("r1"))
        assert store.get_run("r1").parameters == {"A": 1}
        assert type(store._db).__name__ == "AlchemyDatabase"
    finally:
        store.close()


def test_rows_have_index_and_attribute_access(tmp_path: Path) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'c.db'}")
    assert isinstance(db, SqliteDatabase)
    try:
        with db.transaction(write=True) as conn:
            conn.execute("CREATE TABLE t (a INTEGER, b TEXT)")
            conn.execute("INSERT INTO t VALUES (:a, :b)", [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}])
            assert (
                conn.execute("UPDATE t SET b = :b WHERE a = :a", {"a": 2, "b": "z"}).rowcount == 1
            )
        with db.transaction(write=False) as conn:
            row = conn.execute("SELECT a, b, a + 1 FROM t ORDER BY a").first()
            assert row is not None
            assert (row.a, row.b, row[2]) == (1, "x", 2)
            a, b, _ = row
            assert (a, b) == (1, "x")
            assert dict(conn.execute("SELECT a, b FROM t ORDER BY a").all()) == {1: "x", 2: "z"}
            assert conn.execute("SELECT COUNT(*) FROM t").scalar() == 2
            assert conn.execute("SELECT a FROM t WHERE a > 5").scalar() is None
            assert conn.has_table("t")
            assert not conn.has_table("nope")
    finally:
        db.close()


def test_a_failed_transaction_rolls_back(tmp_path: Path) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        with db.transaction(write=True) as conn:
            conn.execute("CREATE TABLE t (a INTEGER PRIMARY KEY)")

        def insert_twice() -> None:
            with db.transaction(write=True) as conn:
                conn.execute("INSERT INTO t VALUES (1)")
                conn.execute("INSERT INTO t VALUES (1)")

        with pytest.raises(db.integrity_errors):
            insert_twice()
        with db.transaction(write=False) as conn:
            assert conn.execute("SELECT COUNT(*) FROM t").scalar() == 0
    finally:
        db.close()


def test_duplicate_run_is_a_storage_error(tmp_path: Path) -> None:
    store = SqlMetadataStore(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        store.start_run(_run("r1"))
        with pytest.raises(StorageError, match="already exists"):
            store.start_run(_run("r1"))
    finally:
        store.close()


def test_missing_folder_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot open the metadata store"):
        SqlMetadataStore(f"sqlite:///{tmp_path / 'missing' / 'c.db'}")


def test_threads_write_concurrently(tmp_path: Path) -> None:
    store = SqlMetadataStore(f"sqlite:///{tmp_path / 'c.db'}")
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(10):
                store.start_run(_run(f"t{n}-{i}"))
                store.list_runs(limit=5)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors
        assert len(store.list_runs()) == 40
    finally:
        store.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_opens_its_own_connection(tmp_path: Path) -> None:
    store = SqlMetadataStore(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        store.start_run(_run("parent-1"))  # the pool now holds an open connection
        idle = list(store._db._idle)  # type: ignore[attr-defined]
        assert idle
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                assert not store._db._idle  # type: ignore[attr-defined]
                store.start_run(_run("child-1"))
                code = 0 if store.get_run("child-1").run_id == "child-1" else 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        # The parent's pooled connection still works and sees the child's write.
        assert store._db._idle == idle  # type: ignore[attr-defined]
        store.start_run(_run("parent-2"))
        assert {r.run_id for r in store.list_runs()} == {"parent-1", "child-1", "parent-2"}
    finally:
        store.close()
