"""The pure pipeline model; see `cellpipe.pipeline.model`. No I/O, no notebooks, no storage."""

from cellpipe.pipeline.model import (
    CodeChunk,
    Edge,
    InputRef,
    JsonValue,
    Metric,
    NotebookSettings,
    Package,
    Parameter,
    Pipeline,
    Step,
    StepSettings,
)

__all__ = [
    "CodeChunk",
    "Edge",
    "InputRef",
    "JsonValue",
    "Metric",
    "NotebookSettings",
    "Package",
    "Parameter",
    "Pipeline",
    "Step",
    "StepSettings",
]
