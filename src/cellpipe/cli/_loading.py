"""Turning the NOTEBOOK argument of a command into a checked `Pipeline`.

Owns: the checks that belong to the command line rather than the notebook reader: the path
exists and is a file (with a "did you mean" for a misspelt name).

Invariants: reading goes through `cellpipe.api.load_pipeline`, the same function a notebook
user calls, so the CLI and ``import cellpipe`` agree (`analyze_notebook_file` uses the
reader's report, which also carries the warnings of an invalid notebook). The notebook reader
is imported only when a command needs it.

Must not depend on: other command modules.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from cellpipe.errors import DefinitionError

if TYPE_CHECKING:
    from cellpipe.notebook import NotebookReport
    from cellpipe.pipeline import Pipeline

PROJECT_HELP = (
    "a folder inside the project (default: $CELLPIPE_PROJECT, else the working directory)"
)
RUN_HELP = "the run id, a unique prefix of it, or latest (the newest run), latest~1, ..."
NOTEBOOK_HELP = "the notebook: a .ipynb file or a jupytext percent script (.py)"


class NotebookNotFoundError(DefinitionError):
    """The notebook path given on the command line does not name a file.

    Args:
        path: the path as the user typed it.
        reason: what is wrong with it, e.g. ``no such notebook``.
        hint: how to fix it.
    """

    headline = "cannot open the notebook"
    code = "no-such-notebook"

    def __init__(self, path: str, *, reason: str, hint: str | None = None) -> None:
        super().__init__(f"{reason}: {path}", hint=hint)
        self.path = path


def check_path(path_text: str) -> Path:
    """Return ``path_text`` as a path after checking that it names a file.

    Raises:
        NotebookNotFoundError: if the path is missing or is a folder.
    """
    path = Path(path_text)
    if path.is_dir():
        raise NotebookNotFoundError(
            path_text, reason="not a notebook but a folder", hint=_folder_hint(path)
        )
    if not path.is_file():
        raise NotebookNotFoundError(path_text, reason="no such notebook", hint=_missing_hint(path))
    return path


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
    path = Path(path_text)
    if path.is_dir():
        raise NotebookNotFoundError(
            path_text,
            reason="not a notebook but a folder",
            hint=_folder_hint(path),
        )
    if not path.is_file():
        raise NotebookNotFoundError(path_text, reason="no such notebook", hint=_missing_hint(path))
    from cellpipe.api import load_pipeline

    return load_pipeline(path)


def _notebooks_in(folder: Path) -> list[str]:
    try:
        return sorted(
            p.name for p in folder.iterdir() if p.suffix in {".ipynb", ".py"} and p.is_file()
        )
    except OSError:
        return []


def _folder_hint(folder: Path) -> str:
    candidates = [n for n in _notebooks_in(folder) if n.endswith(".ipynb")]
    if candidates:
        return "pass a notebook file, e.g. " + str(folder / candidates[0])
    return "pass a notebook file (.ipynb or a percent script .py)"


def _missing_hint(path: Path) -> str:
    import difflib

    folder = path.parent
    if not folder.is_dir():
        return f"the folder {folder} does not exist either; check the path"
    close = difflib.get_close_matches(path.name, _notebooks_in(folder), n=1, cutoff=0.6)
    if close:
        return f"did you mean {folder / close[0]}?"
    return "check the path; cellpipe reads .ipynb notebooks and percent scripts (.py)"
