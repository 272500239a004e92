"""`ModelTable`: which versions a server exposes (item 8) and which version segments (item 4).

The table is exercised directly over the conftest's `MemorySource` (real scikit-learn models
and callables), then through the real server for the request-level regressions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from cellpipe.errors import ServingError
from cellpipe.serving.app import build_app
from cellpipe.serving.table import ModelTable
from cellpipe.serving.tensors import RequestError

BAD_SEGMENTS = {
    "superscript-two": "\u00b2",
    "arabic-indic-one": "\u0661",
    "fullwidth-one": "\uff11",
    "fullwidth-two": "\uff12",
    "23-digits": "1" * 23,
    "19-digits": "9" * 19,
    "zero": "0",
    "leading-zero": "02",
    "negative": "-2",
    "decimal": "2.0",
    "spaced": " 2",
    "letters": "abc",
    "empty": "",
}


def _status(call: Callable[[], Any]) -> tuple[int, str]:
    with pytest.raises(RequestError) as caught:
        call()
    return caught.value.status, caught.value.message


@pytest.fixture
def source(make_source: Callable[[], Any]) -> Any:
    # conftest's MemorySource: a ModelSource over real objects that records every load.
    return make_source()


@pytest.mark.parametrize("segment", list(BAD_SEGMENTS.values()), ids=list(BAD_SEGMENTS))
def test_item4_a_version_segment_is_ascii_digits_in_range(source: Any, segment: str) -> None:
    table = ModelTable.resolve(["iris@production"], source, all_versions=True)

    for call in (
        lambda: table.get("iris", segment),
        lambda: table.readiness("iris", segment),
        lambda: table.metadata("iris", segment),
    ):
        status, message = _status(call)
        assert status == 404
        assert "no version" in message
        assert "version 1" not in message
        assert "version 2 " not in message
    assert source.loads == ["iris:2"]  # nothing was resolved or loaded for the segment


def test_item4_the_longest_valid_segment_is_looked_up_not_overflowed(
    source: Any,
) -> None:
    table = ModelTable.resolve(["iris@production"], source, all_versions=True)

    status, message = _status(lambda: table.get("iris", "9" * 18))

    assert (status, message) == (404, f"model 'iris' has no version {'9' * 18}")


def test_item8_an_alias_serves_its_version_and_no_other(source: Any) -> None:
    table = ModelTable.resolve(["iris@staging"], source)

    assert table.get("iris").version.version == 1
    assert table.get("iris", "1") is table.get("iris")
    assert table.version_names("iris") == ["1"]
    status, message = _status(lambda: table.get("iris", "2"))
    assert status == 404
    assert message == (
        "version 2 of model 'iris' is not served here: this server serves version 1 (iris@staging)"
    )
    with pytest.raises(RequestError) as caught:
        table.readiness("iris", "2")
    assert caught.value.hint is not None
    assert "--all-versions" in caught.value.hint
    assert source.loads == ["iris:1"]


@pytest.mark.parametrize(
    ("ref", "version"), [("iris", 2), ("iris@production", 2), ("iris:1", 1), ("iris@latest", 2)]
)
def test_item8_each_reference_form_serves_what_it_names(
    source: Any, ref: str, version: int
) -> None:
    table = ModelTable.resolve([ref], source)

    assert table.get("iris").version.version == version
    assert table.version_names("iris") == [str(version)]
    assert table.readiness("iris") == (True, None)


def test_item8_all_versions_loads_each_other_version_once(source: Any) -> None:
    table = ModelTable.resolve(["iris@staging"], source, all_versions=True)

    first = table.get("iris", "2")
    again = table.get("iris", "2")

    assert first is again
    assert first.version.version == 2
    assert table.get("iris").version.version == 1  # /v2/models/iris stays the alias
    assert table.version_names("iris") == ["1", "2"]
    assert table.readiness("iris", "2") == (True, None)
    assert _status(lambda: table.get("iris", "9")) == (404, "model 'iris' has no version 9")
    assert source.loads == ["iris:1", "iris:2"]


def test_item8_an_unservable_version_is_not_ready_with_the_reason(source: Any) -> None:
    source.add("iris", {"weights": [1, 2]})  # version 3: neither predict nor callable
    table = ModelTable.resolve(["iris@production"], source, all_versions=True)

    ready, reason = table.readiness("iris", "3")
    status, message = _status(lambda: table.get("iris", "3"))
    metadata = table.metadata("iris", "3")

    assert ready is False
    assert reason is not None
    assert "version 3 of model 'iris' cannot be served" in reason
    assert (status, message) == (503, reason)
    assert metadata["properties"] == {"ready": "false", "reason": reason}
    assert metadata["name"] == "iris"
    assert metadata["versions"] == ["1", "2", "3"]
    assert source.loads.count("iris:3") == 1  # remembered, not reloaded per request


def test_item8_a_version_that_fails_to_load_is_503_not_500(source: Any) -> None:
    def load(version: Any) -> Any:
        if version.version == 1:
            raise OSError("the artifact store is unreachable")
        return loader(version)

    loader, failing = source.load, source
    failing.load = load
    table = ModelTable.resolve(["iris@production"], failing, all_versions=True)

    status, message = _status(lambda: table.get("iris", "1"))

    assert status == 503
    assert "OSError: the artifact store is unreachable" in message
    assert table.readiness("iris") == (True, None)  # the served version is unaffected


def test_item8_an_unknown_model_is_404_without_the_served_names(source: Any) -> None:
    table = ModelTable.resolve(["iris", "wine", "double"], source)

    for call in (
        lambda: table.get("nope"),
        lambda: table.readiness("nope"),
        lambda: table.metadata("nope", "1"),
    ):
        status, message = _status(call)
        assert (status, message) == (404, "model 'nope' is not served here")
    assert table.names() == ["double", "iris", "wine"]


def test_item8_two_references_to_one_name_are_refused(source: Any) -> None:
    with pytest.raises(ServingError, match="two references to model 'iris'"):
        ModelTable.resolve(["iris@production", "iris:2"], source)
    with pytest.raises(ServingError, match="different versions of model 'iris'"):
        ModelTable.resolve(["iris", "iris:1"], source)
    assert ModelTable.resolve(["iris", "iris"], source).names() == ["iris"]


# -- through the app ---------------------------------------------------------------------------


def _ask(table: ModelTable, *requests: tuple[str, str]) -> list[httpx.Response]:
    async def talk() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=build_app(table))
        async with httpx.AsyncClient(transport=transport, base_url="http://cellpipe") as http:
            return [await http.request(method, path) for method, path in requests]

    return asyncio.run(talk())


def test_item8_the_app_reports_an_unservable_version(source: Any) -> None:
    source.add("iris", {"weights": [1, 2]})
    table = ModelTable.resolve(["iris@production"], source, all_versions=True)

    ready, metadata, infer, served = _ask(
        table,
        ("GET", "/v2/models/iris/versions/3/ready"),
        ("GET", "/v2/models/iris/versions/3"),
        ("POST", "/v2/models/iris/versions/3/infer"),
        ("GET", "/v2/models/iris/ready"),
    )

    assert ready.status_code == 200
    assert (ready.json()["name"], ready.json()["ready"]) == ("iris", False)
    assert metadata.status_code == 200
    assert metadata.json()["properties"]["ready"] == "false"
    assert "cannot be served" in metadata.json()["properties"]["reason"]
    assert infer.status_code == 503
    assert "cannot be served" in infer.json()["error"]
    assert (served.status_code, served.json()["ready"]) == (200, True)


@pytest.mark.parametrize("segment", list(BAD_SEGMENTS.values())[:-1], ids=list(BAD_SEGMENTS)[:-1])
def test_item4_bad_version_segments_are_404_over_http(client: httpx.Client, segment: str) -> None:
    for method, suffix in (("GET", ""), ("GET", "/ready"), ("POST", "/infer")):
        path = f"/v2/models/iris/versions/{quote(segment)}{suffix}"
        response = client.request(method, path, json={"inputs": []})

        assert response.status_code == 404, (path, response.text)
        assert "no version" in response.json()["error"]
        assert "version 1" not in response.json()["error"]
    assert client.get("/v2/health/live").status_code == 200


def test_item8_listing_versions_survives_an_unreachable_registry(source: Any) -> None:
    table = ModelTable.resolve(["iris@staging"], source, all_versions=True)
    table.get("iris", "2")

    def unreachable(name: str) -> list[Any]:
        raise OSError("database is locked")

    source.versions = unreachable

    assert table.version_names("iris") == ["1", "2"]
    assert table.metadata("iris")["versions"] == ["1", "2"]


def test_item8_all_versions_over_a_real_server(
    source: Any, iris: tuple[Any, Any], iris_models: list[Any]
) -> None:
    from cellpipe.serving.server import Settings, start_server

    source.add("iris", {"weights": [1, 2]})  # version 3: cannot be served
    rows = iris[0]
    request = {"inputs": [{"name": "input-0", "shape": list(rows.shape), "datatype": "FP64",
                           "data": rows.ravel().tolist()}]}  # fmt: skip
    settings = Settings(all_versions=True)
    with (
        start_server(["iris@staging"], source, settings=settings) as running,
        httpx.Client(base_url=running.url, timeout=30) as http,
    ):
        alias = http.post("/v2/models/iris/infer", json=request).json()
        other = http.post("/v2/models/iris/versions/2/infer", json=request).json()
        again = http.post("/v2/models/iris/versions/2/infer", json=request).json()
        broken = http.post("/v2/models/iris/versions/3/infer", json=request)
        broken_ready = http.get("/v2/models/iris/versions/3/ready")
        metadata = http.get("/v2/models/iris").json()

    assert alias["model_version"] == "1"
    assert alias["outputs"][0]["data"] == iris_models[0].predict(rows).tolist()
    assert other["model_version"] == "2"
    assert other["outputs"][0]["data"] == iris_models[1].predict(rows).tolist()
    assert again == other
    assert broken.status_code == 503
    assert "version 3 of model 'iris' cannot be served" in broken.json()["error"]
    assert (broken_ready.status_code, broken_ready.json()["ready"]) == (200, False)
    assert metadata["versions"] == ["1", "2", "3"]
    assert source.loads.count("iris:2") == source.loads.count("iris:3") == 1
