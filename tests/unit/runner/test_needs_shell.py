"""`needs_shell`: which code makes a step process build its IPython shell up front."""

from __future__ import annotations

import pytest
from runner_testkit import chunk, pipeline, step

from cellpipe.runner.jobs import needs_shell, pipeline_needs_shell


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("x = 1", False),
        ("import time\ntime.sleep(0)\nv = 1", False),
        ("print('hello')", False),  # a print's value is None: nothing to format
        ("x = 1\nx;", False),  # a semicolon hides the value, as in Jupyter
        ("for i in range(3):\n    pass", False),
        ("x = 1\nx", True),  # the last expression's value is shown
        ("df.head()", True),
        ("display(1)\ny = 2", True),
        ("ip = get_ipython()\nz = 1", True),
        ("%time x = 1", True),  # magics become get_ipython() calls
        ("!ls\nw = 1", True),
        ("from IPython.display import HTML\nh = HTML('<b/>')", True),
        ("import ipywidgets as w\nx = 1", True),
        ("flag = __IPYTHON__", True),
        ("def broken(:\n    pass", True),  # a syntax error keeps Jupyter's behaviour
    ],
)
def test_needs_shell(source: str, expected: bool) -> None:
    assert needs_shell([chunk(4, source)]) is expected


def test_pipeline_needs_shell_looks_at_the_preamble_and_every_step() -> None:
    quiet = pipeline(step("a", 4, "x = 1"), step("b", 5, "y = 2"), imports="import os")
    assert pipeline_needs_shell(quiet) is False
    assert pipeline_needs_shell(pipeline(step("a", 4, "x = 1"), step("b", 5, "y = 2\ny")))
    assert pipeline_needs_shell(pipeline(step("a", 4, "x = 1"), functions="display('hi')"))
