"""What every benchmark shares: writing its own section of RESULTS.md, timing a command, and
building a tagged notebook.

Each script owns the text between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` and
replaces only that; the other scripts' sections are kept as they are.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

# Subprocesses keep bytecode caching on, as a user's commands do.
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    """Run a command to its end and return its wall time; stop the benchmark if it fails."""
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env or CHILD_ENV)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}")
    return elapsed


def notebook(cells: list[tuple[list[str], str]]) -> Any:
    """Return an nbformat v4 notebook of code cells with the given tags."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    for tags, source in cells:
        cell = nbformat.v4.new_code_cell(source)
        cell.metadata["tags"] = tags
        nb.cells.append(cell)
    return nb


RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def write_section(name: str, section: str) -> None:
    """Replace the section of benchmark ``name`` in RESULTS.md (appended when missing)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{section.rstrip()}\n{end}"
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    RESULTS.write_text(text, encoding="utf-8")
