"""Live runs in the UI: start, cancel and follow runs (server-sent events)."""

from __future__ import annotations

from starlette.routing import BaseRoute


def routes() -> list[BaseRoute]:
    """The live routes."""
    return []
