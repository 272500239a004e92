"""Issue 10, item 1: ``cellpipe.toml`` keeps passwords out with ``${VARIABLE}`` references."""

from __future__ import annotations

import pytest

from cellpipe.config import Settings
from cellpipe.errors import CellpipeError


def _project(tmp_path, db_url: str):
    (tmp_path / "cellpipe.toml").write_text(f'[storage]\ndb_url = "{db_url}"\n')
    return tmp_path / "nb.py"


def test_a_reference_is_taken_from_the_environment(tmp_path):
    nb = _project(tmp_path, "postgresql://etl:${CP_DB_PASSWORD}@db.example.com/cp")
    settings = Settings.for_notebook(nb, env={"CP_DB_PASSWORD": "s3cr$t"})
    assert settings.db_url == "postgresql://etl:s3cr$t@db.example.com/cp"


def test_double_dollar_is_a_literal_dollar(tmp_path):
    nb = _project(tmp_path, "postgresql://etl@db/cp$$1")
    assert Settings.for_notebook(nb, env={}).db_url == "postgresql://etl@db/cp$1"


def test_a_missing_variable_names_the_key_and_the_variable(tmp_path):
    nb = _project(tmp_path, "postgresql://etl:${CP_DB_PASSWORD}@db/cp")
    with pytest.raises(CellpipeError, match=r"db_url refers to \$\{CP_DB_PASSWORD\}") as info:
        Settings.for_notebook(nb, env={})
    assert "CP_DB_PASSWORD is not set" in str(info.value)
    assert "export CP_DB_PASSWORD" in (info.value.hint or "")


def test_a_malformed_reference_is_an_error(tmp_path):
    nb = _project(tmp_path, "postgresql://etl:${1BAD}@db/cp")
    with pytest.raises(CellpipeError, match="not a"):
        Settings.for_notebook(nb, env={"1BAD": "x"})


def test_the_environment_url_still_wins(tmp_path):
    nb = _project(tmp_path, "postgresql://etl:${UNSET_VARIABLE}@db/cp")
    env = {"CELLPIPE_DB_URL": "sqlite:///other.db", "UNSET_VARIABLE": "x"}
    assert Settings.for_notebook(nb, env=env).db_url == "sqlite:///other.db"


def test_a_variable_the_environment_url_makes_moot_need_not_be_set(tmp_path):
    nb = _project(tmp_path, "postgresql://etl:${UNSET_VARIABLE}@db/cp")
    env = {"CELLPIPE_DB_URL": "sqlite:///other.db"}
    assert Settings.for_notebook(nb, env=env).db_url == "sqlite:///other.db"
