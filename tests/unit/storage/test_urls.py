from __future__ import annotations

import pytest

from cellpipe.storage._urls import redact_url

CASES = {
    "userinfo": ("postgresql://u:s3cret@h:5432/db", "postgresql://u:***@h:5432/db"),
    "query": ("postgresql+psycopg://u@h/db?password=s3cret&sslmode=require",
              "postgresql+psycopg://u@h/db?password=***&sslmode=require"),
    "both": ("postgresql://u:a@h/db?sslpassword=b", "postgresql://u:***@h/db?sslpassword=***"),
    "token": ("s3://bucket/x?token=abc", "s3://bucket/x?token=***"),
    "nothing-secret": ("sqlite:///project/.cellpipe/cellpipe.db",
                       "sqlite:///project/.cellpipe/cellpipe.db"),
    "user-only": ("postgresql://u@h/db?sslmode=require", "postgresql://u@h/db?sslmode=require"),
}  # fmt: skip


@pytest.mark.parametrize(("url", "shown"), CASES.values(), ids=CASES.keys())
def test_secrets_in_urls_are_masked(url, shown):
    assert redact_url(url) == shown


def test_a_password_in_the_query_never_reaches_an_error_message():
    from cellpipe.errors import CellpipeError
    from cellpipe.storage.backends import open_metadata_store

    url = "postgresql+psycopg://u@127.0.0.1:9/db?password=hunter2&connect_timeout=1"
    with pytest.raises(CellpipeError) as info:  # nothing listens on port 9
        open_metadata_store(url)
    text = f"{info.value} {info.value.hint or ''}"
    assert "hunter2" not in text
    assert "password=***" in text
