"""`Metrics` (item 11): what ``GET /metrics`` renders, read back with prometheus_client's parser.

Single-process mode runs here; multiprocess mode runs in real processes (prometheus_client
chooses its mode when first imported, and this interpreter has imported it already): two
workers write to one directory and a third process renders their sum.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cellpipe.errors import ServingError
from cellpipe.serving import metrics as metrics_module
from cellpipe.serving.metrics import Metrics, mark_process_dead
from cellpipe.serving.table import Switch
from cellpipe.serving.tensors import RequestError

SRC = str(Path(__file__).resolve().parents[3] / "src")


def samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a rendered body: (name, sorted labels) -> value."""
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(body: bytes, name: str, **labels: str) -> float | None:
    return samples(body).get((name, tuple(sorted(labels.items()))))


WINE1 = {"model": "wine", "version": "1", "protocol": "rest"}


def test_item11_requests_are_counted_by_status_with_latency_and_in_flight() -> None:
    metrics = Metrics.create()

    with metrics.track("wine", "1", "rest") as done:
        during = metrics.render()[0]
        done(200)
    with metrics.track("wine", "1", "rest") as done:
        done(400)
    with pytest.raises(RequestError), metrics.track("wine", "1", "rest"):
        raise RequestError("no such version", status=404)
    with pytest.raises(ZeroDivisionError), metrics.track("wine", "1", "rest"):
        _ = 1 / 0
    with metrics.track("wine", "1", "grpc"):
        pass
    body, content_type = metrics.render()

    assert content_type.startswith("text/plain; version=")
    assert value(during, "cellpipe_requests_in_flight", **WINE1) == 1
    assert value(body, "cellpipe_requests_in_flight", **WINE1) == 0
    for status, count in (("200", 1), ("400", 1), ("404", 1), ("500", 1)):
        assert value(body, "cellpipe_requests_total", **WINE1, status=status) == count
    grpc = {**WINE1, "protocol": "grpc"}
    assert value(body, "cellpipe_requests_total", **grpc, status="200") == 1
    assert value(body, "cellpipe_request_duration_seconds_count", **WINE1) == 4
    assert value(body, "cellpipe_request_duration_seconds_bucket", **WINE1, le="+Inf") == 4
    assert value(body, "cellpipe_request_duration_seconds_bucket", **WINE1, le="0.0005") is not None
    total = value(body, "cellpipe_request_duration_seconds_sum", **WINE1)
    assert total is not None
    assert total > 0


def test_item11_switches_and_the_served_version() -> None:
    metrics = Metrics.create()
    metrics.serving("wine", 1)
    at = datetime(2026, 12, 3, tzinfo=UTC)

    before = metrics.render()[0]
    metrics.switched(Switch("wine", "wine@production", 1, 2, at))
    metrics.switched(Switch("wine", "wine@production", 2, 3, at))
    body = metrics.render()[0]

    assert value(before, "cellpipe_model_version", model="wine") == 1
    assert value(before, "cellpipe_model_switches_total", model="wine") is None
    assert value(body, "cellpipe_model_version", model="wine") == 3
    assert value(body, "cellpipe_model_switches_total", model="wine") == 2


def test_item11_two_servers_in_one_process_do_not_mix() -> None:
    first, second = Metrics.create(), Metrics.create()

    with first.track("wine", "1", "rest") as done:
        done(200)

    assert value(first.render()[0], "cellpipe_requests_total", **WINE1, status="200") == 1
    assert value(second.render()[0], "cellpipe_requests_total", **WINE1, status="200") is None


def test_item11_label_sets_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_module, "MAX_SERIES", 2)
    metrics = Metrics.create()

    for name in ("a", "b", "c", "d"):
        with metrics.track(name, "1", "rest") as done:
            done(404)
    names = {labels for (name, labels) in samples(metrics.render()[0]) if name.endswith("_total")}

    models = {dict(labels)["model"] for labels in names}
    assert models == {"a", "b", "_other"}
    other = {"model": "_other", "version": "_other", "protocol": "rest", "status": "404"}
    assert value(metrics.render()[0], "cellpipe_requests_total", **other) == 2


def test_item11_multiprocess_mode_needs_the_directory_before_the_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import prometheus_client  # this interpreter: already imported, in single-process mode

    assert prometheus_client is not None
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)

    with pytest.raises(ServingError, match="imported before multiprocess mode"):
        Metrics.create(str(tmp_path))
    with pytest.raises(ServingError, match="does not exist"):
        Metrics.create(str(tmp_path / "missing"))


WORKER = textwrap.dedent(
    """
    import sys
    from cellpipe.serving.metrics import Metrics

    metrics = Metrics.create(sys.argv[1])
    for status in sys.argv[2].split(","):
        with metrics.track("wine", "1", "rest") as done:
            done(int(status))
    if sys.argv[3] == "hold":  # keep one request in flight until told to finish
        with metrics.track("wine", "1", "rest") as done:
            print("holding", flush=True)
            sys.stdin.readline()
            done(200)
    """
)
RENDER = textwrap.dedent(
    """
    import sys
    from cellpipe.serving.metrics import Metrics

    sys.stdout.buffer.write(Metrics.create(sys.argv[1]).render()[0])
    """
)


def _python(script: str, *args: str, **popen: Any) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": SRC}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return subprocess.Popen([sys.executable, "-c", script, *args], env=env, text=True, **popen)


def _render(folder: Path) -> bytes:
    render = _python(RENDER, str(folder), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = render.communicate(timeout=120)
    assert render.returncode == 0, err
    return out.encode()


def test_item11_multiprocess_mode_adds_up_two_worker_processes(tmp_path: Path) -> None:
    folder = tmp_path / "metrics"
    folder.mkdir()
    first = _python(WORKER, str(folder), "200,200,400", "exit", stderr=subprocess.PIPE)
    first_err = first.communicate(timeout=120)[1]
    assert first.returncode == 0, first_err
    second = _python(
        WORKER,
        str(folder),
        "200",
        "hold",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert second.stdout is not None
        assert second.stdout.readline() == "holding\n", second.communicate()[1]
        holding = _render(folder)
    finally:
        err = second.communicate("go\n", timeout=120)[1]
    assert second.returncode == 0, err
    mark_process_dead(second.pid, str(folder))
    done = _render(folder)

    assert value(holding, "cellpipe_requests_total", **WINE1, status="200") == 3
    assert value(holding, "cellpipe_requests_total", **WINE1, status="400") == 1
    assert value(holding, "cellpipe_requests_in_flight", **WINE1) == 1
    assert value(holding, "cellpipe_request_duration_seconds_count", **WINE1) == 4
    assert value(done, "cellpipe_requests_total", **WINE1, status="200") == 4
    assert value(done, "cellpipe_request_duration_seconds_count", **WINE1) == 5
    assert value(done, "cellpipe_requests_in_flight", **WINE1) in (None, 0)


class _Table:
    def __init__(self) -> None:
        self.on_switch: Any = None

    def start_following(self, source: Any, *, interval: float, on_switch: Any) -> None:
        self.on_switch = on_switch


def test_item11_only_one_process_counts_a_move() -> None:
    # Every worker process follows the alias itself; only the first counts the switch, the
    # others report the version they serve: one move is one, not one per process.
    from cellpipe.serving.server import _start_following

    metrics = Metrics.create()
    move = Switch(name="wine", ref="wine@production", previous=1, version=2, at=datetime.now(UTC))
    for count in (True, False, False):
        table = _Table()
        _start_following(table, metrics, None, 1.0, count_switches=count)
        table.on_switch(move)
    body = metrics.render()[0]
    assert value(body, "cellpipe_model_switches_total", model="wine") == 1
    assert value(body, "cellpipe_model_version", model="wine") == 2
