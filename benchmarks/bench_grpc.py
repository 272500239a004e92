"""Benchmark of the gRPC API (`cellpipe.serving.grpc`) against the REST API, in one run.

Setup, in a temporary project: a scikit-learn ``RandomForestClassifier(n_estimators=5,
max_depth=2)`` trained on the wine dataset as a numpy array (signature: one ``[-1, 13]`` FP64
tensor), registered with `ModelRegistry` as ``wine@production``, served from one `ModelTable`
by `start_grpc_server` (threads of this process, free port) and by `start_server` (uvicorn in
a thread of this process, free port). One FP64 ``[1, 13]`` row per call, sequential, one
keep-alive connection per client:

- gRPC, tritonclient's gRPC client (``InferenceServerClient.infer``: raw input, raw output);
- gRPC, Triton's generated stub with the request built once (the server's share, without the
  client library's per-call work);
- REST, tritonclient's HTTP client (binary tensor data in and out);
- REST, ``http.client`` with the JSON body encoded once (what bench_serve.py measures);
- for the breakdown: ServerLive over gRPC with the stub (the transport's floor: no model, no
  tensors) and ``model.predict`` on the row in this process (the model's own time).

The clients take turns in blocks of 20 calls, so a change of load on the shared machine hits
every column alike. Per client: p50 and p99 latency over ``--requests`` calls after 50 warm-up
calls. Every answer is checked against ``model.predict`` once before timing.

Run: ``.venv/bin/python benchmarks/bench_grpc.py [--requests N] [--no-write]``; results go
to this script's section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import http.client
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.datasets import load_wine
from sklearn.ensemble import RandomForestClassifier

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import write_section

from cellpipe.api import open_project
from cellpipe.config import Settings
from cellpipe.registry.registry import ModelRegistry
from cellpipe.serving import start_server
from cellpipe.serving.grpc import start_grpc_server
from cellpipe.serving.table import ModelTable

MODEL = "wine"
BLOCK = 20


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(calls: dict[str, Callable[[], object]], count: int) -> dict[str, list[float]]:
    for call in calls.values():
        for _ in range(50):
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    while min(len(t) for t in times.values()) < count:
        for name, call in calls.items():
            for _ in range(BLOCK):
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="timed calls per client")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args()

    import grpc
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    load_before = os.getloadavg()[0]
    x, y = load_wine(return_X_y=True)
    model = RandomForestClassifier(n_estimators=5, max_depth=2, random_state=0).fit(x, y)
    row = np.ascontiguousarray(x[:1], dtype=np.float64)
    expected = model.predict(row).tolist()

    with tempfile.TemporaryDirectory() as tmp_name:
        project = Path(tmp_name) / "wine"
        project.mkdir()
        with open_project(Settings.for_notebook(project / "wine.ipynb")) as store:
            registry = ModelRegistry(store.metadata, store.artifacts)
            version = registry.register(model, MODEL, input_example=x, alias="production")
            assert version.signature is not None
            output = version.signature.outputs[0].name
            ref = f"{MODEL}@production"
            table = ModelTable.resolve([ref], registry)
            with (
                start_grpc_server(table, host="127.0.0.1", port=0) as grpc_server,
                start_server([ref], registry) as rest_server,
                grpc.insecure_channel(grpc_server.address) as channel,
            ):
                triton_grpc = grpcclient.InferenceServerClient(url=grpc_server.address)
                triton_http = httpclient.InferenceServerClient(url=f"127.0.0.1:{rest_server.port}")
                grpc_input = grpcclient.InferInput("input-0", [1, 13], "FP64")
                grpc_input.set_data_from_numpy(row)
                http_input = httpclient.InferInput("input-0", [1, 13], "FP64")
                http_input.set_data_from_numpy(row, binary_data=True)
                http_output = httpclient.InferRequestedOutput(output, binary_data=True)
                stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
                request = service_pb2.ModelInferRequest(
                    model_name=MODEL, raw_input_contents=[row.tobytes()]
                )
                request.inputs.add(name="input-0", datatype="FP64", shape=[1, 13])
                live = service_pb2.ServerLiveRequest()
                connection = http.client.HTTPConnection("127.0.0.1", rest_server.port)
                body = json.dumps(
                    {
                        "inputs": [
                            {
                                "name": "input-0",
                                "datatype": "FP64",
                                "shape": [1, 13],
                                "data": row.reshape(-1).tolist(),
                            }
                        ]
                    }
                ).encode()
                headers = {"Content-Type": "application/json"}

                def rest_json() -> bytes:
                    connection.request("POST", f"/v2/models/{MODEL}/infer", body, headers)
                    return connection.getresponse().read()

                calls: dict[str, Callable[[], object]] = {
                    "gRPC, tritonclient": lambda: triton_grpc.infer(MODEL, [grpc_input]),
                    "gRPC, Triton's stub": lambda: stub.ModelInfer(request),
                    "REST, tritonclient (binary)": lambda: triton_http.infer(
                        MODEL, [http_input], outputs=[http_output]
                    ),
                    "REST, http.client (JSON)": rest_json,
                    "floor: gRPC ServerLive, Triton's stub": lambda: stub.ServerLive(live),
                    "baseline: model.predict in process": lambda: model.predict(row),
                }
                answers = [
                    triton_grpc.infer(MODEL, [grpc_input]).as_numpy(output).tolist(),
                    np.frombuffer(stub.ModelInfer(request).raw_output_contents[0], "<i8").tolist(),
                    triton_http.infer(MODEL, [http_input], outputs=[http_output])
                    .as_numpy(output)
                    .tolist(),
                    json.loads(rest_json())["outputs"][0]["data"],
                ]
                assert all(a == expected for a in answers), answers
                times = measure(calls, args.requests)
                triton_grpc.close()
                triton_http.close()
                connection.close()

    rows = [
        f"| {name} | {statistics.median(t) * 1e3:.3f} ms | {percentile(t, 0.99) * 1e3:.3f} ms |"
        for name, t in times.items()
    ]
    import grpc as grpc_module

    section = "\n".join(
        [
            "## bench_grpc: the gRPC API against the REST API",
            "",
            f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {os.cpu_count()} cores, Python "
            f"{platform.python_version()}, grpcio {grpc_module.__version__}, tritonclient "
            f"{importlib.metadata.version('tritonclient')}; load average {load_before:.2f} "
            f"before, {os.getloadavg()[0]:.2f} after (the machine is shared). Model: "
            "RandomForestClassifier(n_estimators=5, max_depth=2) on wine; one FP64 [1, 13] row "
            f"per call, sequential, {args.requests} calls per client in turns of {BLOCK}.",
            "",
            "| client | p50 | p99 |",
            "|---|---|---|",
            *rows,
            "",
            "The servers and the clients share this process and the machine's cores, as in "
            "bench_serve.py. A server's share of a call is roughly its p50 minus the model's "
            "(`model.predict`); the gRPC floor is ServerLive (no model, no tensors).",
            "",
            "Reproduce: `.venv/bin/python benchmarks/bench_grpc.py` (`--requests N`, "
            "`--no-write`).",
        ]
    )
    print(section)
    if not args.no_write:
        write_section("bench_grpc", section)


if __name__ == "__main__":
    main()
