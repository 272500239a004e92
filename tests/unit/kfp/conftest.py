"""Fixtures for the KFP compiler tests: notebooks written as percent scripts in tmp_path."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from cellpipe.notebook import load_pipeline
from cellpipe.pipeline import Pipeline

MakePipeline = Callable[[str], Pipeline]


@pytest.fixture
def make_pipeline(tmp_path: Path) -> MakePipeline:
    """Return a function turning percent-script text into a checked Pipeline."""

    def make(text: str, name: str = "nb") -> Pipeline:
        path = tmp_path / f"{name}.py"
        path.write_text(textwrap.dedent(text).lstrip())
        return load_pipeline(path)

    return make
