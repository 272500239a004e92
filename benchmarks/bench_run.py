"""Benchmarks of `cellpipe run` against the same code run as a plain Python script.

Each case is measured in the same process, side by side with its baseline:

- chain: 20 trivial steps, cold; per-step overhead = (cellpipe - script) / 20 (target <= 50 ms);
- wine: the bundled example, cold (target <= 1.3 x the script) and fully cached (target < 0.5 s);
- parallel: four independent steps that each sleep 1 s (target < 2.3 s on 2 cores), with the
  default ``--jobs`` (at least 5 samples), the same steps ending with an expression (so the
  IPython shell is built) and, for reference, with ``--jobs 4``;
- transfer: a 1 GiB numpy array and a 10-million-row DataFrame passed between two steps.

Subprocesses run without ``PYTHONDONTWRITEBYTECODE`` (an installed cellpipe has its bytecode
cached); the load average before and after is recorded, since the machine may be shared.

Run: ``.venv/bin/python benchmarks/bench_run.py [--quick] [--no-write]``; results go to this
script's section of RESULTS.md (between its start and end markers; other sections are kept).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from _results import notebook, timed, write_section

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CELLPIPE = str(BIN / "cellpipe")


def write(folder: Path, name: str, nb: nbformat.NotebookNode) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    nbformat.write(nb, path)
    return path


def as_script(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    parts = []
    for cell in nb.cells:
        if cell.cell_type == "code" and "skip" not in cell.metadata.get("tags", []):
            parts.append(cell.source)
    return "\n\n".join(parts) + "\n"


def run_script(path: Path) -> float:
    script = path.with_suffix(".script.py")
    script.write_text(as_script(path))
    return timed([sys.executable, str(script)], cwd=path.parent)


def run_cellpipe(path: Path, *extra: str) -> float:
    return timed([CELLPIPE, "run", str(path), *extra], cwd=path.parent)


def fresh(path: Path) -> None:
    shutil.rmtree(path.parent / ".cellpipe", ignore_errors=True)


def chain_case(work: Path, repeats: int) -> list[str]:
    cells: list[tuple[list[str], str]] = [(["step:s0"], "x = 0")]
    cells += [([f"step:s{i}"], "x = x + 1") for i in range(1, 20)]
    cells.append((["pipeline-metrics"], "x"))
    path = write(work / "chain", "chain.ipynb", notebook(cells))
    script, piped = [], []
    for _ in range(repeats):
        script.append(run_script(path))
        fresh(path)
        piped.append(run_cellpipe(path))
    s, c = statistics.median(script), statistics.median(piped)
    overhead_ms = (c - s) / 20 * 1000
    return [
        f"| chain of 20 trivial steps, cold | {c:.2f} s | script {s:.2f} s | "
        f"{overhead_ms:.0f} ms per step (target <= 50) |"
    ]


def wine_case(work: Path, repeats: int) -> list[str]:
    folder = work / "wine"
    shutil.copytree(ROOT / "examples" / "wine", folder, dirs_exist_ok=True)
    path = folder / "wine.ipynb"
    script, cold, cached, bare = [], [], [], []
    for _ in range(repeats):
        script.append(run_script(path))
        fresh(path)
        cold.append(run_cellpipe(path))
        for _ in range(3):  # the cached case is short: more samples, interleaved with its floor
            cached.append(run_cellpipe(path))
            bare.append(timed([sys.executable, "-c", "pass"], cwd=folder))
    s, c, h = statistics.median(script), statistics.median(cold), statistics.median(cached)
    p = statistics.median(bare)
    return [
        f"| wine example, cold | {c:.2f} s | script {s:.2f} s | {c / s:.2f} x (target <= 1.3) |",
        f"| wine example, fully cached (whole command) | {h:.2f} s (best {min(cached):.2f}) | "
        f"`python -c pass` {p:.2f} s | target < 0.5 s: "
        f"{'met' if h < 0.5 else 'NOT met'} |",
    ]


def parallel_case(work: Path, repeats: int) -> list[str]:
    def sleeps(name: str, *, show: bool) -> Path:
        cells: list[tuple[list[str], str]] = [(["imports"], "import time")]
        for i in range(4):
            code = f"time.sleep(1)\nv{i} = {i}" + (f"\nv{i}" if show else "")
            cells.append(([f"step:sleep{i}"], code))
        return write(work / name, f"{name}.ipynb", notebook(cells))

    plain = sleeps("parallel", show=False)
    # The same steps, each showing its value as a notebook cell's last line does: the fork
    # server then builds an IPython shell before the first step (about 0.13 s here).
    shown = sleeps("parallel_shown", show=True)
    script = statistics.median(run_script(plain) for _ in range(repeats))
    cold, cold_shown, wide = [], [], []
    for _ in range(max(repeats, 5)):  # the headline target: more samples
        fresh(plain)
        cold.append(run_cellpipe(plain))
        fresh(shown)
        cold_shown.append(run_cellpipe(shown))
    for _ in range(repeats):
        fresh(plain)
        wide.append(run_cellpipe(plain, "--jobs", "4"))
    c, h, w = statistics.median(cold), statistics.median(cold_shown), statistics.median(wide)
    return [
        f"| four independent 1 s sleeps, cold (default --jobs = {os.cpu_count()}) | {c:.2f} s "
        f"(best {min(cold):.2f}, worst {max(cold):.2f}) | script {script:.2f} s | target "
        f"< 2.3 s on {os.cpu_count()} cores: {'met' if c < 2.3 else 'NOT met'} |",
        f"| the same, each step ending with an expression (IPython shell built) | {h:.2f} s "
        f"(best {min(cold_shown):.2f}) | script {script:.2f} s | for reference |",
        f"| the same with --jobs 4 (all at once; for reference) | {w:.2f} s | "
        f"script {script:.2f} s | the fixed start-up cost without the second round |",
    ]


def transfer_case(work: Path) -> list[str]:
    cells: list[tuple[list[str], str]] = [
        (["imports"], "import numpy as np\nimport pandas as pd"),
        (
            ["step:make"],
            "arr = np.ones(128 * 1024 * 1024)\n"
            "df = pd.DataFrame({'a': np.arange(10_000_000), 'b': np.ones(10_000_000)})",
        ),
        (["step:use"], "total = float(arr[::4096].sum()) + float(df['b'].sum())"),
        (["pipeline-metrics"], "total"),
    ]
    path = write(work / "transfer", "transfer.ipynb", notebook(cells))
    s = run_script(path)
    c = run_cellpipe(path)
    gib = (128 * 1024 * 1024 * 8 + 10_000_000 * 16) / 2**30
    return [
        f"| 1 GiB array + 10M-row DataFrame between two steps | {c:.2f} s | script {s:.2f} s | "
        f"{gib / max(c - s, 1e-9):.2f} GiB/s of store overhead |"
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one repeat, skip the 1 GiB case")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    parser.add_argument(
        "--only",
        choices=["chain", "wine", "parallel", "transfer"],
        help="measure one case and print it (RESULTS.md is not updated)",
    )
    args = parser.parse_args()
    if args.only:
        args.no_write = True
    repeats = 1 if args.quick else 3
    load_before = os.getloadavg()[0]
    rows = ["| case | cellpipe | baseline | result |", "|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.only in (None, "chain"):
            rows += chain_case(work, repeats)
        if args.only in (None, "wine"):
            rows += wine_case(work, repeats)
        if args.only in (None, "parallel"):
            rows += parallel_case(work, repeats)
        if args.only == "transfer" or (args.only is None and not args.quick):
            rows += transfer_case(work)
    header = (
        f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, median of {repeats} "
        f"(the cached case: of {3 * repeats}); load average {load_before:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after (the machine is shared). Subprocesses run with "
        "bytecode caching on. Reproduce: `.venv/bin/python benchmarks/bench_run.py` "
        "(`--quick`, `--no-write`)."
    )
    section = "## cellpipe run\n\n" + header + "\n\n" + "\n".join(rows) + "\n"
    print(section)
    if not args.no_write:
        write_section("bench_run", section)


if __name__ == "__main__":
    main()
