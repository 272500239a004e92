"""Benchmark of `cellpipe.serving.protocol.infer` in process (issue 13, the protocol's hot path).

The request of the serving benchmark: one FP64 [1, 13] row of wine as JSON, for a
RandomForestClassifier(n_estimators=5, max_depth=2). Three figures, each the best and the
median of 9 runs: ``infer`` on the forest, the forest's ``predict`` alone (the model's share),
and ``infer`` on a stub with the same shape whose ``predict`` returns a constant (the
protocol's own cost: parse, check, call, encode). Both the thread's CPU time (less disturbed
by other load on a shared machine) and wall time are printed. No HTTP: the server's share is
`bench_serve.py`'s.

Run: ``.venv/bin/python benchmarks/bench_infer.py`` (prints; writes nothing).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sklearn.datasets import load_wine
from sklearn.ensemble import RandomForestClassifier

from cellpipe.registry.model import ModelVersion
from cellpipe.serving.adapters import adapt
from cellpipe.serving.protocol import ServedModel, infer
from cellpipe.storage.protocols import ArtifactDigest
from cellpipe.storage.records import ArtifactRef


class Stub:
    """A fitted-estimator look-alike whose predict costs nothing."""

    n_features_in_ = 13
    classes_ = np.array([0, 1, 2])
    answer = np.zeros(1, dtype=np.int64)

    def predict(self, x: Any) -> np.ndarray[Any, Any]:
        return self.answer


def served(obj: Any) -> ServedModel:
    version = ModelVersion(
        name="wine",
        version=1,
        artifact=ArtifactRef(
            digest=ArtifactDigest("sha256:" + "0" * 64),
            serializer="joblib",
            serializer_version=2,
            size=1,
            type_name="sklearn.ensemble.RandomForestClassifier",
        ),
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        run_id="bench",
    )
    return ServedModel(version=version, adapter=adapt(obj, version))


def measure(label: str, call: Callable[[], Any], count: int, runs: int = 9) -> None:
    for _ in range(count // 5):
        call()
    cpu: list[float] = []
    wall: list[float] = []
    for _ in range(runs):
        started, started_cpu = time.perf_counter(), time.thread_time()
        for _ in range(count):
            call()
        cpu.append((time.thread_time() - started_cpu) / count * 1e6)
        wall.append((time.perf_counter() - started) / count * 1e6)
    print(
        f"{label:34s} CPU min {min(cpu):7.1f} us, median {statistics.median(cpu):7.1f} us | "
        f"wall min {min(wall):7.1f} us, median {statistics.median(wall):7.1f} us"
    )


def main() -> None:
    x, y = load_wine(return_X_y=True)
    forest = RandomForestClassifier(n_estimators=5, max_depth=2, random_state=0).fit(x, y)
    request = {"inputs": [{"name": "input-0", "shape": [1, 13], "datatype": "FP64"}]}
    request["inputs"][0]["data"] = x[0].tolist()
    body = json.dumps(request).encode()
    model, stub = served(forest), served(Stub())
    print(infer(model, body)[0].decode())
    row = x[:1]
    measure("infer(), forest", lambda: infer(model, body), 2000)
    measure("forest.predict alone", lambda: forest.predict(row), 2000)
    measure("infer(), stub (the protocol's cost)", lambda: infer(stub, body), 20000)


if __name__ == "__main__":
    main()
