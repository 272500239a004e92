"""Records: the immutable facts the metadata store keeps and returns.

Owns: `RunRecord`, `StepRunRecord`, `ArtifactRef`, the status enums, and the
`MetadataStore` protocol that every backend (memory, SQLite, PostgreSQL) implements.

Invariants: records never hold a live connection; times are timezone-aware UTC datetimes;
mappings are read-only; JSON values only (never pickled objects).

Must not depend on: notebooks, the pipeline model, the runner.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Protocol

from cellpipe.storage.protocols import ArtifactDigest


class RunStatus(StrEnum):
    """Where a run is."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"  # the runner died (kill -9, power loss) while it was running


class StepStatus(StrEnum):
    """Where a step run is."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    CACHED = "cached"
    FAILED = "failed"
    SKIPPED = "skipped"  # not run because an upstream step failed or it was not selected
    CANCELLED = "cancelled"


def _ro(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


@dataclass(frozen=True, slots=True, kw_only=True)
class ArtifactRef:
    """A stored value: its bytes' digest and how to read them back.

    Attributes:
        digest: content address of the serialized bytes.
        serializer: the serializer name (``json``, ``npy``, ``parquet``, ...).
        serializer_version: the serializer's format version.
        size: size in bytes.
        type_name: the Python type it was, ``module.qualname``.
    """

    digest: ArtifactDigest
    serializer: str
    serializer_version: int
    size: int
    type_name: str

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "digest": self.digest,
            "serializer": self.serializer,
            "serializer_version": self.serializer_version,
            "size": self.size,
            "type": self.type_name,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ArtifactRef:
        """Build from the dict `to_json` returns."""
        return cls(
            digest=ArtifactDigest(data["digest"]),
            serializer=data["serializer"],
            serializer_version=int(data["serializer_version"]),
            size=int(data["size"]),
            type_name=data["type"],
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRecord:
    """One run of a pipeline.

    Attributes:
        run_id: unique id, ``<pipeline>-<YYYYmmdd-HHMMSS>-<6 hex>``.
        pipeline: the pipeline name.
        notebook: the notebook path (resolved, absolute).
        notebook_digest: digest of the notebook file's bytes at run start.
        status: where the run is.
        started_at: when it started (UTC).
        finished_at: when it ended (UTC), None while running.
        parameters: the parameter values used (defaults with overrides applied).
        metrics: metric values logged by the run.
        error: a one-line summary when it failed.
        pid: the runner's process id (to detect an interrupted run).
    """

    run_id: str
    pipeline: str
    notebook: str
    notebook_digest: str
    status: RunStatus
    started_at: datetime
    finished_at: datetime | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    pid: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "parameters", _ro(self.parameters))
        object.__setattr__(self, "metrics", _ro(self.metrics))


@dataclass(frozen=True, slots=True, kw_only=True)
class StepRunRecord:
    """One step's execution (or cache hit) within a run.

    Attributes:
        run_id: the run it belongs to.
        step: the step name.
        status: where it is.
        cache_key: SHA-256 over the labelled key fields; None when not computed.
        cache_fields: the labelled key fields (label -> fingerprint), so ``why`` can say
            which field changed between two runs.
        cache_reason: the cache decision in words (``hit: ...`` or ``miss: ...``).
        source_run: for a cache hit, the run whose outputs were reused.
        started_at: when it started (UTC).
        finished_at: when it ended (UTC).
        inputs: input variable -> stored value.
        input_sources: input variable -> the step of the same run whose output it is (its
            producer: that step run, or the step run it reused when that was a cache hit).
            Equal values share a digest, so the digest alone cannot name the producer.
            Missing for records written before schema v5.
        outputs: output variable -> stored value.
        metrics: metrics it logged.
        files_read: workspace files it opened for reading: relative path -> content digest.
        log_digest: artifact with its captured stdout and stderr.
        notebook_digest: artifact with its executed notebook (.ipynb with outputs).
        error: the error message (with the notebook cell and line) when it failed.
    """

    run_id: str
    step: str
    status: StepStatus
    cache_key: str | None = None
    cache_fields: Mapping[str, str] = field(default_factory=dict)
    cache_reason: str = ""
    source_run: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    inputs: Mapping[str, ArtifactRef] = field(default_factory=dict)
    input_sources: Mapping[str, str] = field(default_factory=dict)
    outputs: Mapping[str, ArtifactRef] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    files_read: Mapping[str, str] = field(default_factory=dict)
    log_digest: ArtifactDigest | None = None
    notebook_digest: ArtifactDigest | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        for name in (
            "cache_fields",
            "inputs",
            "input_sources",
            "outputs",
            "metrics",
            "files_read",
        ):
            object.__setattr__(self, name, _ro(getattr(self, name)))


class MetadataStore(Protocol):
    """Run records: what ran, with what, and what it produced."""

    def start_run(self, run: RunRecord) -> None:
        """Insert a new run (status RUNNING)."""
        ...

    def finish_run(
        self,
        run_id: str,
        *,
        status: RunStatus,
        finished_at: datetime,
        metrics: Mapping[str, Any],
        error: str | None = None,
    ) -> None:
        """Set a run's final status, end time and metrics."""
        ...

    def record_step_run(self, record: StepRunRecord) -> None:
        """Insert or replace the step run ``(record.run_id, record.step)``, atomically."""
        ...

    def find_cached(self, step: str, cache_key: str) -> StepRunRecord | None:
        """Return the newest SUCCEEDED step run of ``step`` with ``cache_key``, if any."""
        ...

    def get_run(self, run_id: str) -> RunRecord:
        """Return the run with that id, unique prefix or ``latest~N``; raises RunNotFoundError."""
        ...

    def list_runs(
        self,
        *,
        notebook: str | None = None,
        status: RunStatus | None = None,
        limit: int | None = None,
    ) -> Sequence[RunRecord]:
        """Return runs, newest first, optionally filtered."""
        ...

    def step_runs(self, run_id: str) -> Sequence[StepRunRecord]:
        """Return the run's step runs in the order they started."""
        ...

    def previous_step_run(self, step: str, notebook: str, before_run: str) -> StepRunRecord | None:
        """Return the newest step run of ``step`` in an earlier run of the same notebook.

        ``cellpipe why`` compares its cache fields with the current ones to name what changed.
        """
        ...
