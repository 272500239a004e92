"""Progress events of a run, and the sinks that receive them.

Owns: the event types the scheduler emits (`RunStarted`, `StepStarted`, `StepOutput`,
`StepCached`, `StepSucceeded`, `StepFailed`, `StepSkipped`, `StepCancelled`, `RunFinished`),
the `EventSink` protocol and `CollectingSink` (for tests).

Invariants: events are frozen values, emitted in the order things happen; every step of a run
gets exactly one terminal event (cached, succeeded, failed, skipped or cancelled) after at most
one `StepStarted`; `to_json()` gives the ``--json`` line (``event``, ``step``, ``status``).
Terminal step events carry the full `StepResult` so an orchestrator sink can record it.

Must not depend on: notebooks, the KFP compiler, the CLI or the UI.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias, TypeVar, runtime_checkable

from cellpipe.runner.jobs import StepResult
from cellpipe.storage.records import ArtifactRef, RunStatus, StepStatus

__all__ = [
    "CollectingSink",
    "Event",
    "EventSink",
    "RunFinished",
    "RunStarted",
    "StepCached",
    "StepCancelled",
    "StepFailed",
    "StepOutput",
    "StepSkipped",
    "StepStarted",
    "StepSucceeded",
    "to_sink",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStarted:
    """The scheduler starts: these steps will get a terminal event each.

    Attributes:
        run_id: the run's id as the orchestrator named it (may be empty).
        steps: the selected steps, in topological order.
        jobs: the concurrency limit.
    """

    run_id: str
    steps: tuple[str, ...]
    jobs: int

    def to_json(self) -> dict[str, Any]:
        """Return the ``--json`` line."""
        return {
            "event": "run_started",
            "run_id": self.run_id,
            "steps": list(self.steps),
            "jobs": self.jobs,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class StepStarted:
    """A step was handed to the executor.

    Attributes:
        step: the step.
        reason: why it runs, the cache decision in words (``miss: parameter LR changed
            0.1 → 0.2``, ``miss: no cached result``); the orchestrator fills it in.
    """

    step: str
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        """Return the ``--json`` line."""
        return {
            "event": "step_started",
            "step": self.step,
            "status": StepStatus.RUNNING.value,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class StepOutput:
    """Live output of a running step (its log file as it grows).

    Attributes:
        step: the step.
        stream: ``log`` (stdout and stderr interleaved, as in the log file).
        text: the new text.
    """

    step: str
    stream: str
    text: str

    def to_json(self) -> dict[str, Any]:
        """Return the ``--json`` line."""
        return {
            "event": "step_output",
            "step": self.step,
            "status": StepStatus.RUNNING.value,
            "stream": self.stream,
            "text": self.text,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class StepCached:
    """The orchestrator found the step's outputs in the cache; it did not run."""

    step: str
    reason: str
    result: StepResult = field(repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        """Return the ``--json`` line."""
        return {
            "event": "step_cached",
            "step": self.step,
            "status": StepStatus.CACHED.value,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class StepSucceeded:
    """The step ran and its outputs are stored."""

    step: str
    duration_s: float
    outputs: Mapping[str, ArtifactRef]
    result: StepResult = field(repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        """Return the ``--json`` line."""
        return {
            "event": "step_succeeded",
            "step": self.step,
            "status": StepStatus.SUCCEEDED.value,
            "duration_s": round(self.duration_s, 6),
            "outputs": {name: ref.to_json() for name, ref in self.outputs.items()},
            "metrics": dict(self.result.metrics),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class StepFailed:
    """The step's code raised, an output could not be stored, or its process died.

    Attributes:
        step: the step.
        error: one line naming the error and the notebook cell and line.
        log_path: the step's captured stdout and stderr.
        result: the full result (traceback text, executed notebook path).
    """

    step: str
    error: str
    log_path: str | None
    result: StepResult = field(repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        """Return the ``--json`` line."""
        return {
            "event": "step_failed",
            "step": self.step,
            "status": StepStatus.FAILED.value,
            "error": self.error,
            "traceback": self.result.traceback,
            "log_path": self.log_path,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class StepSkipped:
    """The step did not run because an upstream step failed (or the orchestrator said so)."""

    step: str
    reason: str
    result: StepResult = field(repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        """Return the ``--json`` line."""
        return {
            "event": "step_skipped",
            "step": self.step,
            "status": StepStatus.SKIPPED.value,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class StepCancelled:
    """The run was cancelled (Ctrl-C) while the step was running or waiting."""

    step: str
    result: StepResult = field(repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        """Return the ``--json`` line."""
        return {"event": "step_cancelled", "step": self.step, "status": StepStatus.CANCELLED.value}


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFinished:
    """Every step has its terminal event.

    Attributes:
        run_id: the run's id (may be empty).
        status: succeeded, failed or cancelled.
        duration_s: wall time of the scheduler.
        counts: number of steps per final status.
    """

    run_id: str
    status: RunStatus
    duration_s: float
    counts: Mapping[str, int]

    def to_json(self) -> dict[str, Any]:
        """Return the ``--json`` line."""
        return {
            "event": "run_finished",
            "run_id": self.run_id,
            "status": self.status.value,
            "duration_s": round(self.duration_s, 6),
            "counts": dict(self.counts),
        }


Event: TypeAlias = (
    RunStarted
    | StepStarted
    | StepOutput
    | StepCached
    | StepSucceeded
    | StepFailed
    | StepSkipped
    | StepCancelled
    | RunFinished
)

_E = TypeVar("_E")


@runtime_checkable
class EventSink(Protocol):
    """Receives events. A plain callable ``fn(event)`` is accepted wherever a sink is."""

    def emit(self, event: Event) -> None:
        """Handle one event; must not raise and should return quickly."""
        ...


class _CallableSink:
    def __init__(self, fn: Callable[[Event], None]) -> None:
        self._fn = fn

    def emit(self, event: Event) -> None:
        self._fn(event)


class _NullSink:
    def emit(self, event: Event) -> None:
        del event


def to_sink(sink: EventSink | Callable[[Event], None] | None) -> EventSink:
    """Return ``sink`` as an `EventSink` (wrapping a callable; None discards events)."""
    if sink is None:
        return _NullSink()
    if isinstance(sink, EventSink):
        return sink
    return _CallableSink(sink)


class CollectingSink:
    """Keeps every event in a list; for tests and for callers that render at the end.

    Example::

        sink = CollectingSink()
        run_steps(pipeline, prepare=prepare, executor=executor, sink=sink)
        assert [e.step for e in sink.of_type(StepSucceeded)] == ["a", "b"]
    """

    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        """Append the event."""
        self.events.append(event)

    def of_type(self, kind: type[_E]) -> list[_E]:
        """Return the events of one type, in order."""
        return [e for e in self.events if isinstance(e, kind)]

    def terminal(self) -> dict[str, Event]:
        """Return each step's terminal event (cached/succeeded/failed/skipped/cancelled)."""
        kinds = (StepCached, StepSucceeded, StepFailed, StepSkipped, StepCancelled)
        return {e.step: e for e in self.events if isinstance(e, kinds)}

    def output(self, step: str) -> str:
        """Return the live output streamed for ``step``."""
        return "".join(e.text for e in self.of_type(StepOutput) if e.step == step)
