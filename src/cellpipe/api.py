"""What ``import cellpipe`` offers inside a notebook: thin functions over the services.

Owns: the public Python API. Each function is a thin wrapper over a service function that the
CLI uses too, so the notebook, the CLI and the UI behave the same.

Must not depend on: cli, ui.
"""

from __future__ import annotations

from pathlib import Path

from cellpipe.pipeline import Pipeline


def load_pipeline(path: str | Path) -> Pipeline:
    """Read a notebook (``.ipynb`` or percent script) and return its checked pipeline.

    Args:
        path: the notebook file.

    Returns:
        The validated pipeline.

    Raises:
        NotebookParseError: if the file cannot be read as a notebook.
        PipelineValidationError: with every definition problem found.
    """
    from cellpipe.notebook import load_pipeline as _load

    return _load(Path(path))
