"""What the notebook's live view costs a run (issue 11): one redraw, by pipeline size.

The live view (`cellpipe.views.live`) redraws in the thread that schedules the steps: on every
step state change, and at most 10 times a second for output. A redraw is `live_html`: the graph
(laid out by grandalf once per pipeline, then cached), the steps table and each step's last
output lines. Measured here, in process, for generated pipelines of 5, 20, 100 and 300 steps
(each step reads the two before it) with every step running and 20 output lines each:

- the first redraw (includes the layout), and a warm redraw (median of N);
- the baseline: the CLI's text line for the same state (`state_text`), what a script sees.

At 10 redraws a second, a warm redraw of ``t`` ms costs ``t`` % of one core.

Run: ``.venv/bin/python benchmarks/bench_live_view.py [--repeats N] [--no-write]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

from _results import write_section

from cellpipe.runner.events import RunStarted, StepOutput, StepStarted
from cellpipe.views import graph
from cellpipe.views.live import LiveState, live_html, state_text


def _state(steps: int) -> tuple[LiveState, list[tuple[str, str, str]]]:
    names = [f"step_{i:03d}" for i in range(steps)]
    edges = [(names[j], names[i], f"x{j}") for i in range(steps) for j in (i - 1, i - 2) if j >= 0]
    state = LiveState(steps=names)
    state.apply(RunStarted(run_id="bench", steps=tuple(names), jobs=2))
    for name in names:
        state.apply(StepStarted(step=name, reason="miss: parameter LR changed 0.1 → 0.2"))
        state.apply(
            StepOutput(step=name, stream="log", text="".join(f"epoch {k}\n" for k in range(20)))
        )
    return state, edges


def _ms(seconds: float) -> float:
    return seconds * 1000.0


def measure(steps: int, repeats: int) -> dict[str, float]:
    state, edges = _state(steps)
    graph._layout.cache_clear()
    start = time.perf_counter()
    first_html = live_html(state, edges=edges, title="bench")
    first = time.perf_counter() - start
    warm = []
    for _ in range(repeats):
        start = time.perf_counter()
        live_html(state, edges=edges, title="bench")
        warm.append(time.perf_counter() - start)
    text = []
    for _ in range(repeats):
        start = time.perf_counter()
        state_text(state)
        text.append(time.perf_counter() - start)
    return {
        "first": _ms(first),
        "warm": _ms(statistics.median(warm)),
        "text": _ms(statistics.median(text)),
        "kb": len(first_html.encode()) / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    start = time.perf_counter()
    import grandalf.layouts  # noqa: F401 - imported once per kernel, measured apart

    imported = _ms(time.perf_counter() - start)
    rows = []
    for steps in (5, 20, 100, 300):
        m = measure(steps, args.repeats)
        rows.append(
            f"| {steps} | {m['first']:.1f} | {m['warm']:.2f} | {m['text']:.3f} | {m['kb']:.0f} |"
        )
        print(rows[-1])
    load = os.getloadavg()[0]
    section = "\n".join(
        [
            "## The notebook's live view: one redraw, by pipeline size",
            "",
            f"In process, {args.repeats} warm redraws each (median); every step running with 20"
            " output lines. At 10 redraws a second a warm redraw of t ms costs t % of a core."
            f" Importing grandalf, once per kernel: {imported:.0f} ms (not in the first redraw).",
            "",
            "| steps | first redraw incl. layout (ms) | warm redraw (ms) |"
            " baseline: text line (ms) | HTML (KB) |",
            "|---:|---:|---:|---:|---:|",
            *rows,
            "",
            f"Machine: {platform.system()} {platform.release()}, nproc {os.cpu_count()}, "
            f"Python {platform.python_version()}, load average {load:.2f} during the run.",
            "",
            "Reproduce: `.venv/bin/python benchmarks/bench_live_view.py`"
            " (`--repeats N`, `--no-write`).",
        ]
    )
    if not args.no_write:
        write_section("bench_live_view", section)


if __name__ == "__main__":
    main()
