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
    pytest.importorskip("aiohttp")
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
