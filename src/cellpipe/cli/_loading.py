"""Turning the NOTEBOOK argument of a command into a checked `Pipeline`.

Owns: the shared help texts; the path checks (the path exists and is a file, with a "did you
mean" for a misspelt name) are `cellpipe.api.check_path`, which `cellpipe.check` uses too.

Invariants: reading goes through `cellpipe.api.load_pipeline`, the same function a notebook
user calls, so the CLI and ``import cellpipe`` agree (`analyze_notebook_file` uses the
reader's report, which also carries the warnings of an invalid notebook). The notebook reader
is imported only when a command needs it.

Must not depend on: other command modules.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

__all__ = [
    "NOTEBOOK_HELP",
    "PROJECT_HELP",
    "RUN_HELP",
    "NotebookNotFoundError",
    "analyze_notebook_file",
    "check_path",
    "load_notebook",
    "port_number",
]

if TYPE_CHECKING:
    from cellpipe.api import NotebookNotFoundError
    from cellpipe.notebook import NotebookReport
    from cellpipe.pipeline import Pipeline

PROJECT_HELP = (
    "a folder inside the project (default: $CELLPIPE_PROJECT, else the working directory)"
)
RUN_HELP = "the run id, a unique prefix of it, or latest (the newest run), latest~1, ..."
NOTEBOOK_HELP = "the notebook: a .ipynb file or a jupytext percent script (.py)"


def check_path(path_text: str | Path) -> Path:
    """Return ``path_text`` as a path after checking that it names a file.

    `cellpipe.api.check_path`, imported when first called (a command's start-up counts).

    Raises:
        NotebookNotFoundError: if the path is missing or is a folder.
    """
    from cellpipe.api import check_path as check

    return check(path_text)


def __getattr__(name: str) -> Any:
    if name == "NotebookNotFoundError":
        from cellpipe.api import NotebookNotFoundError

        return NotebookNotFoundError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def analyze_notebook_file(path_text: str) -> NotebookReport:
    """Return everything the notebook reader found: the pipeline or the errors, and warnings.

    Args:
        path_text: the notebook path as given on the command line.

    Returns:
        The reader's report; ``report.ok`` says whether the pipeline is valid.

    Raises:
        NotebookNotFoundError: if the path is missing or is a folder.
        NotebookParseError: if the file cannot be read as a notebook.
    """
    path = check_path(path_text)
    from cellpipe.notebook import analyze_notebook

    return analyze_notebook(path)


def load_notebook(path_text: str) -> Pipeline:
    """Return the checked pipeline of the notebook at ``path_text``.

    Args:
        path_text: the notebook path as given on the command line.

    Returns:
        The validated pipeline.

    Raises:
        NotebookNotFoundError: if the path is missing or is a folder.
        NotebookParseError: if the file cannot be read as a notebook.
        PipelineValidationError: with every definition problem in the notebook.
    """
    from cellpipe.api import load_pipeline

    return load_pipeline(check_path(path_text))


def port_number(text: str) -> int:
    """Argument type of ``--port`` (``serve``, ``ui``): a TCP port, 0 meaning any free one."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, got {value}")
    return value
