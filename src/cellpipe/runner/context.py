"""The current step, as user code inside a step sees it, and ``log_metric``.

Owns: `StepContext` (which step and run is executing in this process) and `log_metric`, which
``cellpipe.log_metric`` calls.

Invariants: at most one step runs per process at a time (a step process runs one step; the
in-process executor runs steps one after another), so the current context is a module-level
value set by the step runner around the user's code. Outside a run, `log_metric` keeps values
in a process-local dict (`metrics_outside_run`) so notebook code works the same interactively.
Metric values are JSON scalars; numpy scalars are converted.

Must not depend on: notebooks, the KFP compiler, the CLI or the UI; nothing heavy is imported.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cellpipe.pipeline.model import JsonValue

if TYPE_CHECKING:
    from cellpipe.storage.protocols import ArtifactStore

__all__ = ["StepContext", "activate", "current_step", "log_metric", "metrics_outside_run"]


@dataclass(frozen=True, slots=True, kw_only=True)
class StepContext:
    """The step running in this process.

    Attributes:
        step: the step name.
        run_id: the run's id (may be empty).
        notebook: the notebook file.
        workdir: the step's working directory.
        metrics: values logged with `log_metric` so far (filled in while the step runs).
        artifact_root: the artifact store's URL (a local folder or ``s3://bucket/prefix``).
        scratch_dir: the step run's private folder (``cellpipe.data`` records its reads there).
        artifacts: the step process's open artifact store (``cellpipe.data`` keeps files
            there), or None when it could not be opened.
        offline: ``cellpipe.data`` uses stored copies without asking the sources.
    """

    step: str
    run_id: str
    notebook: str
    workdir: str
    metrics: dict[str, JsonValue] = field(default_factory=dict)
    artifact_root: str = ""
    scratch_dir: str = ""
    artifacts: ArtifactStore | None = None
    offline: bool = False


_current: StepContext | None = None
_outside: dict[str, JsonValue] = {}


def current_step() -> StepContext | None:
    """Return the step running in this process, or None outside a run."""
    return _current


@contextmanager
def activate(context: StepContext) -> Iterator[StepContext]:
    """Make ``context`` the current step for the duration of the block."""
    global _current
    previous = _current
    _current = context
    try:
        yield context
    finally:
        _current = previous


def metrics_outside_run() -> dict[str, JsonValue]:
    """Return the metrics logged in this process outside any step (a live dict)."""
    return _outside


def _type_name(value: object) -> str:
    module = type(value).__module__
    qualname = type(value).__qualname__
    return qualname if module == "builtins" else f"{module}.{qualname}"


def _to_scalar(name: str, value: object) -> JsonValue:
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value
    item = getattr(value, "item", None)  # numpy and torch scalars, 0-d arrays
    if callable(item):
        try:
            converted = item()
        except (TypeError, ValueError):
            converted = None
        if isinstance(converted, bool | int | float | str):
            return converted
    raise TypeError(
        f"log_metric({name!r}, ...): a metric must be a number, string or boolean, "
        f"not {_type_name(value)}"
    )


def log_metric(name: str, value: object) -> None:
    """Record a metric of the current step (or of this process, outside a run).

    Logging the same name twice keeps the last value.

    Args:
        name: the metric's name (a non-empty string).
        value: a number, string or boolean; numpy scalars are converted.

    Raises:
        TypeError: if ``value`` is not a scalar, or ``name`` is not a non-empty string.

    Example::

        cellpipe.log_metric("accuracy", acc)
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"log_metric: the name must be a non-empty string, not {name!r}")
    target = _current.metrics if _current is not None else _outside
    target[name] = _to_scalar(name, value)
