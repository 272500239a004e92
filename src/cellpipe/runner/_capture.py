"""Capturing what a step shows: streams, rich displays and errors, into an executed notebook.

Owns: `NotebookBuilder` (the cells and outputs of one step's executed notebook, nbformat v4
as plain dicts), `TeeStream` (``sys.stdout``/``sys.stderr`` replacements that append to the
log file and to the current cell), and `get_shell` (the one IPython ``InteractiveShell`` of the
process, configured so ``display()``, magics and ``!cmd`` work and land in the notebook,
created on first use).

Invariants: output is written to the log file as it happens (unbuffered, ``O_APPEND``), so a
parent can stream it and a crash loses nothing; every rich output goes to the builder that is
active at that moment (`capturing`); ``%pip``/``%conda`` lines are requirements and are not
run; ``%matplotlib`` is a no-op because figures are always collected at the end of each cell;
the shell keeps no history (no SQLite file, no thread), so a warm process stays safe to fork.

Must not depend on: notebooks, the KFP compiler, the CLI or the UI. IPython (about 0.13 s) is
imported by the first `get_shell`, not by importing this module: a process whose code needs
no shell never imports it (see `cellpipe.runner.jobs.needs_shell`).
"""

from __future__ import annotations

import base64
import io
import os
import platform
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

__all__ = ["NotebookBuilder", "TeeStream", "capturing", "get_shell", "shell_created"]

_active: NotebookBuilder | None = None
_shell: Any = None


def _jsonable_bundle(data: Mapping[str, Any]) -> dict[str, Any]:
    bundle: dict[str, Any] = {}
    for mime, value in data.items():
        if isinstance(value, bytes):
            # Binary mime types (image/png) travel base64-encoded in .ipynb files.
            bundle[mime] = base64.b64encode(value).decode("ascii")
        elif mime == "application/json" or mime.endswith("+json") or isinstance(value, str):
            bundle[mime] = value
        else:
            bundle[mime] = str(value)
    return bundle


class NotebookBuilder:
    """The executed notebook of one step, built cell by cell (nbformat v4.5 dicts)."""

    def __init__(self) -> None:
        self.cells: list[dict[str, Any]] = []
        self._outputs: list[dict[str, Any]] | None = None

    def add_cell(
        self,
        *,
        cell_id: str,
        source: str,
        execution_count: int | None,
        metadata: Mapping[str, Any],
        outputs: list[dict[str, Any]] | None = None,
    ) -> None:
        """Append a code cell; following outputs go to it."""
        self._outputs = [] if outputs is None else outputs
        self.cells.append(
            {
                "cell_type": "code",
                "id": cell_id,
                "metadata": dict(metadata),
                "source": source,
                "execution_count": execution_count,
                "outputs": self._outputs,
            }
        )

    def stream(self, name: str, text: str) -> None:
        """Append stream text, merged with the previous output if it is the same stream."""
        if self._outputs is None or not text:
            return
        last = self._outputs[-1] if self._outputs else None
        if last is not None and last["output_type"] == "stream" and last["name"] == name:
            last["text"] += text
        else:
            self._outputs.append({"output_type": "stream", "name": name, "text": text})

    def display(
        self,
        data: Mapping[str, Any],
        metadata: Mapping[str, Any] | None = None,
        *,
        execution_count: int | None = None,
    ) -> None:
        """Append a display_data output (an execute_result when ``execution_count`` is set)."""
        if self._outputs is None:
            return
        output: dict[str, Any] = {
            "output_type": "display_data" if execution_count is None else "execute_result",
            "data": _jsonable_bundle(data),
            "metadata": dict(metadata or {}),
        }
        if execution_count is not None:
            output["execution_count"] = execution_count
        self._outputs.append(output)

    def error(self, ename: str, evalue: str, traceback_text: str) -> None:
        """Append an error output."""
        if self._outputs is None:
            return
        self._outputs.append(
            {
                "output_type": "error",
                "ename": ename,
                "evalue": evalue,
                "traceback": traceback_text.splitlines(),
            }
        )

    def to_notebook(self, metadata: Mapping[str, Any]) -> dict[str, Any]:
        """Return the whole notebook as a JSON-ready dict."""
        return {
            "nbformat": 4,
            "nbformat_minor": 5,
            "metadata": {
                "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                "language_info": {"name": "python", "version": platform.python_version()},
                **metadata,
            },
            "cells": self.cells,
        }


@contextmanager
def capturing(builder: NotebookBuilder) -> Iterator[NotebookBuilder]:
    """Route rich displays and captured streams to ``builder`` for the block."""
    global _active
    previous = _active
    _active = builder
    try:
        yield builder
    finally:
        _active = previous


def active_builder() -> NotebookBuilder | None:
    """Return the builder that currently receives outputs, if any."""
    return _active


class TeeStream(io.TextIOBase):
    """A text stream that appends to the log file and to the current cell's outputs.

    Args:
        name: ``stdout`` or ``stderr`` (the notebook stream name).
        log_fd: the log file, opened with ``O_APPEND``.
        fileno: the file descriptor to report from ``fileno()`` (1 or 2 when they point to
            the log file), or None when there is none (the in-process executor).
    """

    def __init__(self, name: str, log_fd: int, fileno: int | None) -> None:
        super().__init__()
        self._name = name
        self._log_fd = log_fd
        self._fileno = fileno

    @property
    def name(self) -> str:
        """The stream name."""
        return f"<{self._name}>"

    @property
    def encoding(self) -> str:  # type: ignore[override]
        """Always UTF-8."""
        return "utf-8"

    def writable(self) -> bool:
        """Return True."""
        return True

    def isatty(self) -> bool:
        """Return False: output goes to a file."""
        return False

    def fileno(self) -> int:
        """Return the underlying descriptor, for libraries that write to it directly."""
        if self._fileno is None:
            raise io.UnsupportedOperation("fileno")
        return self._fileno

    def write(self, text: str) -> int:
        """Append ``text`` to the log and to the current cell."""
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if text:
            os.write(self._log_fd, text.encode("utf-8", "replace"))
            builder = _active
            if builder is not None:
                builder.stream(self._name, text)
        return len(text)

    def flush(self) -> None:
        """Nothing is buffered."""


def _system(cmd: str) -> int:
    """Run ``!cmd`` through the shell, streaming its output to the captured stdout."""
    shell: Any = get_shell()
    # depth=1: expand $names from the caller's frame (the user's cell), like IPython does.
    expanded = shell.var_expand(cmd, depth=1)
    proc = subprocess.Popen(
        expanded,
        shell=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    with proc.stdout:
        for line in iter(proc.stdout.readline, b""):
            sys.stdout.write(line.decode("utf-8", "replace"))
    code = proc.wait()
    shell.user_ns["_exit_code"] = code
    return code


def _pip_magic(line: str) -> None:
    """``%pip``/``%conda`` lines are package requirements: noted, not run in a step."""
    sys.stdout.write(
        f"[cellpipe] '%pip {line}' not run: package installs are requirements of the "
        "pipeline, install them before running it\n"
    )


def _conda_magic(line: str) -> None:
    sys.stdout.write(f"[cellpipe] '%conda {line}' not run: install packages before the run\n")


def _matplotlib_magic(line: str) -> None:
    """Figures are collected after every cell already, as with the inline backend."""
    del line


def _publisher_class() -> type:
    """The display publisher that sends ``display()`` output to the active builder."""
    from IPython.core.displaypub import DisplayPublisher

    class CapturingPublisher(DisplayPublisher):
        def publish(
            self,
            data: dict[str, Any],
            metadata: dict[str, Any] | None = None,
            source: object = None,
            *,
            transient: object = None,
            update: bool = False,
            **kwargs: object,
        ) -> None:
            del source, transient, update, kwargs
            builder = _active
            if builder is not None:
                builder.display(data, metadata)

        def clear_output(self, wait: bool = False) -> None:
            del wait

    return CapturingPublisher


def shell_created() -> bool:
    """Return whether this process has built its shell (and so imported IPython)."""
    return _shell is not None


def get_shell() -> Any:
    """Return this process's IPython shell, configured for capture (created once).

    The shell provides ``get_ipython()`` for transformed magics, the display formatter for
    rich reprs, and a display publisher that writes to the active `NotebookBuilder`. The
    first call imports IPython.
    """
    global _shell
    if _shell is not None:
        return _shell
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    shell: Any
    if InteractiveShell.initialized():
        shell = InteractiveShell.instance()
    else:
        config = Config()
        # No history: it would open a SQLite file and start a saving thread, and a thread
        # in the warm parent makes fork unsafe.
        config.HistoryManager.enabled = False
        shell = InteractiveShell.instance(config=config)
    if not getattr(shell, "_cellpipe_configured", False):
        shell.display_pub = _publisher_class()(shell=shell)
        shell.system = _system
        shell.register_magic_function(_pip_magic, "line", "pip")
        shell.register_magic_function(_conda_magic, "line", "conda")
        shell.register_magic_function(_conda_magic, "line", "mamba")
        shell.register_magic_function(_matplotlib_magic, "line", "matplotlib")
        shell._cellpipe_configured = True
    _shell = shell
    return shell


def format_value(value: object) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return the mime bundle and metadata Jupyter would show for ``value``."""
    shell = get_shell()
    data, metadata = shell.display_formatter.format(value)
    return dict(data), dict(metadata)


def publish(data: Mapping[str, Any], metadata: Mapping[str, Any] | None = None) -> None:
    """Send a display_data output to the active builder (used for figures)."""
    builder = _active
    if builder is not None:
        builder.display(data, metadata)
