"""One run of a pipeline: cache decisions, records, and the executed notebook of the run.

Owns: `run_pipeline`, which ties the pieces together: it resolves the selection (``--from``,
``--only``), decides per ready step whether its outputs are already known (the cache), hands
the rest to the scheduler and executor, records every step run in the metadata store (one
transaction per step, written while the next steps run: a killed runner loses at most the
steps that ended last, which a resumed run runs again), and assembles the run's metrics
and executed notebook.

Invariants:
    * a step's cache key covers its normalised code, the imports and functions cells, the
      parameters it reads, its input digests and the serializer versions
      (`cellpipe.pipeline.fingerprint`); the files it read last time must be unchanged too;
    * a hit is only taken when every output artifact is still in the store, and (unless
      ``offline``) when every source its step read through ``cellpipe.data`` still has the
      version it had then (one ``info()`` per source and run: a stat, a HEAD; no download);
      a source that cannot be reached keeps the hit, and the reason says so;
    * the artifact store is any `ArtifactStore` that step processes can open again from its
      `ArtifactLocation` (a local folder or ``s3://``); a local store is checked with a stat
      per output, a remote one with one existence request per output (nothing downloaded);
    * workspace snapshots never open the metadata database when it is a SQLite file inside
      the workspace (nor its journals): closing any descriptor of that file drops this
      process's SQLite locks on it;
    * every selected step gets exactly one record with a final status, and the run record
      ends succeeded, failed or cancelled (or is found interrupted if this process dies);
    * the cache reason says, in words, why a step ran (``miss: parameter LR changed 0.1 →
      0.2``) or did not (``hit: same code, parameters and inputs as run X``).

Must not depend on: notebooks, the KFP compiler, the CLI or the UI.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cellpipe.errors import (
    ArtifactCorruptedError,
    ArtifactNotFoundError,
    CellpipeError,
    StorageError,
)
from cellpipe.pipeline.fingerprint import cache_key, explain_difference, step_cache_fields
from cellpipe.pipeline.model import JsonValue, Pipeline, Step
from cellpipe.runner._files import FileConflict, FileGuard, files_written_of_notebook
from cellpipe.runner._guard import guarded_inputs
from cellpipe.runner._history import RunHistory
from cellpipe.runner.events import (
    Event,
    EventSink,
    StepCached,
    StepCancelled,
    StepFailed,
    StepSkipped,
    StepStarted,
    StepSucceeded,
    to_sink,
)
from cellpipe.runner.jobs import (
    EXTRA_VALUES_ENV,
    EXTRA_VALUES_MAX_BYTES,
    EXTRA_VALUES_MAX_ENV,
    EXTRAS_NAME,
    ExtraValues,
    StepJob,
    StepResult,
    pipeline_needs_shell,
)
from cellpipe.runner.scheduler import run_steps
from cellpipe.storage.artifacts import LocalArtifactStore, digest_file
from cellpipe.storage.backends import ArtifactLocation, sqlite_database_file
from cellpipe.storage.protocols import ArtifactDigest, ArtifactStore
from cellpipe.storage.records import (
    ArtifactRef,
    MetadataStore,
    RunRecord,
    RunStatus,
    StepRunRecord,
    StepStatus,
)
from cellpipe.storage.serializers import serializer_versions

if TYPE_CHECKING:
    from cellpipe.runner._bare import BareServer
    from cellpipe.runner.execute import Executor
    from cellpipe.storage.lineage import DataInputRecord

__all__ = ["RunCancelled", "RunOptions", "RunReport", "run_pipeline"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOptions:
    """How to run.

    Attributes:
        jobs: how many steps may run at once (default: all cores).
        use_cache: False re-runs every step (``--no-cache``).
        from_step: re-run this step and everything downstream of it; reuse the rest.
        only: run just these steps; their upstream outputs must be in the cache.
        executor: ``fork`` (default on Linux), ``spawn`` or ``inprocess``.
        offline: trust a cache hit without asking the ``cellpipe.data`` sources its step
            read whether they changed, and let steps that run use the stored copies
            (``--offline``).
    """

    jobs: int | None = None
    use_cache: bool = True
    from_step: str | None = None
    only: tuple[str, ...] = ()
    executor: str | None = None
    offline: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class RunReport:
    """What a finished run produced.

    Attributes:
        run: the run's record (final status, parameters, metrics).
        steps: step name -> its record, in topological order.
        run_dir: the folder with the run's logs and executed notebooks.
        notebook: the executed notebook of the whole run.
        failures: the failed steps' results (traceback, log path).
        secrets_left_out: workspace files and folders (``name/``) the snapshots left out by
            the secret rules (`cellpipe.storage.snapshots.SECRET_IGNORED`).
    """

    run: RunRecord
    steps: Mapping[str, StepRunRecord]
    run_dir: Path
    notebook: Path | None
    failures: tuple[StepResult, ...] = field(default_factory=tuple)
    secrets_left_out: tuple[str, ...] = ()


def new_run_id(pipeline: Pipeline, now: datetime) -> str:
    """Return ``<pipeline>-<YYYYmmdd-HHMMSS>-<6 hex>``: sortable, readable, unique.

    The run id names the run's folder: the pipeline part (the notebook's file name) is cut to
    100 characters, so a file name near the 255-byte limit still gives a valid folder name.
    """
    return f"{pipeline.name[:100]}-{now:%Y%m%d-%H%M%S}-{os.urandom(3).hex()}"


# A file modified within this many nanoseconds of being hashed may change again without its
# mtime moving (coarse file system clocks): its digest is not remembered (git's "racy" rule).
_RACY_NS = 2_000_000_000


class _FileDigests:
    """Content digests of workspace files, re-hashed when size, mtime or ctime changed."""

    def __init__(self, root: Path, cache_file: Path) -> None:
        self.root = root
        self.cache_file = cache_file
        self.entries: dict[str, list[Any]] = {}
        self.dirty = False
        try:
            self.entries = json.loads(cache_file.read_text())
        except (OSError, ValueError):
            self.entries = {}

    def digest(self, relative: str) -> str:
        path = self.root / relative
        try:
            stat = path.stat()
        except OSError:
            return "missing"
        entry = self.entries.get(relative)
        # The ctime catches a same-size rewrite whose mtime was put back (os.utime).
        key = [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]
        if entry and len(entry) == 4 and entry[:3] == key:
            return str(entry[3])
        value = digest_file(path)
        if time.time_ns() - stat.st_mtime_ns > _RACY_NS:
            self.entries[relative] = [*key, value]
            self.dirty = True
        return value

    def save(self) -> None:
        if not self.dirty:
            return
        tmp = self.cache_file.with_suffix(f".{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(self.entries))
            tmp.replace(self.cache_file)
        except OSError:  # only an optimisation: the files are hashed again next time
            logger.debug("could not save %s", self.cache_file, exc_info=True)
        self.dirty = False


class _Run:
    """The mutable state of one run, private to this module."""

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        params: Mapping[str, JsonValue],
        options: RunOptions,
        artifacts: ArtifactStore,
        metadata: MetadataStore,
        state_dir: Path,
        run_id: str,
        sink: EventSink,
        database: Path | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.params = dict(params)
        self.options = options
        self.artifacts = artifacts
        self.metadata = metadata
        self.run_id = run_id
        self.sink = sink
        self.notebook = str(Path(pipeline.path).resolve())
        self.workdir = Path(self.notebook).parent
        self.run_dir = state_dir / "runs" / run_id
        self.files = _FileDigests(self.workdir, state_dir / "file-digests.json")
        self.history = RunHistory(
            self.workdir,
            artifacts,
            metadata,
            run_id=run_id,
            state_dir=state_dir,
            private_files=[database] if database is not None else [],
        )
        self._location: ArtifactLocation | None = None
        self._shell: bool | None = None
        self.versions = serializer_versions()
        self.forced = self._forced()
        self.cache_only = self._cache_only()
        self.fields: dict[str, dict[str, str]] = {}
        self.reasons: dict[str, str] = {}
        self.started: dict[str, datetime] = {}
        self.records: dict[str, StepRunRecord] = {}
        self.results: dict[str, StepResult] = {}
        # Ended steps whose records are not written yet: (result, inputs, files read, end).
        self._unrecorded: list[tuple[StepResult, dict[str, Any], dict[str, str], datetime]] = []
        self.storage_failure: StorageError | None = None
        """The first record that could not be written (disk full, read-only): the run goes on,
        so every step still ends with its own outcome, and the error is raised at the end."""
        self.guarded = guarded_inputs(pipeline)
        self.file_guard = FileGuard(pipeline, self._cached_files_written)
        self.conflict: FileConflict | None = None
        # cellpipe.data sources: recorded reads per executed run, current versions per URL
        # (asked once per run, so every step and both lookups of a step agree).
        self._data_reads: dict[str, list[DataInputRecord]] = {}
        self._source_versions: dict[str, str | CellpipeError | None] = {}

    # -- selection -------------------------------------------------------------------------

    def _forced(self) -> set[str]:
        if self.options.only:
            return set(self.options.only)
        if self.options.from_step:
            return {self.options.from_step, *self.pipeline.downstream(self.options.from_step)}
        return set()

    def _cache_only(self) -> set[str]:
        # With --only, the upstream steps may not run: their outputs must come from the cache.
        if not self.options.only:
            return set()
        upstream: set[str] = set()
        for name in self.options.only:
            upstream.update(self.pipeline.upstream_closure(name))
        return upstream - set(self.options.only)

    def selected(self) -> list[str]:
        if not self.options.only:
            return list(self.pipeline.step_names)
        keep = self.cache_only | set(self.options.only)
        return [n for n in self.pipeline.step_names if n in keep]

    # -- the scheduler's prepare callback --------------------------------------------------

    def prepare(self, step: Step, upstream: Mapping[str, StepResult]) -> StepJob | StepResult:
        self.raise_conflict()  # nothing more starts once two steps raced on a file
        inputs = {}
        for ref in step.inputs:
            inputs[ref.name] = upstream[ref.producer].outputs[ref.name]
        fields = step_cache_fields(
            step,
            imports=self.pipeline.imports,
            functions=self.pipeline.functions,
            parameters=self.params,
            input_digests={name: ref.digest for name, ref in inputs.items()},
            serializer_versions=self.versions,
        )
        self.fields[step.name] = fields
        key = cache_key(fields)
        hit, reason = self._lookup(step, key, fields)
        now = datetime.now(UTC)
        if hit is not None:
            record = StepRunRecord(
                run_id=self.run_id,
                step=step.name,
                status=StepStatus.CACHED,
                cache_key=key,
                cache_fields=fields,
                cache_reason=reason,
                source_run=hit.source_run or hit.run_id,
                started_at=now,
                finished_at=now,
                inputs=inputs,
                input_sources=_sources(step),
                outputs=hit.outputs,
                metrics=hit.metrics,
                files_read=hit.files_read,
                log_digest=hit.log_digest,
                notebook_digest=hit.notebook_digest,
            )
            self.records[step.name] = record
            self.metadata.record_step_run(record)
            return StepResult(
                step=step.name,
                status=StepStatus.CACHED,
                outputs=hit.outputs,
                metrics=_logged(hit.metrics),
                pipeline_metrics={k: v for k, v in hit.metrics.items() if ":" not in k},
                error=reason,
                files_read=tuple(hit.files_read),
            )
        if step.name in self.cache_only:
            only = ", ".join(self.options.only)
            raise CellpipeError(
                f"--only {only} needs the outputs of step '{step.name}', but they are not in "
                f"the cache ({reason.removeprefix('miss: ')})",
                hint=f"run the pipeline without --only first, or use --from {step.name} to "
                f"re-run '{step.name}' and the steps after it",
            )
        self.reasons[step.name] = reason
        self.started[step.name] = now
        scratch = self.run_dir / "steps" / step.name
        scratch.mkdir(parents=True, exist_ok=True)
        try:
            self.metadata.record_step_run(
                StepRunRecord(
                    run_id=self.run_id,
                    step=step.name,
                    status=StepStatus.RUNNING,
                    cache_key=key,
                    cache_fields=fields,
                    cache_reason=reason,
                    started_at=now,
                    inputs=inputs,
                    input_sources=_sources(step),
                )
            )
        except StorageError as exc:  # the step still runs: its outcome is what matters
            self._storage_failed(exc)
        self.history.before(step.name, inputs)
        return self._job(step, inputs)

    def _job(self, step: Step, inputs: Mapping[str, ArtifactRef]) -> StepJob:
        if self._location is None:
            self._location = ArtifactLocation.of(self.artifacts)
        location = self._location
        return StepJob(
            step=step.name,
            cells=step.code,
            preamble=(*self.pipeline.imports, *self.pipeline.functions),
            notebook=self.notebook,
            workdir=str(self.workdir),
            params=self.params,
            inputs=inputs,
            outputs=step.outputs,
            metrics=tuple(m.name for m in self.pipeline.metrics if m.producer == step.name),
            artifact_root=location.url,
            artifact_cache=location.cache_dir,
            storage_options=location.storage_options,
            scratch_dir=str(self.run_dir / "steps" / step.name),
            run_id=self.run_id,
            shell=self.shell,
            guarded=self.guarded.get(step.name, ()),
            definitions=self._definitions(step),
            keep_processes=step.settings.keep_processes,
            offline=self.options.offline,
            extras=step.binds if step.settings.all_outputs and _extras_wanted() else (),
            extras_max_bytes=_extras_max_bytes(),
        )

    def _definitions(self, step: Step) -> tuple[ArtifactRef, ...]:
        """The stored classes of the step's ancestors, oldest first (see `StepJob`)."""
        found = []
        for name in self.pipeline.upstream_closure(step.name):
            result = self.results.get(name)
            ref = None if result is None else result.definitions
            if ref is None and result is not None and result.status is StepStatus.CACHED:
                ref = self._cached_definitions(name)
            if ref is not None:
                found.append(ref)
        return tuple(found)

    def _cached_definitions(self, step: str) -> ArtifactRef | None:
        record = self.records.get(step)
        if record is None or record.notebook_digest is None:
            return None
        try:
            path = self.artifacts.local_path(record.notebook_digest)
            document = json.loads(path.read_text(encoding="utf-8"))
            found = document.get("metadata", {}).get("cellpipe", {}).get("definitions")
            return ArtifactRef.from_json(found) if isinstance(found, dict) else None
        except (OSError, ValueError, KeyError, TypeError, CellpipeError):
            return None  # an older step run: its classes are not known

    @property
    def shell(self) -> bool:
        """Whether step processes should build their IPython shell up front."""
        if self._shell is None:
            self._shell = pipeline_needs_shell(self.pipeline)
        return self._shell

    def first_job(self) -> StepJob | None:
        """Return a job for a selected step without inputs that will run (a cache miss).

        Only its setup matters (`StepJob.setup_key`): the executor warms up for it while the
        runner records the run's start. None when every such step is a cache hit, so a fully
        cached run starts no step process.
        """
        for name in self.selected():
            step = self.pipeline.step(name)
            if step.inputs or name in self.cache_only:
                continue
            fields = step_cache_fields(
                step,
                imports=self.pipeline.imports,
                functions=self.pipeline.functions,
                parameters=self.params,
                input_digests={},
                serializer_versions=self.versions,
            )
            hit, _ = self._lookup(step, cache_key(fields), fields)
            if hit is None:
                return self._job(step, {})
        return None

    def _lookup(
        self, step: Step, key: str, fields: Mapping[str, str]
    ) -> tuple[StepRunRecord | None, str]:
        if step.name in self.forced:
            flag = "--only" if self.options.only else "--from"
            return None, f"miss: selected to re-run with {flag}"
        if not self.options.use_cache:
            return None, "miss: caching switched off (--no-cache)"
        if step.settings.cache is False:
            return None, "miss: caching is off for this step (cache:false tag)"
        found = self.metadata.find_cached(step.name, key)
        if found is not None:
            changed = [p for p, d in found.files_read.items() if self.files.digest(p) != d]
            if changed:
                noun = "file" if len(changed) == 1 else "files"
                return None, f"miss: {noun} " + ", ".join(sorted(changed)) + " changed"
            problem = self._outputs_problem(found)
            if problem:
                return None, f"miss: {problem}"
            changed, note = self._data_changed(found)
            if changed:
                return None, "miss: " + "; ".join(changed)
            source = found.source_run or found.run_id
            return found, f"hit: same code, parameters and inputs as run {source}{note}"
        previous = self.metadata.previous_step_run(step.name, self.notebook, self.run_id)
        if previous is None or not previous.cache_fields:
            return None, "miss: first run of this step"
        reasons = explain_difference(
            previous.cache_fields,
            fields,
            step=step,
            imports=self.pipeline.imports,
            functions=self.pipeline.functions,
        )
        if reasons:
            return None, "miss: " + "; ".join(reasons)
        return None, f"miss: the previous run of this step ended {previous.status.value}"

    def _data_changed(self, found: StepRunRecord) -> tuple[list[str], str]:
        """Say which ``cellpipe.data`` sources of a cached step run changed since it ran.

        Returns:
            The reasons to re-run (empty when every source has its recorded version), and a
            note for the hit's reason (sources not checked: ``--offline``, unreachable).
        """
        history = self.history.history
        if history is None:
            return [], ""
        source_run = found.source_run or found.run_id
        reads = self._data_reads.get(source_run)
        if reads is None:
            try:
                reads = list(history.data_inputs(run_id=source_run))
            except CellpipeError as exc:
                logger.warning("data inputs of run %s not readable: %s", source_run, exc)
                reads = []
            self._data_reads[source_run] = reads
        mine = sorted((r for r in reads if r.step == found.step), key=lambda r: r.url)
        if not mine:
            return [], ""
        if self.options.offline:
            return [], " (data sources not checked: --offline)"
        changed: list[str] = []
        unreachable: list[str] = []
        for read in mine:
            now = self._source_version(read.url)
            if isinstance(now, CellpipeError):
                unreachable.append(read.url)
            elif now is None or read.version.startswith("unversioned:"):
                changed.append(f"data source {read.url} has no version to compare (no ETag, "
                               "checksum, size or modification time)")  # fmt: skip
            elif now != read.version:
                changed.append(f"data source {read.url} changed ({read.version} → {now})")
        note = ""
        if unreachable:
            note = f" (data source {', '.join(unreachable)} not reachable: stored copy used)"
        return changed, note

    def _source_version(self, url: str) -> str | CellpipeError | None:
        if url not in self._source_versions:
            # Loaded here: fsspec is imported only for runs whose cached steps read sources.
            from cellpipe.runner.data import source_version

            try:
                self._source_versions[url] = source_version(url)
            except CellpipeError as exc:
                logger.warning("%s", exc)
                self._source_versions[url] = exc
        return self._source_versions[url]

    def _outputs_problem(self, found: StepRunRecord) -> str | None:
        """Say why the recorded outputs cannot be reused (None when every one is intact)."""
        missing, corrupted = [], []
        local = isinstance(self.artifacts, LocalArtifactStore)
        for variable, ref in sorted(found.outputs.items()):
            try:
                if local:
                    # Cheap while the artifact's stat matches its stamp; a full hash otherwise.
                    self.artifacts.local_path(ref.digest)
                elif not self.artifacts.exists(ref.digest):
                    # Remote: one existence request; the bytes are checked when read.
                    missing.append(variable)
            except ArtifactNotFoundError:
                missing.append(variable)
            except ArtifactCorruptedError:
                corrupted.append(variable)
        if corrupted:
            noun = "output" if len(corrupted) == 1 else "outputs"
            return f"{noun} {', '.join(corrupted)} corrupted in the artifact store"
        if missing:
            noun = "output" if len(missing) == 1 else "outputs"
            return f"{noun} {', '.join(missing)} no longer in the artifact store"
        return None

    # -- records as steps end ----------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        if isinstance(event, StepStarted):
            self.started.setdefault(event.step, datetime.now(UTC))
            if not event.reason and event.step in self.reasons:
                event = replace(event, reason=self.reasons[event.step])
        if isinstance(event, StepSucceeded | StepFailed | StepSkipped | StepCancelled):
            self._record_end(event.result)
        if isinstance(event, StepCached):
            self.results[event.step] = event.result
            self._check_files(event.result)
        self.sink.emit(event)

    # -- files as data between steps (the runtime file guard) -------------------------------

    def _check_files(self, result: StepResult) -> None:
        """Compare the files of a step that ended with those of the steps that ended before.

        A step that read a file an unordered step wrote is marked failed (its outputs may
        come from the wrong version of the file, so they must never be reused), and the run
        stops at the next scheduling point (`raise_conflict`).
        """
        if result.status not in (StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.CACHED):
            return
        cached = result.status is StepStatus.CACHED
        conflicts = self.file_guard.ended(
            result.step,
            read=result.files_read,
            written=None if cached else result.files_written,
        )
        for conflict in conflicts:
            if self.conflict is None:
                self.conflict = conflict
            self._fail_reader(conflict)

    def _fail_reader(self, conflict: FileConflict) -> None:
        reader = self.results.get(conflict.reader)
        if reader is None or reader.status is not StepStatus.SUCCEEDED:
            return
        error = conflict.error()
        failed = replace(reader, status=StepStatus.FAILED, error=error.message, hint=error.hint)
        self.results[conflict.reader] = failed
        inputs = self._inputs(self.pipeline.step(conflict.reader))
        files = {p: self.files.digest(p) for p in failed.files_read}
        self._unrecorded.append((failed, inputs, files, datetime.now(UTC)))

    def _cached_files_written(self, step: str) -> frozenset[str]:
        record = self.records.get(step)
        if record is None or record.notebook_digest is None:
            return frozenset()
        path = self.artifacts.local_path(record.notebook_digest)
        return files_written_of_notebook(path.read_text(encoding="utf-8"))

    def raise_conflict(self) -> None:
        """Stop the run when two unordered steps used the same file (see `_check_files`).

        Raises:
            CellpipeError: naming both steps, the file and the ``prev:`` to add.
        """
        if self.conflict is not None:
            raise self.conflict.error()

    def after_start(self) -> None:
        """The scheduler's ``after_start``: write records, then stop on a file conflict."""
        try:
            self.flush_records()
        except StorageError as exc:  # retried at every step's end and once more at the end
            self._storage_failed(exc)
        self.raise_conflict()

    def _storage_failed(self, exc: StorageError) -> None:
        if self.storage_failure is None:
            logger.warning("cannot write the run's records: %s", exc.message)
            self.storage_failure = exc

    def _record_end(self, result: StepResult) -> None:
        """Take what cannot wait once a step ended; its record is written by `flush_records`.

        The after snapshot and the digests of the files the step read must be taken before
        the steps it unblocks start (they may change the workspace); storing its log and
        notebook and writing its record (one transaction) can run while they do.
        """
        self.results[result.step] = result
        inputs = self._inputs(self.pipeline.step(result.step))
        files = {p: self.files.digest(p) for p in result.files_read}
        self._unrecorded.append((result, inputs, files, datetime.now(UTC)))
        self.history.after(result, inputs, self.run_dir / "steps" / result.step)
        self._check_files(result)

    def flush_records(self) -> None:
        """Write the records of the steps that ended; the scheduler calls it as steps run."""
        while self._unrecorded:
            result, inputs, files, finished = self._unrecorded[0]
            fields = self.fields.get(result.step, {})
            metrics: dict[str, Any] = dict(result.pipeline_metrics)
            for name, value in result.metrics.items():
                metrics[f"log:{name}"] = value
            error = result.error
            if result.traceback:
                error = f"{result.error}\n{result.traceback}" if result.error else result.traceback
            record = StepRunRecord(
                run_id=self.run_id,
                step=result.step,
                status=result.status,
                cache_key=cache_key(fields) if fields else None,
                cache_fields=fields,
                cache_reason=self.reasons.get(result.step, result.error or ""),
                started_at=self.started.get(result.step),
                finished_at=finished,
                inputs=inputs,
                input_sources=_sources(self.pipeline.step(result.step), inputs),
                outputs=result.outputs,
                metrics=metrics,
                files_read=files,
                log_digest=self._store(result.log_path),
                notebook_digest=self._store(result.notebook_path),
                error=error if result.status is StepStatus.FAILED else None,
            )
            self.records[result.step] = record
            self.metadata.record_step_run(record)
            self._unrecorded.pop(0)  # only now: interrupted, the final flush writes it again

    def record_extras(self) -> None:
        """Add the values steps stored after their results to their step runs' outputs.

        Each step process reports them in its `StepJob.extras_path` once it stored them
        (`cellpipe.runner.child.store_extra_values`); the executor was drained first. The
        step's log is stored again: it ends with a note per value left out.
        """
        self.flush_records()
        for name, result in self.results.items():
            record = self.records.get(name)
            if result.status is not StepStatus.SUCCEEDED or record is None:
                continue
            path = self.run_dir / "steps" / name / EXTRAS_NAME
            try:
                extras = ExtraValues.from_json(json.loads(path.read_text()))
            except (OSError, ValueError, KeyError):
                continue  # none to store, or the process died storing them
            if not extras.outputs and not extras.skipped:
                continue
            outputs = {**extras.outputs, **record.outputs}
            updated = replace(record, outputs=outputs, log_digest=self._store(result.log_path))
            self.records[name] = updated
            self.metadata.record_step_run(updated)

    def _inputs(self, step: Step) -> dict[str, Any]:
        found = {}
        for ref in step.inputs:
            upstream = self.results.get(ref.producer)
            if upstream is not None and ref.name in upstream.outputs:
                found[ref.name] = upstream.outputs[ref.name]
        return found

    def _store(self, path: str | None) -> ArtifactDigest | None:
        if not path or not Path(path).exists():
            return None
        return self.artifacts.put_file(Path(path))

    # -- the end ----------------------------------------------------------------------------

    def metrics(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for metric in self.pipeline.metrics:
            if metric.producer == "":
                # A pipeline parameter named as a metric (Kale allows it): its value this run.
                if metric.name in self.params:
                    values[metric.name] = self.params[metric.name]
                continue
            result = self.results.get(metric.producer)
            if result is not None and metric.name in result.pipeline_metrics:
                values[metric.name] = result.pipeline_metrics[metric.name]
        for name in self.pipeline.step_names:
            result = self.results.get(name)
            if result is not None:
                values.update(result.metrics)
        return values


def _sources(step: Step, inputs: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Input variable -> the step of this run whose output it is (lineage per output).

    Equal values share a digest; this names which step's output a step actually read.
    """
    return {
        ref.name: ref.producer
        for ref in step.inputs
        if ref.producer and (inputs is None or ref.name in inputs)
    }


def _logged(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {k.removeprefix("log:"): v for k, v in metrics.items() if k.startswith("log:")}


class RunCancelled(KeyboardInterrupt):
    """Ctrl-C stopped a run; raised after every step process was killed and the run recorded.

    A `KeyboardInterrupt`, so code that does not know about it still stops; callers that
    want to show what was done catch it and read `report`.

    Attributes:
        report: the run's report (status cancelled).
    """

    def __init__(self, report: RunReport) -> None:
        super().__init__(f"run {report.run.run_id} was cancelled")
        self.report = report


def _extras_wanted() -> bool:
    """False when ``CELLPIPE_EXTRA_VALUES=0``: store only what later steps read."""
    return os.environ.get(EXTRA_VALUES_ENV, "1").strip().lower() not in ("0", "false", "no")


def _extras_max_bytes() -> int:
    """The size limit of one extra value (``CELLPIPE_EXTRA_VALUES_MAX_BYTES``)."""
    raw = os.environ.get(EXTRA_VALUES_MAX_ENV, "").strip()
    if not raw:
        return EXTRA_VALUES_MAX_BYTES
    try:
        return int(raw)
    except ValueError:
        raise CellpipeError(
            f"{EXTRA_VALUES_MAX_ENV}={raw!r} is not a number of bytes",
            hint=f"set it to an integer such as {EXTRA_VALUES_MAX_BYTES} (100 MB), or unset it",
        ) from None


class _LazyExecutor:
    """Creates the executor on the first job, so a fully cached run never imports it."""

    def __init__(self, kind: str | None, bare: BareServer | None = None) -> None:
        self._kind = kind
        self._bare = bare  # an early fork server, handed to the fork executor
        self._executor: Executor | None = None

    def _get(self) -> Executor:
        if self._executor is None:
            from cellpipe.runner.execute import ForkServerExecutor, default_executor

            executor = default_executor(self._kind)
            bare, self._bare = self._bare, None
            if bare is not None:
                if isinstance(executor, ForkServerExecutor):
                    executor = ForkServerExecutor(bare=bare)
                else:
                    bare.kill()
            self._executor = executor
        return self._executor

    def warm(self, job: StepJob) -> None:
        executor = self._get()
        warm = getattr(executor, "warm", None)
        if warm is not None:
            warm(job)

    def submit(self, job: StepJob) -> None:
        self._get().submit(job)

    def poll(self, timeout: float) -> list[StepResult]:
        return [] if self._executor is None else self._executor.poll(timeout)

    def cancel(self) -> list[str]:
        return [] if self._executor is None else self._executor.cancel()

    def drain(self) -> None:
        drain = getattr(self._executor, "drain", None)
        if drain is not None:
            drain()

    def close(self) -> None:
        if self._bare is not None:  # no step ran: the early server is not needed
            self._bare.kill()
            self._bare = None
        if self._executor is not None:
            self._executor.close()


def run_pipeline(
    pipeline: Pipeline,
    *,
    params: Mapping[str, JsonValue],
    artifacts: ArtifactStore,
    metadata: MetadataStore,
    state_dir: Path,
    options: RunOptions | None = None,
    sink: EventSink | Callable[[Event], None] | None = None,
    executor: Executor | None = None,
    database: Path | None = None,
    bare_server: BareServer | None = None,
) -> RunReport:
    """Run ``pipeline`` with ``params``, reusing every step whose outputs are already known.

    Args:
        pipeline: the pipeline to run.
        params: every parameter's value (see `cellpipe.pipeline.parameters`).
        artifacts: the artifact store: a local or remote store that step processes can
            open again (`ArtifactLocation.of`).
        metadata: the metadata store.
        state_dir: the project's ``.cellpipe`` folder (run folders go in ``runs/``).
        options: selection, caching, parallelism, executor.
        sink: receives progress events.
        executor: the executor to use (default: by ``options.executor``, created when the
            first step must run); closed by the caller when given, here otherwise.
        database: the metadata store's SQLite file, which snapshots must never open
            (default: taken from the store's ``url``, when it is a ``sqlite:///`` URL).
        bare_server: a fork server started early (`cellpipe.runner.forkserver.start_bare`)
            for the default executor to adopt; it is given its preamble only after the start
            snapshot. Killed here when no step runs; the caller must still kill it
            (`BareServer.kill` is a no-op once adopted) if this raises before the run starts.

    Returns:
        The run's report. A failed run is a report with status failed, not an exception.

    Raises:
        RunCancelled: (a KeyboardInterrupt) on Ctrl-C, after every step process was killed
            and the run was recorded as cancelled; it carries the report.
        CellpipeError: when ``--only`` needs an upstream output that is not in the cache
            (the run is recorded as failed).
        KeyError: when ``options`` names an unknown step.
    """
    opts = options or RunOptions()
    for name in (*opts.only, *([opts.from_step] if opts.from_step else [])):
        pipeline.step(name)
    if opts.executor is not None and opts.executor not in _EXECUTORS:
        raise CellpipeError(
            f"unknown executor '{opts.executor}'", hint="choose one of " + ", ".join(_EXECUTORS)
        )
    now = datetime.now(UTC)
    run_id = new_run_id(pipeline, now)
    state = _Run(
        pipeline,
        params=params,
        options=opts,
        artifacts=artifacts,
        metadata=metadata,
        state_dir=state_dir,
        run_id=run_id,
        sink=to_sink(sink),
        database=database if database is not None else _database_file(metadata),
    )
    state.run_dir.mkdir(parents=True, exist_ok=True)
    start_snapshot = state.history.take_start(Path(state.notebook))  # may refuse: too large
    if executor is not None and bare_server is not None:
        bare_server.kill()
        bare_server = None
    runner: Executor | _LazyExecutor = executor or _LazyExecutor(opts.executor, bare_server)
    try:
        _warm_early(state, runner)
        metadata.start_run(
            RunRecord(
                run_id=run_id,
                pipeline=pipeline.name,
                notebook=state.notebook,
                notebook_digest=digest_file(Path(state.notebook)),
                status=RunStatus.RUNNING,
                started_at=now,
                parameters=dict(params),
                pid=os.getpid(),
            )
        )
    except BaseException:
        if executor is None:
            runner.close()
        raise
    state.history.record(start_snapshot)
    logger.debug("run %s started", run_id)
    status = RunStatus.FAILED
    error: str | None = None
    cancelled = False
    try:
        outcome = run_steps(
            pipeline,
            prepare=state.prepare,
            executor=runner,
            sink=state.on_event,
            steps=state.selected(),
            jobs=opts.jobs,
            run_id=run_id,
            after_start=state.after_start,
        )
        drain = getattr(runner, "drain", None)
        if drain is not None:  # steps still storing values nothing downstream reads
            drain()
        try:
            state.record_extras()
        except StorageError as exc:
            state._storage_failed(exc)
        state.raise_conflict()
        status = outcome.status
        if outcome.failed:
            error = "; ".join(f"{r.step}: {r.error}" for r in outcome.failed)
    except KeyboardInterrupt:
        status = RunStatus.CANCELLED
        error = "cancelled (Ctrl-C)"
        cancelled = True
    except CellpipeError as exc:
        error = exc.message
        raise
    finally:
        if executor is None:
            runner.close()
        # A full disk or a read-only store must not bury the run's outcome under chained
        # tracebacks: every record written so far stays, and the error says both what could
        # not be written and how each step ended (issue 10, item 6).
        storage_failure = state.storage_failure
        try:
            state.flush_records()
        except StorageError as exc:
            storage_failure = storage_failure or exc
        finally:
            state.files.save()
            try:
                state.history.close()
            except StorageError as exc:
                storage_failure = storage_failure or exc
            notebook = _write_run_notebook(state)
            try:
                metadata.finish_run(
                    run_id,
                    status=status,
                    finished_at=datetime.now(UTC),
                    metrics=state.metrics(),
                    error=error,
                )
            except StorageError as exc:
                storage_failure = storage_failure or exc
        if storage_failure is not None:
            raise _with_outcome(storage_failure, state) from None
    report = RunReport(
        run=metadata.get_run(run_id),
        steps={n: state.records[n] for n in pipeline.step_names if n in state.records},
        run_dir=state.run_dir,
        notebook=notebook,
        failures=tuple(r for r in state.results.values() if r.status is StepStatus.FAILED),
        secrets_left_out=state.history.secrets,
    )
    if cancelled:
        raise RunCancelled(report)
    return report


_EXECUTORS = ("fork", "spawn", "inprocess")


def _with_outcome(error: StorageError, state: _Run) -> StorageError:
    """Return ``error`` (same class) extended with how each step ended and what was kept."""
    lines = [error.message, f"run {state.run_id}:"]
    for name in state.pipeline.step_names:
        result = state.results.get(name)
        if result is None:
            continue
        kept = (
            "recorded"
            if name in state.records and not any(r.step == name for r, *_ in state._unrecorded)
            else "NOT recorded"
        )
        line = f"  {name}: {result.status}, {kept}"
        if result.status is StepStatus.FAILED and result.error:
            first = result.error.strip().splitlines()[0] if result.error.strip() else ""
            line += f"; its error: {first[:300]}"
        lines.append(line)
    new = type(error).__new__(type(error))  # the same class and fields (path, hint)
    new.__dict__.update(vars(error))
    new.message = "\n".join(lines)
    new.args = (new.message,)
    return new


def _warm_early(state: _Run, runner: Executor | _LazyExecutor) -> None:
    """Start the executor's warm process now if a step will surely run.

    The fork server's start (interpreter, IPython, the imports cell) then overlaps the run
    record, the cache decisions and the first step's snapshot, instead of delaying the first
    step. It starts after the start snapshot, so the preamble cannot change what that records.
    """
    warm = getattr(runner, "warm", None)
    if warm is None:
        return
    job = state.first_job()
    if job is not None:
        warm(job)


def _database_file(metadata: MetadataStore) -> Path | None:
    """Return the metadata store's SQLite file, when its ``url`` names one."""
    url = getattr(metadata, "url", None)
    return sqlite_database_file(url) if isinstance(url, str) else None


def _write_run_notebook(state: _Run) -> Path | None:
    """Join the steps' executed notebooks into one the user can open in Jupyter.

    The step notebooks were written (and validated) by the step processes, so they are joined
    as plain JSON: nbformat's validation would cost more than the rest of a cached run. The
    notebook's markdown cells stand where they stood: each before the first step whose cells
    come after it, the rest at the end.
    """
    cells: list[dict[str, Any]] = []
    metadata: dict[str, Any] = {}
    preamble_done = False
    notes = sorted(state.pipeline.markdown, key=lambda chunk: chunk.cell)

    def markdown_before(cell: float) -> None:
        while notes and notes[0].cell < cell:
            chunk = notes.pop(0)
            cells.append(
                {
                    "cell_type": "markdown",
                    "id": f"cell-{chunk.cell}",
                    "metadata": {"cellpipe": {"cell": chunk.cell, "role": "markdown"}},
                    "source": chunk.source,
                }
            )

    for step in state.pipeline.steps:
        name = step.name
        record = state.records.get(name)
        if record is None:
            continue
        step_nb: dict[str, Any] | None = None
        if record.notebook_digest is not None:
            try:
                path = _step_notebook_file(state, name, record.notebook_digest)
                step_nb = json.loads(path.read_text(encoding="utf-8"))
            except (CellpipeError, OSError, ValueError):
                # A lost step notebook only costs its cells in the run notebook.
                logger.warning("step %s: executed notebook unreadable", name, exc_info=True)
        if step_nb is not None and not preamble_done:
            # The imports, functions and parameters ran identically before every step: show
            # them once, from the first step that ran them.
            metadata = dict(step_nb.get("metadata", {}))
            preamble = [c for c in step_nb["cells"] if _role(c) == "preamble"]
            numbers = [_cell_number(c) for c in preamble]
            markdown_before(min((n for n in numbers if n is not None), default=0))
            cells.extend(preamble)
            preamble_done = True
        markdown_before(min(step.cells, default=0))
        heading = f"## step `{name}`: {record.status.value}"
        if record.cache_reason:
            heading += f"\n\n{record.cache_reason}"
        cells.append(
            {"cell_type": "markdown", "id": f"{name}-heading", "metadata": {}, "source": heading}
        )
        for cell in (step_nb or {}).get("cells", []):
            if _role(cell) == "step":
                cell["id"] = f"{name}-{cell.get('id', len(cells))}"[:64]
                cells.append(cell)
    markdown_before(float("inf"))
    metadata["cellpipe"] = {"run_id": state.run_id, "notebook": state.notebook}
    document = {"cells": cells, "metadata": metadata, "nbformat": 4, "nbformat_minor": 5}
    target = state.run_dir / "run.ipynb"
    target.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n")
    return target


def _step_notebook_file(state: _Run, step: str, digest: ArtifactDigest) -> Path:
    """Return a local file with a step's executed notebook.

    A step that ran in this run left it in the run folder: it is read there rather than
    fetched back from a remote store; a cached step's comes from the store.
    """
    result = state.results.get(step)
    if result is not None and result.status is not StepStatus.CACHED and result.notebook_path:
        local = Path(result.notebook_path)
        if local.is_file():
            return local
    return state.artifacts.local_path(digest)


def _cell_number(cell: Any) -> int | None:
    number = cell.get("metadata", {}).get("cellpipe", {}).get("cell")
    return number if isinstance(number, int) else None


def _role(cell: Any) -> str:
    meta = cell.get("metadata", {})
    if "injected-parameters" in meta.get("tags", ()):
        return "preamble"
    info = meta.get("cellpipe", {})
    return str(info.get("role", "step" if "step" in info else "other"))
