"""Benchmark `cellpipe compile` in process on generated 10-, 50- and 200-step notebooks.

Each notebook (a percent script) has 4 parameters, an imports and a functions cell, and steps
that each read the previous step's output and, every third step, an earlier one too (so the
DAG has fan-in), some reading a parameter. Measured per size: `compile_documents` (the pure
compiler), `dump_yaml`, and `validate_documents` (strict protobuf + cross references), best and
median of N runs after a warm-up; and the YAML size in total and per step. Reading the
notebook (`load_pipeline`) is not included: `bench_check` measures it.
Target: compiling a 200-step notebook under 0.5 s in process (compile + dump).

Usage:
    .venv/bin/python benchmarks/bench_compile.py [--runs 10] [--no-write]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _results import RESULTS, write_section

ROOT = Path(__file__).resolve().parent.parent
TARGET_S = 0.5
SIZES = (10, 50, 200)
COMMAND = ".venv/bin/python benchmarks/bench_compile.py"


def notebook_text(steps: int) -> str:
    cells = [
        '# %% tags=["imports"]\nimport math\nimport statistics\n',
        '# %% tags=["pipeline-parameters"]\nN = 100\nSCALE = 1.5\nLABEL = "x"\nSEED = 3\n',
        '# %% tags=["functions"]\ndef scaled(values):\n    return [v * SCALE for v in values]\n',
        '# %% tags=["step:s0"]\nv0 = list(range(N))\n',
    ]
    for i in range(1, steps):
        extra = f" + v{i - 3}" if i % 3 == 0 and i >= 3 else ""
        if i % 2:
            body = f"v{i} = scaled(v{i - 1}){extra}"
        else:
            body = f"v{i} = [math.sqrt(abs(x)) for x in v{i - 1}]{extra}"
        cells.append(f'# %% tags=["step:s{i}"]\n{body}\nprint(statistics.fmean(v{i}))\n')
    cells.append(f'# %% tags=["step:last"]\ntotal = sum(v{steps - 1})\n')
    cells.append('# %% tags=["pipeline-metrics"]\ntotal\n')
    return "\n".join(cells)


def timed(function: Callable[[], object], runs: int) -> tuple[float, float]:
    function()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    return min(samples), statistics.median(samples)


def measure(steps: int, runs: int) -> dict[str, float]:
    from cellpipe.kfp import compile_documents
    from cellpipe.kfp.validate import validate_documents
    from cellpipe.kfp.yaml import dump_yaml
    from cellpipe.notebook import load_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"gen{steps}.py"
        path.write_text(notebook_text(steps))
        pipeline = load_pipeline(path)
    options = {"image": None, "cellpipe_version": "bench", "kfp_version": "2.17.3"}
    documents = compile_documents(pipeline, **options)
    text = dump_yaml(documents)
    compile_best, compile_median = timed(lambda: compile_documents(pipeline, **options), runs)
    dump_best, dump_median = timed(lambda: dump_yaml(documents), runs)
    both_best, both_median = timed(lambda: dump_yaml(compile_documents(pipeline, **options)), runs)
    validate_best, _ = timed(lambda: validate_documents(documents), max(3, runs // 3))
    return {
        "compile_best": compile_best,
        "compile_median": compile_median,
        "dump_best": dump_best,
        "dump_median": dump_median,
        "both_best": both_best,
        "both_median": both_median,
        "validate_best": validate_best,
        "bytes": len(text.encode()),
        "edges": len(pipeline.edges),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    rows = []
    results = {}
    for steps in SIZES:
        r = measure(steps, args.runs)
        results[steps] = r
        rows.append(
            f"| {steps} | {r['edges']:.0f} | {r['compile_best'] * 1000:.0f} | "
            f"{r['compile_median'] * 1000:.0f} | {r['dump_best'] * 1000:.0f} | "
            f"{r['both_median'] * 1000:.0f} | {r['validate_best'] * 1000:.0f} | "
            f"{r['bytes'] / 1024:.0f} | {r['bytes'] / steps / 1024:.1f} |"
        )
    met = results[200]["both_median"] < TARGET_S
    section = "\n".join(
        [
            "## cellpipe compile (KFP v2 IR) on generated notebooks, in process",
            "",
            f"Generated percent scripts; {args.runs} timed runs each after one warm-up; reading "
            "the notebook not included (see bench_check).",
            "",
            "| steps | edges | compile best (ms) | compile median (ms) | dump_yaml best (ms) | "
            "compile + dump median (ms) | validate best (ms) | YAML (KB) | YAML per step (KB) |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            *rows,
            "",
            f"Target: 200 steps compiled and dumped under {TARGET_S} s in process: "
            f"**{'met' if met else 'NOT met'}**. Each step embeds the step runtime "
            "(`cellpipe/kfp/runtime.py`, about 11 KB), which dominates the size per step.",
            "",
            f"Machine: {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()} ({platform.python_implementation()}).",
            "",
            f"Reproduce: `{COMMAND}` (`--runs N`, `--no-write`).",
        ]
    )
    print(section)
    if not args.no_write:
        write_section("bench_compile", section)
        print(f"\nwrote {RESULTS.relative_to(ROOT)}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
