"""Lineage and run history queries: snapshots, external data inputs, artifact graphs, filters.

Owns: the records added by schema v2 (`SnapshotRecord`, `DataInputRecord`), the
`HistoryStore` protocol with its SQL and memory implementations (`SqlHistoryStore`,
`MemoryHistoryStore`, chosen by `history_for`), the lineage graph of a run or an artifact
(`run_lineage`, `artifact_lineage`: ML-Metadata's executions, artifacts and input/output
events, across runs) and the ``cellpipe runs`` filters (`RunFilter`).

Invariants:
    * read-mostly: the only writes are snapshot and data-input rows, each one transaction
      through the metadata store's own transaction discipline (``BEGIN IMMEDIATE`` on SQLite);
    * lineage follows *executed* step runs: a cache hit re-records its source run's outputs,
      so the producer of an artifact is the step run that actually computed it (cache hits
      are listed as reuses, never as producers), which keeps a query bounded by the number of
      distinct computations rather than the number of runs;
    * graphs are plain values (frozen dataclasses); rendering them is the CLI's job.

Must not depend on: notebooks, the pipeline model, the runner.
"""

from __future__ import annotations

import json
import operator
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from cellpipe.errors import CellpipeError, RunNotFoundError
from cellpipe.storage.metadata import MemoryMetadataStore, SqlMetadataStore
from cellpipe.storage.protocols import ArtifactDigest
from cellpipe.storage.records import MetadataStore, RunRecord, StepRunRecord, StepStatus

__all__ = [
    "ArtifactEvent",
    "DataInputRecord",
    "HistoryStore",
    "LineageEdge",
    "LineageGraph",
    "LineageNode",
    "MemoryHistoryStore",
    "RunFilter",
    "SnapshotKind",
    "SnapshotRecord",
    "SqlHistoryStore",
    "artifact_lineage",
    "history_for",
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


class HistoryStore(Protocol):
    """Snapshots, data inputs and artifact events: what lineage queries read."""

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
        """Return every input/output event of ``digest``, across runs."""
        ...


# -- SQL ----------------------------------------------------------------------------------


class SqlHistoryStore:
    """`HistoryStore` on the metadata store's database (schema v2 tables).

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
        return [
            DataInputRecord(
                run_id=r[0],
                step=r[1],
                url=r[2],
                version=r[3],
                digest=ArtifactDigest(r[4]),
                size=int(r[5]),
                fetched_at=datetime.fromisoformat(r[6]),
            )
            for r in rows
        ]

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


# -- memory -------------------------------------------------------------------------------


class MemoryHistoryStore:
    """`HistoryStore` in lists: the fake for tests, reading events from a memory store.

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


def history_for(metadata: MetadataStore) -> HistoryStore | None:
    """Return the history store that lives beside ``metadata``, or None for unknown stores."""
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
    """``source`` flows into ``target``; ``label`` names the variable (or URL)."""

    source: str
    target: str
    label: str

    def to_json(self) -> dict[str, str]:
        """Return a JSON-ready dict."""
        return {"source": self.source, "target": self.target, "label": self.label}


@dataclass(frozen=True, slots=True, kw_only=True)
class LineageGraph:
    """A lineage graph around ``root`` (a run or an artifact).

    Attributes:
        root: what was asked for (a run id or an artifact digest).
        root_kind: ``run`` or ``artifact``.
        nodes: in a stable order (upstream first).
        edges: data flow, producer to consumer.
    """

    root: str
    root_kind: str
    nodes: tuple[LineageNode, ...]
    edges: tuple[LineageEdge, ...]

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "root": self.root,
            "root_kind": self.root_kind,
            "nodes": [n.to_json() for n in self.nodes],
            "edges": [e.to_json() for e in self.edges],
        }


def _step_id(run_id: str, step: str) -> str:
    return f"step:{run_id}/{step}"


def _artifact_id(digest: str) -> str:
    return f"artifact:{digest}"


class _Builder:
    """Accumulates nodes and edges, keeping first-seen order and no duplicates."""

    def __init__(self, metadata: MetadataStore, history: HistoryStore) -> None:
        self.metadata = metadata
        self.history = history
        self.nodes: dict[str, LineageNode] = {}
        self.edges: dict[tuple[str, str, str], LineageEdge] = {}
        self._runs: dict[str, dict[str, StepRunRecord]] = {}
        self._data: dict[str, list[DataInputRecord]] = {}

    def steps_of(self, run_id: str) -> dict[str, StepRunRecord]:
        if run_id not in self._runs:
            self._runs[run_id] = {s.step: s for s in self.metadata.step_runs(run_id)}
        return self._runs[run_id]

    def data_of(self, run_id: str) -> list[DataInputRecord]:
        if run_id not in self._data:
            self._data[run_id] = list(self.history.data_inputs(run_id=run_id))
        return self._data[run_id]

    def add(self, node: LineageNode) -> str:
        known = self.nodes.get(node.id)
        if known is None or (not known.detail and node.detail):
            self.nodes[node.id] = node  # a later sighting may know the type; order is kept
        return node.id

    def edge(self, source: str, target: str, label: str) -> None:
        self.edges.setdefault(
            (source, target, label), LineageEdge(source=source, target=target, label=label)
        )

    def step_node(self, record: StepRunRecord) -> str:
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

    def add_step_run(self, record: StepRunRecord) -> str:
        """Add a step run with its inputs, data inputs and outputs."""
        sid = self.step_node(record)
        for variable, ref in record.inputs.items():
            aid = self.artifact_node(
                ref.digest, serializer=ref.serializer, type_name=ref.type_name, size=ref.size
            )
            self.edge(aid, sid, variable)
        for data in self.data_of(record.run_id):
            if data.step == record.step:
                aid = self.artifact_node(data.digest, size=data.size)
                self.edge(self.data_node(data), aid, data.version)
                self.edge(aid, sid, data.url)
        for variable, ref in record.outputs.items():
            aid = self.artifact_node(
                ref.digest, serializer=ref.serializer, type_name=ref.type_name, size=ref.size
            )
            self.edge(sid, aid, variable)
        return sid

    def graph(self, root: str, root_kind: str) -> LineageGraph:
        return LineageGraph(
            root=root,
            root_kind=root_kind,
            nodes=tuple(self.nodes.values()),
            edges=tuple(self.edges.values()),
        )


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
    builder = _Builder(metadata, history)
    for record in builder.steps_of(run.run_id).values():
        builder.add_step_run(record)
    return builder.graph(run.run_id, "run")


_EXECUTED = (StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.RUNNING, StepStatus.CANCELLED)


def artifact_lineage(
    metadata: MetadataStore, history: HistoryStore, digest: str, *, depth: int = 50
) -> LineageGraph:
    """Return the upstream and downstream lineage of an artifact, across runs.

    Upstream: the step run that computed it, that step run's inputs, their producers, and so
    on; downstream: the step runs that read it, their outputs, and so on. Cache hits are not
    followed; each artifact node counts them in ``detail["reused_by"]``.

    Args:
        metadata: the metadata store.
        history: the history store beside it.
        digest: ``sha256:<hex>``, or a unique prefix of the hex part (at least 6 characters).
        depth: how many step runs away from the artifact to follow, each way.

    Raises:
        CellpipeError: when no event or data input has that digest.
    """
    builder = _Builder(metadata, history)
    events_of: dict[str, Sequence[ArtifactEvent]] = {}

    def events(d: str) -> Sequence[ArtifactEvent]:
        if d not in events_of:
            events_of[d] = history.artifact_events(d)
        return events_of[d]

    root_events = events(digest)
    root_data = history.data_inputs(digest=digest)
    if not root_events and not root_data:
        raise CellpipeError(
            f"no recorded step run produced or read the artifact {digest}",
            hint="give a full digest (sha256:...) as `cellpipe show RUN --json` prints it, "
            "or a run id",
        )
    builder.artifact_node(digest)
    _walk(builder, digest, depth, events, upstream=True)
    _walk(builder, digest, depth, events, upstream=False)
    # Count cache hits that reused each artifact, without adding them to the graph.
    final = []
    for node in builder.nodes.values():
        if node.kind == "artifact" and node.digest is not None:
            reused = sorted(
                {
                    e.run_id
                    for e in events(node.digest)
                    if e.kind == "output" and e.status is StepStatus.CACHED
                }
            )
            if reused:
                node = LineageNode(
                    id=node.id,
                    kind=node.kind,
                    label=node.label,
                    digest=node.digest,
                    detail={**node.detail, "reused_by": len(reused)},
                )
        final.append(node)
    return LineageGraph(
        root=digest, root_kind="artifact", nodes=tuple(final), edges=tuple(builder.edges.values())
    )


def _walk(
    builder: _Builder,
    digest: str,
    depth: int,
    events: Callable[[str], Sequence[ArtifactEvent]],
    *,
    upstream: bool,
) -> None:
    frontier = [digest]
    seen_digests = {digest}
    seen_steps: set[tuple[str, str]] = set()
    for _ in range(depth):
        next_frontier: list[str] = []
        for d in frontier:
            kind = "output" if upstream else "input"
            for event in events(d):
                if event.kind != kind or event.status not in _EXECUTED:
                    continue
                key = (event.run_id, event.step)
                if key in seen_steps:
                    continue
                seen_steps.add(key)
                record = builder.steps_of(event.run_id).get(event.step)
                if record is None:
                    continue
                builder.add_step_run(record)
                refs = record.inputs if upstream else record.outputs
                next_frontier.extend(
                    r.digest for r in refs.values() if r.digest not in seen_digests
                )
                seen_digests.update(r.digest for r in refs.values())
        if not next_frontier:
            return
        frontier = next_frontier


def resolve_digest(history: HistoryStore, metadata: MetadataStore, text_: str) -> str:
    """Return a full ``sha256:`` digest for ``text_`` (full digest, ``sha256:`` prefix or hex).

    Only full digests are looked up exactly; a short form must be at least 6 hex characters
    and is matched against the artifacts of the recorded runs.

    Raises:
        CellpipeError: when it matches nothing or several artifacts.
    """
    value = text_.removeprefix("artifact:")
    if value.startswith("sha256:") and len(value) == 71:
        return value
    hex_part = value.removeprefix("sha256:")
    if len(hex_part) < 6 or any(c not in "0123456789abcdef" for c in hex_part):
        raise RunNotFoundError(
            f"'{text_}' is neither a run id nor an artifact digest",
            hint="`cellpipe runs` lists run ids; `cellpipe show RUN --json` prints digests",
        )
    found: set[str] = set()
    for run in metadata.list_runs():
        for s in metadata.step_runs(run.run_id):
            for ref in (*s.inputs.values(), *s.outputs.values()):
                if ref.digest[7:].startswith(hex_part):
                    found.add(ref.digest)
        for data in history.data_inputs(run_id=run.run_id):
            if data.digest[7:].startswith(hex_part):
                found.add(data.digest)
    if len(found) == 1:
        return found.pop()
    if not found:
        raise CellpipeError(
            f"no recorded artifact digest starts with '{hex_part}'",
            hint="`cellpipe show RUN --json` prints each output's digest",
        )
    raise CellpipeError(
        f"artifact prefix '{hex_part}' is ambiguous: it matches {', '.join(sorted(found)[:5])}",
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
