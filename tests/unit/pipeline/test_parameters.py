import pytest

from cellpipe.errors import ParameterError
from cellpipe.pipeline import CodeChunk, Parameter, Pipeline, Step
from cellpipe.pipeline.parameters import parse_assignments, resolve_parameters


def make_pipeline() -> Pipeline:
    params = [
        Parameter(name="MAX_DEPTH", type="int", default=4, cell=2, line=1),
        Parameter(name="LR", type="float", default=0.1, cell=2, line=2),
        Parameter(name="VERBOSE", type="bool", default=False, cell=2, line=3),
        Parameter(name="NAME", type="str", default="run", cell=2, line=4),
        Parameter(name="LAYERS", type="list", default=[8, 4], cell=2, line=5),
        Parameter(name="EXTRA", type="NoneType", default=None, cell=2, line=6),
    ]
    step = Step(name="a", cells=(3,), code=(CodeChunk(cell=3, source="", python=""),))
    return Pipeline.build(name="p", path="p.ipynb", steps=[step], parameters=params)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"MAX_DEPTH": "6"}, 6),
        ({"LR": "1e-3"}, 0.001),
        ({"LR": "2"}, 2.0),
        ({"VERBOSE": "yes"}, True),
        ({"NAME": "a=b"}, "a=b"),
        ({"LAYERS": "[16, 8, 4]"}, [16, 8, 4]),
        ({"EXTRA": "3"}, 3),
        ({"EXTRA": "None"}, None),
    ],
    ids=[
        "int",
        "float-exp",
        "float-from-int",
        "bool",
        "str-keeps-equals",
        "list",
        "none-any",
        "none",
    ],
)
def test_text_is_parsed_to_the_declared_type(raw: dict[str, str], expected: object) -> None:
    values = resolve_parameters(make_pipeline(), text=raw)
    name = next(iter(raw))
    assert values[name] == expected
    assert type(values[name]) is type(expected)


def test_defaults_are_kept_for_the_rest() -> None:
    values = resolve_parameters(make_pipeline(), text={"MAX_DEPTH": "6"})
    assert values["LR"] == 0.1
    assert list(values) == ["MAX_DEPTH", "LR", "VERBOSE", "NAME", "LAYERS", "EXTRA"]


def test_bad_value_names_the_type_and_the_fix() -> None:
    with pytest.raises(
        ParameterError, match=r"parameter MAX_DEPTH is an int .*'deep' is not an int"
    ):
        resolve_parameters(make_pipeline(), text={"MAX_DEPTH": "deep"})


def test_unknown_name_suggests_the_closest() -> None:
    with pytest.raises(ParameterError, match="has no parameter 'MAX_DEPT'") as info:
        resolve_parameters(make_pipeline(), text={"MAX_DEPT": "6"})
    assert info.value.hint == "did you mean 'MAX_DEPTH'?"


def test_python_values_are_checked() -> None:
    assert resolve_parameters(make_pipeline(), values={"LR": 1})["LR"] == 1.0
    with pytest.raises(ParameterError, match="is a bool"):
        resolve_parameters(make_pipeline(), values={"VERBOSE": 1})
    with pytest.raises(ParameterError, match="is an int"):
        resolve_parameters(make_pipeline(), values={"MAX_DEPTH": True})


def test_assignment_without_equals_is_an_error() -> None:
    assert parse_assignments(["A=1", "B= x "]) == {"A": "1", "B": " x "}
    with pytest.raises(ParameterError, match="'A' is not a parameter assignment"):
        parse_assignments(["A"])


NON_FINITE = [
    ("LR", "nan"),
    ("LR", "inf"),
    ("LR", "-inf"),
    ("LR", "1e999"),
    ("LR", "-Infinity"),
    ("EXTRA", "NaN"),
    ("EXTRA", "1e999"),
    ("EXTRA", "[1, -Infinity]"),
    ("LAYERS", "[1, NaN]"),
    ("LAYERS", "[1e999]"),
]


@pytest.mark.parametrize(("name", "raw"), NON_FINITE, ids=[f"{n}={r}" for n, r in NON_FINITE])
def test_nan_and_infinite_values_are_a_clear_parameter_error(name, raw):
    """Issue 10, item 8: NaN has no JSON form and is never equal to itself (cache keys)."""
    with pytest.raises(ParameterError, match="is not a finite number") as caught:
        resolve_parameters(make_pipeline(), text={name: raw})
    assert f"parameter {name} (cell 2)" in str(caught.value)


@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), 10**400, [1.0, float("-inf")]], ids=str
)
def test_nan_and_infinite_python_values_are_a_clear_parameter_error(value):
    name = "LAYERS" if isinstance(value, list) else "LR"
    with pytest.raises(ParameterError, match="is not a finite number"):
        resolve_parameters(make_pipeline(), values={name: value})


@pytest.mark.parametrize("depth", [101, 3000, 100_000], ids=str)
def test_a_deeply_nested_list_is_a_clear_parameter_error(depth):
    raw = "[" * depth + "]" * depth
    for name in ("LAYERS", "EXTRA"):
        with pytest.raises(ParameterError, match="more than 100 levels deep"):
            resolve_parameters(make_pipeline(), text={name: raw})
    nested: list[object] = []
    for _ in range(depth):
        nested = [nested]
    with pytest.raises(ParameterError, match="more than 100 levels deep"):
        resolve_parameters(make_pipeline(), values={"LAYERS": nested})


def test_a_list_100_levels_deep_is_accepted():
    raw = "[" * 100 + "]" * 100
    value = resolve_parameters(make_pipeline(), text={"LAYERS": raw})["LAYERS"]
    assert json_depth(value) == 100


def json_depth(value: object) -> int:
    depth = 0
    while isinstance(value, list):
        depth += 1
        value = value[0] if value else None
    return depth


def test_untyped_values_are_json_or_text_and_finite():
    from cellpipe.pipeline.parameters import parse_untyped

    assert parse_untyped("X", "[1, 2.5]") == [1, 2.5]
    assert parse_untyped("X", "plain text") == "plain text"
    with pytest.raises(ParameterError, match=r"^parameter X: nan is not a finite number"):
        parse_untyped("X", "NaN")
    with pytest.raises(ParameterError, match="more than 100 levels deep"):
        parse_untyped("X", "[" * 3000 + "]" * 3000)
