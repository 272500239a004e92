from __future__ import annotations

import json
from pathlib import Path

import pytest

from cellpipe.errors import NotebookParseError
from cellpipe.notebook import load_pipeline, read_notebook
from cellpipe.notebook.parse import parse_percent

CELLS = [
    ("imports", "import json"),
    ("#markdown", "# Title\nsome text"),
    ("pipeline-parameters", "n = 3"),
    (["step:load"], "data = list(range(n))"),
    ("", "data.append(1)"),
    ("#raw", "raw text"),
    (["step:train", "prev:load", "limit:memory:1Gi"], "%matplotlib inline\ntotal = sum(data)"),
    ("pipeline-metrics", "print(total)"),
]


def test_ipynb_cells_are_numbered_including_markdown(make_notebook):
    source = read_notebook(make_notebook(CELLS))
    assert [c.number for c in source.cells] == list(range(1, 9))
    assert [c.kind for c in source.cells][:2] == ["code", "markdown"]
    assert source.cells[6].tags == ("step:train", "prev:load", "limit:memory:1Gi")


def test_percent_script_gives_the_same_pipeline_as_ipynb(make_notebook):
    from_ipynb = load_pipeline(make_notebook(CELLS, name="same"))
    from_percent = load_pipeline(make_notebook(CELLS, percent=True, name="same"))
    a, b = from_ipynb.to_json(), from_percent.to_json()
    a.pop("path")
    b.pop("path")
    assert a == b
    assert from_percent.step("train").code[0].source.startswith("%matplotlib inline")


def test_percent_script_uncomments_jupytext_magics_and_skips_header(tmp_path):
    text = (
        "# ---\n# jupyter:\n#   name: x\n# ---\n\n"
        '# %% tags=["step:a"]\n# %pip install requests\nx = 1\n\n\n'
        "# %% [markdown]\n# hello\n\n"
        "# %%\n# a real comment\ny = x\n"
    )
    source = parse_percent(text, path=tmp_path / "s.py")
    assert [(c.number, c.kind) for c in source.cells] == [(1, "code"), (2, "markdown"), (3, "code")]
    assert source.cells[0].source == "%pip install requests\nx = 1"
    assert source.cells[2].source == "# a real comment\ny = x"


def test_percent_script_code_before_first_marker_is_a_cell(tmp_path):
    source = parse_percent("x = 1\n# %%\ny = 2\n", path=tmp_path / "s.py")
    assert [c.source for c in source.cells] == ["x = 1", "y = 2"]


def test_percent_script_module_docstring_is_markdown(tmp_path):
    text = (
        '"""\n=====\nTitle\n=====\n\nWhat this example shows.\n"""\n'
        "# Author: someone\n# License: BSD-3-Clause\n\n"
        '# %% tags=["step:a"]\nx = 1\n'
    )
    source = parse_percent(text, path=tmp_path / "s.py")
    assert [(c.number, c.kind) for c in source.cells] == [(1, "markdown"), (2, "code")]
    assert "What this example shows." in source.cells[0].source
    path = tmp_path / "s.py"
    path.write_text(text, encoding="utf-8")
    pipeline = load_pipeline(path)
    assert pipeline.step("a").cells == (2,)
    assert [w.code for w in pipeline.warnings] == []


@pytest.mark.parametrize(
    "header", ['"""doc"""\nimport os\n', "x = 1\n", "'doc' + 'more'\n", "f'{x}'\n"]
)
def test_percent_script_docstring_with_code_is_still_code(tmp_path, header):
    source = parse_percent(header + "# %%\ny = 2\n", path=tmp_path / "s.py")
    assert source.cells[0].kind == "code"


def test_percent_script_with_bad_tags_json(tmp_path):
    path = tmp_path / "s.py"
    path.write_text("# %% tags=[step:a]\nx = 1\n")
    with pytest.raises(NotebookParseError, match=r"s\.py, line 1: the cell marker's tags"):
        read_notebook(path)


def test_v3_notebook_is_rejected_with_a_clear_error(tmp_path):
    path = tmp_path / "old.ipynb"
    path.write_text(json.dumps({"nbformat": 3, "nbformat_minor": 0, "worksheets": []}))
    with pytest.raises(NotebookParseError, match=r"old\.ipynb: this is an nbformat v3 notebook"):
        load_pipeline(path)


def test_malformed_json_names_the_file_and_position(tmp_path):
    path = tmp_path / "broken.ipynb"
    path.write_text('{"nbformat": 4, "cells": [')
    with pytest.raises(NotebookParseError, match=r"broken\.ipynb: not valid JSON: .*line 1"):
        load_pipeline(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[]", "the JSON is not an object"),
        ('{"cells": []}', "no 'nbformat' field"),
        ('{"nbformat": 4}', "no 'cells' list"),
        ('{"nbformat": 4, "cells": [1]}', "cell 1: the cell is not a JSON object"),
        ('{"nbformat": 4, "cells": [{"cell_type": "x"}]}', "unknown cell_type"),
        (
            '{"nbformat": 4, "cells": [{"cell_type": "code", "source": 5}]}',
            "'source' is not a string",
        ),
        (
            '{"nbformat": 4, "cells": [{"cell_type": "code", "source": "", "metadata": '
            '{"tags": "x"}}]}',
            "'tags' is not a list",
        ),
    ],
    ids=["array", "no-nbformat", "no-cells", "cell-not-object", "cell-type", "source", "tags"],
)
def test_wrong_shapes_are_parse_errors(tmp_path, content, message):
    path = tmp_path / "nb.ipynb"
    path.write_text(content)
    with pytest.raises(NotebookParseError, match=message):
        read_notebook(path)


def test_missing_and_undecodable_files(tmp_path):
    with pytest.raises(NotebookParseError, match="no such file"):
        read_notebook(tmp_path / "missing.ipynb")
    path = tmp_path / "bin.ipynb"
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(NotebookParseError, match="cannot read the file"):
        read_notebook(path)


def test_source_as_string_is_accepted(tmp_path: Path):
    path = tmp_path / "nb.ipynb"
    cell = {"cell_type": "code", "source": "x = 1", "metadata": {}, "outputs": []}
    path.write_text(json.dumps({"nbformat": 4, "nbformat_minor": 4, "cells": [cell]}))
    assert load_pipeline(path).step("main").code[0].source == "x = 1"


def test_a_commented_cell_magic_is_not_a_percent_cell_marker(tmp_path):
    from cellpipe.notebook.parse import read_notebook

    path = tmp_path / "nb.py"
    path.write_text('# %% tags=["step:a"]\n# %%time\nx = 1\n\n# %%\ny = 2\n')
    cells = read_notebook(path).cells
    assert [c.source for c in cells] == ["%%time\nx = 1", "y = 2"]


@pytest.mark.parametrize("marker", ["# %% tags=step:a", '# %% tags=["step:a"', "# %% tags = "])
def test_a_malformed_percent_cell_header_is_an_error_naming_the_line(tmp_path, marker):
    from cellpipe.errors import NotebookParseError
    from cellpipe.notebook.parse import read_notebook

    path = tmp_path / "nb.py"
    path.write_text(f'# %% tags=["imports"]\nimport os\n\n{marker}\nx = 1\n')
    with pytest.raises(NotebookParseError, match="line 4") as info:
        read_notebook(path)
    assert "tags are not a JSON list" in str(info.value)
