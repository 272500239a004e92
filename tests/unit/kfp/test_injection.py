"""Issue 10, item 2: user text never becomes code in a compiled component's Python module.

The notebook's file name, cell code and parameter defaults reach the module only as string
constants: every hostile name below must give a module that parses, has exactly the
statements a plain name gives, and carries the name as a constant.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from cellpipe.errors import CompileError
from cellpipe.kfp import compile_pipeline
from cellpipe.kfp.components import plan_io
from cellpipe.kfp.executors import component_module
from cellpipe.notebook import load_pipeline

pytestmark = pytest.mark.kfp

OPTIONS = {"image": "python:3.11", "cellpipe_version": "0.0.0", "kfp_version": "2.17.3"}

NOTEBOOK = '''\
# %% tags=["pipeline-parameters"]
GREETING = "\\"\\"\\"; import os; os.system('echo pwned') #"

# %% tags=["step:a"]
text = """ends here""" + GREETING + \'\'\'and here\'\'\'

# %% tags=["pipeline-metrics"]
text
'''

HOSTILE = {
    "triple-double": 'x"""; open("pwned", "w") #',
    "triple-single": "x'''; open('pwned', 'w') #",
    "quotes": 'it\'s "quoted"',
    "backslashes": "back\\slash\\",
    "newline": 'two\nlines"""\nimport os',
    "named-escape": "\\N{BULLET} \\x41 \\u0041",
    "braces": "{step} {{0}} %s",
    "unicode": "caf\u00e9 \u2028 end",
}


def _modules(notebook: Path) -> list[str]:
    spec = compile_pipeline(load_pipeline(notebook), **OPTIONS)
    executors = spec["deploymentSpec"]["executors"]
    return [executors[label]["container"]["command"][-1] for label in sorted(executors)]


def _step_tail(module: str) -> tuple[list[str], ast.FunctionDef, dict[str, object]]:
    tree = ast.parse(module)
    kinds = [type(node).__name__ for node in tree.body]
    function = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "step_a")
    assign = next(
        n
        for n in tree.body
        if isinstance(n, ast.Assign)
        and isinstance(n.targets[0], ast.Name)
        and n.targets[0].id == "_CELLPIPE_STEP"
    )
    assert isinstance(assign.value, ast.Call)
    (argument,) = assign.value.args
    document = json.loads(ast.literal_eval(argument))
    return kinds, function, document


@pytest.mark.parametrize("name", list(HOSTILE.values()), ids=list(HOSTILE))
def test_a_hostile_notebook_name_stays_a_string_constant(tmp_path, name):
    plain = tmp_path / "plain" / "plain.py"
    plain.parent.mkdir()
    plain.write_text(NOTEBOOK)
    hostile = tmp_path / "hostile" / f"{name}.py"
    hostile.parent.mkdir()
    hostile.write_text(NOTEBOOK)

    (expected,) = _modules(plain)
    (module,) = _modules(hostile)
    kinds, function, document = _step_tail(module)
    expected_kinds, expected_function, _ = _step_tail(expected)

    assert kinds == expected_kinds  # no statement was added at module level
    assert [type(s).__name__ for s in function.body] == ["Expr", "Expr"]
    assert ast.get_docstring(function, clean=False) == f"Run step 'a' of {hostile.name!r}."
    assert ast.dump(function.body[1]) == ast.dump(expected_function.body[1])
    assert document["notebook"] == hostile.name
    assert document["cells"][0][1].startswith('text = """ends here"""')


def test_a_step_whose_names_are_not_identifiers_is_refused(make_pipeline):
    import dataclasses

    pipeline = make_pipeline('# %% tags=["step:a"]\nx = 1\n')
    step = dataclasses.replace(pipeline.steps[0], name="a(): pass\nimport os\ndef b")
    pipeline = dataclasses.replace(pipeline, steps=(step,))
    io = plan_io(pipeline)[step.name]
    with pytest.raises(CompileError, match="must be a Python identifier"):
        component_module(step, io, pipeline, image="python:3.11", types={})
