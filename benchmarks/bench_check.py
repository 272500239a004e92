"""Benchmark `cellpipe check` on a generated 500-cell, 100-step notebook.

Measures side by side, in one run:
  - `cellpipe check NB` and `cellpipe check NB --json` wall time, interpreter start included
    (a subprocess of the installed entry point; best and median of N runs);
  - `cellpipe.notebook.load_pipeline(NB)` in process (first call with its imports, then warm);
  - the floor: `python -c "import json; json.load(open(NB))"`, and `python -c pass`.
Prints a markdown table and writes it into its section of benchmarks/RESULTS.md.
Target: `cellpipe check` under 1 s including interpreter start.

Usage:
    .venv/bin/python benchmarks/bench_check.py [--runs 15] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _results import RESULTS, write_section

ROOT = Path(__file__).resolve().parent.parent
TARGET_S = 1.0

CELLS = 500
STEPS = 100
COMMAND = ".venv/bin/python benchmarks/bench_check.py"


def code(source: str, tags: list[str] | None = None, *, ident: str) -> dict[str, object]:
    return {
        "cell_type": "code",
        "execution_count": None,
        "id": ident,
        "metadata": {"tags": tags} if tags else {},
        "outputs": [],
        "source": source,
    }


def markdown(source: str, *, ident: str) -> dict[str, object]:
    return {"cell_type": "markdown", "id": ident, "metadata": {}, "source": source}


def make_notebook(steps: int = STEPS, cells: int = CELLS, seed: int = 0) -> dict[str, object]:
    """Return a runnable nbformat-v4 notebook with `cells` cells and `steps` steps.

    Each step reads one to three variables of earlier steps, binds two, prints, and some import
    a module of their own; there are imports, parameters, functions and metrics cells.
    """
    rng = random.Random(seed)
    head = [
        markdown("# Generated benchmark pipeline\n\nA long chain of small steps.", ident="c0"),
        code(
            "import collections\nimport json\nimport math\nimport random\nimport statistics",
            ["imports"],
            ident="c1",
        ),
        code(
            "N = 40\nSEED = 7\nSCALE = 1.5\nTHRESHOLD = 10.0\nLABEL = 'bench'\n"
            "WINDOW = 3\nUSE_LOG = False\nWEIGHTS = [0.2, 0.3, 0.5]",
            ["pipeline-parameters"],
            ident="c2",
        ),
        code(
            "def scaled(values):\n"
            '    """Values times the SCALE parameter."""\n'
            "    return [v * SCALE for v in values]\n\n\n"
            "def clipped(values):\n"
            '    """Values capped at THRESHOLD."""\n'
            "    return [min(v, THRESHOLD) for v in values]\n\n\n"
            "def summary(values):\n"
            "    return {'n': len(values), 'mean': round(statistics.fmean(values), 4)}",
            ["functions"],
            ident="c3",
        ),
    ]
    tail = [code(f"v{steps - 1}_b\nprint(v{steps - 2}_b)", ["pipeline-metrics"], ident="cm")]
    body_cells = cells - len(head) - len(tail)
    per_step = [body_cells // steps] * steps
    for i in range(body_cells - sum(per_step)):
        per_step[i] += 1
    body: list[dict[str, object]] = []
    for i in range(steps):
        body.extend(_step_cells(i, per_step[i], rng))
    return {
        "cells": head + body + tail,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def _step_cells(i: int, count: int, rng: random.Random) -> list[dict[str, object]]:
    if i == 0:
        first = (
            "rng0 = random.Random(SEED)\n"
            "v0_a = [rng0.random() * 10 for _ in range(N)]\n"
            "v0_b = summary(v0_a)"
        )
    else:
        sources = rng.sample(range(i), k=min(i, rng.randint(1, 3)))
        reads = [f"v{sources[0]}_a"] + [f"v{j}_b" for j in sources[1:]]
        extra = " + ".join(f"[{name}['mean']]" for name in reads[1:]) or "[]"
        imported = "import itertools\n" if i % 10 == 5 else ""
        first = (
            f"{imported}# step {i}: combine {', '.join(reads)}\n"
            f"t{i} = clipped(scaled({reads[0]}))[:N]\n"
            f"v{i}_a = [round(x, 3) for x in t{i}] + {extra}"
        )
    cells = [code(first, [f"step:s{i:03d}"], ident=f"s{i}-0")]
    fillers = [
        lambda: code(f"v{i}_b = summary(v{i}_a)", ident=f"s{i}-1"),
        lambda: code(
            f"counts{i} = collections.Counter(int(x) for x in v{i}_a)\n"
            f"print('step {i}', v{i}_b, counts{i}.most_common(1))",
            ident=f"s{i}-2",
        ),
        lambda: markdown(f"Step {i} keeps {{n}} values; see `v{i}_b`.", ident=f"s{i}-3"),
        lambda: code(f"assert len(v{i}_a) > 0, 'step {i} produced nothing'", ident=f"s{i}-4"),
    ]
    if i == 0:
        fillers[0] = lambda: code("print(json.dumps(v0_b))", ident="s0-1")
    cells.extend(fillers[k % len(fillers)]() for k in range(count - 1))
    return cells


def timed_runs(command: list[str], runs: int) -> list[float]:
    """Return the wall times of `runs` executions of `command` (after one warm-up)."""
    subprocess.run(command, capture_output=True, check=False)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, check=False)
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr.decode()}")
    return times


def timed_calls(call: Callable[[], object], runs: int) -> tuple[float, list[float]]:
    """Return the first call's time and the times of `runs` further calls."""
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return first, times


def entry_point() -> str:
    beside = Path(sys.executable).parent / "cellpipe"
    found = str(beside) if beside.exists() else shutil.which("cellpipe")
    if found is None:
        raise SystemExit("the cellpipe entry point is not installed (pip install -e .)")
    return found


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ""
    if hasattr(os, "getloadavg"):
        load = f", load average {os.getloadavg()[0]:.2f} during the run"
    return (
        f"{platform.system()} {platform.release()}, {cpu}, nproc {nproc}, "
        f"Python {platform.python_version()} ({platform.python_implementation()}){load}"
    )


def row(label: str, times: list[float], note: str = "") -> str:
    best, median = min(times), statistics.median(times)
    return f"| {label} | {best * 1000:.0f} | {median * 1000:.0f} | {note} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="timed runs per measurement")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="cellpipe-bench-") as tmp:
        notebook = Path(tmp) / "bench.ipynb"
        nb = make_notebook()
        notebook.write_text(json.dumps(nb, indent=1), encoding="utf-8")
        cellpipe = entry_point()

        check = timed_runs([cellpipe, "check", str(notebook)], args.runs)
        check_json = timed_runs([cellpipe, "check", str(notebook), "--json"], args.runs)
        floor = timed_runs(
            [sys.executable, "-c", f"import json; json.load(open({str(notebook)!r}))"], args.runs
        )
        bare = timed_runs([sys.executable, "-c", "pass"], args.runs)

        start = time.perf_counter()
        from cellpipe.notebook import load_pipeline

        imported = time.perf_counter() - start
        first, warm = timed_calls(lambda: load_pipeline(notebook), args.runs)
        first += imported
        pipeline = load_pipeline(notebook)
        size_kb = notebook.stat().st_size / 1024

    ok = min(check) < TARGET_S and statistics.median(check) < TARGET_S
    lines = [
        "## cellpipe check on a 500-cell, 100-step notebook",
        "",
        f"Notebook: {CELLS} cells ({size_kb:.0f} KB), {len(pipeline.steps)} steps, "
        f"{len(pipeline.edges)} edges, {len(pipeline.parameters)} parameters. "
        f"{args.runs} timed runs each after one warm-up.",
        "",
        "| measurement | best (ms) | median (ms) | note |",
        "|---|---:|---:|---|",
        row("`cellpipe check NB`", check, "interpreter start included"),
        row("`cellpipe check NB --json`", check_json, "interpreter start included"),
        f"| `load_pipeline(NB)` in process, first call | {first * 1000:.0f} | - | "
        "includes importing the reader |",
        row("`load_pipeline(NB)` in process, warm", warm, ""),
        row('`python -c "import json; json.load(open(NB))"`', floor, "floor: start + read"),
        row('`python -c "pass"`', bare, "interpreter start only"),
        "",
        f"Target: under {TARGET_S:.0f} s including interpreter start: "
        f"**{'met' if ok else 'NOT met'}**.",
        "",
        f"Machine: {machine()}.",
        "",
        f"Reproduce: `{COMMAND}` (`--runs N`, `--no-write`).",
    ]
    section = "\n".join(lines)
    print(section)
    if not args.no_write:
        write_section("bench_check", section)
        print(f"\nwrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
