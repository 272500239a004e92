import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellpipe.errors import PipelineValidationError
from cellpipe.pipeline import CodeChunk, InputRef, Metric, Parameter, Pipeline, Step


def make_step(
    name: str,
    *,
    cell: int = 1,
    upstream: tuple[str, ...] = (),
    inputs: tuple[InputRef, ...] = (),
    outputs: tuple[str, ...] = (),
    parameters: tuple[str, ...] = (),
) -> Step:
    return Step(
        name=name,
        cells=(cell,),
        code=(CodeChunk(cell=cell, source="pass", python="pass"),),
        upstream=upstream,
        inputs=inputs,
        outputs=outputs,
        parameters=parameters,
    )


def diamond() -> Pipeline:
    return Pipeline.build(
        name="diamond",
        path="d.ipynb",
        steps=[
            make_step("a", cell=1, outputs=("x",)),
            make_step(
                "b",
                cell=2,
                upstream=("a",),
                inputs=(InputRef(name="x", producer="a"),),
                outputs=("y",),
            ),
            make_step(
                "c",
                cell=3,
                upstream=("a",),
                inputs=(InputRef(name="x", producer="a"),),
                outputs=("z",),
            ),
            make_step(
                "d",
                cell=4,
                upstream=("b", "c"),
                inputs=(InputRef(name="y", producer="b"), InputRef(name="z", producer="c")),
                outputs=("acc",),
            ),
        ],
        metrics=[Metric(name="acc", producer="d", cell=5, line=1)],
    )


def test_build_derives_edges_with_variables() -> None:
    pipeline = diamond()
    assert [e.to_json() for e in pipeline.edges] == [
        {"from": "a", "to": "b", "variables": ["x"]},
        {"from": "a", "to": "c", "variables": ["x"]},
        {"from": "b", "to": "d", "variables": ["y"]},
        {"from": "c", "to": "d", "variables": ["z"]},
    ]


def test_downstream_and_upstream_closure() -> None:
    pipeline = diamond()
    assert pipeline.downstream("b") == ("d",)
    assert pipeline.downstream("a") == ("b", "c", "d")
    assert pipeline.upstream_closure("d") == ("a", "b", "c")


def test_steps_are_topologically_ordered_with_notebook_order_for_ties() -> None:
    pipeline = Pipeline.build(
        name="p",
        path="p.ipynb",
        steps=[make_step("late", upstream=("early",)), make_step("early"), make_step("free")],
    )
    assert pipeline.step_names == ("early", "late", "free")


def test_all_structural_problems_are_reported_together() -> None:
    with pytest.raises(PipelineValidationError) as info:
        Pipeline.build(
            name="p",
            path="p.ipynb",
            steps=[
                make_step("a", upstream=("ghost",)),
                make_step("a"),
                make_step("b", inputs=(InputRef(name="x", producer="a"),)),
            ],
            parameters=[
                Parameter(name="LR", type="float", default=0.1, cell=1, line=1),
                Parameter(name="LR", type="float", default=0.2, cell=1, line=2),
            ],
        )
    codes = sorted(p.code for p in info.value.problems)
    assert codes == ["duplicate-parameter", "duplicate-step", "unknown-step", "unwired-input"]
    assert "p.ipynb: 4 errors" in str(info.value)


def test_cycle_is_an_error_naming_the_steps() -> None:
    with pytest.raises(PipelineValidationError, match=r"cycle: .*a.*b"):
        Pipeline.build(
            name="p",
            path="p.ipynb",
            steps=[make_step("a", upstream=("b",)), make_step("b", upstream=("a",))],
        )


def test_metric_must_be_an_output_of_its_step() -> None:
    with pytest.raises(PipelineValidationError, match="metric 'acc' is not an output of step 'a'"):
        Pipeline.build(
            name="p",
            path="p.ipynb",
            steps=[make_step("a")],
            metrics=[Metric(name="acc", producer="a", cell=2, line=1)],
        )


@given(st.lists(st.lists(st.integers(min_value=0, max_value=30), max_size=4), max_size=30))
def test_topological_order_respects_every_edge(raw: list[list[int]]) -> None:
    # Step i may only depend on steps before it, so the generated graph is acyclic; build
    # them in reverse notebook order to make the sort do real work.
    steps = []
    for i, ups in enumerate(raw):
        upstream = tuple(sorted({f"s{u % i}" for u in ups})) if i else ()
        steps.append(make_step(f"s{i}", upstream=upstream))
    pipeline = Pipeline.build(name="p", path="p.ipynb", steps=list(reversed(steps)))
    position = {name: i for i, name in enumerate(pipeline.step_names)}
    for edge in pipeline.edges:
        assert position[edge.source] < position[edge.target]
