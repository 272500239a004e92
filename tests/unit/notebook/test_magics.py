from __future__ import annotations

import ast

import pytest

from cellpipe.notebook.magics import PipRequirement, pip_requirements, to_python

SOURCES = {
    "plain": "x = 1\ny = x % 2\n",
    "line-magic": "%matplotlib inline\nx = 1",
    "shell": "!ls -l\nx = 1",
    "assign-shell": "files = !ls\nn = len(files)",
    "assign-magic": "t = %timeit -o sum([1])\nx = 1",
    "help": "x = 1\nx?",
    "indented": "if True:\n    !echo hi\n    x = 1",
    "cell-magic": "%%bash\necho 1\necho 2",
    "continuation": "%pip install \\\n    pandas numpy\nx = 1\ny = 2",
    "percent-in-string": "s = '%d' % 3",
}


@pytest.mark.parametrize("source", SOURCES.values(), ids=SOURCES.keys())
def test_python_has_the_same_number_of_lines_and_parses(source):
    python = to_python(source)
    assert len(python.splitlines()) == len(source.splitlines())
    ast.parse(python)


def test_plain_python_is_unchanged():
    assert to_python(SOURCES["plain"]) is SOURCES["plain"]


def test_lines_after_a_continued_magic_keep_their_numbers():
    python = to_python(SOURCES["continuation"]).splitlines()
    assert python[2] == "x = 1"
    assert python[3] == "y = 2"
    assert "get_ipython()" in python[0]


def test_shell_becomes_get_ipython_call():
    assert to_python("!ls").startswith("get_ipython().system(")


def test_untransformable_code_is_left_for_the_parser():
    source = "x = (\n%foo"
    assert len(to_python(source).splitlines()) == 2


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("%pip install pandas==2.0.1", [("pandas", "2.0.1", 1)]),
        ("x = 1\n!pip install -q numpy scikit-learn>=1.3", [("numpy", None, 2),
                                                          ("scikit-learn", None, 2)]),
        ("%pip install -r req.txt ./local git+https://x/y.git $PKG", []),
        ("!python -m pip install requests[socks]==2.31", [("requests", "2.31", 1)]),
        ("%pip install \\\n  a==1 b", [("a", "1", 1), ("b", None, 1)]),
        ("%pip list", []),
        ("print('pip install x')", []),
    ],
    ids=["pinned", "shell-options", "skipped", "python-m", "continuation", "list", "string"],
)  # fmt: skip
def test_pip_requirements(source, expected):
    found = [(r.name, r.version, r.line) for r in pip_requirements(source)]
    assert found == expected


def test_pip_requirement_is_a_value():
    assert pip_requirements("%pip install a")[0] == PipRequirement(name="a", version=None, line=1)
