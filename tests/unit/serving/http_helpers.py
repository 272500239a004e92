"""Raw HTTP/1.1 over one socket, for the tests that must control every byte the server sees.

`Raw` sends bytes and reads one response (status, lower-case headers, body read by its
Content-Length); `closed` tells whether the server closed the connection. Socket timeouts are
generous (30 s): a test waits for the server's answer, it never measures how long it took.
"""

from __future__ import annotations

import json
import socket
from typing import Any
from urllib.parse import urlsplit

WAIT = 30.0


class Raw:
    """One client connection to ``url`` (``http://host:port``)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        host = parts.hostname or "127.0.0.1"
        self.sock = socket.create_connection((host, parts.port or 80), timeout=WAIT)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        """Read one response; raise AssertionError when the connection closes first."""
        while b"\r\n\r\n" not in self.buffer:
            assert self._fill(), f"connection closed before a response: {self.buffer!r}"
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        size = int(headers.get("content-length", "0"))
        while len(self.buffer) < size:
            assert self._fill(), "connection closed in the middle of a body"
        body, self.buffer = self.buffer[:size], self.buffer[size:]
        return status, headers, body

    def closed(self) -> bool:
        """Whether the server closes the connection (waits up to `WAIT` seconds for it)."""
        try:
            while self._fill():
                pass
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def request(
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> bytes:
    """The bytes of one HTTP/1.1 request (Content-Length set unless a header says otherwise)."""
    fields = {"Host": "test", **(headers or {})}
    if body and "Transfer-Encoding" not in fields and "Content-Length" not in fields:
        fields["Content-Length"] = str(len(body))
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    return head.encode("latin-1") + b"\r\n" + body


def error_of(body: bytes) -> str:
    """The message of an ``{"error": ...}`` body (asserts that shape)."""
    document: Any = json.loads(body)
    assert isinstance(document, dict), document
    assert list(document) == ["error"], document
    assert isinstance(document["error"], str)
    return document["error"]


DOUBLE = json.dumps(
    {"inputs": [{"name": "input-0", "shape": [2], "datatype": "FP64", "data": [1.5, 2.0]}]}
).encode()
"""A good inference request for the ``double`` model."""
