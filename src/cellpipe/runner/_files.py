"""The runtime file guard: files as data between steps that are not ordered.

Owns: `FileGuard`, which the orchestrator feeds with every step that ends (ran or cached) and
which finds a workspace file one step wrote and another step read while neither step runs
after the other. In Jupyter the step first in notebook order runs first; in a parallel run the
reader may see the file before or after the writer wrote it (or an old copy from a previous
run): a silently different result. The static analysis adds file edges for literal paths; this
catches what it cannot see (computed paths, helper functions).

Invariants:
    * only steps of this run are compared, and only pairs where neither is an ancestor of the
      other; the fix named is always ``prev:EARLIER`` on the step later in notebook order;
    * the files of a step that ran come from its `StepResult` (the audit hook of the step
      process); a cache hit's read files come from its record, its written files from the
      executed notebook of the step run it reuses (``metadata.cellpipe.files_written``), read
      only when a comparison needs them. A step run recorded before files were tracked (no
      such key) counts as writing nothing: that gap closes when the step runs again;
    * a conflict is reported once per pair of steps.

Must not depend on: notebooks, the KFP compiler, the CLI or the UI.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from cellpipe.errors import FileRaceError
from cellpipe.pipeline.model import Pipeline

__all__ = ["FileConflict", "FileGuard"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class FileConflict:
    """A file one step wrote and another read, with neither ordered before the other.

    Attributes:
        path: the workspace-relative file.
        writer: the step that wrote it.
        reader: the step that read it.
        earlier: whichever of the two comes first in notebook order.
        later: the other one.
    """

    path: str
    writer: str
    reader: str
    earlier: str
    later: str

    def error(self) -> FileRaceError:
        """The error that stops the run."""
        return FileRaceError(
            f"step '{self.reader}' read the file '{self.path}' that step '{self.writer}' "
            f"wrote in this run, but neither step runs after the other, so '{self.reader}' "
            f"may have read it before or after '{self.writer}' wrote it (in Jupyter, "
            f"'{self.earlier}' runs first)",
            hint=f"add prev:{self.earlier} to step '{self.later}' (a tag on its first cell), "
            f"so '{self.later}' runs after '{self.earlier}'",
        )


class FileGuard:
    """Compares the files of the steps of one run as they end.

    Args:
        pipeline: the pipeline being run.
        cached_writes: returns the files a cached step's reused step run wrote (called at
            most once per cached step, only when needed).
    """

    def __init__(self, pipeline: Pipeline, cached_writes: Callable[[str], frozenset[str]]) -> None:
        self._pipeline = pipeline
        self._order = {
            s.name: (s.cells[0] if s.cells else 0, i) for i, s in enumerate(pipeline.steps)
        }
        self._ancestors: dict[str, frozenset[str]] = {}
        self._cached_writes = cached_writes
        self._reads: dict[str, frozenset[str]] = {}
        self._writes: dict[str, frozenset[str] | None] = {}  # None: a cache hit, not read yet
        self._reported: set[frozenset[str]] = set()

    def _ancestors_of(self, step: str) -> frozenset[str]:
        found = self._ancestors.get(step)
        if found is None:
            found = frozenset(self._pipeline.upstream_closure(step))
            self._ancestors[step] = found
        return found

    def _writes_of(self, step: str) -> frozenset[str]:
        found = self._writes.get(step)
        if found is None:
            try:
                found = self._cached_writes(step)
            except Exception:
                logger.warning("step %s: files written by its cached run unknown", step)
                found = frozenset()
            self._writes[step] = found
        return found

    def ended(
        self, step: str, *, read: tuple[str, ...], written: tuple[str, ...] | None
    ) -> list[FileConflict]:
        """Note the files of a step that ended; return its conflicts with earlier-ended steps.

        Args:
            step: the step.
            read: the workspace files it read.
            written: the files it wrote, or None for a cache hit (read when needed).
        """
        reads = frozenset(read)
        self._reads[step] = reads
        self._writes[step] = None if written is None else frozenset(written)
        conflicts: list[FileConflict] = []
        for other, other_reads in list(self._reads.items()):
            if other == step or frozenset((step, other)) in self._reported:
                continue
            if other in self._ancestors_of(step) or step in self._ancestors_of(other):
                continue
            found = self._pair(step, reads, other, other_reads)
            if found is not None:
                self._reported.add(frozenset((step, other)))
                conflicts.append(found)
        return conflicts

    def _pair(
        self, step: str, reads: frozenset[str], other: str, other_reads: frozenset[str]
    ) -> FileConflict | None:
        earlier, later = sorted((step, other), key=self._order.__getitem__)
        candidates: list[tuple[str, str, str]] = []  # (path, writer, reader)
        if other_reads:
            candidates.extend((p, step, other) for p in self._writes_of(step) & other_reads)
        if reads:
            candidates.extend((p, other, step) for p in self._writes_of(other) & reads)
        if not candidates:
            return None
        # The usual case first: the earlier step writes, the later one reads.
        candidates.sort(key=lambda c: (c[1] != earlier, c[0]))
        path, writer, reader = candidates[0]
        return FileConflict(path=path, writer=writer, reader=reader, earlier=earlier, later=later)


def files_written_of_notebook(text: str) -> frozenset[str]:
    """Return ``metadata.cellpipe.files_written`` of an executed step notebook (JSON text)."""
    document = json.loads(text)
    files = document.get("metadata", {}).get("cellpipe", {}).get("files_written", [])
    return frozenset(str(f) for f in files)
