"""`cellpipe.data` in the default install: local, file:// and http(s):// without fsspec.

fsspec is installed in the dev environment, so its absence is simulated in a subprocess by a
``sys.modules`` block (``sys.modules["fsspec"] = None`` makes every import of it fail).
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from cellpipe.runner.data import fetch_data

pytestmark = pytest.mark.e2e

BODY = b"a,b\n1,2\n"

# Runs in a fresh interpreter where fsspec cannot be imported; prints one JSON document.
SCRIPT = """
import json, sys
sys.modules["fsspec"] = None
import cellpipe
from cellpipe.errors import CellpipeError

out = {}
for name, url in json.loads(sys.argv[1]).items():
    try:
        path = cellpipe.data(url)
        out[name] = {"text": open(path).read(), "fsspec": "fsspec" in sys.modules
                     and sys.modules["fsspec"] is not None}
    except CellpipeError as exc:
        out[name] = {"error": str(exc)}
print(json.dumps(out))
"""


class _Server:
    """A loopback HTTP server; ``head=False`` refuses HEAD (405) and honours If-None-Match."""

    def __init__(self, *, head: bool = True) -> None:
        self.requests: Counter[str] = Counter()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:
                server.requests["HEAD"] += 1
                if not head:
                    self.send_response(405)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(BODY)))
                self.send_header("ETag", '"v1"')
                self.end_headers()

            def do_GET(self) -> None:
                if self.headers.get("If-None-Match") == '"v1"':
                    server.requests["GET 304"] += 1
                    self.send_response(304)
                    self.end_headers()
                    return
                server.requests["GET"] += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(BODY)))
                self.send_header("ETag", '"v1"')
                self.end_headers()
                self.wfile.write(BODY)

            def log_message(self, *_args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/table.csv"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server() -> Iterator[_Server]:
    s = _Server()
    yield s
    s.stop()


@pytest.fixture
def no_head_server() -> Iterator[_Server]:
    s = _Server(head=False)
    yield s
    s.stop()


def test_data_without_fsspec_reads_local_file_and_http(tmp_path: Path, server: _Server) -> None:
    project = tmp_path / "proj"
    (project / ".cellpipe").mkdir(parents=True)
    local = tmp_path / "local.csv"
    local.write_bytes(b"x\n1\n")
    urls = {
        "local": str(local),
        "file": local.as_uri(),
        "http": server.url,
        "s3": "s3://bucket/key.csv",
    }
    env = {**os.environ, "CELLPIPE_PROJECT": str(project)}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(urls)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["local"] == {"text": "x\n1\n", "fsspec": False}
    assert out["file"] == {"text": "x\n1\n", "fsspec": False}
    assert out["http"] == {"text": BODY.decode(), "fsspec": False}
    assert "s3://" in out["s3"]["error"]
    assert "pip install 'cellpipe[team]'" in out["s3"]["error"]
    assert server.requests == Counter({"HEAD": 1, "GET": 1})
    # The copies went to the project named by CELLPIPE_PROJECT.
    assert (project / ".cellpipe" / "data" / "sources.json").is_file()


def test_head_refused_uses_a_conditional_get(tmp_path: Path, no_head_server: _Server) -> None:
    state = tmp_path / ".cellpipe"
    first = fetch_data(no_head_server.url, state_dir=state, artifact_root=state / "artifacts")
    assert first.path.read_bytes() == BODY
    assert first.version == 'etag:"v1"'
    again = fetch_data(no_head_server.url, state_dir=state, artifact_root=state / "artifacts")
    assert again.digest == first.digest
    # The second call asked with If-None-Match and got 304: the bytes came once.
    assert no_head_server.requests == Counter({"HEAD": 2, "GET": 1, "GET 304": 1})


def test_source_version_without_head_reads_only_the_headers(no_head_server: _Server) -> None:
    from cellpipe.runner.data import source_version

    assert source_version(no_head_server.url) == 'etag:"v1"'
    assert no_head_server.requests == Counter({"HEAD": 1, "GET": 1})
