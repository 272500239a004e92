"""cellpipe: turn a tagged Jupyter notebook into a checked, cached, reproducible pipeline.

Importing this package has no side effects and stays fast: the public functions are loaded
on first use from `cellpipe.api`.

The functions carry the CLI's words (`check`, `run`, `runs`, `show`, `compare`, `why`, `logs`,
`lineage`, `load`, `restore`, `register_model`, `models`, `serve`, `compile`) and call the
same service functions as ``cellpipe COMMAND``; their results show as HTML in Jupyter.

Example (inside a notebook)::

    import cellpipe
    pipeline = cellpipe.load_pipeline("train.ipynb")
    cellpipe.runs().to_pandas()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "CellpipeError",
    "Run",
    "__version__",
    "check",
    "compare",
    "compile",
    "data",
    "lineage",
    "load",
    "load_model",
    "load_pipeline",
    "log_metric",
    "logs",
    "models",
    "register_model",
    "restore",
    "run",
    "runs",
    "serve",
    "show",
    "why",
]

if TYPE_CHECKING:
    from cellpipe.api import (
        Run,
        check,
        compare,
        compile,  # noqa: A004 - `cellpipe.compile`, the command's name
        data,
        lineage,
        load,
        load_model,
        load_pipeline,
        log_metric,
        logs,
        models,
        register_model,
        restore,
        run,
        runs,
        serve,
        show,
        why,
    )
    from cellpipe.errors import CellpipeError

_API = {
    "Run",
    "check",
    "compare",
    "compile",
    "data",
    "lineage",
    "load",
    "load_model",
    "load_pipeline",
    "log_metric",
    "logs",
    "models",
    "register_model",
    "restore",
    "run",
    "runs",
    "serve",
    "show",
    "why",
}


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext cellpipe``: register the ``%cellpipe`` line magic (the CLI's words).

    Example (in a notebook)::

        %load_ext cellpipe
        %cellpipe run -p MAX_DEPTH=6
        %cellpipe why latest train
    """
    from cellpipe.cli.ipython import load_ipython_extension as register

    register(ipython)


def __dir__() -> list[str]:
    # The lazily loaded functions are listed too, so tab completion on `cellpipe.` offers them.
    return sorted({*globals(), *__all__})


def __getattr__(name: str) -> Any:
    # Loaded on first use, CellpipeError too: `cellpipe run` starts its fork server before
    # importing anything else, and every command's start-up counts.
    if name == "CellpipeError":
        from cellpipe.errors import CellpipeError

        return CellpipeError
    if name in _API:
        from cellpipe import api

        return getattr(api, name)
    raise AttributeError(f"module 'cellpipe' has no attribute {name!r}")
