"""Metadata stores: run records in SQL (SQLite or PostgreSQL) or in memory.

Owns: `SqlMetadataStore`, `MemoryMetadataStore`, the schema migrations runner
(``migrations/NNNN_*.sql``, version kept in the ``schema_version`` table) and
`SCHEMA_VERSION`, the newest schema this cellpipe understands.

One store, one set of portable SQL statements (plain strings with ``:name`` parameters), run
through a small connection adapter (`cellpipe.storage._sql`): SQLite files go straight to the
standard library's ``sqlite3`` (importing SQLAlchemy would cost more than a cached
``cellpipe run`` does otherwise), PostgreSQL and any other URL go through SQLAlchemy Core.

Invariants:
    * every write is one transaction; on SQLite it starts with ``BEGIN IMMEDIATE`` so
      concurrent writers queue on the busy timeout (30 s) instead of failing with "database
      is locked" when a read transaction tries to upgrade; WAL lets readers run meanwhile;
    * on PostgreSQL writes run at READ COMMITTED and serialise per run by locking the run's
      row (``SELECT ... FOR UPDATE``) first, so two writers of one run queue instead of racing
      on its step runs, and writers of different runs never wait for each other except on a
      shared artifact row (inserted in digest order, so they cannot deadlock). Reads run at
      REPEATABLE READ, so a record assembled from several queries is one consistent
      snapshot. Migrations hold a transaction-level advisory lock, so processes opening a new
      database at once apply each migration exactly once. No SQLite pragma is sent to
      PostgreSQL;
    * foreign keys are enforced; the migration SQL is portable (SQLite and PostgreSQL);
    * a database with a newer schema than `SCHEMA_VERSION` is refused, never modified;
    * interrupted runs: a run still RUNNING whose runner process (same host, by pid) is gone
      is marked INTERRUPTED (and its RUNNING step runs CANCELLED) by `mark_interrupted_runs`,
      which `get_run` and `list_runs` call first, so readers never see a dead run as running.
      A recycled pid can hide an interrupted run until that process ends: acceptable, since
      the only cost is a stale "running". On a read-only or full store the marking is
      skipped (readers still work and show such runs as running);
    * a read-only SQLite database (see `cellpipe.storage._sql`) that would need a migration
      is refused with `ReadOnlyStorageError`, never half-migrated;
    * run ids are resolved in one place, `get_run`: an exact id, a unique prefix, or
      ``latest`` / ``latest~N`` (the newest run of the project by start time, or the N-th
      before it; `parse_latest`). A real run id is never ``latest``: run ids are
      ``<pipeline>-<date>-<time>-<hex>``, so ``latest`` is never an exact id and a pipeline
      named "latest" is still reachable by a longer prefix (``latest-2026``).

Must not depend on: artifact stores, serializers, notebooks, the pipeline model, the runner.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cellpipe.errors import (
    ReadOnlyStorageError,
    RunNotFoundError,
    SchemaVersionError,
    StorageError,
    StorageFullError,
)
from cellpipe.storage._sql import BUSY_TIMEOUT_S, Database, SqlConnection, open_database
from cellpipe.storage.protocols import ArtifactDigest
from cellpipe.storage.records import (
    ArtifactRef,
    RunRecord,
    RunStatus,
    StepRunRecord,
    StepStatus,
)

__all__ = [
    "BUSY_TIMEOUT_S",
    "SCHEMA_VERSION",
    "MemoryMetadataStore",
    "SqlMetadataStore",
    "is_process_alive",
    "json_default",
    "migrations",
]

logger = logging.getLogger(__name__)

_MIGRATION_LOCK = 0x63656C6C  # "cell": the PostgreSQL advisory lock key held while migrating

_HOST = socket.gethostname()


def migrations() -> list[tuple[int, str]]:
    """Return ``(version, sql)`` for every bundled migration, in order."""
    # A plain folder beside this module (importlib.resources costs about 12 ms to import,
    # and a fresh project runs the migrations at the start of its first run).
    found = []
    for entry in (Path(__file__).parent / "migrations").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), entry.read_text(encoding="utf-8")))
    found.sort()
    return found


SCHEMA_VERSION = 6
"""The newest metadata schema this cellpipe can read and write (the last migration's number;
a test checks they agree, so importing this module reads no files)."""


def _statements(sql: str) -> list[str]:
    """Split a migration into statements (a ``;`` ending a line ends a statement)."""
    lines = [ln for ln in sql.splitlines() if not ln.lstrip().startswith("--")]
    out, current = [], []
    for line in lines:
        current.append(line)
        if line.rstrip().endswith(";"):
            out.append("\n".join(current).strip().rstrip(";"))
            current = []
    tail = "\n".join(current).strip()
    if tail:
        out.append(tail)
    return [s for s in out if s]


# -- conversions -----------------------------------------------------------------------------


def _ts(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: records use timezone-aware UTC times")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _dt(value: str | None) -> datetime | None:
    if value is None:
        return None
    return datetime.fromisoformat(value)  # C-fast; understands the trailing Z as UTC


def json_default(value: Any) -> Any:
    """``json.dumps`` ``default=`` for records: numpy scalars become Python numbers."""
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return item()
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def _dumps(value: Any, *, what: str) -> str:
    try:
        return json.dumps(value, default=json_default, sort_keys=True, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise StorageError(
            f"{what} is not a JSON value: {exc}",
            hint="parameters and metrics must be numbers, strings, booleans, None, "
            "or lists and dicts of those",
        ) from exc


_RUN_STATUS = {s.value: s for s in RunStatus}


def _loads_flat(text_: str, memo: dict[str, Any] | None) -> Any:
    """json.loads, reusing earlier results for flat objects (the record copies the top level).

    Many runs share the same parameters; decoding each distinct text once keeps listing
    10,000 runs well under the 0.3 s target. Texts holding nested containers are decoded
    afresh so records never share a mutable list or dict.
    """
    if memo is None or "[" in text_ or text_.count("{") > 1:
        return json.loads(text_)
    value = memo.get(text_)
    if value is None:
        value = memo[text_] = json.loads(text_)
    return value


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


def _json_map(values: Mapping[str, Any], *, what: str) -> dict[str, Any]:
    """Return ``values`` as plain JSON values (numpy scalars converted), checked."""
    return dict(json.loads(_dumps(dict(values), what=what)))


def is_process_alive(pid: int) -> bool:
    """Return whether a process with that pid exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _interrupted_error(pid: int | None) -> str:
    return f"the runner (pid {pid}) stopped before the run finished"


def _ambiguous(prefix: str, matches: Sequence[str]) -> RunNotFoundError:
    shown = ", ".join(matches[:10]) + (", ..." if len(matches) > 10 else "")
    return RunNotFoundError(
        f"run id prefix '{prefix}' is ambiguous: it matches {shown}",
        hint="give more characters of the run id",
    )


LATEST = "latest"


def parse_latest(run_id: str) -> int | None:
    """Return N for ``latest~N`` (0 for ``latest``), None for anything that is not one.

    Raises:
        RunNotFoundError: for ``latest~`` followed by something that is not a number.
    """
    if run_id == LATEST:
        return 0
    if not run_id.startswith(LATEST + "~"):
        return None
    count = run_id[len(LATEST) + 1 :]
    if not count.isdigit() or not count.isascii():
        raise RunNotFoundError(
            f"no run '{run_id}': '~' must be followed by a number of runs back",
            hint="`latest` is the newest run, `latest~1` the one before it",
        )
    return int(count)


def _latest(run_id: str, back: int, newest: Sequence[RunRecord]) -> RunRecord:
    """Return ``newest[back]``: the runs newest first, at most ``back + 1`` of them."""
    if back < len(newest):
        return newest[back]
    count = len(newest)
    has = "no runs" if count == 0 else f"only {count} run" + ("" if count == 1 else "s")
    hint = "`cellpipe run NOTEBOOK` records one" if count == 0 else "`cellpipe runs` lists them"
    raise RunNotFoundError(f"no run '{run_id}': the project has {has}", hint=hint)


def _not_found(run_id: str) -> RunNotFoundError:
    return RunNotFoundError(f"no run '{run_id}'", hint="`cellpipe runs` lists the runs")


# -- SQL store -------------------------------------------------------------------------------


class SqlMetadataStore:
    """Run records in a SQL database: stdlib ``sqlite3`` for SQLite files, else SQLAlchemy Core.

    Args:
        url: a SQLAlchemy-style URL, ``sqlite:///path/to/cellpipe.db`` (the parent folder must
            exist) or ``postgresql+psycopg://user:password@host:port/database``. Use
            `cellpipe.storage.backends.open_metadata_store` to accept plain
            ``postgresql://`` URLs too.

    Raises:
        SchemaVersionError: if the database was written by a newer cellpipe.
        StorageError: if the driver is missing or the database cannot be reached.

    Example::

        store = SqlMetadataStore("sqlite:///.cellpipe/cellpipe.db")
        try:
            runs = store.list_runs(limit=20)
        finally:
            store.close()
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._db: Database = open_database(url)
        self._postgresql = self._db.dialect_name == "postgresql"
        try:
            self._migrate()
        except self._db.unreachable_errors as exc:
            self._db.close()
            where = (
                "that the database file and its folder exist and are readable"
                if self._db.dialect_name == "sqlite"
                else "that the database server is running"
            )
            raise StorageError(
                f"cannot open the metadata store {self._safe_url()}: "
                f"{getattr(exc, 'orig', None) or exc}",
                hint=f"check CELLPIPE_DB_URL (or db_url in cellpipe.toml) and {where}",
            ) from exc
        except BaseException:
            self._db.close()
            raise

    @property
    def _engine(self) -> Any:
        """The SQLAlchemy engine, or on SQLite files an engine-shaped stand-in."""
        return self._db.engine

    def __repr__(self) -> str:
        return f"SqlMetadataStore({self._safe_url()!r})"

    def _safe_url(self) -> str:
        return self._db.safe_url()

    def close(self) -> None:
        """Close every pooled connection."""
        self._db.close()

    def __enter__(self) -> SqlMetadataStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- transactions and schema ----------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[SqlConnection]:
        """Yield a connection in a write transaction (``BEGIN IMMEDIATE`` on SQLite)."""
        with self._db.transaction(write=True) as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[SqlConnection]:
        """Yield a connection in a read transaction (REPEATABLE READ on PostgreSQL)."""
        with self._db.transaction(write=False) as conn:
            yield conn

    def _lock_run(self, conn: SqlConnection, run_id: str) -> bool:
        """Lock the run's row until the transaction ends; return whether the run exists.

        SQLite's ``BEGIN IMMEDIATE`` already serialises writers, so only PostgreSQL needs it.
        """
        lock = " FOR UPDATE" if self._postgresql else ""
        row = conn.execute(
            f"SELECT 1 FROM runs WHERE run_id = :run_id{lock}", {"run_id": run_id}
        ).first()
        return row is not None

    def _version(self, conn: SqlConnection) -> int:
        if not conn.has_table("schema_version"):
            return 0
        value = conn.execute("SELECT MAX(version) FROM schema_version").scalar()
        return int(value or 0)

    def schema_version(self) -> int:
        """Return the database's schema version."""
        with self._read() as conn:
            return self._version(conn)

    def _migrate(self) -> None:
        with self._read() as conn:
            current = self._version(conn)
        self._check_version(current)
        if current == SCHEMA_VERSION:
            return
        if getattr(self._db, "read_only", False):
            path = getattr(self._db, "path", self._safe_url())
            raise ReadOnlyStorageError(
                f"the metadata database {path} has schema v{current} and this cellpipe "
                f"needs v{SCHEMA_VERSION}, but the database is read-only, so it cannot be "
                "migrated",
                path=path,
                hint="make the database file and its folder writable once (`chmod u+w`) and "
                "run any cellpipe command to migrate it, or use the cellpipe version that "
                "wrote it",
            )
        with self._write() as conn:
            if self._postgresql:
                conn.execute("SELECT pg_advisory_xact_lock(:k)", {"k": _MIGRATION_LOCK})
            current = self._version(conn)  # another process may have migrated meanwhile
            self._check_version(current)
            for version, sql in migrations():
                if version <= current:
                    continue
                logger.info("migrating %s to schema v%d", self, version)
                for statement in _statements(sql):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES (:v, :t)",
                    {"v": version, "t": _ts(datetime.now(UTC))},
                )

    def _check_version(self, current: int) -> None:
        if current > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"database schema is v{current}; this cellpipe supports up to "
                f"v{SCHEMA_VERSION}, so upgrade cellpipe",
                hint=f"the database is {self._safe_url()}",
            )

    # -- writes ---------------------------------------------------------------------------

    def start_run(self, run: RunRecord) -> None:
        """Insert a new run (status RUNNING).

        Raises:
            StorageError: if a run with that id exists, or a parameter is not JSON.
        """
        params = _json_map(run.parameters, what=f"a parameter of run {run.run_id}")
        metrics = _json_map(run.metrics, what=f"a metric of run {run.run_id}")
        try:
            with self._write() as conn:
                conn.execute(
                    (
                        "INSERT INTO runs (run_id, pipeline, notebook, notebook_digest, status,"
                        " started_at, finished_at, error, pid, hostname, parameters_json,"
                        " metrics_json) VALUES (:run_id, :pipeline, :notebook, :nb_digest,"
                        " :status, :started_at, :finished_at, :error, :pid, :host, :params,"
                        " :metrics)"
                    ),
                    {
                        "run_id": run.run_id,
                        "pipeline": run.pipeline,
                        "notebook": run.notebook,
                        "nb_digest": run.notebook_digest,
                        "status": str(run.status),
                        "started_at": _ts(run.started_at),
                        "finished_at": _ts(run.finished_at),
                        "error": run.error,
                        "pid": run.pid,
                        "host": _HOST,
                        "params": _dumps(params, what="parameters"),
                        "metrics": _dumps(metrics, what="metrics"),
                    },
                )
                self._insert_values(conn, "parameters", run.run_id, None, params)
                self._insert_values(conn, "metrics", run.run_id, "", metrics)
                self._log(conn, run.run_id, "run_started", status=str(run.status))
        except self._db.integrity_errors as exc:
            raise StorageError(f"run {run.run_id} already exists") from exc

    def _insert_values(
        self,
        conn: SqlConnection,
        table: str,
        run_id: str,
        step: str | None,
        values: Mapping[str, Any],
    ) -> None:
        if not values:
            return
        rows = [
            {
                "run_id": run_id,
                "step": step,
                "name": name,
                "value_json": _dumps(value, what=f"{table[:-1]} {name!r}"),
                "value_num": _num(value),
            }
            for name, value in values.items()
        ]
        step_col, step_val = ("step, ", ":step, ") if step is not None else ("", "")
        conn.execute(
            (
                f"INSERT INTO {table} (run_id, {step_col}name, value_json, value_num)"
                f" VALUES (:run_id, {step_val}:name, :value_json, :value_num)"
            ),
            rows,
        )

    def _log(
        self,
        conn: SqlConnection,
        run_id: str,
        event_name: str,
        *,
        step: str | None = None,
        status: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        conn.execute(
            (
                "INSERT INTO run_events (run_id, recorded_at, event, step, status, detail)"
                " VALUES (:run_id, :at, :event, :step, :status, :detail)"
            ),
            {
                "run_id": run_id,
                "at": _ts(datetime.now(UTC)),
                "event": event_name,
                "step": step,
                "status": status,
                "detail": json.dumps(detail) if detail else None,
            },
        )

    def finish_run(
        self,
        run_id: str,
        *,
        status: RunStatus,
        finished_at: datetime,
        metrics: Mapping[str, Any],
        error: str | None = None,
    ) -> None:
        """Set a run's final status, end time and metrics (replacing earlier run metrics).

        Raises:
            RunNotFoundError: if there is no run ``run_id``.
        """
        values = _json_map(metrics, what=f"a metric of run {run_id}")
        with self._write() as conn:
            updated = conn.execute(
                (
                    "UPDATE runs SET status = :status, finished_at = :finished_at,"
                    " error = :error, metrics_json = :metrics WHERE run_id = :run_id"
                ),
                {
                    "status": str(status),
                    "finished_at": _ts(finished_at),
                    "error": error,
                    "metrics": _dumps(values, what="metrics"),
                    "run_id": run_id,
                },
            ).rowcount
            if not updated:
                raise _not_found(run_id)
            conn.execute(
                "DELETE FROM metrics WHERE run_id = :run_id AND step = ''",
                {"run_id": run_id},
            )
            self._insert_values(conn, "metrics", run_id, "", values)
            self._log(conn, run_id, "run_finished", status=str(status))

    def record_step_run(self, record: StepRunRecord) -> None:
        """Insert or replace the step run ``(record.run_id, record.step)``, atomically.

        Raises:
            RunNotFoundError: if the run was not started with `start_run`.
        """
        key = {"run_id": record.run_id, "step": record.step}
        metrics = _json_map(record.metrics, what=f"a metric of step {record.step}")
        with self._write() as conn:
            if not self._lock_run(conn, record.run_id):
                raise _not_found(record.run_id)
            seq = conn.execute(
                "SELECT seq FROM step_runs WHERE run_id = :run_id AND step = :step",
                key,
            ).scalar()
            if seq is None:
                seq = conn.execute(
                    "SELECT COALESCE(MAX(seq), 0) + 1 FROM step_runs WHERE run_id = :run_id",
                    key,
                ).scalar()
            else:
                for table in ("events", "files_read", "metrics"):
                    conn.execute(
                        f"DELETE FROM {table} WHERE run_id = :run_id AND step = :step", key
                    )
                conn.execute("DELETE FROM step_runs WHERE run_id = :run_id AND step = :step", key)
            conn.execute(
                (
                    "INSERT INTO step_runs (run_id, step, seq, status, cache_key, cache_fields,"
                    " cache_reason, source_run, started_at, finished_at, log_digest,"
                    " notebook_digest, error) VALUES (:run_id, :step, :seq, :status, :cache_key,"
                    " :cache_fields, :cache_reason, :source_run, :started_at, :finished_at,"
                    " :log_digest, :notebook_digest, :error)"
                ),
                {
                    **key,
                    "seq": seq,
                    "status": str(record.status),
                    "cache_key": record.cache_key,
                    "cache_fields": json.dumps(dict(record.cache_fields), sort_keys=True),
                    "cache_reason": record.cache_reason,
                    "source_run": record.source_run,
                    "started_at": _ts(record.started_at),
                    "finished_at": _ts(record.finished_at),
                    "log_digest": record.log_digest,
                    "notebook_digest": record.notebook_digest,
                    "error": record.error,
                },
            )
            refs = [("input", v, r) for v, r in record.inputs.items()]
            refs += [("output", v, r) for v, r in record.outputs.items()]
            sources = record.input_sources
            if refs:
                self._insert_artifacts(conn, [r for _, _, r in refs])
                conn.execute(
                    (
                        "INSERT INTO events (run_id, step, kind, variable, digest, serializer,"
                        " serializer_version, type_name, source_step) VALUES (:run_id, :step,"
                        " :kind, :variable, :digest, :serializer, :serializer_version,"
                        " :type_name, :source_step)"
                    ),
                    [
                        {
                            **key,
                            "kind": kind,
                            "variable": variable,
                            "digest": ref.digest,
                            "serializer": ref.serializer,
                            "serializer_version": ref.serializer_version,
                            "type_name": ref.type_name,
                            "source_step": sources.get(variable) if kind == "input" else None,
                        }
                        for kind, variable, ref in refs
                    ],
                )
            if record.files_read:
                conn.execute(
                    (
                        "INSERT INTO files_read (run_id, step, path, digest)"
                        " VALUES (:run_id, :step, :path, :digest)"
                    ),
                    [{**key, "path": p, "digest": d} for p, d in record.files_read.items()],
                )
            self._insert_values(conn, "metrics", record.run_id, record.step, metrics)
            self._log(conn, record.run_id, "step_recorded", step=record.step,
                      status=str(record.status))  # fmt: skip

    def _insert_artifacts(self, conn: SqlConnection, refs: Sequence[ArtifactRef]) -> None:
        now = _ts(datetime.now(UTC))
        # ON CONFLICT DO NOTHING: the bytes are immutable; the first description stays.
        # Digest order: concurrent PostgreSQL writers of shared artifacts wait, never deadlock.
        conn.execute(
            (
                "INSERT INTO artifacts (digest, serializer, serializer_version, size, type_name,"
                " created_at) VALUES (:digest, :serializer, :serializer_version, :size,"
                " :type_name, :created_at) ON CONFLICT (digest) DO NOTHING"
            ),
            [
                {
                    "digest": r.digest,
                    "serializer": r.serializer,
                    "serializer_version": r.serializer_version,
                    "size": r.size,
                    "type_name": r.type_name,
                    "created_at": now,
                }
                for _, r in sorted({r.digest: r for r in refs}.items())
            ],
        )

    def mark_interrupted_runs(self) -> list[str]:
        """Mark RUNNING runs of this host whose runner process is gone as INTERRUPTED.

        Their RUNNING step runs become CANCELLED.

        Returns:
            The ids of the runs it marked.
        """
        with self._read() as conn:
            rows = conn.execute(
                "SELECT run_id, pid FROM runs WHERE status = :s AND hostname = :h",
                {"s": str(RunStatus.RUNNING), "h": _HOST},
            ).all()
        # Sorted: two processes marking the same runs lock their rows in the same order.
        dead = sorted((r, p) for r, p in rows if p is not None and not is_process_alive(p))
        if not dead:
            return []
        try:
            self._mark_interrupted(dead)
        except (ReadOnlyStorageError, StorageFullError) as exc:
            # Readers must work on a read-only or full store: they show these runs as still
            # running until a writer can mark them (issue 10, items 5 and 6).
            logger.info("cannot mark interrupted runs: %s", exc.message)
            return []
        return [r for r, _ in dead]

    def _mark_interrupted(self, dead: Sequence[tuple[str, int]]) -> None:
        now = _ts(datetime.now(UTC))
        with self._write() as conn:
            for run_id, pid in dead:
                changed = conn.execute(
                    (
                        "UPDATE runs SET status = :new, finished_at = :now, error = :error"
                        " WHERE run_id = :run_id AND status = :old"
                    ),
                    {
                        "new": str(RunStatus.INTERRUPTED),
                        "old": str(RunStatus.RUNNING),
                        "now": now,
                        "error": _interrupted_error(pid),
                        "run_id": run_id,
                    },
                ).rowcount
                if changed:
                    conn.execute(
                        (
                            "UPDATE step_runs SET status = :new, finished_at = :now,"
                            " error = :error WHERE run_id = :run_id AND status = :old"
                        ),
                        {
                            "new": str(StepStatus.CANCELLED),
                            "old": str(StepStatus.RUNNING),
                            "now": now,
                            "error": "interrupted: " + _interrupted_error(pid),
                            "run_id": run_id,
                        },
                    )
                    self._log(conn, run_id, "run_interrupted",
                              status=str(RunStatus.INTERRUPTED))  # fmt: skip

    # -- reads ----------------------------------------------------------------------------

    _RUN_COLUMNS = (
        "run_id, pipeline, notebook, notebook_digest, status, started_at, finished_at, error,"
        " pid, parameters_json, metrics_json"
    )

    @staticmethod
    def _run_from_row(row: Any, memo: dict[str, Any] | None = None) -> RunRecord:
        return RunRecord(
            run_id=row[0],
            pipeline=row[1],
            notebook=row[2],
            notebook_digest=row[3],
            status=_RUN_STATUS[row[4]],
            started_at=_dt(row[5]),  # type: ignore[arg-type]
            finished_at=_dt(row[6]),
            error=row[7],
            pid=row[8],
            parameters=_loads_flat(row[9], memo),
            metrics=_loads_flat(row[10], memo),
        )

    def get_run(self, run_id: str) -> RunRecord:
        """Return the run with that id, unique id prefix, or ``latest`` / ``latest~N``.

        Raises:
            RunNotFoundError: if no run matches, the prefix matches several (all listed), or
                ``latest~N`` goes back further than there are runs (says how many there are).
        """
        back = parse_latest(run_id)
        if back is not None:
            return _latest(run_id, back, self.list_runs(limit=back + 1))
        self.mark_interrupted_runs()
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {self._RUN_COLUMNS} FROM runs WHERE run_id = :id", {"id": run_id}
            ).first()
            if row is not None:
                return self._run_from_row(row)
            rows = conn.execute(
                (
                    f"SELECT {self._RUN_COLUMNS} FROM runs"
                    " WHERE SUBSTR(run_id, 1, :n) = :prefix ORDER BY run_id LIMIT 11"
                ),
                {"n": len(run_id), "prefix": run_id},
            ).all()
        if not rows or not run_id:
            raise _not_found(run_id)
        if len(rows) > 1:
            raise _ambiguous(run_id, [r[0] for r in rows])
        return self._run_from_row(rows[0])

    def list_runs(
        self,
        *,
        notebook: str | None = None,
        status: RunStatus | None = None,
        limit: int | None = None,
    ) -> Sequence[RunRecord]:
        """Return runs, newest first, optionally filtered by notebook and status."""
        self.mark_interrupted_runs()
        where: list[str] = []
        params: dict[str, Any] = {}
        if notebook is not None:
            where.append("notebook = :notebook")
            params["notebook"] = notebook
        if status is not None:
            where.append("status = :status")
            params["status"] = str(status)
        sql = f"SELECT {self._RUN_COLUMNS} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started_at DESC, run_id DESC"
        if limit is not None:
            sql += " LIMIT :limit"
            params["limit"] = int(limit)
        with self._read() as conn:
            rows = conn.execute(sql, params).all()
        memo: dict[str, Any] = {}
        return [self._run_from_row(r, memo) for r in rows]

    _STEP_COLUMNS = (
        "s.run_id, s.step, s.status, s.cache_key, s.cache_fields, s.cache_reason, s.source_run,"
        " s.started_at, s.finished_at, s.log_digest, s.notebook_digest, s.error"
    )

    def _steps(self, conn: SqlConnection, rows: Sequence[Any]) -> list[StepRunRecord]:
        """Build records for step_runs rows, loading their events, files and metrics."""
        out = []
        for row in rows:
            key = {"run_id": row[0], "step": row[1]}
            inputs: dict[str, ArtifactRef] = {}
            outputs: dict[str, ArtifactRef] = {}
            sources: dict[str, str] = {}
            for kind, variable, digest, ser, ver, tname, size, source in conn.execute(
                (
                    "SELECT e.kind, e.variable, e.digest, e.serializer, e.serializer_version,"
                    " e.type_name, a.size, e.source_step FROM events e"
                    " JOIN artifacts a ON a.digest = e.digest"
                    " WHERE e.run_id = :run_id AND e.step = :step ORDER BY e.variable"
                ),
                key,
            ):
                ref = ArtifactRef(
                    digest=ArtifactDigest(digest),
                    serializer=ser,
                    serializer_version=ver,
                    size=size,
                    type_name=tname,
                )
                (inputs if kind == "input" else outputs)[variable] = ref
                if kind == "input" and source is not None:
                    sources[variable] = source
            files: dict[str, str] = dict(
                conn.execute(
                    (
                        "SELECT path, digest FROM files_read WHERE run_id = :run_id"
                        " AND step = :step ORDER BY path"
                    ),
                    key,
                ).all()
            )
            metrics = {
                name: json.loads(value)
                for name, value in conn.execute(
                    (
                        "SELECT name, value_json FROM metrics WHERE run_id = :run_id"
                        " AND step = :step ORDER BY name"
                    ),
                    key,
                )
            }
            out.append(
                StepRunRecord(
                    run_id=row[0],
                    step=row[1],
                    status=StepStatus(row[2]),
                    cache_key=row[3],
                    cache_fields=json.loads(row[4]),
                    cache_reason=row[5],
                    source_run=row[6],
                    started_at=_dt(row[7]),
                    finished_at=_dt(row[8]),
                    log_digest=ArtifactDigest(row[9]) if row[9] else None,
                    notebook_digest=ArtifactDigest(row[10]) if row[10] else None,
                    error=row[11],
                    inputs=inputs,
                    input_sources=sources,
                    outputs=outputs,
                    metrics=metrics,
                    files_read=files,
                )
            )
        return out

    def step_runs(self, run_id: str) -> Sequence[StepRunRecord]:
        """Return the run's step runs in the order they started (not started ones last).

        Raises:
            RunNotFoundError: if there is no run ``run_id`` (exact id).
        """
        with self._read() as conn:
            if (
                conn.execute("SELECT 1 FROM runs WHERE run_id = :id", {"id": run_id}).first()
                is None
            ):
                raise _not_found(run_id)
            rows = conn.execute(
                (
                    f"SELECT {self._STEP_COLUMNS} FROM step_runs s WHERE s.run_id = :id"
                    " ORDER BY CASE WHEN s.started_at IS NULL THEN 1 ELSE 0 END,"
                    " s.started_at, s.seq"
                ),
                {"id": run_id},
            ).all()
            return self._steps(conn, rows)

    def find_cached(self, step: str, cache_key: str) -> StepRunRecord | None:
        """Return the newest SUCCEEDED step run of ``step`` with ``cache_key``, if any."""
        with self._read() as conn:
            rows = conn.execute(
                (
                    f"SELECT {self._STEP_COLUMNS} FROM step_runs s WHERE s.step = :step"
                    " AND s.cache_key = :key AND s.status = :status"
                    # NULLs sort differently on SQLite and PostgreSQL: put them last on both.
                    " ORDER BY CASE WHEN s.finished_at IS NULL THEN 1 ELSE 0 END,"
                    " s.finished_at DESC, s.run_id DESC LIMIT 1"
                ),
                {"step": step, "key": cache_key, "status": str(StepStatus.SUCCEEDED)},
            ).all()
            found = self._steps(conn, rows)
        return found[0] if found else None

    def previous_step_run(self, step: str, notebook: str, before_run: str) -> StepRunRecord | None:
        """Return the newest step run of ``step`` in an earlier run of the same notebook.

        "Earlier" means started before ``before_run`` started; if ``before_run`` is not
        recorded, any other run of the notebook counts.
        """
        with self._read() as conn:
            rows = conn.execute(
                (
                    f"SELECT {self._STEP_COLUMNS} FROM step_runs s"
                    " JOIN runs r ON r.run_id = s.run_id"
                    " WHERE s.step = :step AND r.notebook = :notebook AND r.run_id <> :before"
                    " AND r.started_at < COALESCE("
                    "   (SELECT b.started_at FROM runs b WHERE b.run_id = :before), '9999')"
                    " ORDER BY r.started_at DESC, r.run_id DESC LIMIT 1"
                ),
                {"step": step, "notebook": notebook, "before": before_run},
            ).all()
            found = self._steps(conn, rows)
        return found[0] if found else None


# -- memory store ----------------------------------------------------------------------------


class MemoryMetadataStore:
    """Run records in dicts: the fake for tests, same contract as `SqlMetadataStore`.

    Thread-safe; not shared between processes.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._runs: dict[str, RunRecord] = {}
        self._hosts: dict[str, str] = {}
        self._steps: dict[str, dict[str, StepRunRecord]] = {}

    def close(self) -> None:
        """Nothing to release; present for symmetry with the SQL store."""

    def start_run(self, run: RunRecord) -> None:
        """Insert a new run (status RUNNING); raises StorageError if the id exists."""
        params = _json_map(run.parameters, what=f"a parameter of run {run.run_id}")
        metrics = _json_map(run.metrics, what=f"a metric of run {run.run_id}")
        _ts(run.started_at)
        with self._lock:
            if run.run_id in self._runs:
                raise StorageError(f"run {run.run_id} already exists")
            self._runs[run.run_id] = replace(run, parameters=params, metrics=metrics)
            self._hosts[run.run_id] = _HOST
            self._steps[run.run_id] = {}

    def finish_run(
        self,
        run_id: str,
        *,
        status: RunStatus,
        finished_at: datetime,
        metrics: Mapping[str, Any],
        error: str | None = None,
    ) -> None:
        """Set a run's final status, end time and metrics; raises RunNotFoundError."""
        values = _json_map(metrics, what=f"a metric of run {run_id}")
        _ts(finished_at)
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                raise _not_found(run_id)
            self._runs[run_id] = replace(
                run, status=status, finished_at=finished_at, metrics=values, error=error
            )

    def record_step_run(self, record: StepRunRecord) -> None:
        """Insert or replace the step run ``(record.run_id, record.step)``."""
        metrics = _json_map(record.metrics, what=f"a metric of step {record.step}")
        with self._lock:
            steps = self._steps.get(record.run_id)
            if steps is None:
                raise _not_found(record.run_id)
            steps[record.step] = replace(record, metrics=metrics)

    def find_cached(self, step: str, cache_key: str) -> StepRunRecord | None:
        """Return the newest SUCCEEDED step run of ``step`` with ``cache_key``, if any."""
        with self._lock:
            found = [
                s
                for steps in self._steps.values()
                for s in steps.values()
                if s.step == step and s.cache_key == cache_key and s.status == StepStatus.SUCCEEDED
            ]
        if not found:
            return None
        return max(found, key=lambda s: (_ts(s.finished_at) or "", s.run_id))

    def mark_interrupted_runs(self) -> list[str]:
        """Mark RUNNING runs of this host whose runner process is gone as INTERRUPTED."""
        marked = []
        now = datetime.now(UTC)
        with self._lock:
            for run_id, run in list(self._runs.items()):
                if (
                    run.status != RunStatus.RUNNING
                    or self._hosts[run_id] != _HOST
                    or run.pid is None
                    or is_process_alive(run.pid)
                ):
                    continue
                error = _interrupted_error(run.pid)
                self._runs[run_id] = replace(
                    run, status=RunStatus.INTERRUPTED, finished_at=now, error=error
                )
                for name, s in list(self._steps[run_id].items()):
                    if s.status == StepStatus.RUNNING:
                        self._steps[run_id][name] = replace(
                            s, status=StepStatus.CANCELLED, finished_at=now,
                            error="interrupted: " + error,
                        )  # fmt: skip
                marked.append(run_id)
        return marked

    def get_run(self, run_id: str) -> RunRecord:
        """Return the run with that id, unique prefix or ``latest~N``; raises RunNotFoundError."""
        back = parse_latest(run_id)
        if back is not None:
            return _latest(run_id, back, self.list_runs(limit=back + 1))
        self.mark_interrupted_runs()
        with self._lock:
            if run_id in self._runs:
                return self._runs[run_id]
            matches = sorted(r for r in self._runs if run_id and r.startswith(run_id))
        if not matches:
            raise _not_found(run_id)
        if len(matches) > 1:
            raise _ambiguous(run_id, matches)
        return self._runs[matches[0]]

    def list_runs(
        self,
        *,
        notebook: str | None = None,
        status: RunStatus | None = None,
        limit: int | None = None,
    ) -> Sequence[RunRecord]:
        """Return runs, newest first, optionally filtered by notebook and status."""
        self.mark_interrupted_runs()
        with self._lock:
            runs = [
                r
                for r in self._runs.values()
                if (notebook is None or r.notebook == notebook)
                and (status is None or r.status == status)
            ]
        runs.sort(key=lambda r: (_ts(r.started_at), r.run_id), reverse=True)
        return runs if limit is None else runs[:limit]

    def step_runs(self, run_id: str) -> Sequence[StepRunRecord]:
        """Return the run's step runs in the order they started (not started ones last)."""
        with self._lock:
            steps = self._steps.get(run_id)
            if steps is None:
                raise _not_found(run_id)
            ordered = list(steps.values())  # dicts keep insertion order, like seq
        return sorted(ordered, key=lambda s: (s.started_at is None, _ts(s.started_at) or ""))

    def previous_step_run(self, step: str, notebook: str, before_run: str) -> StepRunRecord | None:
        """Return the newest step run of ``step`` in an earlier run of the same notebook."""
        with self._lock:
            before = self._runs.get(before_run)
            limit = _ts(before.started_at) if before is not None else "9999"
            candidates = [
                (_ts(r.started_at) or "", r.run_id, self._steps[r.run_id][step])
                for r in self._runs.values()
                if r.notebook == notebook
                and r.run_id != before_run
                and (_ts(r.started_at) or "") < (limit or "9999")
                and step in self._steps[r.run_id]
            ]
        if not candidates:
            return None
        return max(candidates, key=lambda c: (c[0], c[1]))[2]
