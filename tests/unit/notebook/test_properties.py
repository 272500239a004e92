from __future__ import annotations

import contextlib
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from cellpipe.errors import CellpipeError
from cellpipe.notebook import analyze_notebook, load_pipeline
from strategies import NOTEBOOK_METADATA, notebook_cells


@settings(max_examples=200, deadline=None)
@given(cells=notebook_cells(), metadata=NOTEBOOK_METADATA)
def test_random_notebooks_only_raise_cellpipe_errors(tmp_path_factory, cells, metadata):
    path = tmp_path_factory.mktemp("nb") / "random.ipynb"
    path.write_text(json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": metadata,
                                "cells": cells}))  # fmt: skip
    try:
        report = analyze_notebook(path)
    except CellpipeError:
        return
    assert (report.pipeline is None) == bool(report.errors)
    if report.pipeline is not None:
        assert load_pipeline(path).to_json() == report.pipeline.to_json()
        for step in report.pipeline.steps:
            for chunk in step.code:
                assert len(chunk.python.splitlines()) == len(chunk.source.splitlines())


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=200))
def test_random_files_only_raise_cellpipe_errors(tmp_path_factory, text):
    folder = tmp_path_factory.mktemp("files")
    for name in ("x.ipynb", "x.py"):
        path = folder / name
        path.write_text(text)
        with contextlib.suppress(CellpipeError):
            analyze_notebook(path)
