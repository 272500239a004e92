from __future__ import annotations

import pytest

from cellpipe.notebook.tags import Role, parse_tags, suggest_step_name


def parse(*tags: object):
    return parse_tags(tags, cell=3)


@pytest.mark.parametrize(
    ("tag", "role"),
    [
        ("imports", Role.IMPORTS),
        ("functions", Role.FUNCTIONS),
        ("pipeline-parameters", Role.PARAMETERS),
        ("pipeline-metrics", Role.METRICS),
        ("skip", Role.SKIP),
        ("step:train", Role.STEP),
        ("block:train", Role.STEP),
        ("step:", Role.STEP),
        ("block:", Role.STEP),
    ],
    ids=lambda v: str(v),
)
def test_role_tags(tag, role):
    assert parse(tag).role is role


def test_no_tags_continue():
    assert parse().role is Role.NONE
    assert parse().steps == ()


def test_step_names_and_settings():
    tags = parse(
        "block:a",
        "block:b",
        "prev:x",
        "image:python:3.11",
        "limit:nvidia.com/gpu:1",
        "cache:False",
        "annotation:example.com/team:ml:ops",
        "label:tier:gold",
        "secret:creds:/etc/creds",
        "report:false",
        "processes:keep",
    )
    assert tags.steps == ("a", "b")
    assert tags.prev == ("x",)
    assert tags.image == "python:3.11"
    assert tags.limits == (("nvidia.com/gpu", "1"),)
    assert tags.cache is False
    assert tags.annotations == (("example.com/team", "ml:ops"),)
    assert tags.labels == (("tier", "gold"),)
    assert tags.secrets == ("creds:/etc/creds",)
    assert tags.report is False
    assert tags.keep_processes is True
    assert tags.has_settings
    assert parse("step:a", "processes:stop").keep_processes is False
    assert parse("step:a").keep_processes is None


def test_outputs_tag_opts_out_of_storing_every_value():
    assert parse("step:a", "outputs:needed").all_outputs is False
    assert parse("step:a", "outputs:all").all_outputs is True
    assert parse("step:a").all_outputs is None
    (problem,) = parse("step:a", "outputs:some").problems
    assert "expected outputs:needed or outputs:all" in problem.message


def test_empty_step_name_has_no_names():
    assert parse("step:").steps == ()


@pytest.mark.parametrize(
    ("tag", "code", "message"),
    [
        ("stepp:train", "unknown-tag", "cell 3 has an unknown tag 'stepp:train'"),
        ("foo", "unknown-tag", "unknown tag 'foo'"),
        ("", "unknown-tag", "unknown tag ''"),
        ("cache:maybe", "malformed-tag",
         "cell 3 has a malformed tag 'cache:maybe': expected cache:true or cache:false"),
        ("limit:cpu", "malformed-tag", "expected limit:KEY:VALUE"),
        ("image:", "malformed-tag", "expected image:IMAGE"),
        ("prev:", "malformed-tag", "expected prev:NAME"),
        ("annotation:-bad-:x", "malformed-tag", "expected annotation:KEY:VALUE"),
        ("secret:", "malformed-tag", "expected secret:SPEC"),
        ("report:no", "malformed-tag", "expected report:true or report:false"),
        ("processes:yes", "malformed-tag", "expected processes:keep or processes:stop"),
        (5, "malformed-tag", "tag 5, which is not a string"),
    ],
    ids=["typo", "word", "empty", "cache", "limit", "image", "prev", "annotation", "secret",
         "report", "processes", "not-a-string"],
)  # fmt: skip
def test_unknown_and_malformed_tags_are_problems_and_ignored(tag, code, message):
    tags = parse("step:a", tag)
    assert [p.code for p in tags.problems] == [code]
    assert message in tags.problems[0].message
    assert tags.problems[0].cell == 3
    assert tags.steps == ("a",)
    assert tags.role is Role.STEP


def test_unknown_tag_suggests_the_nearest():
    (problem,) = parse("improts").problems
    assert problem.hint is not None
    assert problem.hint.startswith("did you mean 'imports'?")


@pytest.mark.parametrize("name", ["Train", "load-data", "1st", "a b"], ids=str)
def test_bad_step_names_are_problems_not_crashes(name):
    tags = parse(f"step:{name}")
    assert [p.code for p in tags.problems] == ["bad-step-name"]
    assert tags.steps == (suggest_step_name(name),)
    assert "is not a valid step name" in tags.problems[0].message


def test_bad_prev_name():
    tags = parse("step:a", "prev:B")
    assert [p.code for p in tags.problems] == ["bad-step-name"]
    assert tags.prev == ("b",)


def test_two_roles_conflict():
    tags = parse("imports", "step:a")
    assert [p.code for p in tags.problems] == ["conflicting-tags"]
    assert tags.role is Role.SKIP


def test_skip_wins_over_step_names():
    tags = parse("step:a", "skip", "prev:b")
    assert tags.role is Role.SKIP
    assert tags.problems == ()
    assert tags.steps == ("a",)
    assert tags.prev == ("b",)


def test_skip_with_another_role_conflicts():
    tags = parse("skip", "imports")
    assert [p.code for p in tags.problems] == ["conflicting-tags"]


def test_suggest_step_name():
    assert suggest_step_name("Load-Data") == "load_data"
    assert suggest_step_name("1st") == "_1st"


def test_a_step_name_longer_than_63_characters_is_a_problem():
    """Issue 10, item 7: the name became a folder of the run and crashed `run` (ENAMETOOLONG)."""
    assert parse_tags((f"step:{'a' * 63}",), cell=1).problems == ()
    long = "s" * 300
    tags = parse_tags((f"step:{long}", f"prev:{long}"), cell=4)
    assert [p.code for p in tags.problems] == ["step-name-too-long", "step-name-too-long"]
    problem = tags.problems[0]
    assert problem.cell == 4
    assert "300 characters long; step names are limited to 63" in problem.message
    assert tags.steps == ("s" * 63,)
    assert tags.prev == ("s" * 63,)
