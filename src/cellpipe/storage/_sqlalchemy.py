"""The SQLAlchemy adapter under `SqlMetadataStore`: PostgreSQL and any non-file SQLite URL.

Owns: `AlchemyDatabase`, the `cellpipe.storage._sql.Database` over a SQLAlchemy engine. It is
imported only when a URL needs it (importing SQLAlchemy costs ~200 ms; SQLite files use the
stdlib adapter in `cellpipe.storage._sql`).

Invariants:
    * PostgreSQL: ``pool_pre_ping`` (a team server restarts now and then), reads at
      REPEATABLE READ (one snapshot per read), writes at the default READ COMMITTED; no
      SQLite pragma is ever sent;
    * SQLite through SQLAlchemy (in-memory or URLs with options): the same pragmas and
      ``BEGIN IMMEDIATE``/``BEGIN`` discipline as the stdlib adapter;
    * after ``os.fork`` the child drops (never closes) the parent's pooled connections.

Must not depend on: anything of cellpipe but `cellpipe.errors` and `cellpipe.storage._sql`.
"""

from __future__ import annotations

import functools
import os
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from cellpipe.errors import StorageError
from cellpipe.storage._sql import BUSY_TIMEOUT_S, Params, Result, SqlConnection
from cellpipe.storage._urls import redact_url

__all__ = ["AlchemyDatabase"]


@functools.lru_cache(maxsize=512)
def _text(sql: str) -> sa.TextClause:
    """Parse a statement once (``text()`` scans it for ``:name`` parameters)."""
    return sa.text(sql)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN, instead of pysqlite's own logic.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            cur.execute("PRAGMA foreign_keys = ON")
            deadline = time.monotonic() + BUSY_TIMEOUT_S
            while True:  # switching to WAL needs a moment alone with a brand-new file
                try:
                    cur.execute("PRAGMA journal_mode = WAL")
                    break
                except Exception as exc:
                    if "locked" not in str(exc) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            cur.execute("PRAGMA synchronous = NORMAL")  # durable at checkpoints; safe in WAL
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("cellpipe_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _safe_url(url: str) -> str:
    return redact_url(url)


def _after_fork(ref: weakref.ref[AlchemyDatabase]) -> None:
    db = ref()
    if db is not None:
        db.after_fork_in_child()


class _AlchemyConnection:
    """`SqlConnection` over a SQLAlchemy connection."""

    __slots__ = ("_conn",)

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Params = None) -> Result:
        clause = _text(sql) if isinstance(sql, str) else sql
        return cast(Result, self._conn.execute(clause, params))

    def has_table(self, name: str) -> bool:
        return bool(sa.inspect(self._conn).has_table(name))


class AlchemyDatabase:
    """`Database` over a SQLAlchemy engine.

    Args:
        url: a SQLAlchemy URL (``postgresql+psycopg://...``, ``sqlite://``, ...).

    Raises:
        StorageError: if the URL is invalid or its driver is not installed.
    """

    integrity_errors: tuple[type[BaseException], ...] = (sa.exc.IntegrityError,)
    unreachable_errors: tuple[type[BaseException], ...] = (sa.exc.OperationalError,)

    def __init__(self, url: str) -> None:
        try:
            dialect = sa.engine.make_url(url).get_backend_name()
            # pre_ping: a team server restarts now and then; a pooled connection may be stale.
            options: dict[str, Any] = {} if dialect == "sqlite" else {"pool_pre_ping": True}
            self._engine = sa.create_engine(url, **options)
        except (ImportError, sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as exc:
            raise StorageError(
                f"cannot open the metadata store {_safe_url(url)}: {exc}",
                hint="for PostgreSQL install the team storage extras: pip install 'cellpipe[team]'",
            ) from exc
        self.dialect_name: str = self._engine.dialect.name
        if self.dialect_name == "sqlite":
            _configure_sqlite(self._engine)
        if hasattr(os, "register_at_fork"):
            ref = weakref.ref(self)
            os.register_at_fork(after_in_child=lambda: _after_fork(ref))

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine."""
        return self._engine

    def safe_url(self) -> str:
        """Return the URL with the password hidden."""
        return redact_url(self._engine.url.render_as_string(hide_password=False))

    @contextmanager
    def transaction(self, *, write: bool) -> Iterator[SqlConnection]:
        """Yield a connection inside one transaction (see the module's invariants)."""
        with self._engine.connect() as conn:
            if write:
                conn.execution_options(cellpipe_write=True)
            elif self.dialect_name == "postgresql":
                # One snapshot for the whole read; read-only transactions never fail to
                # serialise at this level on PostgreSQL.
                conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield _AlchemyConnection(conn)

    def after_fork_in_child(self) -> None:
        """Pooled connections belong to the parent; a forked child must open its own."""
        self._engine.dispose(close=False)

    def close(self) -> None:
        """Close every pooled connection."""
        self._engine.dispose()
