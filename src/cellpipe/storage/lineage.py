"""Lineage and run history queries: snapshots, external data inputs, artifact graphs, filters.

Owns: the records added by schema v2 (`SnapshotRecord`, `DataInputRecord`), the
`HistoryStore` protocol (what runs record) and the `LineageIndex` protocol (the batched
queries lineage graphs are built from), both implemented by `SqlHistoryStore` and
`MemoryHistoryStore` (chosen by `history_for`), the lineage graph of a run or an artifact
(`run_lineage`, `artifact_lineage`, `output_lineage`: ML-Metadata's executions, artifacts
and input/output events, across runs) and the ``cellpipe runs`` filters (`RunFilter`).

Invariants:
    * read-mostly: the only writes are snapshot and data-input rows, each one transaction
      through the metadata store's own transaction discipline (``BEGIN IMMEDIATE`` on SQLite);
    * lineage follows *executed* step runs: a cache hit re-records its source run's outputs,
      so the producer of an artifact is the step run that actually computed it (cache hits
      are listed as reuses, never as producers), which keeps a query bounded by the number of
      distinct computations rather than the number of runs;
    * lineage is per step output: equal values share an artifact (content addressing), so
      an input event names the step of its run whose output it read (``source_step``,
      schema v5); a graph names that producer on the input edge, follows only it upstream,
      and leaves out of a step output's readers those that read an equal value of another
      output (`output_lineage`). Only the lineage of an artifact as such lists every step
      run that produced it; inputs recorded before v5 fall back to that too;
    * an artifact graph is bounded: at most ``limit`` step runs on each side of any artifact
      (the rest counted, never silently dropped), and it costs a few batched queries per
      level of depth, never one per node; readers are listed from the ``events_by_artifact``
      index (schema v3) without visiting the runs that are not shown;
    * graphs are plain values (frozen dataclasses); rendering them is the CLI's job.

Must not depend on: notebooks, the pipeline model, the runner.
"""

from __future__ import annotations

import json
import operator
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from cellpipe.errors import CellpipeError, RunNotFoundError, UnknownStepError
from cellpipe.storage._sql import SqlConnection
from cellpipe.storage.metadata import MemoryMetadataStore, SqlMetadataStore
from cellpipe.storage.protocols import ArtifactDigest
from cellpipe.storage.records import (
    ArtifactRef,
    MetadataStore,
    RunRecord,
    StepRunRecord,
    StepStatus,
)

__all__ = [
    "DEFAULT_LIMIT",
    "ArtifactEvent",
    "ArtifactUses",
    "DataInputRecord",
    "HistoryStore",
    "LineageEdge",
    "LineageGraph",
    "LineageIndex",
    "LineageNode",
    "LineageStep",
    "MemoryHistoryStore",
    "RunFilter",
    "SnapshotKind",
    "SnapshotRecord",
    "SqlHistoryStore",
    "artifact_lineage",
    "history_for",
    "output_lineage",
    "resolve_digest",
    "run_lineage",
]


class SnapshotKind(StrEnum):
    """When a snapshot was taken."""

    START = "start"
    BEFORE = "before"
    AFTER = "after"


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotRecord:
    """One recorded snapshot.

    Attributes:
        run_id: the run.
        step: the step, or ``""`` for the run start.
        kind: start, before or after.
        manifest: digest of the manifest artifact (see `cellpipe.storage.snapshots`).
        file_count: workspace files in it.
        total_size: their total size in bytes.
        created_at: when it was taken (UTC).
    """

    run_id: str
    step: str
    kind: SnapshotKind
    manifest: ArtifactDigest
    file_count: int
    total_size: int
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "run_id": self.run_id,
            "step": self.step or None,
            "kind": self.kind.value,
            "manifest": self.manifest,
            "file_count": self.file_count,
            "total_size": self.total_size,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class DataInputRecord:
    """An external file a step read through ``cellpipe.data(url)``.

    Attributes:
        run_id: the run.
        step: the step that read it.
        url: the source (any fsspec URL).
        version: the source's version when fetched (``etag:...`` or ``size:...,mtime:...``).
        digest: the stored bytes.
        size: their size in bytes.
        fetched_at: when the bytes were fetched from the source (UTC).
    """

    run_id: str
    step: str
    url: str
    version: str
    digest: ArtifactDigest
    size: int
    fetched_at: datetime

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "run_id": self.run_id,
            "step": self.step,
            "url": self.url,
            "version": self.version,
            "digest": self.digest,
            "size": self.size,
            "fetched_at": self.fetched_at.isoformat(),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ArtifactEvent:
    """One input or output edge between a step run and an artifact.

    Attributes:
        run_id: the step run's run.
        step: the step run's step.
        kind: ``input`` or ``output``.
        variable: the variable name (or the URL, for a data input).
        digest: the artifact.
        status: the step run's status.
    """

    run_id: str
    step: str
    kind: str
    variable: str
    digest: ArtifactDigest
    status: StepStatus


@dataclass(frozen=True, slots=True, kw_only=True)
class ArtifactUses:
    """The executed step runs on one side of an artifact, at most ``limit`` of them listed.

    Attributes:
        digest: the artifact.
        kind: ``output`` (the step runs that computed it) or ``input`` (those that read it,
            as a variable or through ``cellpipe.data``).
        step_runs: ``(run_id, step)`` pairs, newest run id first (run ids start with the
            pipeline and the start time), at most the limit asked for.
        total: how many executed step runs there are in all, listed or not.
        reused_by: for ``output``, how many runs re-recorded it through a cache hit; else 0.
    """

    digest: str
    kind: str
    step_runs: tuple[tuple[str, str], ...] = ()
    total: int = 0
    reused_by: int = 0

    @property
    def more(self) -> int:
        """The step runs left out of `step_runs` by the limit."""
        return self.total - len(self.step_runs)


@dataclass(frozen=True, slots=True, kw_only=True)
class LineageStep:
    """A step run as a lineage graph shows it: its status and the values it read and wrote.

    Attributes:
        run_id: the run.
        step: the step.
        status: the step run's status.
        source_run: for a cache hit, the run whose outputs it reused.
        inputs: input variable -> stored value.
        input_sources: input variable -> the step of the same run whose output it is (schema
            v5; missing when unknown).
        outputs: output variable -> stored value.
        data_inputs: the external files it read through ``cellpipe.data``, by URL.
    """

    run_id: str
    step: str
    status: StepStatus
    source_run: str | None = None
    inputs: Mapping[str, ArtifactRef] = field(default_factory=dict)
    input_sources: Mapping[str, str] = field(default_factory=dict)
    outputs: Mapping[str, ArtifactRef] = field(default_factory=dict)
    data_inputs: tuple[DataInputRecord, ...] = ()

    @classmethod
    def from_record(
        cls, record: StepRunRecord, data_inputs: Iterable[DataInputRecord] = ()
    ) -> LineageStep:
        """Return the lineage view of a full step run record."""
        return cls(
            run_id=record.run_id,
            step=record.step,
            status=record.status,
            source_run=record.source_run,
            inputs=record.inputs,
            input_sources=record.input_sources,
            outputs=record.outputs,
            data_inputs=tuple(data_inputs),
        )


class HistoryStore(Protocol):
    """Snapshots, data inputs and artifact events: what runs record beside their step runs."""

    def record_snapshot(self, record: SnapshotRecord) -> None:
        """Insert or replace the snapshot ``(run_id, step, kind)``."""
        ...

    def snapshots(self, run_id: str) -> Sequence[SnapshotRecord]:
        """Return a run's snapshots in the order they were taken."""
        ...

    def record_data_inputs(self, records: Sequence[DataInputRecord]) -> None:
        """Insert or replace data inputs ``(run_id, step, url)``."""
        ...

    def data_inputs(
        self, *, run_id: str | None = None, digest: str | None = None
    ) -> Sequence[DataInputRecord]:
        """Return the data inputs of a run, or those with given bytes (at least one filter)."""
        ...

    def artifact_events(self, digest: str) -> Sequence[ArtifactEvent]:
        """Return every input/output event of ``digest``, across runs (unbounded)."""
        ...


class LineageIndex(Protocol):
    """The batched, bounded queries an artifact's lineage graph is built from.

    Each call answers for many artifacts or step runs at once, so a graph costs a few queries
    per level rather than a few per node, and no call returns more than its limit of rows per
    artifact however many runs share it.
    """

    def artifact_uses(
        self, digests: Sequence[str], kind: str, *, limit: int | None
    ) -> Mapping[str, ArtifactUses]:
        """Return, for every digest asked, the executed step runs with an event of ``kind``.

        Args:
            digests: the artifacts.
            kind: ``output`` (producers; `ArtifactUses.reused_by` counts the cache hits) or
                ``input`` (readers, including those that read it through ``cellpipe.data``).
            limit: the most step runs listed per artifact (newest run id first); None lists
                all, 0 only counts.
        """
        ...

    def lineage_steps(self, keys: Sequence[tuple[str, str]]) -> Sequence[LineageStep]:
        """Return the step runs ``(run_id, step)`` in the order asked (unknown ones left out)."""
        ...

    def step_heads(
        self, keys: Sequence[tuple[str, str]]
    ) -> Mapping[tuple[str, str], tuple[StepStatus, str | None]]:
        """Return ``(status, source_run)`` of the step runs ``(run_id, step)`` that exist."""
        ...

    def find_digests(self, prefix: str, *, limit: int) -> Sequence[str]:
        """Return the recorded artifact digests starting with ``prefix``, sorted, at most limit.

        Args:
            prefix: ``sha256:`` and the first hex digits (a full digest checks that it exists).
            limit: the most digests returned.
        """
        ...


_EXECUTED = (StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.RUNNING, StepStatus.CANCELLED)
"""Step runs that computed their outputs (cache hits re-record another run's outputs)."""

_STEP_OF_EVENT = "s.run_id = e.run_id AND s.step = e.step AND s.status > ''"
"""The join from an event to its step run. ``status > ''`` (true of every row) lets SQLite's
planner take the covering ``step_runs_by_status`` index (run_id, step, status) over the
primary key, whose rows it would have to fetch for the status: half the cost per event when
thousands of runs share an artifact. PostgreSQL plans it like the plain join."""

_CHUNK = 100
"""Digests or step runs per statement: well under SQLite's limits on parameters (32766) and
compound SELECTs (500 terms), and the same statement shapes on PostgreSQL."""


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _check_limit(limit: int | None) -> None:
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be None or at least 0, not {limit}")


def _check_kind(kind: str) -> None:
    if kind not in ("input", "output"):
        raise ValueError(f"kind must be 'input' or 'output', not {kind!r}")


def _uses(
    digest: str, kind: str, keys: Iterable[tuple[str, str]], limit: int | None, reused_by: int = 0
) -> ArtifactUses:
    ordered = sorted(set(keys), reverse=True)
    shown = ordered if limit is None else ordered[:limit]
    return ArtifactUses(
        digest=digest, kind=kind, step_runs=tuple(shown), total=len(ordered), reused_by=reused_by
    )


def _prefix_range(prefix: str) -> tuple[str, str | None]:
    """Return ``lo <= digest < hi`` bounds for digests starting with ``prefix``.

    The upper bound increments the last hex digit (``9`` -> ``a``, ``f`` carries), so both
    bounds are hex strings, which sort the same way under every collation PostgreSQL may use
    (an appended punctuation character would not).
    """
    head = prefix.rstrip("f")
    if head.endswith(":") or not head:
        return prefix, None
    last = head[-1]
    following = "a" if last == "9" else chr(ord(last) + 1)
    return prefix, head[:-1] + following


# -- SQL ----------------------------------------------------------------------------------


class SqlHistoryStore:
    """`HistoryStore` and `LineageIndex` on the metadata store's database (schema v2 and v3).

    Args:
        metadata: the open metadata store; its transactions are reused, so writes queue
            like every other writer.
    """

    def __init__(self, metadata: SqlMetadataStore) -> None:
        self._metadata = metadata

    def record_snapshot(self, record: SnapshotRecord) -> None:
        """Insert or replace the snapshot ``(run_id, step, kind)``."""
        row = {
            "run_id": record.run_id,
            "step": record.step,
            "kind": record.kind.value,
            "manifest": record.manifest,
            "files": record.file_count,
            "size": record.total_size,
            "at": _ts(record.created_at),
        }
        # Same package: the store's own transaction discipline (BEGIN IMMEDIATE on SQLite).
        with self._metadata._write() as conn:
            conn.execute(
                "DELETE FROM snapshots WHERE run_id = :run_id AND step = :step AND kind = :kind",
                row,
            )
            conn.execute(
                (
                    "INSERT INTO snapshots (run_id, step, kind, manifest_digest, file_count,"
                    " total_size, created_at) VALUES (:run_id, :step, :kind, :manifest, :files,"
                    " :size, :at)"
                ),
                row,
            )

    def snapshots(self, run_id: str) -> Sequence[SnapshotRecord]:
        """Return a run's snapshots in the order they were taken."""
        with self._metadata._read() as conn:
            rows = conn.execute(
                (
                    "SELECT run_id, step, kind, manifest_digest, file_count, total_size,"
                    " created_at FROM snapshots WHERE run_id = :run_id"
                    " ORDER BY created_at, step, kind"
                ),
                {"run_id": run_id},
            ).all()
        return [
            SnapshotRecord(
                run_id=r[0],
                step=r[1],
                kind=SnapshotKind(r[2]),
                manifest=ArtifactDigest(r[3]),
                file_count=int(r[4]),
                total_size=int(r[5]),
                created_at=datetime.fromisoformat(r[6]),
            )
            for r in rows
        ]

    def record_data_inputs(self, records: Sequence[DataInputRecord]) -> None:
        """Insert or replace data inputs ``(run_id, step, url)``."""
        if not records:
            return
        rows = [
            {
                "run_id": r.run_id,
                "step": r.step,
                "url": r.url,
                "version": r.version,
                "digest": r.digest,
                "size": r.size,
                "at": _ts(r.fetched_at),
            }
            for r in records
        ]
        with self._metadata._write() as conn:
            conn.execute(
                "DELETE FROM data_inputs WHERE run_id = :run_id AND step = :step AND url = :url",
                rows,
            )
            conn.execute(
                (
                    "INSERT INTO data_inputs (run_id, step, url, version, digest, size,"
                    " fetched_at) VALUES (:run_id, :step, :url, :version, :digest, :size, :at)"
                ),
                rows,
            )

    def data_inputs(
        self, *, run_id: str | None = None, digest: str | None = None
    ) -> Sequence[DataInputRecord]:
        """Return the data inputs of a run, or those with given bytes."""
        where, params = _data_filter(run_id, digest)
        with self._metadata._read() as conn:
            rows = conn.execute(
                (
                    "SELECT run_id, step, url, version, digest, size, fetched_at"
                    f" FROM data_inputs WHERE {where} ORDER BY run_id, step, url"
                ),
                params,
            ).all()
        return [_data_record(r) for r in rows]

    def artifact_events(self, digest: str) -> Sequence[ArtifactEvent]:
        """Return every input/output event of ``digest``, across runs (index on digest)."""
        with self._metadata._read() as conn:
            rows = conn.execute(
                (
                    "SELECT e.run_id, e.step, e.kind, e.variable, e.digest, s.status"
                    " FROM events e JOIN step_runs s ON s.run_id = e.run_id AND s.step = e.step"
                    " WHERE e.digest = :digest ORDER BY e.run_id, e.step, e.kind, e.variable"
                ),
                {"digest": digest},
            ).all()
        return [
            ArtifactEvent(
                run_id=r[0],
                step=r[1],
                kind=r[2],
                variable=r[3],
                digest=ArtifactDigest(r[4]),
                status=StepStatus(r[5]),
            )
            for r in rows
        ]

    # -- lineage queries (LineageIndex) -----------------------------------------------------

    def artifact_uses(
        self, digests: Sequence[str], kind: str, *, limit: int | None
    ) -> Mapping[str, ArtifactUses]:
        """Return, for every digest asked, the executed step runs with an event of ``kind``.

        Producers and cache hits come from one aggregate pass over the artifacts' output
        events (executed step runs one row each, cache hits one count per artifact). Readers
        come from the ``events_by_artifact`` index in run-id order, ``limit + 1`` per
        artifact, and are counted only when there are more than that.
        """
        _check_kind(kind)
        _check_limit(limit)
        wanted = list(dict.fromkeys(digests))
        with self._metadata._read() as conn:
            if kind == "output":
                return self._producers(conn, wanted, limit)
            return self._readers(conn, wanted, limit)

    def _producers(
        self, conn: SqlConnection, digests: list[str], limit: int | None
    ) -> dict[str, ArtifactUses]:
        executed: dict[str, list[tuple[str, str]]] = {d: [] for d in digests}
        reused: dict[str, int] = dict.fromkeys(digests, 0)
        statuses = [s.value for s in (*_EXECUTED, StepStatus.CACHED)]
        status_marks = ", ".join(f":s{i}" for i in range(len(statuses)))
        # A cache hit's row collapses into one group per artifact (run_id ''): only counted.
        # (Literal 'cached': PostgreSQL must see the same expression in SELECT and GROUP BY.)
        run_col = "CASE WHEN s.status = 'cached' THEN '' ELSE e.run_id END"
        step_col = "CASE WHEN s.status = 'cached' THEN '' ELSE e.step END"
        for chunk in _chunks(digests):
            params: dict[str, Any] = {f"d{i}": d for i, d in enumerate(chunk)}
            params.update({f"s{i}": s for i, s in enumerate(statuses)})
            marks = ", ".join(f":d{i}" for i in range(len(chunk)))
            rows = conn.execute(
                (
                    f"SELECT e.digest, {run_col}, {step_col}, COUNT(DISTINCT e.run_id)"
                    f" FROM events e JOIN step_runs s ON {_STEP_OF_EVENT}"
                    f" WHERE e.kind = 'output' AND e.digest IN ({marks})"
                    f" AND s.status IN ({status_marks})"
                    f" GROUP BY e.digest, {run_col}, {step_col}"
                ),
                params,
            ).all()
            for digest, run_id, step, count in rows:
                if run_id == "":
                    reused[digest] = int(count)
                else:
                    executed[digest].append((run_id, step))
        return {d: _uses(d, "output", executed[d], limit, reused[d]) for d in digests}

    def _readers(
        self, conn: SqlConnection, digests: list[str], limit: int | None
    ) -> dict[str, ArtifactUses]:
        # Two sources of readers: input events of executed step runs, and cellpipe.data.
        events: dict[str, set[tuple[str, str]]] = {d: set() for d in digests}
        data: dict[str, set[tuple[str, str]]] = {d: set() for d in digests}
        executed = {f"s{i}": s.value for i, s in enumerate(_EXECUTED)}
        in_executed = "s.status IN (" + ", ".join(f":{k}" for k in executed) + ")"
        event_readers = (
            f"SELECT DISTINCT e.run_id, e.step FROM events e JOIN step_runs s ON {_STEP_OF_EVENT}"
            f" WHERE e.digest = :d{{i}} AND e.kind = 'input' AND {in_executed}"
        )
        data_readers = "SELECT DISTINCT run_id, step FROM data_inputs WHERE digest = :d{i}"
        if limit != 0:
            # limit + 1 per source, newest run id first, straight from the index: one more
            # than shown tells whether the rest must be counted.
            cut = "" if limit is None else " LIMIT :n"
            sources = (
                ("e", f"{event_readers} ORDER BY e.run_id DESC, e.step DESC{cut}"),
                ("d", f"{data_readers} ORDER BY run_id DESC, step DESC{cut}"),
            )
            for chunk in _chunks(digests):
                params: dict[str, Any] = {**executed, **_digest_params(chunk)}
                if limit is not None:
                    params["n"] = limit + 1
                terms = [
                    f"SELECT {i} AS i, '{source}' AS source, run_id, step"
                    f" FROM ({sql.format(i=i)}) AS {source}{i}"
                    for i in range(len(chunk))
                    for source, sql in sources
                ]
                for i, source, run_id, step in conn.execute(" UNION ALL ".join(terms), params):
                    (events if source == "e" else data)[chunk[i]].add((run_id, step))
        totals = {d: len(events[d] | data[d]) for d in digests}
        if limit is not None:
            # Count only what the lists could not: each source apart (two index-ordered
            # passes), and both together only for an artifact read both ways (a step run
            # that read it as a variable and through cellpipe.data counts once).
            both = f"{event_readers} UNION {data_readers}"
            wanted = [
                (d, sql)
                for d in digests
                for sql, found in ((event_readers, events[d]), (data_readers, data[d]))
                if limit == 0 or len(found) > limit
            ]
            counts = _count(conn, wanted, executed)
            again = []
            for d in dict.fromkeys(d for d, _ in wanted):
                n_events = counts.get((d, event_readers), len(events[d]))
                n_data = counts.get((d, data_readers), len(data[d]))
                totals[d] = n_events + n_data
                if n_events and n_data:
                    again.append((d, both))
            totals.update({d: n for (d, _), n in _count(conn, again, executed).items()})
        return {
            d: ArtifactUses(
                digest=d,
                kind="input",
                step_runs=_uses(d, "input", events[d] | data[d], limit).step_runs,
                total=totals[d],
            )
            for d in digests
        }

    def lineage_steps(self, keys: Sequence[tuple[str, str]]) -> Sequence[LineageStep]:
        """Return the step runs ``(run_id, step)`` in the order asked (unknown ones left out).

        Three queries per hundred step runs (step runs, events with their sizes, data
        inputs), each an OR of primary-key lookups.
        """
        wanted = list(dict.fromkeys(keys))
        heads: dict[tuple[str, str], tuple[StepStatus, str | None]] = {}
        refs: dict[tuple[str, str], tuple[dict[str, ArtifactRef], dict[str, ArtifactRef]]] = {}
        sources: dict[tuple[str, str], dict[str, str]] = {}
        data: dict[tuple[str, str], list[DataInputRecord]] = {}
        with self._metadata._read() as conn:
            for chunk in _chunks(wanted):
                params, where = _step_keys(chunk, "")
                _, events_where = _step_keys(chunk, "e.")
                for run_id, step, status, source in conn.execute(
                    f"SELECT run_id, step, status, source_run FROM step_runs WHERE {where}",
                    params,
                ):
                    heads[(run_id, step)] = (StepStatus(status), source)
                    refs[(run_id, step)] = ({}, {})
                    sources[(run_id, step)] = {}
                for (
                    run_id,
                    step,
                    kind,
                    variable,
                    digest,
                    ser,
                    ver,
                    tname,
                    size,
                    source_step,
                ) in conn.execute(
                    (
                        "SELECT e.run_id, e.step, e.kind, e.variable, e.digest, e.serializer,"
                        " e.serializer_version, e.type_name, a.size, e.source_step FROM events e"
                        " JOIN artifacts a ON a.digest = e.digest"
                        f" WHERE {events_where} ORDER BY e.run_id, e.step, e.variable"
                    ),
                    params,
                ):
                    inputs, outputs = refs[(run_id, step)]
                    (inputs if kind == "input" else outputs)[variable] = ArtifactRef(
                        digest=ArtifactDigest(digest),
                        serializer=ser,
                        serializer_version=ver,
                        size=size,
                        type_name=tname,
                    )
                    if kind == "input" and source_step is not None:
                        sources[(run_id, step)][variable] = source_step
                for row in conn.execute(
                    (
                        "SELECT run_id, step, url, version, digest, size, fetched_at"
                        f" FROM data_inputs WHERE {where} ORDER BY run_id, step, url"
                    ),
                    params,
                ):
                    data.setdefault((row[0], row[1]), []).append(_data_record(row))
        out = []
        for key in wanted:
            if key not in heads:
                continue
            status, source = heads[key]
            inputs, outputs = refs[key]
            out.append(
                LineageStep(
                    run_id=key[0],
                    step=key[1],
                    status=status,
                    source_run=source,
                    inputs=inputs,
                    input_sources=sources[key],
                    outputs=outputs,
                    data_inputs=tuple(data.get(key, ())),
                )
            )
        return out

    def step_heads(
        self, keys: Sequence[tuple[str, str]]
    ) -> Mapping[tuple[str, str], tuple[StepStatus, str | None]]:
        """Return ``(status, source_run)`` of the step runs asked (primary-key lookups)."""
        heads: dict[tuple[str, str], tuple[StepStatus, str | None]] = {}
        wanted = list(dict.fromkeys(keys))
        with self._metadata._read() as conn:
            for chunk in _chunks(wanted):
                params, where = _step_keys(chunk, "")
                for run_id, step, status, source in conn.execute(
                    f"SELECT run_id, step, status, source_run FROM step_runs WHERE {where}",
                    params,
                ):
                    heads[(run_id, step)] = (StepStatus(status), source)
        return heads

    def find_digests(self, prefix: str, *, limit: int) -> Sequence[str]:
        """Return the recorded artifact digests starting with ``prefix`` (an index range)."""
        lo, hi = _prefix_range(prefix)
        params: dict[str, Any] = {"lo": lo, "n": limit}
        bounds = "digest >= :lo"
        if hi is not None:
            params["hi"] = hi
            bounds += " AND digest < :hi"
        with self._metadata._read() as conn:
            rows = conn.execute(
                (
                    f"SELECT digest FROM (SELECT digest FROM events WHERE {bounds}"
                    f" UNION SELECT digest FROM data_inputs WHERE {bounds}) d"
                    " ORDER BY digest LIMIT :n"
                ),
                params,
            ).all()
        return [r[0] for r in rows if r[0].startswith(prefix)]


def _data_filter(run_id: str | None, digest: str | None) -> tuple[str, dict[str, str]]:
    where: list[str] = []
    params: dict[str, str] = {}
    if run_id is not None:
        where.append("run_id = :run_id")
        params["run_id"] = run_id
    if digest is not None:
        where.append("digest = :digest")
        params["digest"] = digest
    if not where:
        raise ValueError("data_inputs needs run_id or digest")
    return " AND ".join(where), params


def _data_record(row: Any) -> DataInputRecord:
    return DataInputRecord(
        run_id=row[0],
        step=row[1],
        url=row[2],
        version=row[3],
        digest=ArtifactDigest(row[4]),
        size=int(row[5]),
        fetched_at=datetime.fromisoformat(row[6]),
    )


def _digest_params(digests: Sequence[str]) -> dict[str, str]:
    return {f"d{i}": d for i, d in enumerate(digests)}


def _count(
    conn: SqlConnection, wanted: Sequence[tuple[str, str]], params: Mapping[str, Any]
) -> dict[tuple[str, str], int]:
    """Count the rows of ``(digest, query)`` pairs: one UNION ALL term each, no GROUP BY.

    Each query names its digest ``:d{i}`` (a ``str.format`` field for the term's position).
    """
    counts: dict[tuple[str, str], int] = {}
    for chunk in _chunks(wanted):
        terms = [
            f"SELECT {i} AS i, COUNT(*) AS n FROM ({sql.format(i=i)}) AS c{i}"
            for i, (_, sql) in enumerate(chunk)
        ]
        values = {**params, **_digest_params([d for d, _ in chunk])}
        for i, n in conn.execute(" UNION ALL ".join(terms), values):
            counts[chunk[i]] = int(n)
    return counts


def _step_keys(keys: Sequence[tuple[str, str]], alias: str) -> tuple[dict[str, str], str]:
    """Return parameters and an OR of primary-key lookups for step runs ``(run_id, step)``."""
    params: dict[str, str] = {}
    pairs = []
    for i, (run_id, step) in enumerate(keys):
        params[f"r{i}"] = run_id
        params[f"t{i}"] = step
        pairs.append(f"({alias}run_id = :r{i} AND {alias}step = :t{i})")
    return params, " OR ".join(pairs)


# -- memory -------------------------------------------------------------------------------


class MemoryHistoryStore:
    """`HistoryStore` and `LineageIndex` in lists: the fake for tests, over a memory store.

    Args:
        metadata: the metadata store whose step runs hold the artifact events.
    """

    def __init__(self, metadata: MetadataStore) -> None:
        self._metadata = metadata
        self._lock = threading.Lock()
        self._snapshots: dict[tuple[str, str, str], SnapshotRecord] = {}
        self._data: dict[tuple[str, str, str], DataInputRecord] = {}

    def record_snapshot(self, record: SnapshotRecord) -> None:
        """Insert or replace the snapshot ``(run_id, step, kind)``."""
        self._metadata.get_run(record.run_id)
        with self._lock:
            self._snapshots[(record.run_id, record.step, record.kind.value)] = record

    def snapshots(self, run_id: str) -> Sequence[SnapshotRecord]:
        """Return a run's snapshots in the order they were taken."""
        with self._lock:
            found = [s for s in self._snapshots.values() if s.run_id == run_id]
        return sorted(found, key=lambda s: (s.created_at, s.step, s.kind.value))

    def record_data_inputs(self, records: Sequence[DataInputRecord]) -> None:
        """Insert or replace data inputs ``(run_id, step, url)``."""
        with self._lock:
            for r in records:
                self._data[(r.run_id, r.step, r.url)] = r

    def data_inputs(
        self, *, run_id: str | None = None, digest: str | None = None
    ) -> Sequence[DataInputRecord]:
        """Return the data inputs of a run, or those with given bytes."""
        _data_filter(run_id, digest)
        with self._lock:
            found = [
                r
                for r in self._data.values()
                if (run_id is None or r.run_id == run_id) and (digest is None or r.digest == digest)
            ]
        return sorted(found, key=lambda r: (r.run_id, r.step, r.url))

    def artifact_events(self, digest: str) -> Sequence[ArtifactEvent]:
        """Return every input/output event of ``digest`` (a scan: fine for a fake)."""
        found: list[ArtifactEvent] = []
        for run in self._metadata.list_runs():
            for s in self._metadata.step_runs(run.run_id):
                for kind, refs in (("input", s.inputs), ("output", s.outputs)):
                    found.extend(
                        ArtifactEvent(
                            run_id=s.run_id,
                            step=s.step,
                            kind=kind,
                            variable=v,
                            digest=r.digest,
                            status=s.status,
                        )
                        for v, r in refs.items()
                        if r.digest == digest
                    )
        return sorted(found, key=lambda e: (e.run_id, e.step, e.kind, e.variable))

    # -- lineage queries (LineageIndex): scans, fine for a fake ------------------------------

    def _step_records(self) -> Iterator[StepRunRecord]:
        for run in self._metadata.list_runs():
            yield from self._metadata.step_runs(run.run_id)

    def artifact_uses(
        self, digests: Sequence[str], kind: str, *, limit: int | None
    ) -> Mapping[str, ArtifactUses]:
        """Return, for every digest asked, the executed step runs with an event of ``kind``."""
        _check_kind(kind)
        _check_limit(limit)
        users: dict[str, set[tuple[str, str]]] = {d: set() for d in digests}
        reused: dict[str, set[str]] = {d: set() for d in digests}
        for s in self._step_records():
            for ref in (s.outputs if kind == "output" else s.inputs).values():
                if ref.digest not in users:
                    continue
                if s.status in _EXECUTED:
                    users[ref.digest].add((s.run_id, s.step))
                elif s.status is StepStatus.CACHED and kind == "output":
                    reused[ref.digest].add(s.run_id)
        if kind == "input":
            with self._lock:
                for data in self._data.values():
                    if data.digest in users:
                        users[data.digest].add((data.run_id, data.step))
        return {d: _uses(d, kind, users[d], limit, len(reused[d])) for d in digests}

    def lineage_steps(self, keys: Sequence[tuple[str, str]]) -> Sequence[LineageStep]:
        """Return the step runs ``(run_id, step)`` in the order asked (unknown ones left out)."""
        runs: dict[str, dict[str, StepRunRecord]] = {}
        out = []
        for run_id, step in dict.fromkeys(keys):
            if run_id not in runs:
                try:
                    runs[run_id] = {s.step: s for s in self._metadata.step_runs(run_id)}
                except RunNotFoundError:
                    runs[run_id] = {}
            record = runs[run_id].get(step)
            if record is not None:
                data = [d for d in self.data_inputs(run_id=run_id) if d.step == step]
                out.append(LineageStep.from_record(record, data))
        return out

    def step_heads(
        self, keys: Sequence[tuple[str, str]]
    ) -> Mapping[tuple[str, str], tuple[StepStatus, str | None]]:
        """Return ``(status, source_run)`` of the step runs asked."""
        return {(r.run_id, r.step): (r.status, r.source_run) for r in self.lineage_steps(keys)}

    def find_digests(self, prefix: str, *, limit: int) -> Sequence[str]:
        """Return the recorded artifact digests starting with ``prefix``, sorted."""
        found: set[str] = set()
        for s in self._step_records():
            found.update(r.digest for r in (*s.inputs.values(), *s.outputs.values()))
        with self._lock:
            found.update(d.digest for d in self._data.values())
        return sorted(d for d in found if d.startswith(prefix))[:limit]


def history_for(metadata: MetadataStore) -> SqlHistoryStore | MemoryHistoryStore | None:
    """Return the history store that lives beside ``metadata``, or None for unknown stores.

    Both kinds are a `HistoryStore` and a `LineageIndex`.
    """
    if isinstance(metadata, SqlMetadataStore):
        return SqlHistoryStore(metadata)
    if isinstance(metadata, MemoryMetadataStore):
        existing = getattr(metadata, "_cellpipe_history", None)
        if isinstance(existing, MemoryHistoryStore):
            return existing
        store = MemoryHistoryStore(metadata)
        # One history per memory store, so what a run recorded can be read back later.
        object.__setattr__(metadata, "_cellpipe_history", store)
        return store
    return None


# -- lineage graphs ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class LineageNode:
    """A step run, an artifact or an external data source in a lineage graph.

    Attributes:
        id: unique in the graph: ``step:RUN/STEP``, ``artifact:sha256:...``, ``data:URL``.
        kind: ``step_run``, ``artifact`` or ``data_source``.
        label: short text for diagrams.
        run_id: for step runs.
        step: for step runs.
        status: for step runs.
        digest: for artifacts.
        detail: anything else worth showing (serializer, size, version, reused by).
    """

    id: str
    kind: str
    label: str
    run_id: str | None = None
    step: str | None = None
    status: str | None = None
    digest: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "id": self.id,
            "kind": self.kind,
            "label": self.label,
            "run_id": self.run_id,
            "step": self.step,
            "status": self.status,
            "digest": self.digest,
            "detail": dict(self.detail),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class LineageEdge:
    """``source`` flows into ``target``; ``label`` names the variable (or URL).

    Attributes:
        source: the node the data comes from.
        target: the node it goes to.
        label: the variable (or URL, or a data source's version).
        producer: for an artifact read by a step run, the step run node whose output the
            value was (equal values share one artifact node, so the artifact alone cannot
            name it); None when unknown (records before schema v5) or not an input edge.
    """

    source: str
    target: str
    label: str
    producer: str | None = None

    def to_json(self) -> dict[str, str | None]:
        """Return a JSON-ready dict."""
        return {
            "source": self.source,
            "target": self.target,
            "label": self.label,
            "producer": self.producer,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class LineageGraph:
    """A lineage graph around ``root`` (a run or an artifact).

    Attributes:
        root: what was asked for (a run id, an artifact digest, or ``RUN/STEP/VARIABLE``).
        root_kind: ``run``, ``artifact`` or ``output`` (one step output, `output_lineage`).
        nodes: in a stable order (upstream first).
        edges: data flow, producer to consumer.
        limit: for an artifact, the most step runs shown on each side of any artifact (None:
            no limit). An artifact node with more says how many were left out in
            ``detail["more_producers"]`` or ``detail["more_readers"]``.
    """

    root: str
    root_kind: str
    nodes: tuple[LineageNode, ...]
    edges: tuple[LineageEdge, ...]
    limit: int | None = None

    @property
    def truncated(self) -> bool:
        """Whether the limit left step runs out of the graph."""
        return any(
            n.detail.get("more_producers") or n.detail.get("more_readers") for n in self.nodes
        )

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "root": self.root,
            "root_kind": self.root_kind,
            "limit": self.limit,
            "truncated": self.truncated,
            "nodes": [n.to_json() for n in self.nodes],
            "edges": [e.to_json() for e in self.edges],
        }


def _step_id(run_id: str, step: str) -> str:
    return f"step:{run_id}/{step}"


def _artifact_id(digest: str) -> str:
    return f"artifact:{digest}"


class _Builder:
    """Accumulates nodes and edges, keeping first-seen order and no duplicates."""

    def __init__(self) -> None:
        self.nodes: dict[str, LineageNode] = {}
        self.edges: dict[tuple[str, str, str], LineageEdge] = {}

    def add(self, node: LineageNode) -> str:
        known = self.nodes.get(node.id)
        if known is None or (not known.detail and node.detail):
            self.nodes[node.id] = node  # a later sighting may know the type; order is kept
        return node.id

    def edge(self, source: str, target: str, label: str, producer: str | None = None) -> None:
        self.edges.setdefault(
            (source, target, label),
            LineageEdge(source=source, target=target, label=label, producer=producer),
        )

    def step_node(self, record: LineageStep) -> str:
        detail: dict[str, Any] = {}
        if record.source_run:
            detail["source_run"] = record.source_run
        return self.add(
            LineageNode(
                id=_step_id(record.run_id, record.step),
                kind="step_run",
                label=f"{record.step} ({record.run_id})",
                run_id=record.run_id,
                step=record.step,
                status=record.status.value,
                detail=detail,
            )
        )

    def artifact_node(
        self, digest: str, *, serializer: str = "", type_name: str = "", size: int | None = None
    ) -> str:
        detail: dict[str, Any] = {}
        if serializer:
            detail["serializer"] = serializer
        if type_name:
            detail["type"] = type_name
        if size is not None:
            detail["size"] = size
        return self.add(
            LineageNode(
                id=_artifact_id(digest),
                kind="artifact",
                label=digest[7:19] if digest.startswith("sha256:") else digest[:12],
                digest=digest,
                detail=detail,
            )
        )

    def data_node(self, record: DataInputRecord) -> str:
        return self.add(
            LineageNode(
                id=f"data:{record.url}",
                kind="data_source",
                label=record.url,
                detail={"version": record.version},
            )
        )

    def add_step_run(
        self, record: LineageStep, producers: Mapping[str, tuple[str, str]] | None = None
    ) -> str:
        """Add a step run with its inputs, data inputs and outputs.

        Args:
            record: the step run.
            producers: input variable -> the step run ``(run_id, step)`` whose output it
                was, named on the input edge.
        """
        sid = self.step_node(record)
        for variable, ref in record.inputs.items():
            aid = self.artifact_node(
                ref.digest, serializer=ref.serializer, type_name=ref.type_name, size=ref.size
            )
            key = (producers or {}).get(variable)
            self.edge(aid, sid, variable, _step_id(*key) if key else None)
        for data in record.data_inputs:
            aid = self.artifact_node(data.digest, size=data.size)
            self.edge(self.data_node(data), aid, data.version)
            self.edge(aid, sid, data.url)
        for variable, ref in record.outputs.items():
            aid = self.artifact_node(
                ref.digest, serializer=ref.serializer, type_name=ref.type_name, size=ref.size
            )
            self.edge(sid, aid, variable)
        return sid


def run_lineage(metadata: MetadataStore, history: HistoryStore, run_id: str) -> LineageGraph:
    """Return the lineage graph of one run: its step runs, their inputs, outputs and data.

    Args:
        metadata: the metadata store.
        history: the history store beside it (`history_for`).
        run_id: the run id or a unique prefix of it.

    Raises:
        RunNotFoundError: for an unknown run.

    Example::

        graph = run_lineage(store, history_for(store), "wine-2026")
        [n.label for n in graph.nodes if n.kind == "step_run"]
    """
    run = metadata.get_run(run_id)
    data: dict[str, list[DataInputRecord]] = {}
    for item in history.data_inputs(run_id=run.run_id):
        data.setdefault(item.step, []).append(item)
    builder = _Builder()
    for record in metadata.step_runs(run.run_id):
        # Within a run, an input's producer is the named step's run in this run (a cache hit
        # shows as such, with the run it reused).
        producers = {v: (run.run_id, s) for v, s in record.input_sources.items()}
        builder.add_step_run(LineageStep.from_record(record, data.get(record.step, ())), producers)
    return LineageGraph(
        root=run.run_id,
        root_kind="run",
        nodes=tuple(builder.nodes.values()),
        edges=tuple(builder.edges.values()),
    )


DEFAULT_LIMIT = 50
"""Step runs shown on each side of an artifact unless asked otherwise: a readable graph."""


def artifact_lineage(
    metadata: MetadataStore,
    history: LineageIndex,
    digest: str,
    *,
    depth: int = 50,
    limit: int | None = DEFAULT_LIMIT,
) -> LineageGraph:
    """Return the upstream and downstream lineage of an artifact, across runs.

    Upstream: the step runs that computed it, their inputs, those inputs' producers, and so
    on; downstream: the step runs that read it (as a variable or through ``cellpipe.data``),
    their outputs, and so on. Cache hits are not followed; each artifact node counts them in
    ``detail["reused_by"]``. At most ``limit`` step runs are followed on each side of any
    artifact (the newest run ids); how many more there are is in ``detail["more_producers"]``
    and ``detail["more_readers"]``, so an artifact every run used still gives a small graph,
    in a few queries per level of depth.

    Args:
        metadata: the metadata store (unused by the queries: the history store reads the same
            database; kept so both lineage functions take the same arguments).
        history: the history store beside it (`history_for`).
        digest: a full ``sha256:<hex>`` digest (`resolve_digest` expands a prefix).
        depth: how many step runs away from the artifact to follow, each way.
        limit: the most step runs followed on each side of one artifact; None follows all.

    Raises:
        CellpipeError: when no event or data input has that digest.
        ValueError: for a negative limit.

    Example::

        graph = artifact_lineage(store, history_for(store), digest, limit=20)
        graph.truncated, [n.detail.get("more_readers") for n in graph.nodes]
    """
    del metadata
    _check_limit(limit)
    builder = _Builder()
    builder.artifact_node(digest)
    producers = _walk_up(builder, history, [digest], [], depth, limit)
    readers = _walk_down(builder, history, {digest: None}, depth, limit)
    root = [u for u in (producers.get(digest), readers.get(digest)) if u is not None]
    if not any(u.total or u.reused_by for u in root) and not history.find_digests(digest, limit=1):
        raise CellpipeError(
            f"no recorded step run produced or read the artifact {digest}",
            hint="give a full digest (sha256:...) as `cellpipe show RUN --json` prints it, "
            "or a run id",
        )
    # Cache hits of the artifacts whose producers were not asked for (one batched query).
    rest = [
        n.digest
        for n in builder.nodes.values()
        if n.kind == "artifact" and n.digest is not None and n.digest not in producers
    ]
    reuses = {d: u.reused_by for d, u in history.artifact_uses(rest, "output", limit=0).items()}
    reuses.update({d: u.reused_by for d, u in producers.items()})
    final = []
    for node in builder.nodes.values():
        if node.kind == "artifact" and node.digest is not None:
            extra: dict[str, Any] = {}
            if reuses.get(node.digest):
                extra["reused_by"] = reuses[node.digest]
            if node.digest in producers and producers[node.digest].more:
                extra["more_producers"] = producers[node.digest].more
            if node.digest in readers and readers[node.digest].more:
                extra["more_readers"] = readers[node.digest].more
            if extra:
                node = replace(node, detail={**node.detail, **extra})
        final.append(node)
    return LineageGraph(
        root=digest,
        root_kind="artifact",
        nodes=tuple(final),
        edges=tuple(builder.edges.values()),
        limit=limit,
    )


def output_lineage(
    metadata: MetadataStore,
    history: LineageIndex,
    run_id: str,
    step: str,
    variable: str,
    *,
    depth: int = 50,
    limit: int | None = DEFAULT_LIMIT,
) -> LineageGraph:
    """Return the lineage of one step output: the value ``variable`` of ``step`` in a run.

    Unlike an artifact's lineage, which lists every step run that produced equal bytes, this
    follows the step run that computed this output (the step itself, or the run it reused if
    it was a cache hit), what it read and who produced that, upstream; and the step runs that
    read this output (not an equal value of another output), downstream.

    Args:
        metadata: the metadata store.
        history: the history store beside it (`history_for`).
        run_id: the run id or a unique prefix of it.
        step: the step's name.
        variable: the output variable.
        depth: how many step runs away to follow, each way.
        limit: the most step runs followed on each side of one artifact; None follows all.

    Raises:
        RunNotFoundError: for an unknown run, or a step or output the run does not have.

    Example::

        graph = output_lineage(store, history_for(store), "wine-2026", "split", "x_train")
    """
    _check_limit(limit)
    run = metadata.get_run(run_id)
    found = history.lineage_steps([(run.run_id, step)])
    if not found:
        steps = [s.step for s in metadata.step_runs(run.run_id)]
        raise UnknownStepError(step, where=f"run {run.run_id}", steps=steps)
    (record,) = found
    ref = record.outputs.get(variable)
    if ref is None:
        outputs = ", ".join(sorted(record.outputs)) or "none"
        raise RunNotFoundError(
            f"step '{step}' of run {run.run_id} has no output '{variable}'",
            hint=f"its outputs: {outputs}",
        )
    producer = _executed_key((record.run_id, record.step), record.status, record.source_run)
    builder = _Builder()
    builder.artifact_node(
        ref.digest, serializer=ref.serializer, type_name=ref.type_name, size=ref.size
    )
    _walk_up(builder, history, [], [producer], depth, limit)
    readers = _walk_down(builder, history, {ref.digest: {producer}}, depth, limit)
    final = []
    for node in builder.nodes.values():
        if node.digest in readers and readers[node.digest].more:
            node = replace(node, detail={**node.detail, "more_readers": readers[node.digest].more})
        final.append(node)
    return LineageGraph(
        root=f"{run.run_id}/{step}/{variable}",
        root_kind="output",
        nodes=tuple(final),
        edges=tuple(builder.edges.values()),
        limit=limit,
    )


def _executed_key(
    key: tuple[str, str], status: StepStatus, source_run: str | None
) -> tuple[str, str]:
    """The step run that computed step run ``key``'s outputs: itself, or the one it reused."""
    if status is StepStatus.CACHED and source_run:
        return (source_run, key[1])
    return key


def _named_producers(
    history: LineageIndex, records: Sequence[LineageStep]
) -> dict[tuple[str, str], dict[str, tuple[str, str]]]:
    """For each step run: input variable -> the executed step run whose output it read.

    One batched query for the named steps' runs (to see through cache hits). Inputs whose
    producer is not recorded (before schema v5) are left out: callers fall back to every
    producer of the digest.
    """
    wanted = list(
        dict.fromkeys(
            (r.run_id, s) for r in records for v, s in r.input_sources.items() if v in r.inputs
        )
    )
    heads = history.step_heads(wanted) if wanted else {}
    named: dict[tuple[str, str], dict[str, tuple[str, str]]] = {}
    for record in records:
        found: dict[str, tuple[str, str]] = {}
        for variable, step in record.input_sources.items():
            key = (record.run_id, step)
            if variable in record.inputs and key in heads:
                found[variable] = _executed_key(key, *heads[key])
        named[(record.run_id, record.step)] = found
    return named


def _walk_up(
    builder: _Builder,
    history: LineageIndex,
    digests: Sequence[str],
    keys: Sequence[tuple[str, str]],
    depth: int,
    limit: int | None,
) -> dict[str, ArtifactUses]:
    """Follow producers level by level from ``digests`` (every producer) and ``keys``.

    An input whose producer is recorded leads to that step run only (equal values share a
    digest, so the digest's other producers did not make it); an input without one (records
    before schema v5) leads to every step run that produced its digest. Each level is a few
    batched queries. Returns the producers asked for, by artifact.
    """
    asked: dict[str, ArtifactUses] = {}
    frontier = list(digests)
    direct = list(keys)
    seen_digests = set(frontier)
    seen_steps: set[tuple[str, str]] = set()
    for _ in range(depth):
        wanted: list[tuple[str, str]] = []
        if frontier:
            uses = history.artifact_uses(frontier, "output", limit=limit)
            asked.update(uses)
            wanted.extend(key for d in frontier for key in uses[d].step_runs)
        wanted.extend(direct)
        wanted = [k for k in dict.fromkeys(wanted) if k not in seen_steps]
        seen_steps.update(wanted)
        records = history.lineage_steps(wanted)
        named = _named_producers(history, records)
        frontier, direct = [], []
        for record in records:
            producers = named[(record.run_id, record.step)]
            builder.add_step_run(record, producers)
            for variable, ref in record.inputs.items():
                if variable in producers:
                    direct.append(producers[variable])
                elif ref.digest not in seen_digests:
                    seen_digests.add(ref.digest)
                    frontier.append(ref.digest)
        if not frontier and not direct:
            break
    return asked


def _walk_down(
    builder: _Builder,
    history: LineageIndex,
    start: Mapping[str, set[tuple[str, str]] | None],
    depth: int,
    limit: int | None,
) -> dict[str, ArtifactUses]:
    """Follow readers level by level from the artifacts in ``start``.

    ``start`` maps a digest to the step runs whose output it is here (None: any, for an
    artifact asked by its digest). A reader whose input of that digest names another producer
    read an equal value of another step's output and is left out; readers without a recorded
    producer are kept. Returns the readers asked for, by artifact (counts are of every
    reader of the bytes).
    """
    asked: dict[str, ArtifactUses] = {}
    frontier: dict[str, set[tuple[str, str]] | None] = dict(start)
    seen_steps: set[tuple[str, str]] = set()
    for _ in range(depth):
        uses = history.artifact_uses(list(frontier), "input", limit=limit)
        asked.update(uses)
        wanted = [key for d in frontier for key in uses[d].step_runs if key not in seen_steps]
        wanted = list(dict.fromkeys(wanted))
        records = history.lineage_steps(wanted)
        named = _named_producers(history, records)
        following: dict[str, set[tuple[str, str]] | None] = {}
        for record in records:
            key = (record.run_id, record.step)
            producers = named[key]
            reads = [(v, ref.digest) for v, ref in record.inputs.items() if ref.digest in frontier]
            from_data = any(d.digest in frontier for d in record.data_inputs)
            if reads and not from_data:
                allowed = [
                    v
                    for v, d in reads
                    if frontier[d] is None
                    or v not in producers
                    or producers[v] in (frontier[d] or ())
                ]
                if not allowed:
                    continue  # it read an equal value that another step run produced
            seen_steps.add(key)
            builder.add_step_run(record, producers)
            for ref in record.outputs.values():
                known = following.setdefault(ref.digest, set())
                if known is not None:
                    known.add(key)
        frontier = following
        if not frontier:
            break
    return asked


def resolve_digest(history: LineageIndex, metadata: MetadataStore, text_: str) -> str:
    """Return a full ``sha256:`` digest for ``text_`` (full digest, ``sha256:`` prefix or hex).

    Only full digests are taken as they are; a short form must be at least 6 hex characters
    and is matched against the artifacts of the recorded runs (an index range, not a scan).

    Args:
        history: the history store (`history_for`).
        metadata: the metadata store (unused: kept for the callers' argument order).
        text_: what the user typed.

    Raises:
        CellpipeError: when it matches nothing or several artifacts.
    """
    del metadata
    value = text_.removeprefix("artifact:")
    if value.startswith("sha256:") and len(value) == 71:
        return value
    hex_part = value.removeprefix("sha256:")
    if len(hex_part) < 6 or any(c not in "0123456789abcdef" for c in hex_part):
        raise RunNotFoundError(
            f"'{text_}' is neither a run id nor an artifact digest",
            hint="`cellpipe runs` lists run ids; `cellpipe show RUN --json` prints digests",
        )
    found = list(history.find_digests("sha256:" + hex_part, limit=6))
    if len(found) == 1:
        return found[0]
    if not found:
        raise CellpipeError(
            f"no recorded artifact digest starts with '{hex_part}'",
            hint="`cellpipe show RUN --json` prints each output's digest",
        )
    raise CellpipeError(
        f"artifact prefix '{hex_part}' is ambiguous: it matches {', '.join(found[:5])}",
        hint="give more characters of the digest",
    )


# -- run filters ------------------------------------------------------------------------------

_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "!=": operator.ne,
    "==": operator.eq,
    ">": operator.gt,
    "<": operator.lt,
    "=": operator.eq,
}


def _parse_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _equal(actual: Any, wanted: Any, raw: str) -> bool:
    if isinstance(actual, bool) or isinstance(wanted, bool):
        return actual is wanted or str(actual) == raw
    if isinstance(actual, int | float) and isinstance(wanted, int | float):
        return float(actual) == float(wanted)
    return bool(actual == wanted) or str(actual) == raw


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFilter:
    """Which runs ``cellpipe runs --param/--metric`` keeps.

    Attributes:
        params: ``(name, value, text)``: the run's parameter must equal the value.
        metrics: ``(name, op, number)``: the run's metric must compare so.

    Example::

        keep = RunFilter.parse(params=["MAX_DEPTH=6"], metrics=["acc>0.9"])
        runs = [r for r in runs if keep.matches(r)]
    """

    params: tuple[tuple[str, Any, str], ...] = ()
    metrics: tuple[tuple[str, str, float], ...] = ()

    @classmethod
    def parse(cls, *, params: Iterable[str] = (), metrics: Iterable[str] = ()) -> RunFilter:
        """Parse ``NAME=VALUE`` and ``NAME<OP>NUMBER`` (``> >= < <= == != =``) texts.

        Raises:
            CellpipeError: for text of another form (exit 2, usage).
        """
        parsed_params = []
        for item in params:
            name, sep, raw = item.partition("=")
            if not sep or not name.strip():
                raise _usage(
                    f"--param '{item}' is not NAME=VALUE", "cellpipe runs --param MAX_DEPTH=6"
                )
            parsed_params.append((name.strip(), _parse_value(raw.strip()), raw.strip()))
        parsed_metrics = []
        for item in metrics:
            parsed_metrics.append(_parse_metric(item))
        return cls(params=tuple(parsed_params), metrics=tuple(parsed_metrics))

    def __bool__(self) -> bool:
        return bool(self.params or self.metrics)

    def matches(self, run: RunRecord) -> bool:
        """Return whether ``run`` passes every condition (a missing name fails)."""
        for name, wanted, raw in self.params:
            if name not in run.parameters or not _equal(run.parameters[name], wanted, raw):
                return False
        for name, op, number in self.metrics:
            value = run.metrics.get(name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                return False
            if not _OPERATORS[op](float(value), number):
                return False
        return True


def _parse_metric(item: str) -> tuple[str, str, float]:
    for op in _OPERATORS:  # two-character operators are listed first
        name, sep, raw = item.partition(op)
        if sep and name.strip():
            try:
                return name.strip(), op, float(raw.strip())
            except ValueError:
                break
    raise _usage(
        f"--metric '{item}' is not NAME<OP>NUMBER (OP one of > >= < <= == !=)",
        "cellpipe runs --metric 'accuracy>0.9'",
    )


class _UsageError(CellpipeError):
    headline = "invalid filter"
    exit_code = 2


def _usage(message: str, example: str) -> CellpipeError:
    return _UsageError(message, hint=f"for example: {example}")
