"""The UI page module `run` (see cellpipe.ui.app)."""

from __future__ import annotations

from starlette.routing import BaseRoute


def routes() -> list[BaseRoute]:
    """This page's routes."""
    return []
