"""Helpers of the UI tests (imported by conftest.py and the tests): run ids, URLs, Chromium."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote


@dataclass(frozen=True)
class UiRuns:
    """The finished runs of ``ui_project`` (oldest first) and its model."""

    first: str
    second: str
    model: str = "wine"


class UiUrl(str):
    """``http://127.0.0.1:PORT/?token=T``, with ``base``, ``token`` and ``to(path)``."""

    base: str
    token: str

    def __new__(cls, base: str, token: str) -> UiUrl:
        url = super().__new__(cls, f"{base}/?token={quote(token)}")
        url.base = base
        url.token = token
        return url

    def to(self, path: str) -> str:
        """The absolute URL of ``path`` (``/runs/X?a=b``) with the token added."""
        sep = "&" if "?" in path else "?"
        return f"{self.base}{path}{sep}token={quote(self.token)}"


def chromium_path() -> str | None:
    """Debian's Chromium (``chromium`` on PATH, else /usr/bin/chromium), or None."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
