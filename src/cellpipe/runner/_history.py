"""What the orchestrator records besides step runs: snapshots and external data inputs.

Owns: `RunHistory`, the orchestrator's one handle on the run's snapshots (start, before and
after each step that runs) and on the ``cellpipe.data`` reads its steps recorded.

Invariants: only the start snapshot may fail a run (the workspace is over the size limit),
and it fails before the run is recorded; any later snapshot or data-input problem is logged
and the run goes on. Cache hits get no snapshots: they did not run.

Steps that run at the same time share the workspace, so a step's after snapshot may show
another step's changes. Each after snapshot lists the files changed since the step's before
snapshot with their author (`attribute_changes`): the step whose audit hook saw the file
opened for writing (``StepResult.files_written``), else the step itself when nothing else
ran in its window, else every step that did ("shared").

Must not depend on: notebooks, the KFP compiler, the CLI or the UI.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path

from cellpipe.errors import CellpipeError
from cellpipe.runner.jobs import StepResult
from cellpipe.storage.lineage import DataInputRecord, SnapshotKind, SnapshotRecord, history_for
from cellpipe.storage.protocols import ArtifactDigest, ArtifactStore
from cellpipe.storage.records import ArtifactRef, MetadataStore, StepStatus
from cellpipe.storage.snapshots import FileEntry, SnapshotRecorder, attribute_changes

__all__ = ["RunHistory"]

logger = logging.getLogger(__name__)

_RAN = (StepStatus.SUCCEEDED, StepStatus.FAILED)


class RunHistory:
    """Snapshots and data inputs of one run.

    Args:
        workdir: the workspace (the notebook's folder).
        artifacts: the artifact store.
        metadata: the metadata store (snapshots are recorded beside it).
        run_id: the run.
        state_dir: the project's ``.cellpipe`` folder.
        private_files: files snapshots must never open (the metadata database, when it is a
            SQLite file in the workspace); their journals are skipped too.
    """

    def __init__(
        self,
        workdir: Path,
        artifacts: ArtifactStore,
        metadata: MetadataStore,
        *,
        run_id: str,
        state_dir: Path,
        private_files: Iterable[Path] = (),
    ) -> None:
        self.run_id = run_id
        self.history = history_for(metadata)
        self.recorder = SnapshotRecorder(
            workdir,
            artifacts,
            self.history,
            run_id=run_id,
            state_dir=state_dir,
            private_files=private_files,
        )
        self._lock = threading.Lock()
        self._before: dict[str, Mapping[str, FileEntry]] = {}
        # step -> the steps that ran at some point while it ran (filled as steps start)
        self._overlap: dict[str, set[str]] = {}
        self._written: dict[str, frozenset[str]] = {}

    @property
    def secrets(self) -> tuple[str, ...]:
        """What the start snapshot left out by the secret rules (folders end in ``/``)."""
        return self.recorder.secrets

    def take_start(self, notebook: Path) -> SnapshotRecord:
        """Snapshot the notebook, environment and workspace; call before the run record.

        Raises:
            WorkspaceTooLargeError: the workspace is over the size limit.
        """
        return self.recorder.take_start(notebook)

    def record(self, snapshot: SnapshotRecord) -> None:
        """Record the start snapshot (after the run record exists)."""
        try:
            self.recorder.record(snapshot)
        except CellpipeError as exc:
            logger.warning("start snapshot of run %s not recorded: %s", self.run_id, exc)

    def before(self, step: str, inputs: Mapping[str, ArtifactRef]) -> None:
        """Snapshot the workspace and the step's inputs just before it runs."""
        with self._lock:
            for others in self._overlap.values():
                others.add(step)
            self._overlap[step] = set(self._overlap)
        if self.recorder.step_snapshot(step, SnapshotKind.BEFORE, inputs=inputs) is not None:
            self._before[step] = self.recorder.last_files

    def after(
        self, result: StepResult, inputs: Mapping[str, ArtifactRef], scratch_dir: Path
    ) -> None:
        """Snapshot the workspace and values after a step ran; record its data inputs."""
        with self._lock:
            concurrent = self._overlap.pop(result.step, set())
            self._written[result.step] = frozenset(result.files_written)
            written = dict(self._written)
        before = self._before.pop(result.step, None)
        if result.status not in _RAN:
            return

        def attribute(files: Mapping[str, FileEntry]) -> dict[str, object] | None:
            if before is None:
                return None  # no before snapshot to compare with
            return dict(
                attribute_changes(
                    before, files, step=result.step, concurrent=concurrent, written=written
                )
            )

        self.recorder.step_snapshot(
            result.step,
            SnapshotKind.AFTER,
            inputs=inputs,
            outputs=result.outputs,
            attribute=attribute,
        )
        if self.history is None:
            return
        # Loaded here, not at the top: the data module is off the path to a run's first step.
        from cellpipe.runner.data import read_data_inputs

        try:
            found = read_data_inputs(scratch_dir)
            self.history.record_data_inputs(
                [
                    DataInputRecord(
                        run_id=self.run_id,
                        step=result.step,
                        url=item["url"],
                        version=item["version"],
                        digest=ArtifactDigest(item["digest"]),
                        size=int(item["size"]),
                        fetched_at=datetime.fromisoformat(item["fetched_at"]),
                    )
                    for item in found
                ]
            )
        except (CellpipeError, OSError, ValueError, KeyError) as exc:
            logger.warning("data inputs of step %s not recorded: %s", result.step, exc)

    def close(self) -> None:
        """Persist the snapshot stat cache."""
        self.recorder.close()
