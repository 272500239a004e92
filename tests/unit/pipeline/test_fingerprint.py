import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellpipe.pipeline import CodeChunk, Package, Step
from cellpipe.pipeline.fingerprint import (
    cache_key,
    canonical_json,
    explain_difference,
    normalize_code,
    step_cache_fields,
)


def chunk(code: str, cell: int = 3) -> CodeChunk:
    return CodeChunk(cell=cell, source=code, python=code)


def make_step(code: str = "y = x + LR", params: tuple[str, ...] = ("LR",)) -> Step:
    return Step(
        name="train",
        cells=(3,),
        code=(chunk(code),),
        parameters=params,
        outputs=("y",),
    )


def fields_for(step: Step, **overrides: object) -> dict[str, str]:
    kwargs: dict[str, object] = {
        "imports": (chunk("import os", cell=1),),
        "functions": (),
        "parameters": {"LR": 0.1, "OTHER": 1},
        "input_digests": {"x": "sha256:aa"},
        "serializer_versions": {"json": 1},
    }
    kwargs.update(overrides)
    return step_cache_fields(step, **kwargs)  # type: ignore[arg-type]


def test_comments_docstrings_and_layout_do_not_change_normal_form() -> None:
    a = "def f(a):\n    '''doc'''\n    return a+1\n"
    b = "# a comment\ndef f( a ):\n\n    return a + 1  # trailing\n"
    assert normalize_code(a) == normalize_code(b)


def test_a_real_code_change_changes_normal_form() -> None:
    assert normalize_code("y = x + 1") != normalize_code("y = x + 2")


def test_unparsable_code_still_normalises_without_comments() -> None:
    assert normalize_code("x = (1 +  # c\n") == normalize_code("x = (1 +\n")


def test_key_ignores_parameters_the_step_does_not_read() -> None:
    step = make_step()
    base = fields_for(step)
    other = fields_for(step, parameters={"LR": 0.1, "OTHER": 2})
    assert cache_key(base) == cache_key(other)


def test_key_changes_with_a_read_parameter_and_why_names_it() -> None:
    step = make_step()
    base = fields_for(step)
    changed = fields_for(step, parameters={"LR": 0.2, "OTHER": 1})
    assert cache_key(base) != cache_key(changed)
    assert explain_difference(base, changed, step=step) == ["parameter LR changed 0.1 → 0.2"]


def test_why_names_the_changed_cell_and_input() -> None:
    old_step = make_step()
    new_step = make_step(code="y = x * LR")
    old = fields_for(old_step)
    new = fields_for(new_step, input_digests={"x": "sha256:bb"})
    assert explain_difference(old, new, step=new_step) == [
        "code of cell 3 changed",
        "input x changed",
    ]


def test_an_upgraded_package_changes_the_key_and_why_names_it() -> None:
    def with_sklearn(version: str | None) -> Step:
        package = Package(module="sklearn", distribution="scikit-learn", version=version)
        return Step(name="train", cells=(3,), code=(chunk("y = x"),), outputs=("y",),
                    packages=(package,))  # fmt: skip

    old, new = fields_for(with_sklearn("1.5.0")), fields_for(with_sklearn("1.6.1"))
    assert cache_key(old) != cache_key(new)
    assert explain_difference(old, new, step=with_sklearn("1.6.1")) == [
        "package scikit-learn changed 1.5.0 → 1.6.1"
    ]
    assert cache_key(old) == cache_key(fields_for(with_sklearn("1.5.0")))
    without = fields_for(make_step(code="y = x", params=()))
    assert explain_difference(without, new, step=with_sklearn("1.6.1")) == [
        "now imports package scikit-learn 1.6.1"
    ]


def test_comment_only_edit_keeps_the_key() -> None:
    a = fields_for(make_step("y = x + LR"))
    b = fields_for(make_step("# tuned\ny = x + LR  # sum"))
    assert cache_key(a) == cache_key(b)


@given(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=6))
def test_key_is_independent_of_field_order(fields: dict[str, str]) -> None:
    reversed_fields = dict(reversed(list(fields.items())))
    assert cache_key(fields) == cache_key(reversed_fields)


@given(
    st.dictionaries(st.text(max_size=8), st.text(max_size=8), min_size=1, max_size=6),
    st.data(),
)
def test_key_changes_when_any_field_changes(fields: dict[str, str], data: st.DataObject) -> None:
    label = data.draw(st.sampled_from(sorted(fields)))
    changed = dict(fields)
    changed[label] = fields[label] + "x"
    assert cache_key(fields) != cache_key(changed)


def test_canonical_json_sorts_keys_and_refuses_non_json() -> None:
    assert canonical_json({"b": 1, "a": [1, 2]}) == '{"a":[1,2],"b":1}'
    with pytest.raises(TypeError):
        canonical_json({"a": object()})  # type: ignore[dict-item]
