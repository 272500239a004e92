"""`cellpipe.data(url)`: fetched once per source version, recorded in lineage, works offline."""

from __future__ import annotations

import http.server
import json
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

import cellpipe
from cellpipe.runner.data import DataSourceWarning, fetch_data

pytestmark = pytest.mark.e2e

NOTEBOOK = """\
# %% tags=["imports"]
import cellpipe

# %% tags=["pipeline-parameters"]
URL = "{url}"

# %% tags=["step:load"]
path = cellpipe.data(URL)
with open(path) as f:
    rows = f.read().splitlines()

# %% tags=["step:count"]
n_rows = len(rows)
print("rows:", n_rows)

# %% tags=["pipeline-metrics"]
n_rows
"""


class _Server:
    def __init__(self, body: bytes) -> None:
        self.body = body
        self.requests: Counter[str] = Counter()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _headers(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(server.body)))
                self.send_header("ETag", f'"v{len(server.body)}"')
                self.end_headers()

            def do_HEAD(self) -> None:
                server.requests["HEAD"] += 1
                self._headers()

            def do_GET(self) -> None:
                server.requests["GET"] += 1
                self._headers()
                self.wfile.write(server.body)

            def log_message(self, *_args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/wine.csv"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server() -> Iterator[_Server]:
    s = _Server(b"a,b\n1,2\n3,4\n")
    yield s
    s.stop()


def _project(tmp_path: Path, url: str) -> Path:
    project = tmp_path / "proj"
    project.mkdir()
    nb = project / "data_nb.py"
    nb.write_text(NOTEBOOK.format(url=url))
    return nb


def _run(run_cli, nb: Path, *extra: str) -> dict[str, object]:
    result = run_cli("run", nb, "--no-cache", "--json", *extra)
    assert result.code == 0, result.err + result.out
    summary: dict[str, object] = json.loads(result.out.splitlines()[-1])
    return summary


# A forked step inherits pytest's "warnings are errors" filter; the offline warning is expected.
@pytest.mark.filterwarnings("default::cellpipe.runner.data.DataSourceWarning")
def test_http_source_fetched_once_and_offline(tmp_path, server, run_cli):
    nb = _project(tmp_path, server.url)
    first = _run(run_cli, nb)
    assert first["metrics"] == {"n_rows": 3}
    assert server.requests["GET"] == 1
    heads = server.requests["HEAD"]

    _run(run_cli, nb)  # --no-cache: the step runs again, but the bytes are known
    assert server.requests["GET"] == 1
    assert server.requests["HEAD"] == heads + 1  # one version check per call, documented

    server.stop()
    offline = _run(run_cli, nb)
    assert offline["metrics"] == {"n_rows": 3}

    lineage = run_cli("lineage", first["run_id"], "--project", nb.parent, "--json").json()
    sources = [n for n in lineage["nodes"] if n["kind"] == "data_source"]
    assert [s["label"] for s in sources] == [server.url]
    assert sources[0]["detail"]["version"] == 'etag:"v12"'
    reader = next(e for e in lineage["edges"] if e["label"] == server.url)
    assert reader["target"] == f"step:{first['run_id']}/load"


def test_refresh_downloads_again(tmp_path, server):
    state = tmp_path / ".cellpipe"
    a = fetch_data(server.url, artifact_root=state / "artifacts", state_dir=state)
    b = fetch_data(server.url, artifact_root=state / "artifacts", state_dir=state)
    assert server.requests["GET"] == 1
    assert a.digest == b.digest
    fetch_data(server.url, refresh=True, artifact_root=state / "artifacts", state_dir=state)
    assert server.requests["GET"] == 2
    server.body = b"a,b\n9,9\n"  # a new version (its ETag changes)
    c = fetch_data(server.url, artifact_root=state / "artifacts", state_dir=state)
    assert c.digest != a.digest
    assert c.path.read_bytes() == b"a,b\n9,9\n"
    assert c.path.name == "wine.csv"


def test_local_file_outside_a_step(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = tmp_path / "source.csv"
    source.write_text("x\n1\n")
    path = cellpipe.data(source)
    assert path.read_text() == "x\n1\n"
    assert path.name == "source.csv"
    assert path.resolve().stat().st_mode & 0o222 == 0  # read-only (root could still write)
    source.write_text("x\n1\n2\n")  # size and mtime change: a new version
    assert cellpipe.data(source).read_text() == "x\n1\n2\n"
    assert cellpipe.data(f"file://{source}").read_text() == "x\n1\n2\n"

    source.unlink()  # the source is gone: the stored copy, with a warning
    with pytest.warns(DataSourceWarning, match="cannot reach"):
        assert cellpipe.data(source).read_text() == "x\n1\n2\n"


def test_unreachable_without_copy_is_an_error(tmp_path):
    from cellpipe.errors import CellpipeError

    state = tmp_path / ".cellpipe"
    with pytest.raises(CellpipeError, match="no copy is stored"):
        fetch_data(tmp_path / "missing.csv", artifact_root=state / "artifacts", state_dir=state)


# -- cache hits check their sources (issue 10, item 12) ---------------------------------------


def _cached_run(run_cli, nb: Path, *extra: str) -> dict[str, object]:
    result = run_cli("run", nb, "--json", *extra)
    assert result.code == 0, result.err + result.out
    summary: dict[str, object] = json.loads(result.out.splitlines()[-1])
    return summary


def _statuses(summary: dict[str, object]) -> dict[str, str]:
    steps = summary["steps"]
    assert isinstance(steps, dict)
    return {name: s["status"] for name, s in steps.items()}


def test_a_changed_local_source_re_runs_the_cached_step_and_why_says_so(tmp_path, run_cli):
    source = tmp_path / "source.csv"
    source.write_text("a,b\n1,2\n3,4\n")
    nb = _project(tmp_path, str(source))
    first = _cached_run(run_cli, nb)
    assert first["metrics"] == {"n_rows": 3}
    again = _cached_run(run_cli, nb)
    assert _statuses(again) == {"load": "cached", "count": "cached"}

    source.write_text("a,b\n1,2\n3,4\n5,6\n")  # a new size: a new version, whatever the clock
    offline = _cached_run(run_cli, nb, "--offline")  # what is stored, without asking
    assert _statuses(offline) == {"load": "cached", "count": "cached"}
    assert offline["metrics"] == {"n_rows": 3}
    why = run_cli("why", offline["run_id"], "load", "--project", nb.parent, "--json").json()
    assert why["reason"].endswith("(data sources not checked: --offline)")

    changed = _cached_run(run_cli, nb)
    assert _statuses(changed) == {"load": "succeeded", "count": "succeeded"}
    assert changed["metrics"] == {"n_rows": 4}
    why = run_cli("why", changed["run_id"], "load", "--project", nb.parent, "--json").json()
    assert why["hit"] is False
    assert why["reason"].startswith(f"miss: data source {source} changed (size:12,mtime:")
    assert " → size:16,mtime:" in why["reason"]

    settled = _cached_run(run_cli, nb)  # the new version is the recorded one now
    assert _statuses(settled) == {"load": "cached", "count": "cached"}
    assert settled["metrics"] == {"n_rows": 4}

    source.unlink()  # cannot be checked: the stored copy is used, as cellpipe.data does
    gone = _cached_run(run_cli, nb)
    assert _statuses(gone) == {"load": "cached", "count": "cached"}
    why = run_cli("why", gone["run_id"], "load", "--project", nb.parent, "--json").json()
    assert why["reason"].endswith(f"(data source {source} not reachable: stored copy used)")


def test_a_cache_hit_asks_an_http_source_once_and_downloads_nothing(tmp_path, server, run_cli):
    nb = _project(tmp_path, server.url)
    _cached_run(run_cli, nb)
    gets, heads = server.requests["GET"], server.requests["HEAD"]
    hit = _cached_run(run_cli, nb)
    assert _statuses(hit) == {"load": "cached", "count": "cached"}
    assert server.requests["GET"] == gets  # nothing downloaded
    assert server.requests["HEAD"] == heads + 1  # one version check for the hit

    server.body = b"a,b\n1,2\n3,4\n5,6\n"  # a new ETag
    rerun = _cached_run(run_cli, nb, "--offline", "--no-cache")  # steps run, sources unasked
    assert _statuses(rerun) == {"load": "succeeded", "count": "succeeded"}
    assert rerun["metrics"] == {"n_rows": 3}  # the stored copy
    assert (server.requests["HEAD"], server.requests["GET"]) == (heads + 1, gets)

    changed = _cached_run(run_cli, nb)
    assert _statuses(changed) == {"load": "succeeded", "count": "succeeded"}
    assert changed["metrics"] == {"n_rows": 4}
    why = run_cli("why", changed["run_id"], "load", "--project", nb.parent, "--json").json()
    assert why["reason"] == f'miss: data source {server.url} changed (etag:"v12" → etag:"v16")'


def test_cellpipe_run_offline_trusts_the_stored_copy(tmp_path):
    source = tmp_path / "source.csv"
    source.write_text("a,b\n1,2\n3,4\n")
    nb = _project(tmp_path, str(source))
    assert cellpipe.run(nb).metrics == {"n_rows": 3}
    source.write_text("a,b\n1,2\n3,4\n5,6\n")
    offline = cellpipe.run(nb, offline=True)
    assert offline.steps == {"load": "cached", "count": "cached"}
    assert offline.metrics == {"n_rows": 3}
    assert cellpipe.run(nb).metrics == {"n_rows": 4}


def test_a_changed_s3_source_re_runs_the_cached_step(tmp_path, s3_service, run_cli, monkeypatch):
    import fsspec.config
    import s3fs

    # The endpoint and keys reach every fsspec user as fsspec configuration: the runner's
    # version check (this process) and the step processes (the environment).
    options = s3_service.storage_options
    monkeypatch.setenv("FSSPEC_S3", json.dumps(options))
    monkeypatch.setitem(fsspec.config.conf, "s3", options)
    url = f"{s3_service.new_url()}/wine.csv"
    fs = s3fs.S3FileSystem(**options)
    fs.pipe(url, b"a,b\n1,2\n3,4\n")
    nb = _project(tmp_path, url)
    assert _cached_run(run_cli, nb)["metrics"] == {"n_rows": 3}
    assert _statuses(_cached_run(run_cli, nb)) == {"load": "cached", "count": "cached"}

    fs.pipe(url, b"a,b\n1,2\n3,4\n5,6\n")  # a new object: a new ETag
    changed = _cached_run(run_cli, nb)
    assert _statuses(changed) == {"load": "succeeded", "count": "succeeded"}
    assert changed["metrics"] == {"n_rows": 4}
    why = run_cli("why", changed["run_id"], "load", "--project", nb.parent, "--json").json()
    assert why["reason"].startswith(f"miss: data source {url} changed (etag:")
