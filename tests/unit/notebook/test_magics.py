from __future__ import annotations

import ast

import pytest

from cellpipe.notebook.analyze import BlockFacts
from cellpipe.notebook.magics import (
    PipRequirement,
    cell_magic,
    pip_requirements,
    repeating_magics,
    to_python,
)

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
    "time": "%%time\nx = 1\ny = x",
    "capture": "%%capture out --no-stderr\nx = 1\nprint(x)",
    "timeit-lead": "\n\n%%timeit -n 3 -r 1\ndata.append(1)\n",
    "prun-comment-only": "%%prun\n# nothing",
    "time-empty": "%%time",
    "time-nested-magic": "%%time\n%matplotlib inline\nfor i in range(2):\n    !echo {i}\n",
    "time-string": '%%time\ns = """a\nb"""\nt = s',
    "bash-lead": "\n%%bash\necho hi",
    "line-time": "%time x = f(1)\nif x:\n    %prun y = 2\n%timeit -n 2 g()\n%time for i in r: pass",
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


def facts(source: str) -> BlockFacts:
    found = BlockFacts()
    found.add_cell(1, to_python(source))
    assert not found.syntax_errors
    return found


@pytest.mark.parametrize("magic", ["time", "timeit", "prun", "capture"])
def test_the_body_of_a_python_cell_magic_is_analysed(magic):
    found = facts(f"%%{magic}\nmodel = make(data)\nrows.append(model)")
    assert {"make", "data", "rows"} <= found.reads.keys()
    assert "model" in found.binds
    assert "rows" in found.mutates
    assert found.reads["data"] == (1, 2)


def test_the_magic_call_stays_on_the_magic_line_and_the_body_keeps_its_lines():
    python = to_python("\n%%time\nx = 1\n\ny = x").splitlines()
    assert python[0] == "#"
    assert python[1] == (
        "for [] in (get_ipython().run_cell_magic('time', '', 'x = 1\\n\\ny = x\\n'),)[:0]:"
    )
    assert python[2:] == [" x = 1", "#", " y = x"]


def test_capture_binds_its_output_name():
    assert "out" in facts("%%capture out\nprint(1)").binds
    assert "o2" in facts("%%capture --no-stderr o2 --no-display\nprint(1)").binds
    assert facts("%%capture\nprint(1)").binds.keys() == set()


def test_other_cell_magics_stay_opaque():
    assert facts("%%bash\necho $x\nx=1").binds.keys() == set()
    assert facts("%%writefile f.py\nx = 1").binds.keys() == set()


def test_a_statement_after_a_line_magic_is_analysed():
    found = facts("%time model = fit(data)\nif model:\n    %prun score = model.score(data)")
    assert {"model", "score"} <= found.binds.keys()
    assert "fit" in found.reads
    python = to_python("%time model = fit(data)").splitlines()
    assert python == [
        "for [] in (get_ipython().run_line_magic('time', 'model = fit(data)'),)[:0]: "
        "model = fit(data)"
    ]


def test_line_magic_options_and_compound_statements_stay_opaque():
    assert facts("%timeit -n 3 x = 1").binds.keys() == set()
    assert facts("%time for i in r: pass").binds.keys() == set()


def test_cell_magic_name_and_arguments():
    assert cell_magic("\n  %%capture out --no-stderr\nx") == ("capture", "out --no-stderr")
    assert cell_magic("x = 1\n%%time") is None
    assert cell_magic("%time x") is None


def test_repeating_magics_are_the_timeit_lines():
    assert repeating_magics("%%timeit\nx.append(1)\n%timeit y") == (1, 3)
    assert repeating_magics("if a:\n    %timeit -n 2 f()\n%time g()") == (2,)
    assert repeating_magics("%%time\nx = 1") == ()
    assert repeating_magics("s = 'timeit'") == ()


def test_a_syntax_error_in_a_magic_body_is_reported_at_its_line():
    found = BlockFacts()
    found.add_cell(4, to_python("%%time\nx = 1\ny = (\n"))
    assert [loc for loc, _ in found.syntax_errors] == [(4, 3)]


def test_a_body_that_only_parses_on_its_own_stays_opaque():
    python = to_python("%%time\nfrom __future__ import annotations\nx = 1")
    assert python.splitlines()[0].startswith("get_ipython().run_cell_magic('time'")
    assert python.splitlines()[1:] == ["#", "#"]
