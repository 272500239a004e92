"""cellpipe.serving: registered model versions over the Open Inference Protocol v2 REST API.

Entry points: `serve` (resolve, load, run uvicorn until interrupted), `start_server` (the same
in a background thread, for tests and notebooks), `create_app` (the ASGI app), and
`write_manifest` / `kserve_manifest` / `inference_service` (a KServe ``InferenceService`` for a
version; `cellpipe.serving.image` the build context of a custom predictor's image). See
ARCHITECTURE.md and README.md ("Serving").

Importing this package loads nothing heavy: numpy, Starlette and uvicorn load on first use of
an entry point (they come with the ``serve`` extra).

Must not depend on: the runner, kfp or notebooks (checked by lint-imports).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "RunningServer",
    "create_app",
    "inference_service",
    "kserve_manifest",
    "serve",
    "start_server",
    "write_manifest",
]

if TYPE_CHECKING:
    from cellpipe.serving.app import create_app
    from cellpipe.serving.manifest import inference_service, kserve_manifest, write_manifest
    from cellpipe.serving.server import RunningServer, serve, start_server

_WHERE = {
    "create_app": "cellpipe.serving.app",
    "inference_service": "cellpipe.serving.manifest",
    "kserve_manifest": "cellpipe.serving.manifest",
    "write_manifest": "cellpipe.serving.manifest",
    "RunningServer": "cellpipe.serving.server",
    "serve": "cellpipe.serving.server",
    "start_server": "cellpipe.serving.server",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'cellpipe.serving' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
