"""Model references, names and aliases as every command and the server accept them."""

from __future__ import annotations

import pytest

from cellpipe.errors import RegistryError
from cellpipe.registry.model import ModelRef, check_alias, check_model_name, parse_model_ref


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
