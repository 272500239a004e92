"""Prometheus metrics of the model server, through ``prometheus_client``.

Owns: `Metrics` (what ``GET /metrics`` renders) and `mark_process_dead`. The series:

    cellpipe_requests_total{model, version, protocol, status}        counter
    cellpipe_request_duration_seconds{model, version, protocol}      histogram
    cellpipe_requests_in_flight{model, version, protocol}            gauge
    cellpipe_model_switches_total{model}                             counter
    cellpipe_model_version{model}                                    gauge (served version)

``protocol`` is ``rest`` or ``grpc``; ``status`` the HTTP status (gRPC: the HTTP status the
error would have had, 200 for success). With several worker processes, each one counts its
own requests and `render` adds them up; every process follows an alias itself, and the server
has only its first worker count the moves (the others pass their switches to `serving`), so a
move counts once.

Multiprocess mode (pre-fork workers): prometheus_client decides when it is first imported
whether values live in memory or in files under ``PROMETHEUS_MULTIPROC_DIR``. The supervisor
creates an empty directory and calls ``Metrics.create(that_dir)`` before forking (this sets
the variable and imports prometheus_client when nothing imported it yet; otherwise the
variable must already name that directory). Each worker writes its own files there; `render`
in any process aggregates them all; when a worker exits the supervisor calls
`mark_process_dead` with its pid (its in-flight gauge is dropped, its counts stay), and it
removes the directory when the server stops.

Invariants: the request path is cheap: `Metrics.track` finds pre-bound label children with
one dict lookup (no label dict built per request), the status counter child is cached too;
label sets are bounded (`MAX_SERIES` model/version/protocol triples, the rest counted as
``_other``), so clients choosing URLs cannot grow memory without bound.

Must not depend on: the web framework, the runner, kfp, notebooks, config or api.
prometheus_client is imported in `Metrics.create` only (it comes with the ``serve`` extra).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from cellpipe.errors import ServingError

if TYPE_CHECKING:
    from cellpipe.serving.table import Switch

__all__ = ["BUCKETS", "MAX_SERIES", "Metrics", "mark_process_dead"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Latency histogram buckets, in seconds: a small model answers in well under 1 ms."""

MAX_SERIES = 1000
"""The most distinct (model, version, protocol) label sets; further ones count as ``_other``."""

_OTHER = "_other"


class _Series:
    """The label children of one (model, version, protocol): bound once, reused per request."""

    __slots__ = ("count", "duration", "in_flight", "labels")

    def __init__(self, metrics: Metrics, labels: tuple[str, str, str]) -> None:
        self.labels = labels
        self.duration = metrics._duration.labels(*labels)
        self.in_flight = metrics._in_flight.labels(*labels)
        self.count: dict[int, Any] = {}


class _Tracked:
    """One tracked request (the context manager `Metrics.track` returns)."""

    __slots__ = ("_metrics", "_series", "_start", "_status")

    def __init__(self, metrics: Metrics, series: _Series) -> None:
        self._metrics = metrics
        self._series = series
        self._status = 0
        self._start = 0.0

    def _done(self, status: int) -> None:
        self._status = status

    def __enter__(self) -> Callable[[int], None]:
        self._series.in_flight.inc()
        self._start = time.perf_counter()
        return self._done

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        elapsed = time.perf_counter() - self._start
        series = self._series
        series.in_flight.dec()
        series.duration.observe(elapsed)
        status = self._status
        if not status:
            status = 200 if exc is None else int(getattr(exc, "status", 500))
        child = series.count.get(status)
        if child is None:
            child = self._metrics._count_child(series, status)
        child.inc()


class Metrics:
    """The server's Prometheus metrics; build it with `Metrics.create`.

    Example::

        metrics = Metrics.create()
        with metrics.track("wine", "2", "rest") as done:
            ...  # answer the request
            done(200)
        body, content_type = metrics.render()
    """

    def __init__(self, *, registry: Any, multiprocess_dir: str | None) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.multiprocess_dir = multiprocess_dir
        self._registry = registry  # None in multiprocess mode: render aggregates the files
        labels = ("model", "version", "protocol")
        self._count = Counter(
            "cellpipe_requests",
            "Inference server requests, by model, version, protocol and status.",
            (*labels, "status"),
            registry=registry,
        )
        self._duration = Histogram(
            "cellpipe_request_duration_seconds",
            "Time to answer a request, in seconds, by model, version and protocol.",
            labels,
            buckets=BUCKETS,
            registry=registry,
        )
        self._in_flight = Gauge(
            "cellpipe_requests_in_flight",
            "Requests being answered now, by model, version and protocol.",
            labels,
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._switches = Counter(
            "cellpipe_model_switches",
            "Moves of a followed reference (NAME@ALIAS, NAME) to another version.",
            ("model",),
            registry=registry,
        )
        self._served_version = Gauge(
            "cellpipe_model_version",
            "The version a served name answers with now.",
            ("model",),
            registry=registry,
            multiprocess_mode="livemostrecent",
        )
        self._series: dict[tuple[str, str, str], _Series] = {}
        self._lock = threading.Lock()

    @classmethod
    def create(cls, multiprocess_dir: str | None = None) -> Metrics:
        """Return the metrics of one server.

        Args:
            multiprocess_dir: None: one process, a private registry (several servers in one
                process do not mix). A directory: multiprocess mode (see the module
                docstring); it must exist and should be empty when the server starts.

        Raises:
            ServingError: prometheus_client is missing (the ``serve`` extra), the directory
                does not exist, or prometheus_client was already imported without
                ``PROMETHEUS_MULTIPROC_DIR`` naming that directory.
        """
        if multiprocess_dir is None:
            prometheus = _import()
            return cls(registry=prometheus.CollectorRegistry(), multiprocess_dir=None)
        folder = Path(multiprocess_dir)
        if not folder.is_dir():
            raise ServingError(
                f"the metrics directory {str(folder)!r} does not exist",
                hint="create an empty directory for the workers' metrics files first",
            )
        if "prometheus_client" not in sys.modules:
            os.environ[MULTIPROC_ENV] = str(folder)
        _import()
        from prometheus_client import values

        current = os.environ.get(MULTIPROC_ENV)
        same = current is not None and Path(current).resolve() == folder.resolve()
        if not same or not getattr(values.ValueClass, "_multiprocess", False):
            raise ServingError(
                f"prometheus_client was imported before multiprocess mode was set up "
                f"({MULTIPROC_ENV} is {current!r}, not {str(folder)!r})",
                hint=f"set {MULTIPROC_ENV} to the directory before the server imports "
                "anything, or create the metrics before importing prometheus_client",
            )
        return cls(registry=None, multiprocess_dir=str(folder))

    def track(self, model: str, version: str, protocol: str) -> _Tracked:
        """Count one request: ``with metrics.track(name, version, "rest") as done: done(200)``.

        The in-flight gauge is raised on entry and lowered on exit; the latency is observed
        and the request counted with the status given to ``done`` (without a call: 200, or
        the exception's ``status``, else 500, when the block raised).
        """
        series = self._series.get((model, version, protocol))
        if series is None:
            series = self._new_series(model, version, protocol)
        return _Tracked(self, series)

    def switched(self, switch: Switch) -> None:
        """Record a move of a followed reference (pass it as ``on_switch``)."""
        self._switches.labels(switch.name).inc()
        self._served_version.labels(switch.name).set(switch.version)

    def serving(self, model: str, version: int) -> None:
        """Record the version ``model`` serves at start (before any switch)."""
        self._served_version.labels(model).set(version)

    def render(self) -> tuple[bytes, str]:
        """Return the body and content type of ``GET /metrics`` (Prometheus text format)."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        registry = self._registry
        if registry is None:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST

    def _new_series(self, model: str, version: str, protocol: str) -> _Series:
        with self._lock:
            key = (model, version, protocol)
            series = self._series.get(key)
            if series is not None:
                return series
            if len(self._series) >= MAX_SERIES:
                key = (_OTHER, _OTHER, protocol)
                series = self._series.get(key)
                if series is not None:
                    return series
            series = _Series(self, key)
            self._series[key] = series  # the overflow key is the only one past the limit
            return series

    def _count_child(self, series: _Series, status: int) -> Any:
        with self._lock:
            child = series.count.get(status)
            if child is None:
                child = self._count.labels(*series.labels, str(status))
                series.count[status] = child
            return child


def mark_process_dead(pid: int, multiprocess_dir: str | None = None) -> None:
    """Drop the live gauges of worker ``pid``, which exited (multiprocess mode).

    Its counters and histograms stay: they are part of the totals.
    """
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, multiprocess_dir)  # type: ignore[no-untyped-call]


def _import() -> Any:
    try:
        import prometheus_client
    except ImportError as exc:
        raise ServingError(
            "the server's metrics need prometheus_client (the 'serve' extra)",
            hint="pip install 'cellpipe[serve]'",
        ) from exc
    return prometheus_client
