"""What storing every bound value costs (issue 11): the wine example, cold and fully cached.

Every value a step binds is stored, also those no later step reads; they are stored after the
step reported its result. Three variants run interleaved on the same machine, so load swings
hit each alike:

- ``before``: the code before issue 11 (``--before-src``, default ``/work/main/src`` if it
  exists; skipped otherwise), which stores only the values later steps read;
- ``extras off``: this code with ``CELLPIPE_EXTRA_VALUES=0`` (the same behaviour);
- ``extras on``: this code as shipped (every value stored).

Run: ``.venv/bin/python benchmarks/bench_extra_values.py [--repeats N] [--no-write]``; the
result goes to this script's section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _results import CHILD_ENV, timed, write_section

ROOT = Path(__file__).resolve().parent.parent
CELLPIPE = [sys.executable, "-m", "cellpipe.cli.main"]


def _env(src: Path, **extra: str) -> dict[str, str]:
    return {**CHILD_ENV, "PYTHONPATH": str(src), **extra}


def _stored_bytes(folder: Path) -> int:
    root = folder / ".cellpipe" / "artifacts"
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before-src", default="/work/main/src")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args()
    here = ROOT / "src"
    variants = {"extras on": _env(here), "extras off": _env(here, CELLPIPE_EXTRA_VALUES="0")}
    before = Path(args.before_src)
    if before.is_dir() and before.resolve() != here.resolve():
        variants = {"before": _env(before), **variants}
    cold: dict[str, list[float]] = {k: [] for k in variants}
    cached: dict[str, list[float]] = {k: [] for k in variants}
    stored: dict[str, int] = {}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        for name in variants:
            shutil.copytree(ROOT / "examples" / "wine", Path(tmp) / name)
        for _ in range(args.repeats):
            for name, env in variants.items():
                folder = Path(tmp) / name
                shutil.rmtree(folder / ".cellpipe", ignore_errors=True)
                cmd = [*CELLPIPE, "run", str(folder / "wine.ipynb")]
                cold[name].append(timed(cmd, cwd=folder, env=env))
                stored[name] = _stored_bytes(folder)
                for _ in range(3):
                    cached[name].append(timed(cmd, cwd=folder, env=env))
    rows = [
        "| variant | wine cold | wine fully cached | artifacts stored |",
        "|---|---|---|---|",
    ]
    for name in variants:
        rows.append(
            f"| {name} | {statistics.median(cold[name]):.2f} s (best {min(cold[name]):.2f}) | "
            f"{statistics.median(cached[name]):.2f} s (best {min(cached[name]):.2f}) | "
            f"{stored[name] / 1024:.0f} KiB |"
        )
    header = (
        f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {os.cpu_count()} cores, median of "
        f"{args.repeats} cold runs and {3 * args.repeats} cached runs per variant, interleaved; "
        f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after (the machine "
        "is shared). Whole `python -m cellpipe.cli.main run` commands. Reproduce: "
        "`.venv/bin/python benchmarks/bench_extra_values.py`."
    )
    section = (
        "## Every bound value stored (issue 11, `bench_extra_values.py`)\n\n"
        + header
        + "\n\n"
        + "\n".join(rows)
        + "\n"
    )
    print(section)
    if not args.no_write:
        write_section("bench_extra_values", section)


if __name__ == "__main__":
    main()
