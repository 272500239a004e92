"""A matplotlib backend for step processes: Agg rendering, figures shown as PNG outputs.

Owns: the backend named by ``MPLBACKEND=module://cellpipe.runner._mpl_backend`` in step
processes, and `flush_figures`, which the step runner calls after every cell (like
matplotlib-inline's ``flush_figures``): each open figure becomes an ``image/png`` display
output of that cell and is closed.

Invariants: ``plt.show()`` never blocks and never warns; a figure is shown once; a figure
that cannot be rendered (``savefig`` raises) never raises out of here: like Jupyter's inline
backend, it becomes a warning on stderr (the step's log and the cell's outputs) and the step's
status stays what its code made it.

Must not depend on: anything in cellpipe but the capture module.
"""

from __future__ import annotations

import base64
import io
import sys
from typing import Any

from matplotlib.backend_bases import FigureManagerBase
from matplotlib.backends.backend_agg import FigureCanvasAgg

from cellpipe.runner._capture import publish

FigureCanvas = FigureCanvasAgg
FigureManager = FigureManagerBase


def flush_figures() -> None:
    """Publish every open pyplot figure as an image/png output, then close them all.

    A figure whose rendering raises is reported on stderr and closed like the others.
    """
    import matplotlib.pyplot as plt

    try:
        for num in plt.get_fignums():
            try:
                _publish_figure(plt.figure(num))
            except Exception as exc:
                _warn(f"figure {num} could not be rendered: {type(exc).__name__}: {exc}")
    finally:
        try:
            plt.close("all")
        except Exception as exc:
            _warn(f"figures could not be closed: {type(exc).__name__}: {exc}")


def _publish_figure(figure: Any) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    width, height = figure.get_size_inches() * figure.dpi
    data = {
        "image/png": base64.b64encode(buffer.getvalue()).decode("ascii"),
        "text/plain": f"<Figure size {width:g}x{height:g} with {len(figure.axes)} Axes>",
    }
    publish(data, {})


def _warn(message: str) -> None:
    sys.stderr.write(f"[cellpipe] warning: {message}\n")


def show(*args: Any, **kwargs: Any) -> None:
    """``plt.show()``: show the open figures now (as the inline backend does)."""
    del args, kwargs
    flush_figures()
