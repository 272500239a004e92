"""Every error cellpipe shows to a user.

The tree::

    CellpipeError                     message + optional hint; `headline` for the CLI
    ├── DefinitionError               notebook or pipeline invalid (CLI exit 2)
    │   ├── NotebookParseError        file unreadable, wrong format, bad tag
    │   └── PipelineValidationError   carries *all* problems, not just the first
    ├── ParameterError                a run-time parameter override is invalid (CLI exit 2)
    ├── StepFailedError               user code raised during a run; original in __cause__
    ├── RunFailedError                one or more steps failed; carries each failure
    ├── FileRaceError                 unordered steps wrote and read one file in a run
    ├── SerializationError            a step output cannot be stored
    ├── StorageError
    │   ├── ArtifactNotFoundError
    │   ├── ArtifactCorruptedError
    │   ├── SchemaVersionError
    │   ├── DamagedDatabaseError      the SQLite file is not a database or is malformed
    │   ├── ProjectNotFoundError      no .cellpipe folder or cellpipe.toml at or above a folder
    │   ├── ReadOnlyStorageError      a write to a read-only file system or folder
    │   └── StorageFullError          no space left (ENOSPC, EDQUOT, EFBIG)
    ├── RunNotFoundError ── UnknownStepError  a mistyped step name (exit 2, "did you mean")
    ├── RegistryError ── ModelNotFoundError
    │   └── InvalidModelRefError      a malformed model name, alias, version or tag (exit 2)
    ├── CompileError                  feature not supported by the KFP target
    ├── ServingError
    └── MissingDependencyError        an optional package a feature needs is not installed

Invariants: a message says what failed, where, and how to fix it; the hint is the "how".
Errors are built from typed keyword arguments into one string. This module imports
nothing from cellpipe.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    """One definition problem: a message and where it is in the notebook.

    Attributes:
        message: what is wrong, in one or two sentences.
        cell: the 1-based notebook cell number (as Jupyter shows "cell N"), if known.
        line: the 1-based line within that cell, if known.
        step: the step the problem belongs to, if any.
        hint: how to fix it.
        code: a stable machine-readable identifier such as ``undefined-name``.
    """

    message: str
    code: str
    cell: int | None = None
    line: int | None = None
    step: str | None = None
    hint: str | None = None

    def where(self) -> str:
        """Return ``cell 4, line 2`` (or the part that is known).

        Empty when the message already names its cell, so the location is never shown twice.
        """
        if self.cell is not None and f"cell {self.cell}" in self.message:
            return ""
        parts = []
        if self.cell is not None:
            parts.append(f"cell {self.cell}")
        if self.line is not None:
            parts.append(f"line {self.line}")
        return ", ".join(parts)

    def render(self) -> str:
        """Return the problem as one human-readable line (plus its hint)."""
        where = self.where()
        text = f"{where}: {self.message}" if where else self.message
        if self.hint:
            text += f"\n    hint: {self.hint}"
        return text

    def to_json(self) -> dict[str, object]:
        """Return the problem as a JSON-ready dict."""
        return {
            "code": self.code,
            "message": self.message,
            "cell": self.cell,
            "line": self.line,
            "step": self.step,
            "hint": self.hint,
        }


class CellpipeError(Exception):
    """Base of every error cellpipe raises on purpose.

    Args:
        message: what failed and where.
        hint: how to fix it, if there is something the user can do.
    """

    headline = "cellpipe failed"
    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message

    def to_json(self) -> dict[str, object]:
        """Return the error as a JSON-ready dict (for ``--json`` output)."""
        return {"type": type(self).__name__, "message": self.message, "hint": self.hint}


class DefinitionError(CellpipeError):
    """The notebook or the pipeline it defines is invalid."""

    headline = "the pipeline definition is invalid"
    exit_code = 2


class NotebookParseError(DefinitionError):
    """The notebook file cannot be read as a notebook."""

    headline = "cannot read the notebook"

    def __init__(
        self,
        message: str,
        *,
        path: str,
        cell: int | None = None,
        line: int | None = None,
        hint: str | None = None,
    ) -> None:
        where = path
        if cell is not None:
            where += f", cell {cell}"
        if line is not None:
            where += f", line {line}"
        super().__init__(f"{where}: {message}", hint=hint)
        self.path = path
        self.cell = cell
        self.line = line


class PipelineValidationError(DefinitionError):
    """One or more definition problems; all of them are carried, not just the first."""

    headline = "the pipeline has errors"

    def __init__(self, problems: Sequence[Problem], *, path: str | None = None) -> None:
        self.problems = tuple(problems)
        self.path = path
        count = len(self.problems)
        head = f"{path}: " if path else ""
        noun = "error" if count == 1 else "errors"
        lines = [f"{head}{count} {noun}:"]
        lines.extend(f"  {p.render()}" for p in self.problems)
        super().__init__("\n".join(lines))

    def to_json(self) -> dict[str, object]:
        """Return the error with every problem (for ``--json`` output)."""
        data = super().to_json()
        data["errors"] = [p.to_json() for p in self.problems]
        return data


class ParameterError(CellpipeError):
    """A parameter override given for a run is unknown or of the wrong type."""

    headline = "invalid parameter"
    exit_code = 2


class StepFailedError(CellpipeError):
    """User code in a step raised; the original exception is ``__cause__`` when in process."""

    headline = "a step failed"

    def __init__(
        self,
        message: str,
        *,
        step: str,
        traceback_text: str | None = None,
        log_path: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(f"step '{step}' failed: {message}", hint=hint)
        self.step = step
        self.traceback_text = traceback_text
        self.log_path = log_path


class RunFailedError(CellpipeError):
    """A run ended with failed steps; carries one StepFailedError per failed step."""

    headline = "the run failed"

    def __init__(
        self, *, run_id: str, failures: Sequence[StepFailedError], run: object = None
    ) -> None:
        self.run_id = run_id
        self.failures = tuple(failures)
        self.run = run  # the `cellpipe.Run` when `cellpipe.run` raised it
        count = len(self.failures)
        lines = [f"run {run_id} failed in {count} step{'' if count == 1 else 's'}:"]
        for failure in self.failures:
            lines.append(f"  {failure.message}")
            if failure.log_path:
                lines.append(f"    log: {failure.log_path}")
        super().__init__(
            "\n".join(lines),
            hint="fix the step and run again: the steps that finished are reused",
        )

    def _render_traceback_(self) -> list[str]:
        """What IPython shows for it: the message, not cellpipe's frames.

        The failed steps' own tracebacks, pointing at notebook cells, were shown by the run.
        """
        return [f"{type(self).__name__}: {self}"]


class FileRaceError(CellpipeError):
    """Two steps that are not ordered used one workspace file: one wrote it, one read it."""

    headline = "two steps raced on a file"


class SerializationError(CellpipeError):
    """A step output cannot be written to the artifact store."""

    headline = "cannot store a step output"


class StorageError(CellpipeError):
    """The artifact or metadata store failed."""

    headline = "storage error"


class ProjectNotFoundError(StorageError):
    """No folder at or above the search's start has a ``.cellpipe`` folder or ``cellpipe.toml``.

    Attributes:
        folder: where the search started.
        origin: why it started there (``the folder given``, ``CELLPIPE_PROJECT``, ``the
            working directory``).
    """

    headline = "no cellpipe project"

    def __init__(self, folder: object, origin: str, *, searched: Sequence[object] = ()) -> None:
        shown = [str(p) for p in searched] or [str(folder)]
        listed = ", ".join(shown[:4]) + (", ..." if len(shown) > 4 else "")
        super().__init__(
            f"no cellpipe project at or above {folder} ({origin}): none of {listed} has a "
            ".cellpipe folder or a cellpipe.toml",
            hint="run a notebook first (cellpipe run NOTEBOOK), or point at the project: "
            "project=DIR in Python, --project DIR on the command line, or the environment "
            "variable CELLPIPE_PROJECT=DIR",
        )
        self.folder = folder
        self.origin = origin


class ArtifactNotFoundError(StorageError):
    """No artifact with that digest is in the store."""

    headline = "artifact not found"


class ArtifactCorruptedError(StorageError):
    """An artifact's bytes no longer match its digest."""

    headline = "artifact corrupted"


class SchemaVersionError(StorageError):
    """The metadata database was written by a newer cellpipe."""

    headline = "unsupported database schema"


class DamagedDatabaseError(StorageError):
    """The metadata database file is damaged (malformed pages, not a database at all)."""

    headline = "damaged metadata database"

    def __init__(self, message: str, *, path: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.path = path


class ReadOnlyStorageError(StorageError):
    """A write was refused: the file system is read-only or the folder is not writable."""

    headline = "read-only storage"

    def __init__(self, message: str, *, path: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.path = path


class StorageFullError(StorageError):
    """A write failed for lack of space: disk full, quota or file size limit."""

    headline = "disk full"

    def __init__(self, message: str, *, path: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.path = path


class RunNotFoundError(CellpipeError):
    """No run (or step run) matches the given id."""

    headline = "run not found"


class UnknownStepError(RunNotFoundError):
    """A step name the pipeline or the run does not have: a usage error (exit 2).

    Args:
        step: the name given.
        where: the notebook path or ``run RUN_ID`` that has no such step.
        steps: the steps it does have (for the "did you mean").
    """

    headline = "no such step"
    exit_code = 2

    def __init__(self, step: str, *, where: str, steps: Sequence[str]) -> None:
        import difflib

        close = difflib.get_close_matches(step, list(steps), n=1)
        known = ", ".join(steps) or "none"
        hint = f"did you mean '{close[0]}'?" if close else f"its steps: {known}"
        super().__init__(f"{where} has no step '{step}'", hint=hint)
        self.step = step


class RegistryError(CellpipeError):
    """The model registry refused an operation."""

    headline = "model registry error"


class ModelNotFoundError(RegistryError):
    """No model version matches the given name, version or alias."""

    headline = "model not found"


class InvalidModelRefError(RegistryError):
    """A model name, alias, version number or tag that is malformed (a usage error)."""

    exit_code = 2


class CompileError(CellpipeError):
    """The pipeline uses a feature the Kubeflow Pipelines target does not support."""

    headline = "cannot compile the pipeline"


class ServingError(CellpipeError):
    """The model server cannot start or serve."""

    headline = "serving error"


class MissingDependencyError(CellpipeError):
    """An optional package a feature needs (pandas for ``to_pandas``) is not installed.

    Args:
        package: the distribution to install.
        feature: what needs it, e.g. ``RunList.to_pandas()``.
    """

    headline = "a package is missing"

    def __init__(self, package: str, *, feature: str) -> None:
        super().__init__(
            f"{feature} needs {package}, which is not installed",
            hint=f"pip install {package}",
        )
        self.package = package
