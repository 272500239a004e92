"""Notebook (.ipynb or percent script) -> Pipeline: parsing, tags and static analysis.

Public API:
- `load_pipeline(path)` -> `Pipeline`; raises `NotebookParseError` (unreadable file, not
  nbformat v4, malformed JSON) or `PipelineValidationError` carrying every problem, unknown
  and malformed tags included (codes ``unknown-tag``, ``malformed-tag``).
- `analyze_notebook(path)` -> `NotebookReport` (``pipeline`` or None, ``errors``, ``warnings``),
  for callers that show errors and warnings together (``cellpipe check --json``); it raises
  only `NotebookParseError`.
- `read_notebook(path)` -> `NotebookSource` (cells with tags, metadata) for tools that need the
  raw cells; `Cell` is one of them.
- `MAIN_STEP`: the name of the single step of a notebook without step tags.

Modules: `parse` (files -> cells), `tags` (Kale's tag grammar), `magics` (IPython syntax ->
Python, ``%pip install``), `analyze` (ast facts of one block), `packages` (module ->
distribution), `settings` (``kubeflow_notebook`` metadata), `build` (cells -> Pipeline; the
rules are in its docstring).

Must not depend on: storage, runner, kfp, registry, serving, cli, ui.
"""

from __future__ import annotations

from cellpipe.notebook.build import MAIN_STEP, NotebookReport, analyze_notebook, load_pipeline
from cellpipe.notebook.parse import Cell, NotebookSource, read_notebook

__all__ = [
    "MAIN_STEP",
    "Cell",
    "NotebookReport",
    "NotebookSource",
    "analyze_notebook",
    "load_pipeline",
    "read_notebook",
]
