"""`cellpipe serve` against KServe's ModelServer and a standard-library floor, in one run.

The issue 13 workload ("W5" of ../shared/peer-bench): ``RandomForestClassifier(n_estimators=5,
max_depth=2, random_state=3)`` fitted on wine, one FP64 ``[1, 13]`` row per request, posted
as OIP v2 JSON on a keep-alive connection over loopback by peer-bench's load client
(``peers/load_client.py``, standard library only, in its own process). The same model file
is served by:

- ``cellpipe serve wine@production`` (the real command, in a temporary project where the model
  is registered), with ``--workers N`` (default: what the command picks) and with
  ``--workers 1``, at the default log level (no per-request logging); and the same server with
  inference in the thread pool instead of on the event loop (``Settings(inline=False)``, the
  choice `cellpipe serve` does not offer), to show why it runs on the loop;
- KServe 0.21's ``ModelServer`` (``peers/serve_kserve.py``, run with the kserve venv that
  ``bash ../shared/peer-bench/setup.sh kserve`` builds under ``$PEERBENCH_DIR``), with its
  default request logging and with it off (``PEERBENCH_KSERVE_QUIET=1``);
- the floor: ``ThreadingHTTPServer`` answering the same JSON (``peers/serve_stdlib.py``).

Per server and round, the load client reports the sequential p50/p99 latency and req/s over
``--requests`` POSTs on one connection, the req/s of ``--threads`` client threads (one
connection each) during ``--seconds``, and the server's CPU time per request (its processes,
from /proc). Servers run one at a time, rounds interleave them (a change of load on the
shared machine hits every server), and the table gives the median over rounds. Every response
is checked (status 200, the model's class for the row).

Run: ``.venv/bin/python benchmarks/bench_serve.py [--rounds R] [--requests N] [--seconds S]
[--threads T] [--only cellpipe,kserve,...] [--no-write]``; the result replaces this script's
section of RESULTS.md. Without the kserve venv the script says how to build it and measures
the rest.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
from _results import CHILD_ENV, write_section
from sklearn.datasets import load_wine
from sklearn.ensemble import RandomForestClassifier

from cellpipe.api import open_project
from cellpipe.config import Settings
from cellpipe.registry.registry import ModelRegistry

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PEER_BENCH = Path(os.environ.get("PEER_BENCH", ROOT.parent / "shared" / "peer-bench"))
PEERBENCH_DIR = Path(os.environ.get("PEERBENCH_DIR", Path(tempfile.gettempdir()) / "peerbench"))
KSERVE_PYTHON = PEERBENCH_DIR / "kserve" / "bin" / "python"
READY_WITHIN = 120.0


@dataclass
class Server:
    """One server variant: how to start it and its results over rounds."""

    key: str
    label: str
    start: Callable[[int], subprocess.Popen[bytes]]
    rounds: list[dict[str, Any]] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (from /proc)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        todo.extend(int(c) for c in children)
    return found


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def measure(server: Server, args: argparse.Namespace, row_file: Path, log: Path) -> None:
    port = free_port()
    process = server.start(port)
    try:
        deadline = time.monotonic() + READY_WITHIN
        while not ready(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{server.label} did not start; see {log}")
            time.sleep(0.1)
        time.sleep(0.5)  # every worker is accepting
        pids = ",".join(str(p) for p in process_tree(process.pid))
        result = subprocess.run(
            [sys.executable, str(PEER_BENCH / "peers" / "load_client.py"), "--port", str(port),
             "--row-file", str(row_file), "--requests", str(args.requests),
             "--threads", str(args.threads), "--seconds", str(args.seconds),
             "--server-pids", pids],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise SystemExit(f"load client failed on {server.label}: {result.stderr}")
        document = json.loads(result.stdout)
        if document["concurrent"]["errors"]:
            raise SystemExit(f"{server.label}: errors under load: {document['concurrent']}")
        server.rounds.append(document)
        seq, conc = document["sequential"], document["concurrent"]
        print(
            f"  {server.label}: p50 {seq['p50_ms']:.3f} ms, p99 {seq['p99_ms']:.3f} ms, "
            f"{seq['req_per_s']:.0f} req/s sequential, {conc['req_per_s']:.0f} req/s with "
            f"{conc['threads']} threads",
            file=sys.stderr,
            flush=True,
        )
    finally:
        stop(process)


def median(server: Server, phase: str, key: str) -> float:
    values = [r[phase][key] for r in server.rounds if r[phase].get(key) is not None]
    return statistics.median(values) if values else float("nan")


def versions() -> str:
    names = ("uvicorn", "httptools", "uvloop", "orjson", "scikit-learn")
    found = []
    for name in names:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"no {name}")
    return ", ".join(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="load runs per server")
    parser.add_argument("--requests", type=int, default=2000, help="sequential POSTs")
    parser.add_argument("--seconds", type=float, default=5.0, help="concurrency window")
    parser.add_argument("--threads", type=int, default=8, help="client threads")
    parser.add_argument("--workers", type=int, default=None, help="cellpipe serve --workers")
    parser.add_argument("--only", default="", help="comma-separated server keys")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args()
    if not (PEER_BENCH / "peers" / "load_client.py").is_file():
        raise SystemExit(f"peer-bench not found at {PEER_BENCH}; set PEER_BENCH=DIR")
    load_before = os.getloadavg()[0]

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        x, y = load_wine(return_X_y=True)
        model = RandomForestClassifier(n_estimators=5, max_depth=2, random_state=3).fit(x, y)
        model_file = tmp / "model.joblib"
        joblib.dump(model, model_file)
        row_file = tmp / "row.json"
        row_file.write_text(
            json.dumps({"row": x[0].tolist(), "expected": int(model.predict(x[:1])[0])})
        )
        project = tmp / "wine"
        project.mkdir()
        with open_project(Settings.for_notebook(project / "wine.ipynb")) as store:
            registry = ModelRegistry(store.metadata, store.artifacts)
            registry.register(model, "wine", input_example=x, alias="production")
        log = tmp / "servers.log"
        out = log.open("ab")

        def cellpipe(workers: int | None) -> Callable[[int], subprocess.Popen[bytes]]:
            def start(port: int) -> subprocess.Popen[bytes]:
                extra = [] if workers is None else ["--workers", str(workers)]
                return subprocess.Popen(
                    [str(BIN / "python"), "-c", "from cellpipe.cli.main import entry; entry()",
                     "serve", "wine@production", "--port", str(port), *extra],
                    cwd=project, stdout=out, stderr=out, env=CHILD_ENV,
                )  # fmt: skip

            return start

        def pool(workers: int) -> Callable[[int], subprocess.Popen[bytes]]:
            # The same server with inference in the thread pool instead of on the event loop
            # (`Settings.inline=False`), which `cellpipe serve` has no option for.
            script = (
                "import sys; from pathlib import Path; from cellpipe.api import open_project; "
                "from cellpipe.config import Settings; "
                "from cellpipe.registry.registry import ModelRegistry; "
                "from cellpipe.serving.server import Settings as Serve, serve; "
                "s = open_project(Settings.for_notebook(Path('wine.ipynb'))).__enter__(); "
                "serve(['wine@production'], ModelRegistry(s.metadata, s.artifacts), "
                "port=int(sys.argv[1]), workers=int(sys.argv[2]), "
                "settings=Serve(inline=False))"
            )

            def start(port: int) -> subprocess.Popen[bytes]:
                return subprocess.Popen(
                    [str(BIN / "python"), "-c", script, str(port), str(workers)],
                    cwd=project, stdout=out, stderr=out, env=CHILD_ENV,
                )  # fmt: skip

            return start

        def peer(script: str, python: Path, quiet: bool = False) -> Callable[[int], Any]:
            def start(port: int) -> subprocess.Popen[bytes]:
                env = {**CHILD_ENV, "PEERBENCH_PORT": str(port),
                       "PEERBENCH_MODEL": str(model_file)}  # fmt: skip
                if quiet:
                    env["PEERBENCH_KSERVE_QUIET"] = "1"
                return subprocess.Popen(
                    [str(python), str(PEER_BENCH / "peers" / script)],
                    cwd=tmp, stdout=out, stderr=out, env=env,
                )  # fmt: skip

            return start

        from cellpipe.serving.server import default_workers

        workers = args.workers or default_workers()
        servers = [
            Server("cellpipe", f"`cellpipe serve`, {workers} workers", cellpipe(workers)),
            Server("cellpipe-1", "`cellpipe serve --workers 1`", cellpipe(1)),
            Server("cellpipe-pool", f"the same, {workers} workers, inference in threads",
                   pool(workers)),
            Server("stdlib", "stdlib ThreadingHTTPServer (floor)",
                   peer("serve_stdlib.py", Path(sys.executable))),
        ]  # fmt: skip
        missing_kserve = not KSERVE_PYTHON.is_file()
        if missing_kserve:
            print(
                f"KServe is not measured: no venv at {KSERVE_PYTHON.parent.parent}; build it "
                f"with `PEERBENCH_DIR={PEERBENCH_DIR} bash {PEER_BENCH}/setup.sh kserve`",
                file=sys.stderr,
            )
        else:
            servers += [
                Server("kserve", "KServe ModelServer (request logging on, its default)",
                       peer("serve_kserve.py", KSERVE_PYTHON)),
                Server("kserve-quiet", "KServe ModelServer (request logging off)",
                       peer("serve_kserve.py", KSERVE_PYTHON, quiet=True)),
            ]  # fmt: skip
        if args.only:
            keys = set(args.only.split(","))
            servers = [s for s in servers if s.key in keys]
        for number in range(1, args.rounds + 1):
            print(f"round {number} of {args.rounds}", file=sys.stderr, flush=True)
            for server in servers:
                measure(server, args, row_file, log)
        out.close()

    rows = []
    for server in servers:
        rows.append(
            f"| {server.label} | {median(server, 'sequential', 'p50_ms'):.3f} | "
            f"{median(server, 'sequential', 'p99_ms'):.3f} | "
            f"{median(server, 'sequential', 'req_per_s'):.0f} | "
            f"{median(server, 'concurrent', 'req_per_s'):.0f} | "
            f"{median(server, 'concurrent', 'server_cpu_ms_per_req'):.3f} |"
        )
    by_key = {s.key: s for s in servers}
    verdict = []
    if "cellpipe" in by_key and "stdlib" in by_key:
        ours = median(by_key["cellpipe"], "sequential", "p50_ms")
        floor = median(by_key["stdlib"], "sequential", "p50_ms")
        verdict.append(
            f"p50: cellpipe {ours:.3f} ms, floor {floor:.3f} ms "
            f"({'at or below' if ours <= floor else 'above'} the floor)."
        )
    if "cellpipe" in by_key and "kserve" in by_key:
        ours = median(by_key["cellpipe"], "concurrent", "req_per_s")
        for key in ("kserve", "kserve-quiet"):
            if key in by_key:
                theirs = median(by_key[key], "concurrent", "req_per_s")
                verdict.append(
                    f"{args.threads}-thread throughput: cellpipe {ours / theirs:.2f}x {key}."
                )
    section = "\n".join(
        [
            "## cellpipe serve against KServe and the floor (issue 13, W5)",
            "",
            f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {os.cpu_count()} cores "
            f"(client and servers share them), Python {platform.python_version()}, {versions()}; "
            f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after (the "
            "machine is shared). RandomForestClassifier(n_estimators=5, max_depth=2, "
            "random_state=3) on wine, one FP64 [1, 13] row per POST, JSON, keep-alive, "
            f"loopback; peer-bench's load client; median of {args.rounds} interleaved rounds; "
            f"{args.requests} sequential requests, then {args.threads} threads for "
            f"{args.seconds:g} s. Reproduce: `.venv/bin/python benchmarks/bench_serve.py` "
            f"(`--rounds`, `--requests`, `--seconds`, `--threads`, `--workers`, `--only`)"
            + ("; KServe was not measured (no kserve venv)" if missing_kserve else "")
            + ".",
            "",
            f"| server | p50 ms | p99 ms | sequential req/s | {args.threads}-thread req/s | "
            "server CPU ms/req |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            *verdict,
            "",
        ]
    )
    print(section)
    if not args.no_write:
        write_section("bench_serve", section)


if __name__ == "__main__":
    main()
