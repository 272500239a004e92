"""The pure pipeline model; see `cellpipe.pipeline.model`. No I/O, no notebooks, no storage."""

from cellpipe.pipeline.model import (
    RANDOM_STATE,
    CodeChunk,
    Edge,
    FileRef,
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
    "RANDOM_STATE",
    "CodeChunk",
    "Edge",
    "FileRef",
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
