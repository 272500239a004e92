r"""The live view of a run: its state model, its HTML and text renderings, its sinks.

Owns: `ProgressLines` (printed output with ``\r`` progress lines collapsed), `LiveState`
(runner events -> each step's state, reason, duration and latest output lines),
`live_html` / `state_text` (the renderings), `TextLiveView` (one line per event, for plain
Python and terminals without a display front end) and `NotebookLiveView` (one Jupyter display
updated in place through an IPython display handle, throttled).

Invariants: the state model and the renderings are pure: they take the events and a clock
reading and never import IPython; only `NotebookLiveView` does, when it is built. Every value
in the HTML is escaped; the HTML needs no internet (inline styles, the graph an inline SVG).
A line rewritten with ``\r`` (tqdm) is one line: only its latest text is kept.

Must not depend on: api, cli, ui.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import TYPE_CHECKING, Any, TextIO

from cellpipe.runner.events import (
    RunFinished,
    RunStarted,
    StepCached,
    StepCancelled,
    StepFailed,
    StepOutput,
    StepSkipped,
    StepStarted,
    StepSucceeded,
)
from cellpipe.views.live_lines import ProgressLines, collapse_cr, reason_text

if TYPE_CHECKING:
    from cellpipe.runner.events import Event

__all__ = [
    "LiveState",
    "NotebookLiveView",
    "ProgressLines",
    "StepView",
    "TextLiveView",
    "collapse_cr",
    "in_jupyter",
    "live_html",
    "reason_text",
    "state_text",
]

#: How many of a step's latest output lines the live view keeps and shows.
MAX_LINES = 40
#: At most this many display updates per second for output alone (state changes are shown at
#: once), so a chatty step does not flood the front end.
MAX_UPDATES_PER_S = 10.0
#: While a run goes the live view is redrawn this often (seconds) even without events, so
#: the elapsed times move on.
TICK_S = 1.0

SYMBOL: dict[str, str] = {
    "waiting": "·",
    "running": "▶",
    "succeeded": "✓",
    "cached": "↺",
    "failed": "✗",
    "skipped": "-",
    "cancelled": "■",
}


@dataclass(slots=True)
class StepView:
    r"""One step as the live view shows it.

    Attributes:
        name: the step.
        state: waiting, running, succeeded, cached, failed, skipped or cancelled.
        reason: why it ran or was reused (the cache decision in words), or why it was
            skipped, or its error.
        duration_s: how long it ran (set when it ended).
        started: the clock reading when it started.
        lines: its latest output lines (at most `MAX_LINES`), ``\r`` rewrites collapsed.
        traceback: a failed step's traceback, pointing at notebook cells.
        hint: a failed step's hint.
    """

    name: str
    state: str = "waiting"
    reason: str = ""
    duration_s: float | None = None
    started: float | None = None
    lines: list[str] = field(default_factory=list)
    progress: ProgressLines = field(default_factory=ProgressLines)
    traceback: str = ""
    hint: str = ""

    def shown_lines(self) -> list[str]:
        """The output lines to show, the line being rewritten last."""
        current = self.progress.current
        return [*self.lines, current] if current else list(self.lines)


class LiveState:
    """What the live view knows about a run, built from the runner's events.

    Args:
        clock: returns seconds (monotonic); injected by tests.
        steps: the steps to show before the run starts (optional).
    """

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, steps: Sequence[str] = ()
    ) -> None:
        self.clock = clock
        self.run_id = ""
        self.status = "starting"
        self.started = clock()
        self.duration_s: float | None = None
        self.steps: dict[str, StepView] = {name: StepView(name) for name in steps}
        #: ``(step, line)`` completed by the last `apply` (for views that print lines).
        self.new_lines: list[tuple[str, str]] = []

    def step(self, name: str) -> StepView:
        """Return the view of ``name`` (added when it is new)."""
        view = self.steps.get(name)
        if view is None:
            view = self.steps[name] = StepView(name)
        return view

    def apply(self, event: Event) -> bool:
        """Take one event into the state; return True when a step's or the run's state changed.

        Output alone returns False (the caller may throttle what it redraws for it).
        """
        now = self.clock()
        self.new_lines = []
        if isinstance(event, RunStarted):
            self.run_id = event.run_id
            self.status = "running"
            for name in event.steps:
                self.step(name)
            return True
        if isinstance(event, RunFinished):
            self.status = event.status.value
            self.duration_s = event.duration_s
            for view in self.steps.values():
                self._end_output(view)
            return True
        if isinstance(event, StepOutput):
            view = self.step(event.step)
            self._add_lines(view, view.progress.feed(event.text))
            return False
        if isinstance(event, StepStarted):
            view = self.step(event.step)
            view.state = "running"
            view.started = now
            view.reason = reason_text(event.reason)
            return True
        view = self.step(event.step)
        self._end_output(view)
        if isinstance(event, StepSucceeded):
            view.state = "succeeded"
            view.duration_s = event.duration_s
        elif isinstance(event, StepCached):
            view.state = "cached"
            view.reason = reason_text(event.reason)
        elif isinstance(event, StepFailed):
            view.state = "failed"
            view.reason = event.error
            view.traceback = event.result.traceback or ""
            view.hint = event.result.hint or ""
            if event.result.duration_s:
                view.duration_s = event.result.duration_s
        elif isinstance(event, StepSkipped):
            view.state = "skipped"
            view.reason = event.reason
        elif isinstance(event, StepCancelled):
            view.state = "cancelled"
        return True

    def _add_lines(self, view: StepView, lines: list[str]) -> None:
        self.new_lines.extend((view.name, line) for line in lines)
        view.lines.extend(lines)
        del view.lines[:-MAX_LINES]

    def _end_output(self, view: StepView) -> None:
        self._add_lines(view, view.progress.flush())

    def elapsed(self) -> float:
        """Seconds since the run started (its duration once it finished)."""
        if self.duration_s is not None:
            return self.duration_s
        return max(0.0, self.clock() - self.started)

    def step_elapsed(self, view: StepView) -> float | None:
        """A running step's seconds so far, an ended step's duration, else None."""
        if view.state == "running" and view.started is not None:
            return max(0.0, self.clock() - view.started)
        return view.duration_s

    def counts(self) -> dict[str, int]:
        """Number of steps per state."""
        found: dict[str, int] = {}
        for view in self.steps.values():
            found[view.state] = found.get(view.state, 0) + 1
        return found


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}s"


def _detail(state: LiveState, view: StepView) -> str:
    parts = [view.state]
    elapsed = state.step_elapsed(view)
    if elapsed is not None and view.state in ("running", "succeeded", "failed"):
        parts.append(_seconds(elapsed))
    if view.reason and view.state in ("running", "succeeded", "cached"):
        parts.append(view.reason)
    return " · ".join(parts)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


# -- HTML ------------------------------------------------------------------------------------

_BOX = (
    "font-family:system-ui,-apple-system,'Segoe UI',sans-serif;font-size:13px;"
    "border:1px solid #e5e7eb;border-radius:6px;padding:8px 10px;margin:2px 0"
)
_PRE = (
    "font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px;"
    "white-space:pre-wrap;margin:4px 0;padding:6px;background:#f9fafb;border-radius:4px;"
    "max-height:24em;overflow:auto"
)
_STATE_COLOUR = {
    "running": "#2563eb",
    "succeeded": "#16a34a",
    "cached": "#059669",
    "failed": "#dc2626",
    "skipped": "#6b7280",
    "cancelled": "#a16207",
    "waiting": "#6b7280",
}


def live_html(
    state: LiveState,
    *,
    edges: Sequence[tuple[str, str, str]] = (),
    title: str = "",
) -> str:
    """Return the live view as one HTML fragment: header, graph, step table, output, errors.

    Args:
        state: the run's state.
        edges: the pipeline's edges ``(source, target, label)`` for the graph.
        title: the notebook's name, shown in the header.
    """
    from cellpipe.views.graph import GraphNode, graph_svg

    status = state.status
    colour = _STATE_COLOUR.get(status, "#111827")
    counts = ", ".join(f"{n} {s}" for s, n in sorted(state.counts().items()))
    head = (
        f"<div><b>cellpipe run</b> {escape(state.run_id)}"
        + (f" · {escape(title)}" if title else "")
        + f" · <span style='color:{colour};font-weight:600'>{escape(status)}</span>"
        + f" · {escape(_seconds(state.elapsed()))}"
        + (f" · {escape(counts)}" if counts else "")
        + "</div>"
    )
    names = set(state.steps)
    nodes = [
        GraphNode(id=v.name, label=v.name, state=v.state, detail=_detail(state, v))
        for v in state.steps.values()
    ]
    svg = graph_svg(nodes, [e for e in edges if e[0] in names and e[1] in names])
    rows = []
    for view in state.steps.values():
        c = _STATE_COLOUR.get(view.state, "#111827")
        rows.append(
            "<tr>"
            f"<td style='text-align:left;color:{c}'>{escape(SYMBOL.get(view.state, '?'))}</td>"
            f"<td style='text-align:left'><code>{escape(view.name)}</code></td>"
            f"<td style='text-align:left;color:{c}'>{escape(view.state)}</td>"
            f"<td style='text-align:right'>{escape(_seconds(state.step_elapsed(view)))}</td>"
            f"<td style='text-align:left;color:#6b7280'>{escape(view.reason)}</td>"
            "</tr>"
        )
    table = (
        "<table style='border-collapse:collapse;margin:4px 0'>"
        "<tr style='text-align:left'><th></th><th>step</th><th>state</th><th>time</th>"
        "<th>why</th></tr>" + "".join(rows) + "</table>"
    )
    output = []
    for view in state.steps.values():
        lines = view.shown_lines()
        if lines:
            output.append(
                f"<div><code>{escape(view.name)}</code> output</div>"
                f'<pre style="{_PRE}">{escape(chr(10).join(lines))}</pre>'
            )
    errors = []
    for view in state.steps.values():
        if view.state == "failed":
            text = view.traceback or view.reason
            hint = f"<div>hint: {escape(view.hint)}</div>" if view.hint else ""
            errors.append(
                f"<div style='color:#dc2626;font-weight:600'>step "
                f"<code>{escape(view.name)}</code> failed: {escape(view.reason)}</div>"
                f'<pre style="{_PRE};color:#7f1d1d;background:#fef2f2">{escape(text)}</pre>' + hint
            )
    return (
        f"<div class='cellpipe-live' style=\"{_BOX}\">"
        + head
        + f"<div style='margin:6px 0'>{svg}</div>"
        + table
        + "".join(output)
        + "".join(errors)
        + "</div>"
    )


def state_text(state: LiveState) -> str:
    """Return the live view as plain text (the ``text/plain`` of the display, and tests)."""
    lines = [f"cellpipe run {state.run_id} {state.status} {_seconds(state.elapsed())}".rstrip()]
    for view in state.steps.values():
        line = f"{SYMBOL.get(view.state, '?')} {view.name} {view.state}"
        elapsed = state.step_elapsed(view)
        if elapsed is not None and view.state in ("running", "succeeded", "failed"):
            line += f" {_seconds(elapsed)}"
        if view.reason:
            line += f" ({view.reason})"
        lines.append(line)
    for view in state.steps.values():
        if view.state == "failed" and view.traceback:
            lines.append(f"step '{view.name}' failed:")
            lines.append(view.traceback.rstrip("\n"))
    return "\n".join(lines)


# -- sinks -----------------------------------------------------------------------------------


def in_jupyter() -> bool:
    """Return whether this process is a Jupyter kernel with a display front end."""
    import sys

    if "IPython" not in sys.modules:
        return False
    from IPython import get_ipython

    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class TextLiveView:
    """One line per state change and per output line, for plain Python and terminals.

    Args:
        stream: where the lines go.
        clock: seconds (monotonic).
    """

    def __init__(self, stream: TextIO, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.state = LiveState(clock=clock)
        self._traceback_shown: set[str] = set()

    def emit(self, event: Event) -> None:
        """Take one event and print what changed."""
        changed = self.state.apply(event)
        for name, line in self.state.new_lines:
            if line.startswith("Traceback (most recent call last):"):
                self._traceback_shown.add(name)
            self._write(f"  [{name}] {line}")
        if not changed:
            return
        if isinstance(event, RunStarted):
            self._write(f"run {event.run_id}: {_plural(len(event.steps), 'step')}")
        elif isinstance(event, RunFinished):
            counts = ", ".join(f"{n} {s}" for s, n in sorted(self.state.counts().items()))
            self._write(f"run {event.run_id} {event.status.value} ({counts})")
        else:
            view = self.state.steps[getattr(event, "step", "")]
            line = f"{SYMBOL.get(view.state, '?')} {view.name} {view.state}"
            if view.duration_s is not None and view.state != "cached":
                line += f" in {_seconds(view.duration_s)}"
            if view.reason and view.state != "succeeded":
                line += f" ({view.reason})"
            self._write(line)
            # The traceback once: not again when the step's output showed it.
            if view.state == "failed" and view.traceback and view.name not in self._traceback_shown:
                self._write(view.traceback.rstrip("\n"))

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Nothing is held back: every line was written as it came."""


class _Html:
    """A displayable object: the live view's HTML and its plain-text form."""

    def __init__(self, html: str, text: str) -> None:
        self.html = html
        self.text = text

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return self.text


def _timer(delay: float, fn: Callable[[], None]) -> Callable[[], None]:
    """Call ``fn`` once in ``delay`` seconds on a daemon thread; return a cancel function."""
    import threading

    timer = threading.Timer(delay, fn)
    timer.daemon = True
    timer.start()
    return timer.cancel


class NotebookLiveView:
    """The live view in a Jupyter kernel: one display, updated in place.

    The first event creates the display (``display(..., display_id=True)``); later events
    update it through its handle: at once when a state changed, at most `MAX_UPDATES_PER_S`
    times a second for output alone. Output held back by that limit is drawn when the
    interval is over (a timer), so a step that prints once and then works quietly is seen
    at once; while the run goes it is redrawn every `TICK_S` seconds for the elapsed times.
    `close` draws the final state.

    Args:
        edges: the pipeline's edges ``(source, target, label)`` for the graph.
        steps: the step names, shown waiting before the run starts.
        title: the notebook's name.
        clock: seconds (monotonic).
        later: ``later(delay, fn)`` calls ``fn`` after ``delay`` seconds and returns a function
            that cancels it (default: a daemon `threading.Timer`); tests pass their own.
    """

    def __init__(
        self,
        *,
        edges: Sequence[tuple[str, str, str]] = (),
        steps: Sequence[str] = (),
        title: str = "",
        clock: Callable[[], float] = time.monotonic,
        later: Callable[[float, Callable[[], None]], Callable[[], None]] = _timer,
    ) -> None:
        import threading

        from IPython.display import display

        self.edges = tuple(edges)
        self.title = title
        self.state = LiveState(clock=clock, steps=steps)
        self._clock = clock
        self._later = later
        self._lock = threading.Lock()
        self._cancel: Callable[[], None] | None = None  # the pending redraw, if any
        self._tick: Callable[[], None] | None = None  # the pending clock redraw, if any
        self._last = clock()
        self._dirty = False
        self._closed = False
        self.handle: Any = display(self._view(), display_id=True)  # type: ignore[no-untyped-call]

    def _view(self) -> _Html:
        return _Html(
            live_html(self.state, edges=self.edges, title=self.title), state_text(self.state)
        )

    def emit(self, event: Event) -> None:
        """Take one event; redraw now on a state change, else when the throttle allows."""
        with self._lock:
            changed = self.state.apply(event)
            now = self._clock()
            wait = 1.0 / MAX_UPDATES_PER_S - (now - self._last)
            if changed or wait <= 0:
                self._update(now)
            else:
                self._dirty = True
                if self._cancel is None and not self._closed:
                    self._cancel = self._later(wait, self._redraw)

    def _redraw(self) -> None:
        with self._lock:
            self._cancel = None
            if self._dirty and not self._closed:
                self._update(self._clock())

    def _tick_now(self) -> None:
        with self._lock:
            self._tick = None
            if not self._closed and self.state.status == "running":
                self._update(self._clock())

    def _update(self, now: float) -> None:
        self._last = now
        self._dirty = False
        self.handle.update(self._view())
        # While the run goes, the elapsed times move on even when no event comes.
        if self._tick is None and not self._closed and self.state.status == "running":
            self._tick = self._later(TICK_S, self._tick_now)

    def close(self) -> None:
        """Draw the final state (output held back by the throttle included); once."""
        with self._lock:
            for cancel in (self._cancel, self._tick):
                if cancel is not None:
                    cancel()
            self._cancel = self._tick = None
            if not self._closed:
                self._closed = True
                self._update(self._clock())


def metrics_html(metrics: Mapping[str, Any]) -> str:
    """Return a run's metrics as a small HTML table (values escaped)."""
    if not metrics:
        return ""
    rows = "".join(
        f"<tr><td><code>{escape(str(k))}</code></td><td>{escape(_short(v))}</td></tr>"
        for k, v in metrics.items()
    )
    return (
        f'<div style="{_BOX}"><b>metrics</b>'
        f"<table style='border-collapse:collapse;margin:4px 0'>{rows}</table></div>"
    )


def _short(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value)
    return text if len(text) <= 80 else text[:79] + "…"


def rich_outputs(notebook: Mapping[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Return each step's rich outputs (figures, HTML, tables) from a run's executed notebook.

    Args:
        notebook: the run notebook as JSON (``run.ipynb``: a heading cell per step, then its
            cells with ``metadata.cellpipe.step``).

    Returns:
        ``(step, [mime bundles])`` in notebook order, for the steps that have any; stream
        output is left out (the live view showed it).
    """
    found: dict[str, list[dict[str, Any]]] = {}
    for cell in notebook.get("cells", []):
        info = cell.get("metadata", {}).get("cellpipe", {})
        step = info.get("step")
        if not step or info.get("role") == "preamble":
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") in ("display_data", "execute_result"):
                data = {
                    k: "".join(v) if isinstance(v, list) else v
                    for k, v in out.get("data", {}).items()
                }
                found.setdefault(step, []).append(data)
    return list(found.items())


@dataclass(frozen=True, slots=True)
class StepRow:
    """One row of a run's steps table.

    Attributes:
        step: the step.
        status: its final status.
        duration_s: how long it took (None when it did not run).
        reason: the cache decision or error, in words.
        source_run: for a cache hit, the run whose outputs were reused.
    """

    step: str
    status: str
    duration_s: float | None
    reason: str
    source_run: str | None = None


def run_html(
    *,
    run_id: str,
    status: str,
    parameters: Mapping[str, Any],
    metrics: Mapping[str, Any],
    steps: Sequence[StepRow],
    edges: Sequence[tuple[str, str, str]] = (),
    error: str | None = None,
) -> str:
    """Return a finished run as HTML: status, parameters, metrics, steps table, graph.

    Every value is escaped; the graph is an inline SVG with the steps' final states.
    """
    from cellpipe.views.graph import GraphNode, graph_svg

    colour = _STATE_COLOUR.get(status, "#111827")
    head = (
        f"<div><b>cellpipe run</b> <code>{escape(run_id)}</code> · "
        f"<span style='color:{colour};font-weight:600'>{escape(status)}</span></div>"
    )

    def pairs(title: str, values: Mapping[str, Any]) -> str:
        if not values:
            return ""
        cells = ", ".join(
            f"<code>{escape(str(k))}</code>={escape(_short(v))}" for k, v in values.items()
        )
        return f"<div><b>{escape(title)}</b>: {cells}</div>"

    rows = "".join(
        "<tr>"
        f"<td style='text-align:left'><code>{escape(row.step)}</code></td>"
        f"<td style='text-align:left;color:{_STATE_COLOUR.get(row.status, '#111827')}'>"
        f"{escape(row.status)}</td>"
        f"<td style='text-align:right'>{escape(_seconds(row.duration_s))}</td>"
        f"<td style='text-align:left;color:#6b7280'>{escape(row.reason)}"
        + (f" (from {escape(row.source_run)})" if row.source_run else "")
        + "</td></tr>"
        for row in steps
    )
    table = (
        "<table style='border-collapse:collapse;margin:4px 0'>"
        "<tr style='text-align:left'><th>step</th><th>status</th><th>time</th>"
        f"<th>cache decision</th></tr>{rows}</table>"
    )
    names = {row.step for row in steps}
    nodes = [
        GraphNode(
            id=row.step,
            label=row.step,
            state=row.status,
            detail=" · ".join(p for p in (row.status, _seconds(row.duration_s)) if p),
        )
        for row in steps
    ]
    svg = graph_svg(nodes, [e for e in edges if e[0] in names and e[1] in names])
    failure = (
        f'<pre style="{_PRE};color:#7f1d1d;background:#fef2f2">{escape(error)}</pre>'
        if error
        else ""
    )
    return (
        f"<div class='cellpipe-run' style=\"{_BOX}\">{head}"
        + pairs("parameters", parameters)
        + pairs("metrics", metrics)
        + table
        + f"<div style='margin:6px 0'>{svg}</div>"
        + failure
        + "</div>"
    )
