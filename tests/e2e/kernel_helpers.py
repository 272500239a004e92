"""Run code in one real kernel (nbclient + ipykernel), cell by cell, and read what it showed.

The kernel spec points at this interpreter (no installed kernel spec needed) and the kernel
inherits ``PYTHONPATH``, so it imports the cellpipe under test. The kernel is shut down when
the ``with`` block ends, also when a test fails.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nbformat

TIMEOUT_S = 300


class Kernel:
    """A live kernel: `run` executes one cell and returns its outputs."""

    def __init__(self, client: Any, nb: Any) -> None:
        self._client = client
        self._nb = nb

    def run(self, source: str) -> list[dict[str, Any]]:
        """Execute ``source`` as the next cell; return its outputs (errors included)."""
        cell = nbformat.v4.new_code_cell(source)
        self._nb.cells.append(cell)
        self._client.execute_cell(cell, len(self._nb.cells) - 1)
        return [dict(o) for o in cell.outputs]


def text_of(outputs: list[dict[str, Any]], name: str | None = None) -> str:
    """Return the text of stream outputs (``name``: only stdout or stderr) and text/plain data."""
    parts: list[str] = []
    for out in outputs:
        if out["output_type"] == "stream" and (name is None or out["name"] == name):
            parts.append(out["text"])
        elif name is None and out["output_type"] in ("display_data", "execute_result"):
            parts.append(str(out["data"].get("text/plain", "")))
    return "".join(parts)


def errors_of(outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in outputs if o["output_type"] == "error"]


def write_kernel_spec(folder: Path) -> Path:
    """A ``python3`` kernel spec under ``folder`` that starts ipykernel in this interpreter."""
    spec_dir = folder / "kernels" / "python3"
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (cellpipe tests)",
        "language": "python",
        "metadata": {"debugger": False},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    return folder / "kernels"


@contextmanager
def kernel(workdir: Path, kernels: Path, env: dict[str, str] | None = None) -> Iterator[Kernel]:
    """Start a kernel in ``workdir``; yield it; shut it down."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    spec_manager = KernelSpecManager(kernel_dirs=[str(kernels)], ensure_native_kernel=False)
    km = AsyncKernelManager(kernel_name="python3", kernel_spec_manager=spec_manager)
    client = NotebookClient(
        nb,
        km=km,
        timeout=TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
        allow_errors=True,
    )
    environ = dict(os.environ)
    environ["JUPYTER_PLATFORM_DIRS"] = "1"
    for name in ("PYTEST_CURRENT_TEST", "PYTEST_XDIST_WORKER", "JPY_SESSION_NAME"):
        environ.pop(name, None)
    environ.update(env or {})
    with client.setup_kernel(cwd=str(workdir), env=environ, cleanup_kc=True):
        yield Kernel(client, nb)
