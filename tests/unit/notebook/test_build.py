from __future__ import annotations

import pytest

from cellpipe.errors import PipelineValidationError, Problem
from cellpipe.notebook import MAIN_STEP, analyze_notebook, load_pipeline
from cellpipe.pipeline import InputRef, Package


@pytest.fixture
def load(make_notebook):
    def run(cells, **kwargs):
        return load_pipeline(make_notebook(cells, **kwargs))

    return run


@pytest.fixture
def problems(make_notebook):
    """Return the errors of a notebook that must not load."""

    def run(cells, **kwargs) -> list[Problem]:
        report = analyze_notebook(make_notebook(cells, **kwargs))
        assert report.pipeline is None
        return list(report.errors)

    return run


def codes(found: list[Problem]) -> list[str]:
    return [p.code for p in found]


# -- cells -> steps ------------------------------------------------------------------------


def test_untagged_cells_belong_to_the_step_above(load):
    pipeline = load(
        [
            ("step:a", "x = 1"),
            ("", "x += 1"),
            ("#markdown", "text"),
            ("", "   \n"),
            ("step:b", "y = x"),
        ]
    )
    assert pipeline.step("a").cells == (1, 2)
    assert [c.cell for c in pipeline.step("a").code] == [1, 2]
    assert pipeline.step("b").inputs == (InputRef(name="x", producer="a"),)


def test_a_step_name_used_again_after_another_step_is_an_error(problems):
    found = problems([("step:a", "x = 1"), ("step:b", "y = 2"), ("step:a", "z = 3")])
    assert codes(found) == ["duplicate-step"]
    assert found[0].cell == 3
    assert found[0].step == "a"
    assert found[0].message == (
        "step 'a' (first cell 1) is used again in cell 3, after step 'b' started in cell 2: "
        "the two cells would be merged into one step and the order of their effects would change"
    )
    assert found[0].hint == (
        "rename the step of cell 3 (e.g. `step:a_2`), or merge the cells: move cell 3 up to "
        "follow cell 1"
    )


def test_each_reappearing_name_is_reported(problems):
    found = problems(
        [("step:a", "x = 1"), ("step:b", "y = 2"), ("step:a", "z = 3"), ("step:b", "w = 4")]
    )
    assert [(p.code, p.cell, p.step) for p in found] == [
        ("duplicate-step", 3, "a"),
        ("duplicate-step", 4, "b"),
    ]


@pytest.mark.parametrize(
    "between",
    [
        [],
        [("", "y = x")],
        [("skip", "experiment()")],
        [("#markdown", "text")],
        [("functions", "def f():\n    return 1")],
        [("", "y = x"), ("skip", "e()"), ("", "  ")],
    ],
    ids=["consecutive", "untagged", "skip", "markdown", "functions", "mixed"],
)
def test_the_same_step_tag_continuing_its_step_is_fine(load, between):
    pipeline = load([("step:a", "x = 1"), *between, ("step:a", "z = x")])
    assert pipeline.step_names == ("a",)
    assert pipeline.step("a").cells[0] == 1
    assert pipeline.step("a").cells[-1] == 2 + len(between)


def test_a_name_of_the_last_multi_step_cell_continues_it(load):
    pipeline = load([("step:a", "x = 1"), (["block:a", "block:b"], "y = x"), ("step:a", "z = y")])
    assert pipeline.step("a").cells == (1, 2, 3)
    assert pipeline.step("b").cells == (2,)


def test_a_name_left_by_a_narrower_step_tag_is_used_again(problems):
    found = problems([(["block:a", "block:b"], "x = 1"), ("step:b", "y = 2"), ("step:a", "z = x")])
    assert [(p.code, p.cell) for p in found] == [("duplicate-step", 3)]


def test_skip_cells_are_left_out_and_do_not_end_the_step(load):
    pipeline = load([("step:a", "x = 1"), ("skip", "!pip install x\nexperiment()"), ("", "w = 2")])
    assert pipeline.step("a").cells == (1, 3)
    assert all("experiment" not in c.source for c in pipeline.step("a").code)


def test_empty_step_tag_continues_the_step_with_settings(load):
    pipeline = load([("step:a", "x = 1"), (["step:", "limit:memory:1Gi"], "y = 2")])
    assert pipeline.step("a").cells == (1, 2)
    assert dict(pipeline.step("a").settings.limits) == {"memory": "1Gi"}


def test_several_block_names_put_the_cell_in_each_step(load):
    pipeline = load(
        [
            ("step:base", "data = [1]"),
            (["block:a", "block:b"], "n = len(data)"),
            ("", "b_only = n"),
        ]
    )
    assert pipeline.step("a").cells == (2,)
    assert pipeline.step("b").cells == (2, 3)


def test_notebook_without_step_tags_is_one_main_step(load):
    pipeline = load([("imports", "import json"), ("", "x = 1"), ("#markdown", "m"), ("", "y = x")])
    assert pipeline.step_names == (MAIN_STEP,)
    assert pipeline.step(MAIN_STEP).cells == (2, 4)
    assert [c.cell for c in pipeline.imports] == [1]


def test_untagged_cells_after_imports_continue_the_imports(load):
    pipeline = load([("imports", "import json"), ("", "import os"), ("step:a", "x = os.sep")])
    assert [c.cell for c in pipeline.imports] == [1, 2]
    assert pipeline.step("a").inputs == ()


def test_code_before_the_first_step_is_left_out_with_a_warning(load):
    pipeline = load(
        [
            ("", "!wget https://example.com/data.csv"),
            ("#markdown", "text"),
            ("", "x = 1"),
            ("step:a", "y = 2"),
        ]
    )
    assert pipeline.step("a").cells == (4,)
    assert [c.cell for c in pipeline.imports] == []
    (warning,) = [w for w in pipeline.warnings if w.code == "code-before-first-step"]
    assert warning.cell == 1
    assert warning.message == (
        "cells 1, 3 have code but come before the first step, so they are left out of the "
        "pipeline (as Kale does); `%pip install` / `!pip install` lines there still count as "
        "requirements of every step"
    )
    assert warning.hint is not None
    assert "`skip`" in warning.hint


def test_a_name_defined_before_the_first_step_is_still_undefined(problems):
    found = problems([("", "x = 1"), ("step:a", "y = x")])
    assert codes(found) == ["undefined-name"]


def test_pip_lines_before_the_first_step_are_requirements_of_every_step(load):
    pipeline = load(
        [
            ("", "!pip install -r requirements.txt\n%pip install tqdm==4.66.1 requests"),
            ("step:a", "x = 1"),
            ("step:b", "y = 2"),
        ]
    )
    for step in pipeline.steps:
        pip = [p for p in step.packages if p.source == "pip"]
        assert [(p.distribution, p.version) for p in pip] == [
            ("requests", None),
            ("tqdm", "4.66.1"),
        ]


def test_step_settings_before_the_first_step_are_an_orphan(problems):
    found = problems([("limit:memory:1Gi", "x = 1"), ("step:a", "y = 2")])
    assert codes(found) == ["orphan-cell"]
    assert found[0].cell == 1
    assert found[0].hint == "add the step's name (`step:NAME`) to the cell's tags"


def test_empty_cells_before_the_first_step_are_fine(load):
    assert load([("", "  "), ("step:a", "x = 1")]).step_names == ("a",)


def test_notebook_with_no_code_has_no_steps(problems):
    found = problems([("#markdown", "only text"), ("imports", "import os")])
    assert codes(found) == ["no-steps"]


def test_bad_step_name_and_conflicting_roles_are_reported(problems):
    found = problems([("step:Train", "x = 1"), (["imports", "step:b"], "y = 2")])
    assert codes(found) == ["bad-step-name", "conflicting-tags"]


def test_unknown_tags_are_reported_with_every_other_error(problems):
    found = problems(
        [("step:a", "x = undefined_y"), ("pipeline-metric", "print(x)"), (["cache:0"], "z = 1")]
    )
    assert codes(found) == ["undefined-name", "unknown-tag", "malformed-tag"]
    assert found[1].message == "cell 2 has an unknown tag 'pipeline-metric'"
    assert found[1].hint is not None
    assert found[1].hint.startswith("did you mean 'pipeline-metrics'?")


@pytest.mark.parametrize(
    ("tags", "what"),
    [
        (["skip", "prev:a"], "(prev:a)"),
        (["limit:memory:1Gi", "skip", "cache:false"], "(limit:memory:1Gi, cache:false)"),
        (["step:b", "skip"], "(step:b)"),
    ],
)
def test_a_skip_cell_with_step_tags_is_skipped_with_a_warning(load, tags, what):
    pipeline = load([("step:a", "x = 1"), (tags, "experiment()"), ("", "y = x")])
    assert pipeline.step_names == ("a",)
    assert pipeline.step("a").cells == (1, 3)
    assert dict(pipeline.step("a").settings.limits) == {}
    (warning,) = [w for w in pipeline.warnings if w.code == "skip-with-step-tags"]
    assert warning.cell == 2
    assert warning.message.startswith("cell 2 is tagged `skip` and also has step tags (")
    assert what in warning.message
    assert warning.message.endswith("the cell is skipped and those tags are ignored")


def test_settings_on_a_non_step_cell_are_misplaced(problems):
    found = problems([("step:a", "x = 1"), (["imports", "image:py"], "import os")])
    assert codes(found) == ["misplaced-tag"]
    assert found[0].cell == 2


# -- producers -----------------------------------------------------------------------------


def test_data_edges_inputs_outputs_are_inferred(load):
    pipeline = load(
        [
            ("step:load", "raw = [3, 1, 2]\nunused = 0"),
            ("step:clean", "clean = sorted(raw)"),
            ("step:stats", "mean = sum(clean) / len(clean)\nbig = max(raw)"),
        ]
    )
    stats = pipeline.step("stats")
    assert stats.upstream == ("clean", "load")
    assert stats.inputs == (
        InputRef(name="clean", producer="clean"),
        InputRef(name="raw", producer="load"),
    )
    assert pipeline.step("load").outputs == ("raw",)
    assert [(e.source, e.target, e.variables) for e in pipeline.edges] == [
        ("clean", "stats", ("clean",)),
        ("load", "clean", ("raw",)),
        ("load", "stats", ("raw",)),
    ]


def test_latest_writer_is_the_producer_when_it_reads_the_previous_value(load):
    pipeline = load([("step:a", "xs = [1]"), ("step:b", "xs.append(2)"), ("step:c", "n = len(xs)")])
    assert pipeline.step("b").inputs == (InputRef(name="xs", producer="a"),)
    assert pipeline.step("c").inputs == (InputRef(name="xs", producer="b"),)


def test_undefined_name_with_did_you_mean(problems):
    found = problems(
        [
            ("step:load", "features = [1]"),
            ("step:x", "pass"),
            ("step:train", "model = 1\nfit = sum(featurs)"),
        ]
    )
    assert codes(found) == ["undefined-name"]
    assert found[0].message == (
        "Step 'train' (cell 3, line 2) reads 'featurs', but no step before it produces it. "
        "Did you mean 'features'?"
    )
    assert (found[0].cell, found[0].line, found[0].step) == (3, 2, "train")


def test_undefined_name_produced_by_a_later_step(make_notebook):
    path = make_notebook([("step:a", "print(total)"), ("step:b", "total = 1")])
    with pytest.raises(
        PipelineValidationError, match=r"Step 'a' \(cell 1, line 1\) reads 'total', but no step"
    ) as info:
        load_pipeline(path)
    assert info.value.problems[0].hint == (
        "step 'b' produces 'total' but runs after 'a': move the cell or add `prev:b` to step 'a'"
    )


def test_a_name_the_step_binds_itself_is_local(load):
    pipeline = load([("step:a", "if c := 1:\n    y = 2\nprint(y)")])
    assert pipeline.step("a").inputs == ()


def test_writers_of_a_name_are_chained_not_run_independently(load):
    pipeline = load(
        [
            ("step:load", "data = [1]"),
            ("step:left", "data.append(2)"),
            ("step:right", "data.append(3)"),
            ("step:report", "print(data)"),
        ]
    )
    assert pipeline.step("right").inputs == (InputRef(name="data", producer="left"),)
    assert pipeline.step("report").inputs == (InputRef(name="data", producer="right"),)


def test_a_rebind_cuts_the_chain_without_ambiguity(load):
    pipeline = load(
        [
            ("step:load", "data = [1]"),
            ("step:fresh", "data = [2]"),
            ("step:more", "data.append(3)"),
            ("step:report", "print(data)"),
        ]
    )
    assert pipeline.step("more").inputs == (InputRef(name="data", producer="fresh"),)
    assert pipeline.step("load").outputs == ()


def test_branches_declared_with_prev_that_both_change_a_name_are_ambiguous(make_notebook):
    path = make_notebook(
        [
            ("step:load", "data = [1]"),
            (["step:left", "prev:load"], "data.append(2)"),
            (["step:right", "prev:load"], "data.append(3)"),
            (["step:report", "prev:left", "prev:right"], "print(data)"),
        ]
    )
    with pytest.raises(PipelineValidationError, match="2 errors") as info:
        load_pipeline(path)
    sibling, found = info.value.problems
    # In Jupyter 'right' runs after 'left' and sees its change (issue 9, item 4)
    assert sibling.code == "ambiguous-producer"
    assert sibling.message == (
        "Step 'right' (cell 3, line 1) reads 'data', which steps 'left' and 'load' both may "
        "change, independently of each other, so the change made by 'left' would be lost"
    )
    assert sibling.hint == (
        "add `prev:left` to step 'right' so it sees the change made by 'left' (as in Jupyter, "
        "where 'left' runs first), or rename the variable in one of them"
    )
    assert found.code == "ambiguous-producer"
    assert found.message == (
        "Step 'report' (cell 4, line 1) reads 'data', which steps 'left' and 'right' both may "
        "change, independently of each other, so the change made by 'left' would be lost"
    )
    assert found.hint == (
        "add `prev:left` to step 'right' so it runs after 'left', or rename the variable in "
        "one of them"
    )
    assert (found.cell, found.line, found.step) == (4, 1, "report")


def test_a_step_with_prev_does_not_read_a_sibling_that_changes_its_input(problems):
    # Jupyter runs 'left' first, so 'right' would see [1, 2]: a sibling cannot give it that.
    found = problems(
        [
            ("step:load", "data = [1]"),
            (["step:left", "prev:load"], "data.append(2)"),
            (["step:right", "prev:load"], "n = len(data)"),
        ]
    )
    assert codes(found) == ["ambiguous-producer"]
    assert found[0].step == "right"
    assert "add `prev:left` to step 'right'" in (found[0].hint or "")


def test_a_sibling_placed_before_the_changing_step_reads_the_old_value(load):
    pipeline = load(
        [
            ("step:load", "data = [1]"),
            (["step:right", "prev:load"], "n = len(data)"),
            (["step:left", "prev:load"], "data.append(2)"),
        ]
    )
    assert pipeline.step("right").inputs == (InputRef(name="data", producer="load"),)
    assert pipeline.step("right").upstream == ("load",)


def test_branches_that_rebind_do_not_conflict(load):
    pipeline = load(
        [
            ("step:load", "data = [1]"),
            (["step:left", "prev:load"], "data.append(2)"),
            (["step:right", "prev:left"], "data = [0]"),
            (["step:report", "prev:right"], "print(data)"),
        ]
    )
    assert pipeline.step("report").inputs == (InputRef(name="data", producer="right"),)


def test_metrics_changed_by_two_branches_are_ambiguous(problems):
    found = problems(
        [
            ("step:a", "acc = 0"),
            (["step:b", "prev:a"], "acc += 1"),
            (["step:c", "prev:a"], "acc += 2"),
            ("pipeline-metrics", "acc"),
        ]
    )
    assert codes(found) == ["ambiguous-producer", "ambiguous-producer"]
    assert found[0].message.startswith("Step 'c' (cell 3, line 1) reads 'acc'")
    assert found[1].message.startswith("Step 'pipeline-metrics' (cell 4, line 1) reads 'acc'")


def test_prev_between_branches_resolves_the_ambiguity(load):
    pipeline = load(
        [
            ("step:load", "data = [1]"),
            ("step:left", "data.append(2)"),
            (["step:right", "prev:left"], "data.append(3)"),
            ("step:report", "print(data)"),
        ]
    )
    assert pipeline.step("right").inputs == (InputRef(name="data", producer="left"),)
    assert pipeline.step("report").inputs == (InputRef(name="data", producer="right"),)


def test_a_full_rebind_is_not_ambiguous(load):
    pipeline = load([("step:a", "x = 1"), ("step:b", "x = 2"), ("step:c", "print(x)")])
    assert pipeline.step("c").inputs == (InputRef(name="x", producer="b"),)
    assert pipeline.step("a").outputs == ()


def test_reading_a_name_the_producer_deleted_is_an_error(problems):
    found = problems([("step:a", "x = 1"), ("step:b", "print(x)\ndel x"), ("step:c", "y = x")])
    assert codes(found) == ["deleted-name"]
    assert "step 'b', the last step before it that changes it, deletes it" in found[0].message


def test_builtins_resolve_unless_shadowed_upstream(load):
    pipeline = load([("step:a", "n = len([1])"), ("step:b", "list = [1]"), ("step:c", "m = list")])
    assert pipeline.step("a").inputs == ()
    assert pipeline.step("c").inputs == (InputRef(name="list", producer="b"),)


def test_deferred_reads_in_step_functions(load):
    pipeline = load([("step:a", "k = 2"), ("step:b", "def f(v):\n    return v * k\nout = f(1)")])
    assert pipeline.step("b").inputs == (InputRef(name="k", producer="a"),)


def test_global_assignment_in_a_step_function_produces_the_name(load):
    pipeline = load(
        [
            ("step:a", "def init():\n    global state\n    state = 1\ninit()"),
            ("step:b", "s = state"),
        ]
    )
    assert pipeline.step("b").inputs == (InputRef(name="state", producer="a"),)


def test_star_import_is_a_warning_and_stops_undefined_errors(load):
    pipeline = load([("step:a", "from math import *\nr = sqrt(2)")])
    assert [w.code for w in pipeline.warnings] == ["star-import"]


# -- order, prev ---------------------------------------------------------------------------


def test_prev_reorders_steps_and_is_an_upstream(load):
    pipeline = load([(["step:b", "prev:a"], "y = 1"), ("step:a", "x = 1")])
    assert pipeline.step_names == ("a", "b")
    assert pipeline.step("b").upstream == ("a",)
    assert pipeline.edges[0].variables == ()


def test_prev_to_unknown_step_suggests_a_name(problems):
    found = problems([("step:load", "x = 1"), (["step:b", "prev:laod"], "y = x")])
    assert codes(found) == ["unknown-step"]
    assert found[0].message == (
        "Step 'b' (cell 2) runs after 'prev:laod', but there is no step 'laod'. "
        "Did you mean 'load'?"
    )


def test_prev_cycle_is_an_error(problems):
    found = problems([(["step:a", "prev:b"], "x = 1"), (["step:b", "prev:a"], "y = 2")])
    assert codes(found) == ["cycle"]
    assert "the prev: tags form a cycle: " in found[0].message


def test_prev_on_itself_is_a_cycle(problems):
    assert codes(problems([(["step:a", "prev:a"], "x = 1")])) == ["cycle"]


# -- imports, functions, parameters --------------------------------------------------------


def test_shared_names_are_not_data_edges(load):
    pipeline = load(
        [
            ("imports", "import json"),
            ("functions", "CONFIG = {}\ndef dump(v):\n    return json.dumps(v)"),
            ("step:a", "CONFIG['x'] = 1\ns = dump(1)"),
            ("step:b", "t = dump(CONFIG)"),
        ]
    )
    assert pipeline.step("b").inputs == ()
    assert pipeline.step("b").upstream == ()


def test_functions_cell_globals_are_inputs_of_calling_steps_transitively(load):
    pipeline = load(
        [
            ("functions", "def inner():\n    return model\ndef outer():\n    return inner() * k"),
            ("pipeline-parameters", "k = 2"),
            ("step:train", "model = 3"),
            ("step:use", "r = outer()"),
            ("step:other", "z = 1"),
        ]
    )
    use = pipeline.step("use")
    assert use.inputs == (InputRef(name="model", producer="train"),)
    assert use.parameters == ("k",)
    assert pipeline.step("other").parameters == ()


def test_functions_cell_global_write_makes_the_caller_a_producer(load):
    pipeline = load(
        [
            ("functions", "def setup():\n    global registry\n    registry = {}"),
            ("step:a", "setup()"),
            ("step:b", "n = len(registry)"),
        ]
    )
    assert pipeline.step("b").inputs == (InputRef(name="registry", producer="a"),)


def test_functions_cell_reading_an_unknown_global_at_top_level(problems):
    found = problems([("functions", "LIMIT = threshold * 2"), ("step:a", "x = 1")])
    assert codes(found) == ["undefined-name"]
    assert found[0].message.startswith("the imports/functions code (cell 1, line 1) reads")


def test_shadowing_a_shared_name_is_a_warning(load):
    pipeline = load([("imports", "import json"), ("step:a", "json = 1")])
    assert [w.code for w in pipeline.warnings] == ["shadows-shared-name"]


def test_parameters_types_and_readers(load):
    pipeline = load(
        [
            (
                "pipeline-parameters",
                "a = 1\nb = -0.5\nc = True\nd = 'x'\ne = None\nf = [1, 2]\ng = {'k': [1]}\n"
                "h: int = 3  # annotated",
            ),
            ("step:s", "y = a + b"),
        ]
    )
    assert [(p.name, p.type, p.default, p.line) for p in pipeline.parameters] == [
        ("a", "int", 1, 1),
        ("b", "float", -0.5, 2),
        ("c", "bool", True, 3),
        ("d", "str", "x", 4),
        ("e", "NoneType", None, 5),
        ("f", "list", [1, 2], 6),
        ("g", "dict", {"k": [1]}, 7),
        ("h", "int", 3, 8),
    ]
    assert pipeline.step("s").parameters == ("a", "b")
    assert pipeline.step("s").inputs == ()


@pytest.mark.parametrize(
    ("source", "line"),
    [
        ("a = 1\nb = a + 1", 2),
        ("a = (1, 2)", 1),
        ("print('x')", 1),
        ("a = b = 1", 1),
        ("a = float('inf')", 1),
        ("a = {1: 2}", 1),
    ],
    ids=["expression", "tuple", "call", "chained", "inf", "int-key"],
)
def test_bad_parameter_lines(problems, source, line):
    found = problems([("pipeline-parameters", source), ("step:s", "x = 1")])
    assert codes(found) == ["bad-parameter"]
    assert (found[0].cell, found[0].line) == (1, line)


def test_duplicate_parameter(problems):
    found = problems([("pipeline-parameters", "a = 1\na = 2"), ("step:s", "x = a")])
    assert codes(found) == ["duplicate-parameter"]


def test_assigning_a_parameter_is_an_error(make_notebook):
    path = make_notebook([("pipeline-parameters", "lr = 0.1"), ("step:train", "lr = lr * 2")])
    with pytest.raises(
        PipelineValidationError,
        match=r"Step 'train' \(cell 2, line 1\) changes pipeline parameter 'lr'; parameters "
        r"are read-only",
    ) as info:
        load_pipeline(path)
    assert info.value.problems[0].hint == "copy it to a new name first, e.g. `my_lr = lr`"


def test_mutating_a_parameter_is_an_error(problems):
    found = problems([("pipeline-parameters", "layers = [1]"), ("step:s", "layers.append(2)")])
    assert codes(found) == ["parameter-assigned"]


# -- metrics -------------------------------------------------------------------------------


def test_metrics_are_outputs_of_their_producer(load):
    pipeline = load(
        [
            ("step:train", "acc = 0.9\nloss = 0.1"),
            ("step:eval", "acc = acc + 0.01"),
            ("pipeline-metrics", "print(acc, loss)\nloss"),
        ]
    )
    assert [(m.name, m.producer, m.line) for m in pipeline.metrics] == [
        ("acc", "eval", 1),
        ("loss", "train", 1),
    ]
    assert pipeline.step("eval").outputs == ("acc",)
    assert pipeline.step("train").outputs == ("acc", "loss")


@pytest.mark.parametrize(
    ("source", "code"),
    [
        ("print(acc + 1)", "bad-metric"),
        ("x = acc", "bad-metric"),
        ("print(acc, file=f)", "bad-metric"),
        ("missing", "undefined-metric"),
    ],
    ids=["expression", "assign", "keyword", "undefined"],
)
def test_bad_metrics(problems, source, code):
    found = problems([("step:train", "acc = 1"), ("pipeline-metrics", source)])
    assert codes(found) == [code]
    assert (found[0].cell, found[0].line) == (2, 1)


# -- packages ------------------------------------------------------------------------------


def test_packages_per_step(load, tmp_path):
    (tmp_path / "helpers.py").write_text("X = 1\n")
    pipeline = load(
        [
            ("imports", "import os\nimport numpy as np"),
            ("step:a", "import helpers\nimport definitely_not_installed_pkg\nx = 1"),
            ("step:b", "%pip install requests==2.31\ndef f():\n    import pytest\ny = 2"),
        ]
    )
    a = {p.module: p for p in pipeline.step("a").packages}
    assert set(a) == {"numpy", "definitely_not_installed_pkg"}
    assert a["numpy"].distribution == "numpy"
    assert a["numpy"].version
    assert a["definitely_not_installed_pkg"].distribution is None
    b = pipeline.step("b").packages
    assert {p.module for p in b} == {"numpy", "pytest", "requests"}
    assert Package(module="requests", distribution="requests", version="2.31", source="pip") in b
    assert [w.code for w in pipeline.warnings] == ["unknown-package"]


# -- settings ------------------------------------------------------------------------------


def test_step_settings_and_notebook_metadata(load):
    metadata = {
        "kubeflow_notebook": {
            "pipeline_name": "wine",
            "pipeline_description": "d",
            "experiment": {"name": "exp"},
            "docker_image": "img:1",
            "volumes": [{"name": "v", "mount_point": "/data"}],
            "steps_defaults": ["label:team:ml", "limit:cpu:1"],
            "katib_run": False,
            "katib_metadata": {"parameterConfigs": [{"name": "lr"}]},
            "autosnapshot": True,
        }
    }
    pipeline = load(
        [
            (["step:a", "image:py:3", "cache:false", "annotation:a.io/x:y", "secret:s"], "x = 1"),
            (["report:false", "limit:cpu:2"], "y = 2"),
        ],
        metadata=metadata,
    )
    settings = pipeline.step("a").settings
    assert settings.image == "py:3"
    assert settings.cache is False
    assert settings.report is False
    assert dict(settings.limits) == {"cpu": "2"}
    assert dict(settings.labels) == {"team": "ml"}
    assert dict(settings.annotations) == {"a.io/x": "y"}
    assert settings.secrets == ("s",)
    assert pipeline.name == "wine"
    assert pipeline.settings.experiment == "exp"
    assert pipeline.settings.image == "img:1"
    assert [w.code for w in pipeline.warnings] == ["notebook-metadata"]
    assert "autosnapshot" in pipeline.warnings[0].message
    assert pipeline.settings.raw["katib_run"] is False
    assert pipeline.settings.raw["katib_metadata"] == {"parameterConfigs": [{"name": "lr"}]}


def test_pipeline_name_defaults_to_file_stem(load):
    assert load([("step:a", "x = 1")], name="my_nb").name == "my_nb"


def test_conflicting_settings_in_one_step(problems):
    found = problems([(["step:a", "image:one"], "x = 1"), (["image:two"], "y = 1")])
    assert codes(found) == ["conflicting-setting"]


# -- errors together -----------------------------------------------------------------------


def test_every_problem_is_reported_together_in_cell_order(make_notebook):
    path = make_notebook(
        [
            ("pipeline-parameters", "a = 1\nb = a"),
            ("step:one", "x = (\n"),
            ("step:two", "y = undefined_thing"),
            (["step:three", "prev:nope"], "a = 2"),
            ("pipeline-metrics", "missing"),
        ]
    )
    report = analyze_notebook(path)
    assert report.pipeline is None
    assert not report.ok
    assert codes(list(report.errors)) == [
        "bad-parameter",
        "syntax-error",
        "undefined-name",
        "unknown-step",
        "parameter-assigned",
        "undefined-metric",
    ]
    assert all(p.cell is not None for p in report.errors)
    with pytest.raises(PipelineValidationError, match="6 errors") as info:
        load_pipeline(path)
    assert len(info.value.problems) == 6


def test_syntax_error_points_at_cell_and_line(problems):
    found = problems([("step:a", "x = 1\ny = = 2")])
    assert codes(found) == ["syntax-error"]
    assert (found[0].cell, found[0].line, found[0].step) == (1, 2, "a")
    assert (
        found[0].message == "cell 1, line 2 (step 'a') does not parse: invalid syntax in `y = = 2`"
    )


def test_report_keeps_warnings_next_to_errors(make_notebook):
    report = analyze_notebook(
        make_notebook([("step:a", "from os import *\nx = 1"), ("step:b", "y = nope_ (")])
    )
    assert [w.code for w in report.warnings] == ["star-import"]
    assert codes(list(report.errors)) == ["syntax-error"]


def test_magics_keep_line_numbers_for_errors(problems):
    found = problems([("step:a", "%matplotlib inline\n!ls\nprint(nothing_here)")])
    assert codes(found) == ["undefined-name"]
    assert found[0].line == 3


def test_code_chunks_keep_source_and_python(load):
    pipeline = load([("step:a", "!echo hi\nx = 1")])
    chunk = pipeline.step("a").code[0]
    assert chunk.source == "!echo hi\nx = 1"
    assert chunk.python.startswith("get_ipython().system(")
    assert len(chunk.python.splitlines()) == 2


# -- issue 9: fidelity of the data flow ----------------------------------------------------


def test_a_helper_that_changes_its_argument_makes_the_caller_a_producer(load):
    pipeline = load(
        [
            ("functions", "def add_col(df):\n    df['r'] = 1\n\ndef outer(frame):\n"
                          "    add_col(frame)"),
            ("step:load", "data = {'a': 1}\ntrain = {'b': 2}"),
            ("step:change", "outer(data)"),
            ("step:use", "n = len(data)\nm = len(train)"),
        ]
    )  # fmt: skip
    assert pipeline.step("use").inputs == (
        InputRef(name="data", producer="change"),
        InputRef(name="train", producer="load"),
    )


def test_a_step_defined_helper_counts_too(load):
    pipeline = load(
        [
            ("step:load", "data = [3, 1]"),
            ("step:change", "def order(xs):\n    xs.sort()\norder(data)"),
            ("step:use", "first = data[0]"),
        ]
    )
    assert pipeline.step("use").inputs == (InputRef(name="data", producer="change"),)


def test_a_functions_cell_helper_that_passes_a_global_on(load):
    pipeline = load(
        [
            ("functions", "def add_col(df):\n    df['r'] = 1\n\ndef prep():\n    add_col(data)"),
            ("step:load", "data = {}"),
            ("step:change", "prep()"),
            ("step:use", "n = len(data)"),
        ]
    )
    assert pipeline.step("use").inputs == (InputRef(name="data", producer="change"),)


def test_loop_aliases_change_every_element(load):
    pipeline = load(
        [
            ("step:load", "train = {}\ntest = {}"),
            ("step:clean", "for d in (train, test):\n    d['x'] = 1"),
            ("step:use", "n = len(train) + len(test)"),
        ]
    )
    assert {r.producer for r in pipeline.step("use").inputs} == {"clean"}


def test_modules_are_imported_again_never_passed(load):
    pipeline = load(
        [
            ("step:a", "import json\nfrom os import path as osp\nx = 1"),
            ("step:b", "y = 2"),
            ("step:c", "s = json.dumps(x) + osp.sep"),
        ]
    )
    c = pipeline.step("c")
    assert c.inputs == (InputRef(name="x", producer="a"),)
    assert "json" not in pipeline.step("a").outputs
    assert [chunk.source for chunk in c.code[:2]] == [
        "from os import path as osp",
        "import json",
    ]
    reimport = c.code[1]
    assert reimport.cell == 1
    assert reimport.python.splitlines()[0] == "import json"


def test_a_step_that_imports_a_module_again_needs_its_package(load):
    pipeline = load([("step:a", "import numpy\nx = 1"), ("step:b", "y = numpy.zeros(x)")])
    assert "numpy" in {p.module for p in pipeline.step("b").packages}


def test_independent_imports_of_the_same_module_are_not_ambiguous(load):
    pipeline = load(
        [
            ("step:a", "x = 1"),
            (["step:b", "prev:a"], "import math\nb = math.pi"),
            (["step:c", "prev:a"], "import math\nc = math.e"),
            (["step:d", "prev:b", "prev:c"], "print(math.tau, b, c)"),
        ]
    )
    assert pipeline.step("d").code[0].source == "import math"


def test_importing_again_what_the_imports_cell_imports_is_not_a_warning(load):
    pipeline = load(
        [
            ("imports", "import numpy as np\nimport os"),
            ("step:a", "import numpy as np\nimport os.path\nx = 1"),
            ("step:b", "import json as np\ny = x"),
        ]
    )
    shadows = [(w.step, w.message) for w in pipeline.warnings if w.code == "shadows-shared-name"]
    assert [step for step, _ in shadows] == ["b"]
    assert "assigns 'np'" in shadows[0][1]


def test_a_seeded_global_generator_chains_the_steps_that_draw(load):
    from cellpipe.pipeline import RANDOM_STATE

    pipeline = load(
        [
            ("imports", "import numpy as np\nnp.random.seed(42)"),
            ("step:a", "x = np.random.rand()"),
            ("step:b", "y = np.random.rand()"),
            ("step:quiet", "print(len('abc'))"),
            ("step:c", "z = np.random.rand()"),
        ]
    )
    assert RANDOM_STATE not in pipeline.step("a").input_names
    assert RANDOM_STATE in pipeline.step("a").outputs
    assert pipeline.step("b").inputs == (InputRef(name=RANDOM_STATE, producer="a"),)
    assert pipeline.step("c").inputs == (InputRef(name=RANDOM_STATE, producer="b"),)
    assert pipeline.step("quiet").inputs == ()
    (warning,) = [w for w in pipeline.warnings if w.code == "random-state"]
    assert "`numpy.random.seed`" in warning.message
    assert "'a', 'b', 'c'" in warning.message
    assert (warning.cell, warning.line) == (1, 2)
    assert "default_rng" in (warning.hint or "")


def test_the_random_state_chain_starts_at_a_seeding_step_and_ignores_prev_siblings(load):
    from cellpipe.pipeline import RANDOM_STATE

    pipeline = load(
        [
            ("imports", "import random"),
            ("step:before", "w = random.random()"),
            ("step:make", "random.seed(1)\nbase = 1"),
            (["step:s1", "prev:make"], "a = random.random() + base"),
            (["step:s2", "prev:make"], "b = random.random() + base"),
        ]
    )
    assert RANDOM_STATE not in pipeline.step("before").outputs
    assert InputRef(name=RANDOM_STATE, producer="s1") in pipeline.step("s2").inputs
    assert "s1" in pipeline.step("s2").upstream


def test_an_unseeded_notebook_has_no_random_state(load):
    from cellpipe.pipeline import RANDOM_STATE

    pipeline = load(
        [("imports", "import numpy as np"), ("step:a", "x = np.random.rand()"),
         ("step:b", "y = np.random.rand()")]
    )  # fmt: skip
    assert all(RANDOM_STATE not in s.input_names for s in pipeline.steps)


def test_process_state_changed_in_a_step_is_a_warning(load):
    pipeline = load(
        [
            ("imports", "import os\nimport pandas as pd"),
            ("step:a", "pd.set_option('display.max_rows', 5)\nos.environ['MODE'] = 'x'\nv = 1"),
            ("step:b", "print(os.environ.get('MODE'), v)\nos.chdir('..')"),
        ]
    )
    found = [(w.code, w.step, w.cell, w.line) for w in pipeline.warnings]
    assert ("process-state", "a", 2, 1) in found
    assert ("process-state", "a", 2, 2) in found
    # the last step changes nothing any later step could miss
    assert all(step != "b" for _, step, _, _ in found)
    warning = next(w for w in pipeline.warnings if w.code == "process-state")
    assert "`pandas.set_option`" in warning.message
    assert warning.hint == "move it to the imports cell, which runs before every step"


def test_a_file_written_by_one_step_and_read_by_a_later_one_is_an_edge(load):
    from cellpipe.pipeline import FileRef

    pipeline = load(
        [
            ("pipeline-parameters", "OUT = 'out/values.csv'"),
            ("imports", "import pandas as pd\nRAW = 'raw.csv'"),
            ("step:write", "pd.DataFrame({'a': [1]}).to_csv(OUT)\nopen(RAW, 'w').write('x')"),
            ("step:other", "z = 3"),
            ("step:read", "df = pd.read_csv('./out/values.csv')\ntext = open(RAW).read()"),
            ("step:own", "open('t.txt', 'w').write('a')\nt = open('t.txt').read()"),
        ]
    )
    read = pipeline.step("read")
    assert read.upstream == ("write",)
    assert read.files == (
        FileRef(path="out/values.csv", producer="write", cell=5, line=1),
        FileRef(path="raw.csv", producer="write", cell=5, line=2),
    )
    assert pipeline.step("own").files == ()
    (edge,) = [e for e in pipeline.edges if e.target == "read"]
    assert edge.files == ("out/values.csv", "raw.csv")
    assert edge.to_json()["files"] == ["out/values.csv", "raw.csv"]


def test_a_parameter_named_as_a_metric_is_allowed(load):
    pipeline = load(
        [
            ("pipeline-parameters", "lr = 0.1"),
            ("step:a", "acc = lr * 2"),
            ("pipeline-metrics", "print(lr, acc)"),
        ]
    )
    assert [(m.name, m.producer) for m in pipeline.metrics] == [("lr", ""), ("acc", "a")]


# -- magics ----------------------------------------------------------------------------------


def test_a_step_starting_with_a_cell_magic_produces_its_body_s_names(load):
    pipeline = load(
        [
            ("step:a", "%%time\ndata = [1, 2]"),
            ("step:b", "%%capture out\nprint(data)\nn = len(data)"),
            ("step:c", "summary = (n, out.stdout)"),
        ]
    )
    assert InputRef(name="data", producer="a") in pipeline.step("b").inputs
    assert {i.name: i.producer for i in pipeline.step("c").inputs} == {"n": "b", "out": "b"}


def test_timeit_warns_that_its_effects_repeat(load):
    pipeline = load([("step:a", "data = []"), ("step:b", "%%timeit -n 3\ndata.append(1)")])
    (warning,) = [w for w in pipeline.warnings if w.code == "timeit-repeats"]
    assert (warning.cell, warning.line) == (2, 1)
    assert "runs it many times" in warning.message
    assert warning.hint is not None
    assert "%%time" in warning.hint


@pytest.mark.parametrize(
    ("module", "hint"),
    [
        ("wx", "install it (pip install wxPython) or add a `%pip install wxPython` line"),
        (
            "definitely_not_installed_pkg",
            "install it (pip install definitely_not_installed_pkg) or add a "
            "`%pip install definitely_not_installed_pkg` line",
        ),
    ],
)
def test_the_unknown_package_hint_names_the_distribution(load, module, hint):
    pipeline = load([("step:a", f"import {module}\nx = 1")])
    (warning,) = [w for w in pipeline.warnings if w.code == "unknown-package"]
    assert warning.hint == hint


def test_one_cell_before_the_first_step_is_named_alone(load):
    pipeline = load([("", "!pip install -r requirements.txt"), ("step:a", "x = 1")])
    (warning,) = [w for w in pipeline.warnings if w.code == "code-before-first-step"]
    assert warning.message.startswith("cell 1 has code but comes before the first step, so it is")


def test_get_ipython_is_never_data(load):
    pipeline = load([("step:a", "%%time\nx = 1"), ("step:b", "!echo hi\ny = x")])
    assert pipeline.step("b").inputs == (InputRef(name="x", producer="a"),)
