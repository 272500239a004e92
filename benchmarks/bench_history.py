"""Benchmarks of run history (issue 5): 10,000 runs in the store, lineage, and snapshot overhead.

History: a SQLite store with N runs (default 10,000), inserted through the store API
(`start_run`, 5 x `record_step_run`, `finish_run` per run, as the runner records them): each
run has 3 parameters, 2 run metrics and 5 step runs; the first step is a cache hit of the first
run (so its output artifact is shared by every run, the worst case for lineage), the others
have inputs, outputs, a read file and, for one, step metrics. Then, side by side in the same
process:

- whole commands (subprocess, interpreter start included): ``cellpipe runs`` (default limit
  20), ``cellpipe runs --json``, ``cellpipe show RUN``, ``cellpipe lineage RUN --format json``,
  ``cellpipe lineage ARTIFACT --json`` of the shared artifact (default ``--limit 50``);
  baselines ``python -c pass`` and a ``python -c`` raw ``sqlite3`` SELECT of the same 20 rows;
- in process: ``list_runs(limit=20)``, ``list_runs()`` (all N), ``run_lineage`` of a run,
  ``artifact_lineage`` of a run's ``train`` output and of the shared artifact (default limit
  50: the 50 newest readers are followed, the others counted), and of the shared artifact
  with ``limit=None`` (every run's step runs in the graph, as before the limit existed, with
  fewer repeats); baseline: the raw ``sqlite3`` SELECT.

Snapshots: a workspace of ~1 GB (20 files of 50 MB, random bytes) plus a small results file;
after a warm-up start snapshot (which hashes and stores the 1 GB once), the time of a
before+after snapshot pair around one step that rewrites the results file, against the same
step with snapshots off (``max_bytes=0``, as ``CELLPIPE_SNAPSHOT_MAX_BYTES=0``); and the whole
``cellpipe run --no-cache`` of a one-step notebook in that workspace, on vs off.

Subprocesses run without ``PYTHONDONTWRITEBYTECODE`` (an installed cellpipe has its bytecode
cached), after one warm-up call each.

Run: ``.venv/bin/python benchmarks/bench_history.py [--runs N] [--repeats R] [--no-snapshots]
[--no-write]``; results go to its section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _results import RESULTS, timed, write_section

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CELLPIPE = str(BIN / "cellpipe")

T0 = datetime(2026, 1, 1, tzinfo=UTC)
STEPS = ("load", "prepare", "train", "evaluate", "report")


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(extra)
    return env


def stats(samples: list[float]) -> tuple[float, float]:
    return min(samples), statistics.median(samples)


def time_cmd(cmd: list[str], cwd: Path, env: dict[str, str], repeats: int) -> tuple[float, float]:
    timed(cmd, cwd, env)  # warm-up: bytecode, page cache
    return stats([timed(cmd, cwd, env) for _ in range(repeats)])


def time_call(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return stats(samples)


def ms(value: float) -> str:
    return f"{value * 1000:.0f}"


# -- history ---------------------------------------------------------------------------------


def build_store(db: Path, runs: int) -> float:
    """Insert ``runs`` runs through the store API; return the seconds it took."""
    from cellpipe.storage.metadata import SqlMetadataStore
    from cellpipe.storage.protocols import ArtifactDigest
    from cellpipe.storage.records import (
        ArtifactRef,
        RunRecord,
        RunStatus,
        StepRunRecord,
        StepStatus,
    )

    def ref(n: int, serializer: str = "npy") -> ArtifactRef:
        return ArtifactRef(
            digest=ArtifactDigest(f"sha256:{n:064x}"),
            serializer=serializer,
            serializer_version=1,
            size=1000 + n % 5000,
            type_name="numpy.ndarray",
        )

    shared = ref(1)  # the load step's output: computed by run 0, reused by every later run
    store = SqlMetadataStore(f"sqlite:///{db}")
    start = time.perf_counter()
    try:
        for i in range(runs):
            run_id = f"wine-{i:05d}"
            t = T0 + timedelta(minutes=i)
            store.start_run(
                RunRecord(
                    run_id=run_id,
                    pipeline="wine",
                    notebook="/work/wine/wine.ipynb",
                    notebook_digest=f"sha256:{i % 50:064x}",
                    status=RunStatus.RUNNING,
                    started_at=t,
                    parameters={
                        "MAX_DEPTH": 2 + i % 7,
                        "LR": round(0.01 * (1 + i % 13), 2),
                        "N_ESTIMATORS": 50 * (1 + i % 4),
                    },
                )
            )
            previous = shared
            for k, step in enumerate(STEPS):
                started = t + timedelta(seconds=k)
                first = k == 0
                output = shared if first else ref(10 * (i + 1) + k)
                store.record_step_run(
                    StepRunRecord(
                        run_id=run_id,
                        step=step,
                        status=StepStatus.CACHED if first and i else StepStatus.SUCCEEDED,
                        cache_key=f"{step}-{0 if first else i}",
                        cache_fields={"code": f"{k:064x}", "parameters": {"MAX_DEPTH": 2}},
                        cache_reason="same code and inputs as wine-00000"
                        if first and i
                        else "no earlier run with this key",
                        source_run="wine-00000" if first and i else None,
                        started_at=started,
                        finished_at=started + timedelta(milliseconds=700),
                        inputs={} if first else {"x": previous},
                        input_sources={} if first else {"x": STEPS[k - 1]},  # schema v5
                        outputs={"x" if k < 4 else "report": output},
                        metrics={"accuracy": 0.9 + i % 100 / 1000} if step == "evaluate" else {},
                        files_read={"data/wine.csv": f"sha256:{7:064x}"} if first else {},
                    )
                )
                previous = output
            store.finish_run(
                run_id,
                status=RunStatus.SUCCEEDED,
                finished_at=t + timedelta(seconds=6),
                metrics={"accuracy": 0.9 + i % 100 / 1000, "f1": 0.8 + i % 50 / 1000},
            )
    finally:
        store.close()
    return time.perf_counter() - start


RAW_SELECT = (
    "SELECT run_id, pipeline, notebook, notebook_digest, status, started_at, finished_at,"
    " error, pid, parameters_json, metrics_json FROM runs"
    " ORDER BY started_at DESC, run_id DESC LIMIT {limit}"
)


def history_case(work: Path, runs: int, repeats: int) -> list[str]:
    from cellpipe.storage.lineage import artifact_lineage, history_for, run_lineage
    from cellpipe.storage.metadata import SqlMetadataStore

    project = work / "project"
    (project / ".cellpipe" / "artifacts").mkdir(parents=True)
    db = project / ".cellpipe" / "cellpipe.db"
    print(f"inserting {runs} runs through the store API ...", flush=True)
    took = build_store(db, runs)
    print(f"  {took:.1f} s ({took / runs * 1000:.2f} ms per run)", flush=True)
    target = f"wine-{runs - 1:05d}"
    env = child_env()
    py = sys.executable
    raw20 = (
        f"import sqlite3; c = sqlite3.connect({str(db)!r});"
        f" rows = c.execute({RAW_SELECT.format(limit=20)!r}).fetchall(); assert len(rows) == 20"
    )
    rows: list[list[str]] = []

    def cmd_row(label: str, cmd: list[str], target_ms: str = "") -> None:
        best, median = time_cmd(cmd, project, env, repeats)
        rows.append([label, ms(best), ms(median), target_ms])
        print(f"  {label}: best {ms(best)} ms, median {ms(median)} ms", flush=True)

    cmd_row("`python -c pass` (baseline)", [py, "-c", "pass"])
    cmd_row("`python -c` raw sqlite3 SELECT of the 20 newest runs (baseline)", [py, "-c", raw20])
    cmd_row("`cellpipe runs` (20 newest, table)", [CELLPIPE, "runs"], "< 300")
    cmd_row("`cellpipe runs --json`", [CELLPIPE, "runs", "--json"], "< 300")
    cmd_row(f"`cellpipe runs -n {runs} --json` (all runs)", [CELLPIPE, "runs", "-n", str(runs),
            "--json"])  # fmt: skip
    cmd_row("`cellpipe show RUN`", [CELLPIPE, "show", target])
    cmd_row("`cellpipe lineage RUN --format json`", [CELLPIPE, "lineage", target, "--format",
            "json"])  # fmt: skip
    shared = f"sha256:{1:064x}"
    cmd_row(f"`cellpipe lineage ARTIFACT --json` (the `load` output all {runs} runs used; "
            "50 readers shown, the rest counted)", [CELLPIPE, "lineage", shared, "--json"],
            "< 1000")  # fmt: skip

    store = SqlMetadataStore(f"sqlite:///{db}")
    history = history_for(store)
    assert history is not None
    raw = sqlite3.connect(db)
    try:
        train_output = f"sha256:{10 * runs + 2:064x}"  # ref(10 * (i + 1) + k), i = runs - 1
        calls: list[tuple[str, Callable[[], Any], str]] = [
            ("raw sqlite3 SELECT of the 20 newest runs (baseline)",
             lambda: raw.execute(RAW_SELECT.format(limit=20)).fetchall(), ""),
            (f"raw sqlite3 SELECT of all {runs} runs (baseline)",
             lambda: raw.execute(RAW_SELECT.format(limit=runs)).fetchall(), ""),
            ("`store.list_runs(limit=20)`", lambda: store.list_runs(limit=20), ""),
            (f"`store.list_runs()` ({runs} records)", lambda: store.list_runs(), ""),
            ("`run_lineage(store, history, RUN)`",
             lambda: run_lineage(store, history, target), "< 100"),
            ("`artifact_lineage` of RUN's `train` output (upstream and downstream)",
             lambda: artifact_lineage(store, history, train_output), "< 100"),
            (f"`artifact_lineage` of the `load` output every one of the {runs} runs used"
             " (default limit 50: 50 readers followed, the rest counted)",
             lambda: artifact_lineage(store, history, shared), "< 100"),
            ("the same with `limit=None` (every run's step runs in the graph; "
             f"{min(repeats, 3)} repeats)",
             lambda: artifact_lineage(store, history, shared, limit=None), ""),
        ]  # fmt: skip
        for label, fn, target_ms in calls:
            best, median = time_call(fn, min(repeats, 3) if fn is calls[-1][1] else repeats)
            rows.append([label + ", in process", ms(best), ms(median), target_ms])
            print(f"  {label}: best {ms(best)} ms, median {ms(median)} ms", flush=True)
    finally:
        raw.close()
        store.close()
    size_mb = sum(f.stat().st_size for f in db.parent.glob("cellpipe.db*")) / 1e6
    return [
        f"Store: {runs} runs inserted through the store API in {took:.0f} s "
        f"({took / runs * 1000:.1f} ms per run, 7 write transactions each); database "
        f"{size_mb:.0f} MB. RUN is the newest run.",
        "",
        "| measurement | best (ms) | median (ms) | target (ms) |",
        "|---|---:|---:|---:|",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


# -- snapshots -------------------------------------------------------------------------------


def make_workspace(ws: Path, files: int, file_mb: int) -> None:
    (ws / "data").mkdir(parents=True)
    block = os.urandom(1024 * 1024)
    for n in range(files):
        with (ws / "data" / f"part-{n:02d}.bin").open("wb") as f:
            f.write(n.to_bytes(8, "little"))  # every file distinct
            for _ in range(file_mb):
                f.write(block)
    (ws / "results.csv").write_text("x\n0\n")
    # Data files are old, as in a real workspace (a file changed in the last 2 s is re-hashed
    # on every scan: see RACY_WINDOW_NS in cellpipe.storage.snapshots).
    old = time.time() - 3600
    for path in ws.rglob("*"):
        os.utime(path, (old, old))


STEP_CODE = (
    "import time\n"
    "with open('results.csv', 'a') as f:\n"
    "    f.write(str(time.time()) + '\\n')\n"
    "done = 1\n"
)


def snapshot_case(work: Path, files: int, file_mb: int, repeats: int) -> list[str]:
    import nbformat

    from cellpipe.storage.artifacts import LocalArtifactStore
    from cellpipe.storage.lineage import SnapshotKind, history_for
    from cellpipe.storage.metadata import SqlMetadataStore
    from cellpipe.storage.records import RunRecord, RunStatus
    from cellpipe.storage.snapshots import SnapshotRecorder

    ws = work / "ws"
    print(f"writing a workspace of {files} x {file_mb} MB ...", flush=True)
    make_workspace(ws, files, file_mb)
    state = ws / ".cellpipe"
    (state / "artifacts").mkdir(parents=True)
    store = SqlMetadataStore(f"sqlite:///{state / 'cellpipe.db'}")
    artifacts = LocalArtifactStore(state / "artifacts")
    history = history_for(store)
    total = sum(p.stat().st_size for p in ws.rglob("*") if p.is_file())
    rows: list[list[str]] = []

    def step() -> None:
        with (ws / "results.csv").open("a") as f:
            f.write(f"{time.time()}\n")

    def pair(recorder: SnapshotRecorder) -> float:
        start = time.perf_counter()
        recorder.step_snapshot("train", SnapshotKind.BEFORE, inputs={})
        before = time.perf_counter() - start
        step()
        start = time.perf_counter()
        recorder.step_snapshot("train", SnapshotKind.AFTER, inputs={}, outputs={})
        return before + time.perf_counter() - start

    try:
        results: dict[str, list[float]] = {}
        for label, max_bytes in (("on", None), ("off", 0)):
            run_id = f"snap-{label}"
            store.start_run(
                RunRecord(run_id=run_id, pipeline="ws", notebook=str(ws / "nb.ipynb"),
                          notebook_digest="sha256:00", status=RunStatus.RUNNING, started_at=T0)
            )  # fmt: skip
            recorder = SnapshotRecorder(
                ws, artifacts, history, run_id=run_id, state_dir=state, max_bytes=max_bytes,
                env={}, private_files=[state / "cellpipe.db"],
            )  # fmt: skip
            start = time.perf_counter()
            recorder.step_snapshot("warm-up", SnapshotKind.AFTER)  # hashes and stores all once
            warm = time.perf_counter() - start
            if label == "on":
                rows.append(["first snapshot (hashes and stores the workspace once)",
                             ms(warm), "-", ""])  # fmt: skip
            results[label] = [pair(recorder) for _ in range(repeats)]
            recorder.close()
        on, off = stats(results["on"]), stats(results["off"])
        rows.append(["before+after snapshot pair of one step, snapshots on",
                     ms(on[0]), ms(on[1]), ""])  # fmt: skip
        rows.append(["the same with snapshots off (max_bytes=0)", ms(off[0]), ms(off[1]), ""])
    finally:
        store.close()

    # The whole command: a one-step notebook in the workspace, run without the cache.
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(STEP_CODE)
    cell.metadata["tags"] = ["step:train"]
    nb.cells.append(cell)
    nbformat.write(nb, ws / "nb.ipynb")
    cmd = [CELLPIPE, "run", "nb.ipynb", "--no-cache"]
    env_on, env_off = child_env(), child_env(CELLPIPE_SNAPSHOT_MAX_BYTES="0")
    timed(cmd, ws, env_on)  # warm-up: the stat cache of this project
    samples_on, samples_off = [], []
    for _ in range(repeats):  # interleaved, so load changes hit both alike
        samples_on.append(timed(cmd, ws, env_on))
        samples_off.append(timed(cmd, ws, env_off))
    c_on, c_off = stats(samples_on), stats(samples_off)
    rows.append(["`cellpipe run --no-cache` of the one-step notebook, snapshots on",
                 ms(c_on[0]), ms(c_on[1]), ""])  # fmt: skip
    rows.append(["the same, `CELLPIPE_SNAPSHOT_MAX_BYTES=0`", ms(c_off[0]), ms(c_off[1]), ""])
    return [
        f"Workspace: {files} files of {file_mb} MB plus `results.csv`, {total / 1e9:.2f} GB; "
        "the step appends one line to `results.csv` (one changed file). Overhead of a "
        f"before+after pair: **{(on[1] - off[1]) * 1000:.0f} ms** (median); of the whole "
        f"command (start + before + after snapshots): **{(c_on[1] - c_off[1]) * 1000:.0f} ms**.",
        "",
        "| measurement | best (ms) | median (ms) | target (ms) |",
        "|---|---:|---:|---:|",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


# -- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000, help="runs in the store")
    parser.add_argument("--repeats", type=int, default=10, help="timed repeats per case")
    parser.add_argument("--files", type=int, default=20, help="workspace files")
    parser.add_argument("--file-mb", type=int, default=50, help="size of each workspace file")
    parser.add_argument("--no-snapshots", action="store_true", help="skip the snapshot case")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-history-") as tmp:
        work = Path(tmp)
        body = history_case(work, args.runs, args.repeats)
        if not args.no_snapshots:
            body += ["", "### Snapshot overhead", "", *snapshot_case(
                work, args.files, args.file_mb, args.repeats)]  # fmt: skip
    load_after = os.getloadavg()[0]
    section = "\n".join(
        [
            f"## Run history with {args.runs} runs, lineage, snapshots",
            "",
            f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, {args.repeats} timed repeats after a warm-up; "
            f"load average {load_before:.2f} before, {load_after:.2f} after "
            "(other engineers share the machine). Subprocesses run with bytecode caching on.",
            "",
            *body,
            "",
            "Reproduce: `.venv/bin/python benchmarks/bench_history.py` (`--runs N`, "
            "`--repeats R`, `--no-snapshots`, `--no-write`).",
        ]
    )
    print("\n" + section)
    if not args.no_write:
        write_section("bench_history", section)
        print(f"\nwrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
