"""Model references, names and aliases as every command and the server accept them."""

from __future__ import annotations

import pytest

from cellpipe.errors import RegistryError
from cellpipe.registry.model import (
    MAX_VERSION,
    ModelRef,
    check_alias,
    check_model_name,
    check_tag,
    parse_model_ref,
    parse_version,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("wine", ModelRef(name="wine")),
        ("wine@latest", ModelRef(name="wine")),
        ("wine:3", ModelRef(name="wine", version=3)),
        ("wine@production", ModelRef(name="wine", alias="production")),
        ("my.model-v2_x:10", ModelRef(name="my.model-v2_x", version=10)),
    ],
    ids=["name", "latest", "version", "alias", "punctuation"],
)
def test_parse(text: str, expected: ModelRef) -> None:
    assert parse_model_ref(text) == expected
    if text != "wine@latest":
        assert str(expected) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("wine:0", "the version must be a number from 1"),
        ("wine:x", "the version must be a number from 1"),
        ("wine@1", "invalid alias '1'"),
        ("wine@", "invalid alias ''"),
        ("-wine", "invalid model name '-wine'"),
        ("", "invalid model name ''"),
        ("a/b", "invalid model name 'a/b'"),
    ],
    ids=["zero", "not-a-number", "numeric-alias", "empty-alias", "dash", "empty", "slash"],
)
def test_malformed_refs(text: str, message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        parse_model_ref(text)


def test_latest_is_reserved_and_names_are_bounded() -> None:
    with pytest.raises(RegistryError, match="'latest' is reserved"):
        check_alias("latest")
    assert check_model_name("x" * 64) == "x" * 64
    with pytest.raises(RegistryError, match="invalid model name"):
        check_model_name("x" * 65)


@pytest.mark.parametrize(
    "version",
    [
        "\u00b2",  # superscript two: str.isdigit() says yes, int() says no
        "\u0661",  # Arabic-Indic one: int() reads it as 1
        "\uff11",  # fullwidth one: int() reads it as 1
        "1\u0660",
        "12345678901234567890123",  # 23 digits: more than SQLite's INTEGER holds
        str(MAX_VERSION + 1),
        "9" * 5000,  # longer than int() converts by default
        " 1",
        "+1",
        "-1",
        "1_000",
        "",
    ],
    ids=["superscript", "arabic-indic", "fullwidth", "mixed", "23-digits", "2**63", "5000-digits",
         "space", "plus", "minus", "underscore", "empty"],
)  # fmt: skip
def test_item4_versions_are_ascii_digits_in_range(version: str) -> None:
    with pytest.raises(RegistryError, match="invalid model reference") as err:
        parse_model_ref(f"wine:{version}")
    assert "the version must be a number from 1" in err.value.message
    with pytest.raises(RegistryError, match="invalid version"):
        parse_version(version)


def test_item4_the_largest_version_is_accepted() -> None:
    assert parse_model_ref(f"wine:{MAX_VERSION}").version == 2**63 - 1
    assert parse_model_ref("wine:007").version == 7  # leading zeros: still ASCII digits
    assert parse_version("1") == 1


def test_item13_tag_keys_and_values_are_checked() -> None:
    for key in ("team", "_private", "data.version", "mlflow/source-type", "a" * 128):
        assert check_tag(key, "value") == key
    for key in ("", "1team", "a b", "a=b", "a" * 129, "t\u00e9am", "-x"):
        with pytest.raises(RegistryError, match="invalid tag key"):
            check_tag(key)
    assert check_tag("note", "two\nlines\tand a tab") == "note"
    with pytest.raises(RegistryError, match="control character"):
        check_tag("note", "bell\x07")
