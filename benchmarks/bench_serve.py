"""Benchmarks of the model server (`cellpipe serve`) against calling the model in process.

Setup, in a temporary project: a scikit-learn ``RandomForestClassifier(n_estimators=100)``
trained on the wine dataset as a numpy array (so its signature is one ``[-1, 13]`` FP64
tensor), registered with `ModelRegistry` as ``wine@production``, then served by
`cellpipe.serving.start_server` (a background thread of this process, free port) and by the
real ``cellpipe serve wine@production --port P`` command in its own process. Each case is
measured side by side with its baseline, in interleaved blocks of 20 calls, so a change of
load on the shared machine hits both:

- 1 row and 1000 rows, each as JSON tensor data and as binary tensor data (the
  ``Inference-Header-Content-Length`` header, FP64 input and INT64 output as raw bytes):
  ``POST /v2/models/wine/infer`` against ``model.predict`` on the same rows in process; for
  the breakdown, also `cellpipe.serving.protocol.infer` on the same body in process (the
  protocol's work without HTTP);
- ``GET /v2/health/ready``, the floor of the HTTP stack, against a bare ASGI app (one fixed
  response, no routing) on the same uvicorn;
- for the breakdown, every request also against `cellpipe.serving.create_app` (the same app)
  on uvicorn in a thread of this script whose listening socket is made with ``IPPROTO_TCP``,
  as ``uvicorn --port`` makes its own (asyncio sets ``TCP_NODELAY`` on the connections only
  then). This column found a bug: `start_server` and ``cellpipe serve`` bound their socket with
  ``proto`` 0, so every keep-alive response (headers and body written separately) waited
  about 40 ms for the client's delayed ACK. They now bind with ``IPPROTO_TCP`` and this column
  should match theirs;
- start-up: from starting ``cellpipe serve`` to the first 200 from ``/v2/health/ready``
  (polled every 5 ms; interpreter start, imports and loading the model included), against
  ``python -c "import sklearn.ensemble, joblib; joblib.load(MODEL)"`` on the same file.

The client is sequential, on one keep-alive ``http.client.HTTPConnection``: request bodies are
encoded once before timing and every response is read (and checked against ``predict`` once,
before timing). Per case: median and p95 latency over ``--requests`` calls (default 300) after
20 warm-up calls, and calls per second (calls / wall time). Subprocesses run without
``PYTHONDONTWRITEBYTECODE`` (an installed cellpipe has its bytecode cached); the load average
before and after is recorded, since the machine may be shared.

Run: ``.venv/bin/python benchmarks/bench_serve.py [--requests N] [--startups K] [--no-write]``;
results go to this script's section of RESULTS.md (between its start and end markers; other
sections are kept).
"""

from __future__ import annotations

import argparse
import http.client
import importlib.metadata
import importlib.util
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn
from _results import write_section
from sklearn.datasets import load_wine
from sklearn.ensemble import RandomForestClassifier

from cellpipe.api import open_project
from cellpipe.config import Settings
from cellpipe.registry.registry import ModelRegistry
from cellpipe.serving import create_app, start_server
from cellpipe.serving.app import ModelTable
from cellpipe.serving.protocol import infer

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CELLPIPE = str(BIN / "cellpipe")
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
MODEL = "wine"
INFER = f"/v2/models/{MODEL}/infer"
READY = "/v2/health/ready"
WARMUP = 20
BLOCK = 20


@dataclass(frozen=True, slots=True)
class Stats:
    """Latencies of one contender (seconds) and the wall time of its timed calls."""

    samples: list[float]
    wall: float

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples) * 1000

    @property
    def p95_ms(self) -> float:
        return statistics.quantiles(self.samples, n=20, method="inclusive")[18] * 1000

    @property
    def rate(self) -> float:
        return len(self.samples) / self.wall


def measure(calls: dict[str, Callable[[], object]], count: int) -> dict[str, Stats]:
    """Time ``count`` calls of each contender, in interleaved blocks, after a warm-up."""
    for call in calls.values():
        for _ in range(WARMUP):
            call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    walls = dict.fromkeys(calls, 0.0)
    clock = time.perf_counter
    done = 0
    while done < count:
        size = min(BLOCK, count - done)
        for name, call in calls.items():
            times = samples[name]
            began = clock()
            for _ in range(size):
                t = clock()
                call()
                times.append(clock() - t)
            walls[name] += clock() - began
        done += size
    return {name: Stats(samples[name], walls[name]) for name in calls}


# -- requests ------------------------------------------------------------------------------


def json_request(rows: np.ndarray[Any, Any]) -> tuple[bytes, dict[str, str]]:
    document = {
        "inputs": [
            {
                "name": "input-0",
                "shape": list(rows.shape),
                "datatype": "FP64",
                "data": rows.reshape(-1).tolist(),
            }
        ]
    }
    body = json.dumps(document, separators=(",", ":")).encode()
    return body, {"Content-Type": "application/json"}


def binary_request(rows: np.ndarray[Any, Any], output: str) -> tuple[bytes, dict[str, str]]:
    raw = np.ascontiguousarray(rows, dtype="<f8").tobytes()
    document = {
        "inputs": [
            {
                "name": "input-0",
                "shape": list(rows.shape),
                "datatype": "FP64",
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
        "outputs": [{"name": output, "parameters": {"binary_data": True}}],
    }
    head = json.dumps(document, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(head)),
    }
    return head + raw, headers


def predictions(body: bytes, headers: http.client.HTTPMessage | dict[str, str]) -> list[int]:
    """Return the first output of an inference response, JSON or binary."""
    length = headers.get("Inference-Header-Content-Length")
    size = len(body) if length is None else int(length)
    output = json.loads(body[:size])["outputs"][0]
    if "data" in output:
        return [int(v) for v in output["data"]]
    assert output["datatype"] == "INT64", output
    return np.frombuffer(body[size:], dtype="<i8").tolist()


class Client:
    """A sequential client on one keep-alive HTTP/1.1 connection."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[bytes, http.client.HTTPMessage]:
        self.connection.request(method, path, body=body, headers=headers or {})
        response = self.connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"{method} {path}: {response.status} {data[:200]!r}")
        return data, response.headers

    def poster(self, body: bytes, headers: dict[str, str]) -> Callable[[], object]:
        return lambda: self.call("POST", INFER, body, headers)

    def getter(self, path: str) -> Callable[[], object]:
        return lambda: self.call("GET", path)

    def close(self) -> None:
        self.connection.close()


# -- servers -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The floor of the floor: one fixed JSON response, no routing, no framework."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"14")],
        }
    )
    await send({"type": "http.response.body", "body": b'{"ready":true}'})


@contextmanager
def nodelay_server(app: Any) -> Iterator[int]:
    """Serve ``app`` on uvicorn in a thread, as `start_server` does but with TCP_NODELAY.

    The listening socket is made with ``IPPROTO_TCP``, as ``uvicorn --port`` makes its own:
    asyncio sets ``TCP_NODELAY`` on accepted connections only when the listening socket's
    ``proto`` is ``IPPROTO_TCP``. (`cellpipe.serving.server._bind` makes it with ``proto``
    0, so its connections keep Nagle's algorithm: see the breakdown below.)
    """
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the uvicorn server of the benchmark did not start")
        time.sleep(0.01)
    try:
        yield int(sock.getsockname()[1])
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def ready(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", READY)
        response = connection.getresponse()
        response.read()
        return response.status == 200
    except OSError:
        return False
    finally:
        connection.close()


def start_command(project: Path, log: Path) -> tuple[float, subprocess.Popen[bytes], int]:
    """Start ``cellpipe serve``; return the seconds to its first ready answer, it and its port."""
    port = free_port()
    command = [CELLPIPE, "serve", f"{MODEL}@production", "--port", str(port)]
    with log.open("wb") as err:
        began = time.perf_counter()
        process = subprocess.Popen(
            command, cwd=project, env=ENV, stdout=subprocess.DEVNULL, stderr=err
        )
        while not ready(port):
            if process.poll() is not None:
                raise RuntimeError(f"cellpipe serve exited: {log.read_text()}")
            if time.perf_counter() - began > 60:
                stop(process)
                raise RuntimeError(f"cellpipe serve did not become ready: {log.read_text()}")
            time.sleep(0.005)
        return time.perf_counter() - began, process, port


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def timed(command: list[str]) -> float:
    began = time.perf_counter()
    subprocess.run(command, env=ENV, check=True)
    return time.perf_counter() - began


# -- the cases -----------------------------------------------------------------------------


def ms(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def cell(label: str, stats: Stats) -> str:
    return f"{label}{ms(stats.median_ms)} ms (p95 {ms(stats.p95_ms)}), {stats.rate:.0f}/s"


def short(stats: Stats) -> str:
    return f"{ms(stats.median_ms)} ({ms(stats.p95_ms)})"


def overhead(cellpipe: Stats, baseline: Stats) -> str:
    median = cellpipe.median_ms - baseline.median_ms
    p95 = cellpipe.p95_ms - baseline.p95_ms
    return f"{median:+.2f} ms (p95 {p95:+.2f})"


@dataclass(frozen=True, slots=True)
class Case:
    what: str
    rows: np.ndarray[Any, Any]
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Clients:
    """One keep-alive client per server under test."""

    thread: Client  # start_server, as shipped
    nodelay: Client  # create_app on a TCP_NODELAY socket
    process: Client  # the cellpipe serve command
    bare: Client  # the bare ASGI app

    def close(self) -> None:
        for client in (self.thread, self.nodelay, self.process, self.bare):
            client.close()


def inference_rows(
    cases: list[Case], model: Any, served: Any, clients: Clients, count: int
) -> tuple[list[str], list[str]]:
    """Measure every inference case; return its main rows and its breakdown rows."""
    main, breakdown = [], []
    for case in cases:
        expected = model.predict(case.rows).tolist()
        for client in (clients.thread, clients.nodelay, clients.process):
            assert predictions(*client.call("POST", INFER, case.body, case.headers)) == expected
        length = case.headers.get("Inference-Header-Content-Length")
        assert predictions(*infer(served, case.body, header_length=length)) == expected
        stats = measure(
            {
                "thread": clients.thread.poster(case.body, case.headers),
                "nodelay": clients.nodelay.poster(case.body, case.headers),
                "process": clients.process.poster(case.body, case.headers),
                "infer": lambda c=case, n=length: infer(served, c.body, header_length=n),
                "predict": lambda r=case.rows: model.predict(r),
            },
            count,
        )
        base = stats["predict"]
        main.append(
            f"| {case.what} | {cell('', stats['thread'])} | {cell('`predict` ', base)} | "
            f"{overhead(stats['thread'], base)} |"
        )
        breakdown.append(
            f"| {case.what} | `predict` {short(base)} | {short(stats['infer'])} | "
            f"{short(stats['nodelay'])} | {short(stats['thread'])} | {short(stats['process'])} |"
        )
    return main, breakdown


def health_rows(clients: Clients, count: int) -> tuple[str, str]:
    stats = measure(
        {
            "thread": clients.thread.getter(READY),
            "nodelay": clients.nodelay.getter(READY),
            "process": clients.process.getter(READY),
            "bare": clients.bare.getter(READY),
        },
        count,
    )
    base = stats["bare"]
    what = "`GET /v2/health/ready` (the floor of the HTTP stack)"
    return (
        f"| {what} | {cell('', stats['thread'])} | "
        f"{cell('bare ASGI app on the same uvicorn ', base)} | "
        f"{overhead(stats['thread'], base)} |",
        f"| {what} | bare ASGI app {short(base)} | - | {short(stats['nodelay'])} | "
        f"{short(stats['thread'])} | {short(stats['process'])} |",
    )


def startup_row(project: Path, model_file: Path, tmp: Path, repeats: int) -> str:
    baseline_code = f"import sklearn.ensemble, joblib; joblib.load({str(model_file)!r})"
    baseline = [sys.executable, "-c", baseline_code]
    timed(baseline)  # warm the file system cache, as the served model's load is
    serve, bare = [], []
    for _ in range(repeats):
        seconds, process, _ = start_command(project, tmp / "serve-startup.log")
        stop(process)
        serve.append(seconds)
        bare.append(timed(baseline))
    s, b = statistics.median(serve), statistics.median(bare)
    return (
        f"| start-up: `cellpipe serve` to the first 200 from `/v2/health/ready` (median of "
        f"{repeats}) | {s * 1000:.0f} ms (best {min(serve) * 1000:.0f}, worst "
        f'{max(serve) * 1000:.0f}) | `python -c "import sklearn.ensemble"` + `joblib.load` '
        f"{b * 1000:.0f} ms (best {min(bare) * 1000:.0f}) | {(s - b) * 1000:+.0f} ms, once |"
    )


def stack() -> str:
    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    fast = [name for name in ("httptools", "uvloop") if importlib.util.find_spec(name)]
    parser = "httptools" if "httptools" in fast else "h11"
    loop = "uvloop" if "uvloop" in fast else "asyncio"
    return (
        f"uvicorn {version('uvicorn')} ({parser}, {loop}), Starlette {version('starlette')}, "
        f"scikit-learn {version('scikit-learn')}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="timed calls per case")
    parser.add_argument("--startups", type=int, default=5, help="timed server start-ups")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args()
    count = max(args.requests, 20)
    load_before = os.getloadavg()[0]
    if load_before >= 1.0:
        print(f"warning: load average {load_before:.2f}; the numbers may be noisy", flush=True)

    x, y = load_wine(return_X_y=True)
    model = RandomForestClassifier(n_estimators=100, random_state=0).fit(x, y)
    one = x[:1]
    many = x[np.random.default_rng(0).integers(0, len(x), size=1000)]
    ref = f"{MODEL}@production"

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        project = tmp / "wine"
        project.mkdir()
        with open_project(Settings.for_notebook(project / "wine.ipynb")) as store:
            registry = ModelRegistry(store.metadata, store.artifacts)
            version = registry.register(model, MODEL, input_example=x, alias="production")
            assert version.signature is not None
            (spec,) = version.signature.inputs
            assert (spec.datatype, list(spec.shape)) == ("FP64", [-1, 13]), spec
            output = version.signature.outputs[0].name
            model_file = store.artifacts.local_path(version.artifact.digest)
            served = ModelTable.resolve([ref], registry).defaults[MODEL]
            cases = [
                Case("1 row, JSON", one, *json_request(one)),
                Case("1 row, binary", one, *binary_request(one, output)),
                Case("1000 rows, JSON", many, *json_request(many)),
                Case("1000 rows, binary", many, *binary_request(many, output)),
            ]
            _, command, port = start_command(project, tmp / "serve.log")
            try:
                with (
                    start_server([ref], registry) as server,
                    nodelay_server(create_app([ref], registry)) as nodelay_port,
                    nodelay_server(bare_app) as bare_port,
                ):
                    clients = Clients(
                        thread=Client(server.port),
                        nodelay=Client(nodelay_port),
                        process=Client(port),
                        bare=Client(bare_port),
                    )
                    main_rows, breakdown = inference_rows(cases, model, served, clients, count)
                    health, health_breakdown = health_rows(clients, count)
                    main_rows.append(health)
                    breakdown.append(health_breakdown)
                    clients.close()
            finally:
                stop(command)
            main_rows.append(startup_row(project, model_file, tmp, args.startups))

    header = (
        f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {stack()}; load average {load_before:.2f} "
        f"before, {os.getloadavg()[0]:.2f} after (the machine is shared). Model: "
        "RandomForestClassifier(n_estimators=100) on wine, one [-1, 13] FP64 input. "
        f"Sequential client on one keep-alive connection; {count} timed calls per case after "
        f"{WARMUP} warm-up calls, interleaved with the baseline in blocks of {BLOCK}. "
        "Reproduce: `.venv/bin/python benchmarks/bench_serve.py` (`--requests N`, "
        "`--startups K`, `--no-write`)."
    )
    table = [
        "| what | cellpipe (`start_server`) | baseline (in process) | overhead per request |",
        "|---|---|---|---|",
        *main_rows,
    ]
    where = [
        "Where the time goes, median (p95) in ms, measured in the same interleaved blocks: "
        "the baseline; `cellpipe.serving.protocol.infer` on the same body in process (parse, "
        "check, predict, encode; no HTTP); the same app (`create_app`) on uvicorn in a thread "
        "with a listening socket made with `IPPROTO_TCP`, so that asyncio sets `TCP_NODELAY` "
        "on its connections, as `uvicorn --port` does (a reference: `start_server` binds the same "
        "way since the delayed-ACK fix); `start_server` as shipped; and the "
        "`cellpipe serve` command in its own process (client and server no longer share a "
        "GIL). The thread servers share this process with the client.",
        "",
        "| what | baseline | `infer()` | `create_app`, TCP_NODELAY | `start_server` | "
        "`cellpipe serve` |",
        "|---|---|---|---|---|---|",
        *breakdown,
    ]
    section = (
        "## cellpipe serve (Open Inference Protocol v2)\n\n"
        + header
        + "\n\n"
        + "\n".join(table)
        + "\n\n"
        + "\n".join(where)
        + "\n"
    )
    print(section)
    if not args.no_write:
        write_section("bench_serve", section)


if __name__ == "__main__":
    main()
