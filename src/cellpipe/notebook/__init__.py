"""Notebook (.ipynb or percent script) -> Pipeline: parsing, tags and static analysis.

Must not depend on: storage, runner, kfp, registry, serving, cli, ui.
"""

from __future__ import annotations

from pathlib import Path

from cellpipe.pipeline import Pipeline


def load_pipeline(path: Path) -> Pipeline:
    """Read the notebook at ``path`` and return its validated pipeline.

    Raises:
        NotebookParseError: if the file cannot be read as a notebook.
        PipelineValidationError: with every definition problem found.
    """
    raise NotImplementedError  # being written in issue #2
