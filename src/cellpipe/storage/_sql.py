"""Connection adapters under `SqlMetadataStore`: stdlib ``sqlite3`` for SQLite, SQLAlchemy else.

Owns: the small database interface the metadata and lineage stores speak (`Database`,
`SqlConnection`, `Result`), `open_database` which picks an adapter for a URL, and
`SqliteDatabase`, the adapter on the standard library's ``sqlite3`` module. The SQLAlchemy
adapter lives in `cellpipe.storage._sqlalchemy` and is imported only for URLs that need it,
because importing SQLAlchemy costs more than everything else a cached ``cellpipe run`` does.

The SQL text is shared: statements are plain strings with ``:name`` parameters (SQLAlchemy's
``text()`` style, which ``sqlite3`` understands natively); a list of parameter mappings runs
the statement once per mapping (``executemany``). Rows allow index access, tuple unpacking and
attribute access by column name (``row.run_id``).

Invariants:
    * every transaction is explicit: ``BEGIN IMMEDIATE`` for writes (writers queue on the
      30 s busy timeout instead of failing on a lock upgrade), ``BEGIN`` for reads; commit on
      success, rollback on any exception;
    * each SQLite connection runs with ``journal_mode=WAL``, ``foreign_keys=ON``,
      ``busy_timeout=30000`` and ``synchronous=NORMAL``;
    * a database file that exists but cannot be written (read-only file system, no write
      permission on it or its folder) is opened read-only (``mode=ro``; ``immutable=1`` when
      no ``-wal`` file is left, since WAL readers would otherwise need to create ``-shm``):
      no pragma that writes is sent, and a write transaction raises `ReadOnlyStorageError`;
    * ``sqlite3`` errors that mean a damaged file, a full disk or a read-only file become
      `StorageError` subclasses naming the file (`cellpipe.storage.os_errors`); locks,
      constraint violations and SQL mistakes pass through unchanged;
    * connections are never shared between threads at once (a small pool hands one to each
      transaction) nor across ``os.fork``: a child process opens its own connections and
      leaves the parent's untouched (never closes them, which would drop the parent's POSIX
      locks tracked by this process's copy of SQLite).

Must not depend on: anything of cellpipe but `cellpipe.errors` and `cellpipe.storage.os_errors`.
"""

from __future__ import annotations

import collections
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Protocol
from urllib.parse import quote, unquote

from cellpipe.errors import ReadOnlyStorageError
from cellpipe.storage.os_errors import sqlite_storage_error

__all__ = [
    "BUSY_TIMEOUT_S",
    "Database",
    "Params",
    "Result",
    "SqlConnection",
    "SqliteDatabase",
    "open_database",
    "sqlite_path",
]

BUSY_TIMEOUT_S = 30.0
"""How long a SQLite writer waits for another writer before failing."""

_POOL_SIZE = 5
"""Idle SQLite connections kept per store (more concurrent threads open and close extra ones)."""

Params = Mapping[str, Any] | Sequence[Mapping[str, Any]] | None
"""One mapping of ``:name`` values, or a list of them (the statement runs once per mapping)."""


class Result(Protocol):
    """The rows of one statement (a subset of SQLAlchemy's ``CursorResult``)."""

    @property
    def rowcount(self) -> int:
        """Rows changed by an INSERT, UPDATE or DELETE."""
        ...

    def first(self) -> Any | None:
        """Return the first row, or None if there is none."""
        ...

    def all(self) -> Sequence[Any]:
        """Return every remaining row."""
        ...

    def scalar(self) -> Any:
        """Return the first column of the first row, or None if there is no row."""
        ...

    def __iter__(self) -> Iterator[Any]:
        """Iterate over the rows."""
        ...


class SqlConnection(Protocol):
    """A connection inside one transaction."""

    def execute(self, sql: str, params: Params = None) -> Result:
        """Run ``sql`` with ``:name`` parameters (a list of mappings: once per mapping)."""
        ...

    def has_table(self, name: str) -> bool:
        """Return whether the table exists."""
        ...


class Database(Protocol):
    """One database behind a URL: transactions, error classes, fork and close handling.

    Attributes:
        dialect_name: ``"sqlite"``, ``"postgresql"``, ...
        integrity_errors: exception classes of a violated constraint.
        unreachable_errors: exception classes of a database that cannot be opened or reached.
    """

    dialect_name: str
    integrity_errors: tuple[type[BaseException], ...]
    unreachable_errors: tuple[type[BaseException], ...]

    @property
    def engine(self) -> Any:
        """The SQLAlchemy engine, or an engine-shaped stand-in (for tests and debugging)."""
        ...

    def transaction(self, *, write: bool) -> AbstractContextManager[SqlConnection]:
        """Return a context manager around one transaction (committed unless it raises)."""
        ...

    def safe_url(self) -> str:
        """Return the URL with any password hidden."""
        ...

    def after_fork_in_child(self) -> None:
        """Forget the parent's connections (without closing them)."""
        ...

    def close(self) -> None:
        """Close every idle connection."""
        ...


def sqlite_path(url: str) -> str | None:
    """Return the file of a plain SQLite file URL, or None if the stdlib adapter can't take it.

    ``sqlite:///relative.db`` and ``sqlite:////absolute.db`` (also ``sqlite+pysqlite://``)
    qualify; in-memory databases and URLs with query options go through SQLAlchemy, which
    knows their semantics. The path is percent-decoded, as SQLAlchemy does.
    """
    for prefix in ("sqlite:///", "sqlite+pysqlite:///"):
        if url.startswith(prefix):
            path = unquote(url[len(prefix) :])
            if not path or path == ":memory:" or "?" in url or path.startswith("file:"):
                return None
            return path
    return None


def open_database(url: str) -> Database:
    """Return the adapter for ``url``: stdlib ``sqlite3`` for SQLite files, else SQLAlchemy.

    Raises:
        StorageError: if SQLAlchemy or the driver is missing, or the URL is invalid.
    """
    path = sqlite_path(url)
    if path is not None:
        return SqliteDatabase(url, path)
    from cellpipe.storage._sqlalchemy import AlchemyDatabase  # lazy: ~200 ms to import

    return AlchemyDatabase(url)


def _is_read_only(path: str) -> bool:
    """Return whether the database file exists but this process cannot write it or its folder.

    `os.access` also answers False for a read-only file system, even for root.
    """
    file = Path(path)
    if not file.exists():
        return False
    return not (os.access(file, os.W_OK) and os.access(file.absolute().parent, os.W_OK))


# -- rows ------------------------------------------------------------------------------------

_namedtuple: Any = collections.namedtuple  # Any: its field names are only known at run time

_ROW_TYPES: dict[tuple[str, ...], Callable[[Any, tuple[Any, ...]], Any]] = {}
_ROW_TYPES_LOCK = threading.Lock()


def _row_factory(description: Sequence[Sequence[Any]]) -> Callable[[Any, tuple[Any, ...]], Any]:
    """Return a ``sqlite3`` row factory making named tuples of these columns (cached)."""
    names = tuple(str(d[0]) for d in description)
    factory = _ROW_TYPES.get(names)
    if factory is None:
        # rename: expressions ("COALESCE(...)", "1") and duplicates become _0, _1, ...
        make = _namedtuple("Row", names, rename=True)._make

        def factory(_cursor: Any, values: tuple[Any, ...]) -> Any:
            return make(values)

        with _ROW_TYPES_LOCK:
            _ROW_TYPES[names] = factory
    return factory


class _SqliteResult:
    """`Result` over a ``sqlite3`` cursor."""

    __slots__ = ("_cursor",)

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor
        if cursor.description is not None:
            cursor.row_factory = _row_factory(cursor.description)

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    def first(self) -> Any | None:
        row = self._cursor.fetchone()
        self._cursor.close()
        return row

    def all(self) -> Sequence[Any]:
        return self._cursor.fetchall()

    def scalar(self) -> Any:
        row = self.first()
        return None if row is None else row[0]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._cursor)


class _SqliteConnection:
    """`SqlConnection` over one ``sqlite3`` connection (also the engine stand-in's)."""

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Params = None) -> Result:
        # A SQLAlchemy TextClause (tests pass them) carries its SQL in ``.text``.
        statement = sql if isinstance(sql, str) else str(getattr(sql, "text", sql))
        if params is None:
            cursor = self._conn.execute(statement)
        elif isinstance(params, Mapping):
            cursor = self._conn.execute(statement, params)
        else:
            cursor = self._conn.executemany(statement, params)
        return _SqliteResult(cursor)

    exec_driver_sql = execute  # the name SQLAlchemy's Connection gives raw SQL

    def has_table(self, name: str) -> bool:
        found = self._conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).fetchone()
        return found is not None


_ABANDONED: list[sqlite3.Connection] = []
"""Connections inherited from a parent process: kept referenced, never used or closed."""


def _after_fork(ref: weakref.ref[SqliteDatabase]) -> None:
    db = ref()
    if db is not None:
        db.after_fork_in_child()


def _create_private(path: str) -> None:
    """Create a missing database file 0600 (SQLite gives its journals the same mode)."""
    if path in ("", ":memory:") or path.startswith("file:"):
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError:  # it exists, or SQLite's own error will say why it cannot be created
        return


class SqliteDatabase:
    """`Database` on the standard library's ``sqlite3`` (no SQLAlchemy import).

    Args:
        url: the ``sqlite:///...`` URL (kept for messages).
        path: the database file (its folder must exist).

    Connections come from a small pool (one per transaction, so threads never share one);
    a forked child starts with an empty pool.
    """

    dialect_name = "sqlite"
    integrity_errors: tuple[type[BaseException], ...] = (sqlite3.IntegrityError,)
    unreachable_errors: tuple[type[BaseException], ...] = (sqlite3.OperationalError,)
    dialect = SimpleNamespace(name="sqlite")
    """What SQLAlchemy's ``engine.dialect`` offers that callers read: its name."""

    def __init__(self, url: str, path: str) -> None:
        self.url = url
        self.path = path
        self._lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._pid = os.getpid()
        self.read_only = _is_read_only(path)
        if hasattr(os, "register_at_fork"):
            ref = weakref.ref(self)
            os.register_at_fork(after_in_child=lambda: _after_fork(ref))

    @property
    def engine(self) -> SqliteDatabase:
        """This object: it offers the ``connect()``, ``dialect.name`` and ``dispose()`` of one."""
        return self

    def safe_url(self) -> str:
        """Return the URL (a SQLite URL holds no password)."""
        return self.url

    def _translated(self, exc: sqlite3.Error) -> BaseException:
        """Return the `StorageError` ``exc`` means for the user, or ``exc`` itself."""
        return sqlite_storage_error(exc, self.path) or exc

    def _open(self) -> sqlite3.Connection:
        try:
            return self._open_raw()
        except sqlite3.Error as exc:
            translated = self._translated(exc)
            if translated is exc:
                raise
            raise translated from exc

    def _open_raw(self) -> sqlite3.Connection:
        if not self.read_only:
            _create_private(self.path)
        # isolation_level=None: no implicit transactions; `transaction` issues BEGIN itself.
        target, uri = self.path, False
        if self.read_only:
            mode = "ro" if Path(self.path + "-wal").exists() else "ro&immutable=1"
            target, uri = f"file:{quote(str(Path(self.path).absolute()))}?mode={mode}", True
        conn = sqlite3.connect(
            target,
            timeout=BUSY_TIMEOUT_S,
            isolation_level=None,
            check_same_thread=False,
            uri=uri,
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA foreign_keys = ON")
            if self.read_only:
                conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # damaged?
                return conn
            deadline = time.monotonic() + BUSY_TIMEOUT_S
            while True:  # switching to WAL needs a moment alone with a brand-new file
                try:
                    conn.execute("PRAGMA journal_mode = WAL")
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            conn.execute("PRAGMA synchronous = NORMAL")  # durable at checkpoints; safe in WAL
        except BaseException:
            conn.close()
            raise
        return conn

    def _acquire(self) -> sqlite3.Connection:
        with self._lock:
            if self._pid != os.getpid():  # forked without the hook (or it has not run yet)
                self._forget()
            if self._idle:
                return self._idle.pop()
        return self._open()

    def _release(self, conn: sqlite3.Connection, pid: int) -> None:
        if pid != os.getpid():  # acquired before a fork: the parent's, leave it alone
            _ABANDONED.append(conn)
            return
        if conn.in_transaction:  # a failed COMMIT or ROLLBACK: don't reuse it
            conn.close()
            return
        with self._lock:
            if self._pid == pid and len(self._idle) < _POOL_SIZE:
                self._idle.append(conn)
                return
        conn.close()

    def _forget(self) -> None:
        _ABANDONED.extend(self._idle)
        self._idle = []
        self._pid = os.getpid()

    def after_fork_in_child(self) -> None:
        """Forget the parent's connections (without closing them); reset the pool lock."""
        self._lock = threading.Lock()  # another thread may have held it at the fork
        self._forget()

    @contextmanager
    def connect(self) -> Iterator[_SqliteConnection]:
        """Yield a connection outside any transaction (as SQLAlchemy's ``engine.connect``)."""
        pid = os.getpid()
        conn = self._acquire()
        try:
            yield _SqliteConnection(conn)
        finally:
            if conn.in_transaction:
                conn.rollback()
            self._release(conn, pid)

    @contextmanager
    def transaction(self, *, write: bool) -> Iterator[SqlConnection]:
        """Yield a connection inside ``BEGIN IMMEDIATE`` (write) or ``BEGIN`` (read)."""
        if write and self.read_only:
            raise ReadOnlyStorageError(
                f"read-only: cannot write to the metadata database {self.path} (the file or "
                "its folder is not writable)",
                path=self.path,
                hint=f"make {Path(self.path).absolute().parent} and the database file "
                "writable for this user (`chmod u+w`), or point CELLPIPE_DB_URL at a "
                "writable database; read commands (runs, show, why, lineage) still work",
            )
        pid = os.getpid()
        conn = self._acquire()
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield _SqliteConnection(conn)
            except BaseException:
                if conn.in_transaction:
                    conn.rollback()
                raise
            try:
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.rollback()
                raise
        except sqlite3.Error as exc:
            translated = self._translated(exc)
            if translated is exc:
                raise
            raise translated from exc
        finally:
            self._release(conn, pid)

    def close(self) -> None:
        """Close every idle connection (those in use close when their transaction ends)."""
        with self._lock:
            idle, self._idle = self._idle, []
            mine = self._pid == os.getpid()
        if not mine:
            _ABANDONED.extend(idle)
            return
        for conn in idle:
            conn.close()

    dispose = close  # SQLAlchemy's engine name for it
