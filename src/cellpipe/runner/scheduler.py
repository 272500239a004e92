"""The DAG scheduler: runs the selected steps of a pipeline, in parallel where the graph allows.

Owns: `run_steps` and its `RunOutcome`. A step starts as soon as its upstream steps are done;
``prepare`` (the orchestrator's callback) turns a ready step into a `StepJob`, or into a
finished `StepResult` (a cache hit, say) that completes at once; the executor runs the jobs,
at most ``jobs`` at a time.

Invariants:
    * every selected step gets exactly one terminal event (cached, succeeded, failed, skipped
      or cancelled), after at most one `StepStarted`; `RunStarted` comes first and
      `RunFinished` last;
    * ready steps are prepared and started in the pipeline's topological order, so a run with
      ``jobs=1`` is deterministic;
    * when a step fails, its selected descendants are skipped and independent branches finish;
    * on Ctrl-C (KeyboardInterrupt) every running step process is killed and reaped, running
      and waiting steps are reported cancelled, and the KeyboardInterrupt is re-raised;
    * steps outside the selection are treated as done: ``prepare`` must find their outputs
      (in the cache) for the selected steps that read them.

Must not depend on: notebooks, the KFP compiler, the CLI or the UI.
"""

from __future__ import annotations

import codecs
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import IO, TYPE_CHECKING, TypeAlias

from cellpipe.pipeline.model import Pipeline, Step
from cellpipe.runner.events import (
    Event,
    EventSink,
    RunFinished,
    RunStarted,
    StepCached,
    StepCancelled,
    StepFailed,
    StepOutput,
    StepSkipped,
    StepStarted,
    StepSucceeded,
    to_sink,
)
from cellpipe.runner.jobs import StepJob, StepResult
from cellpipe.storage.records import RunStatus, StepStatus

if TYPE_CHECKING:  # the executors are only needed once a step runs
    from cellpipe.runner.execute import Executor

__all__ = ["Prepare", "RunOutcome", "run_steps"]

logger = logging.getLogger(__name__)

Prepare: TypeAlias = Callable[[Step, Mapping[str, StepResult]], StepJob | StepResult]
"""``prepare(step, upstream_results)``: a job to run, or the step's result without running it.

``upstream_results`` maps each selected upstream step to its result (succeeded or cached).
Return `StepResult.cached(...)` for a cache hit; a FAILED or SKIPPED result is reported as such.
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOutcome:
    """How the scheduled steps ended.

    Attributes:
        status: succeeded, failed (some step failed) or cancelled.
        results: every selected step's result, in the order they finished.
        duration_s: wall time.
    """

    status: RunStatus
    results: Mapping[str, StepResult] = field(default_factory=dict)
    duration_s: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "results", MappingProxyType(dict(self.results)))

    @property
    def failed(self) -> tuple[StepResult, ...]:
        """The failed steps' results."""
        return tuple(r for r in self.results.values() if r.status is StepStatus.FAILED)


class _LogTail:
    """Reads what a running step appended to its log since the last read."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._file: IO[bytes] | None = None
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def read(self, *, final: bool = False) -> str:
        if self._file is None:
            try:
                self._file = self._path.open("rb")
            except FileNotFoundError:
                return ""
        return self._decoder.decode(self._file.read(), final=final)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class _Run:
    """The mutable state of one scheduling run (private; keyed by step name)."""

    def __init__(
        self,
        pipeline: Pipeline,
        selected: tuple[str, ...],
        prepare: Prepare,
        executor: Executor,
        sink: EventSink,
        jobs: int,
        stream_output: bool,
    ) -> None:
        self.steps = {s.name: s for s in pipeline.steps if s.name in selected}
        self.order = [s.name for s in pipeline.steps if s.name in selected]
        self.deps = {
            name: tuple(u for u in self.steps[name].upstream if u in self.steps)
            for name in self.order
        }
        self.prepare = prepare
        self.executor = executor
        self.sink = sink
        self.jobs = jobs
        self.stream_output = stream_output
        self.pending = list(self.order)
        self.queued: list[StepJob] = []
        self.running: dict[str, StepJob] = {}
        self.tails: dict[str, _LogTail] = {}
        self.results: dict[str, StepResult] = {}
        self.root_cause: dict[str, str] = {}  # failed/skipped step -> the failed step behind it

    def emit(self, event: Event) -> None:
        try:
            self.sink.emit(event)
        except Exception:  # a broken renderer must not break the run
            logger.exception("event sink failed on %r", event)

    def finish(self, result: StepResult) -> None:
        name = result.step
        if name in self.results:
            return
        self.running.pop(name, None)
        tail = self.tails.pop(name, None)
        if tail is not None:
            try:  # closed even when an interrupt lands in the sink (no file left open)
                self._emit_output(name, tail.read(final=True))
            finally:
                tail.close()
        self.results[name] = result
        status = result.status
        if status is StepStatus.CACHED:
            self.emit(StepCached(step=name, reason=result.error or "", result=result))
        elif status is StepStatus.SUCCEEDED:
            self.emit(
                StepSucceeded(
                    step=name, duration_s=result.duration_s, outputs=result.outputs, result=result
                )
            )
        elif status is StepStatus.FAILED:
            self.root_cause[name] = name
            self.emit(
                StepFailed(
                    step=name, error=result.error or "", log_path=result.log_path, result=result
                )
            )
        elif status is StepStatus.SKIPPED:
            self.root_cause.setdefault(name, name)
            self.emit(StepSkipped(step=name, reason=result.error or "", result=result))
        else:
            self.emit(StepCancelled(step=name, result=result))

    def _emit_output(self, name: str, text: str) -> None:
        if text:
            self.emit(StepOutput(step=name, stream="log", text=text))

    def schedule_ready(self) -> None:
        """Prepare every step whose upstream steps are done; skip those behind a failure."""
        progressed = True
        while progressed:
            progressed = False
            for name in list(self.pending):
                deps = self.deps[name]
                if any(d not in self.results for d in deps):
                    continue
                self.pending.remove(name)
                progressed = True
                bad = [d for d in deps if not self.results[d].ok]
                if bad:
                    cause = self.root_cause.get(bad[0], bad[0])
                    self.root_cause[name] = cause
                    reason = f"upstream step '{cause}' failed"
                    self.finish(StepResult(step=name, status=StepStatus.SKIPPED, error=reason))
                    continue
                prepared = self.prepare(self.steps[name], {d: self.results[d] for d in deps})
                if isinstance(prepared, StepJob):
                    self.queued.append(prepared)
                else:
                    self.finish(prepared)

    def start_queued(self) -> None:
        while self.queued and len(self.running) < self.jobs:
            job = self.queued.pop(0)
            self.running[job.step] = job
            if self.stream_output:
                self.tails[job.step] = _LogTail(job.log_path)
            self.emit(StepStarted(step=job.step))
            self.executor.submit(job)

    def stream(self) -> None:
        for name, tail in list(self.tails.items()):
            self._emit_output(name, tail.read())

    def cancel_all(self) -> None:
        self.executor.cancel()
        for name, job in list(self.running.items()):
            self.finish(
                StepResult(
                    step=name,
                    status=StepStatus.CANCELLED,
                    error="the run was cancelled",
                    log_path=str(job.log_path),
                )
            )
        waiting = [job.step for job in self.queued] + self.pending
        self.queued.clear()
        self.pending.clear()
        for name in sorted(waiting, key=self.order.index):
            self.finish(
                StepResult(step=name, status=StepStatus.CANCELLED, error="the run was cancelled")
            )

    def close_tails(self) -> None:
        for tail in self.tails.values():
            tail.close()
        self.tails.clear()


def run_steps(
    pipeline: Pipeline,
    *,
    prepare: Prepare,
    executor: Executor,
    sink: EventSink | Callable[[Event], None] | None = None,
    steps: Iterable[str] | None = None,
    jobs: int | None = None,
    run_id: str = "",
    poll_interval: float = 0.05,
    after_start: Callable[[], None] | None = None,
) -> RunOutcome:
    """Run the selected steps of ``pipeline``, each as soon as its upstream steps are done.

    Args:
        pipeline: the pipeline.
        prepare: turns a ready step into a `StepJob` (or a finished `StepResult`, e.g. a cache
            hit); called once per step, in topological order among ready steps.
        executor: runs the jobs. The caller owns it (and closes it).
        sink: receives the events (an `EventSink` or a callable).
        steps: the step names to run (default: all). Unselected upstream steps count as done.
        jobs: how many steps may run at once (default: ``os.cpu_count()``).
        run_id: the run's id, copied into `RunStarted` and `RunFinished`.
        poll_interval: how often live output is read while steps run, in seconds (a step
            that ends is noticed at once: the executor's wait is woken by it).
        after_start: called after the ready steps were started, before waiting for them:
            bookkeeping of the steps that ended (records) runs while the next ones run.

    Returns:
        The outcome: the run status and every selected step's result.

    Raises:
        KeyError: if ``steps`` names a step the pipeline does not have.
        KeyboardInterrupt: re-raised after every step process was killed and the remaining
            steps were reported cancelled.
    """
    start = time.perf_counter()
    selected = pipeline.step_names if steps is None else tuple(steps)
    for name in selected:
        pipeline.step(name)
    limit = max(1, jobs if jobs is not None else (os.cpu_count() or 1))
    event_sink = to_sink(sink)
    run = _Run(
        pipeline,
        selected,
        prepare,
        executor,
        event_sink,
        limit,
        stream_output=sink is not None,
    )
    run.emit(RunStarted(run_id=run_id, steps=tuple(run.order), jobs=limit))
    try:
        while len(run.results) < len(run.order):
            run.schedule_ready()
            run.start_queued()
            if after_start is not None:
                after_start()
            if not run.running:
                if len(run.results) < len(run.order) and not run.queued:
                    raise RuntimeError(f"steps cannot be scheduled: {run.pending}")  # a cycle
                continue
            for result in executor.poll(poll_interval):
                run.finish(result)
            run.stream()
    except BaseException as exc:
        run.cancel_all()
        run.close_tails()
        if isinstance(exc, KeyboardInterrupt):
            outcome = _outcome(run, RunStatus.CANCELLED, start)
            run.emit(_finished_event(run_id, outcome))
        raise
    run.close_tails()
    failed = any(r.status is StepStatus.FAILED for r in run.results.values())
    status = RunStatus.FAILED if failed else RunStatus.SUCCEEDED
    outcome = _outcome(run, status, start)
    run.emit(_finished_event(run_id, outcome))
    return outcome


def _outcome(run: _Run, status: RunStatus, start: float) -> RunOutcome:
    return RunOutcome(status=status, results=run.results, duration_s=time.perf_counter() - start)


def _finished_event(run_id: str, outcome: RunOutcome) -> RunFinished:
    counts: dict[str, int] = {}
    for result in outcome.results.values():
        counts[result.status.value] = counts.get(result.status.value, 0) + 1
    return RunFinished(
        run_id=run_id, status=outcome.status, duration_s=outcome.duration_s, counts=counts
    )
