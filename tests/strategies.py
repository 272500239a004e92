"""Hypothesis strategies shared by the tests: random notebooks (cells, tags, code)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

STEP_NAMES = ["a", "b", "load", "train", "Bad-Name", ""]

TAGS = st.one_of(
    st.sampled_from(
        [
            "imports",
            "functions",
            "pipeline-parameters",
            "pipeline-metrics",
            "skip",
            "cache:false",
            "cache:maybe",
            "limit:memory:1Gi",
            "limit:x",
            "image:python:3.11",
            "annotation:a.io/b:c",
            "label:k:v",
            "secret:s",
            "report:false",
            "unknown",
            "",
        ]
    ),
    st.builds("step:{}".format, st.sampled_from(STEP_NAMES)),
    st.builds("block:{}".format, st.sampled_from(STEP_NAMES)),
    st.builds("prev:{}".format, st.sampled_from(STEP_NAMES)),
    st.text(max_size=12),
)

SNIPPETS = [
    "x = 1",
    "y = x + 1",
    "x += 1",
    "data.append(x)",
    "del x",
    "import os\nimport numpy as np",
    "from math import *",
    "def f(v):\n    global g\n    g = v\n    return v * x",
    "class C:\n    k = y\n    def m(self):\n        return z",
    "lr = 0.1\nn = -2\nname = 'a'",
    "print(acc)",
    "acc = sum([1, 2])",
    "%pip install pandas==2.0",
    "!ls\n%matplotlib inline",
    "%%bash\necho hi",
    "files = !ls",
    "obj?",
    "[q := i for i in range(3)]",
    "if x:\n    w = 1",
    "for i in range(3):\n    total = i",
    "try:\n    import missing_pkg_xyz\nexcept ImportError:\n    missing_pkg_xyz = None",
    "def (:",
    "x = (",
    "   ",
    "",
    "list = [1]",
    "f()",
    "match x:\n    case {'a': 1, **rest}:\n        pass",
]

SOURCES = st.one_of(
    st.sampled_from(SNIPPETS),
    st.lists(st.sampled_from(SNIPPETS), min_size=1, max_size=4).map("\n".join),
    st.text(max_size=40),
)


@st.composite
def notebook_cells(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A list of nbformat v4 cell dicts with random kinds, tags and sources."""
    cells = []
    for _ in range(draw(st.integers(min_value=0, max_value=8))):
        kind = draw(st.sampled_from(["code", "code", "code", "markdown", "raw"]))
        tags = draw(st.lists(TAGS, max_size=3))
        cell: dict[str, Any] = {
            "cell_type": kind,
            "metadata": {"tags": tags},
            "source": draw(SOURCES),
        }
        if kind == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        cells.append(cell)
    return cells


NOTEBOOK_METADATA = st.one_of(
    st.just({}),
    st.fixed_dictionaries(
        {
            "kubeflow_notebook": st.dictionaries(
                st.sampled_from(
                    ["pipeline_name", "experiment", "volumes", "steps_defaults", "katib_run"]
                ),
                st.one_of(st.none(), st.text(max_size=5), st.integers(), st.lists(st.text())),
            )
        }
    ),
)
