"""Compiling a `Pipeline` to Kubeflow Pipelines v2 IR, and submitting it (see ARCHITECTURE.md).

Modules, one per IR section: `parameters` (root inputs), `components` (typed inputs and
outputs), `executors` (lightweight Python components), `dag` (tasks and wiring), `platform`
(kfp-kubernetes PlatformSpec), `compiler` (the facade), `yaml` (deterministic text),
`validate` (strict protobuf and cross-reference checks), `image` (build contexts), `submit`
(kfp.Client). `runtime` is the code embedded in every component; it runs in pods without
cellpipe.

Invariants: importing this package imports neither kfp nor PyYAML.

Must not depend on: the runner (checked by lint-imports).
"""

from cellpipe.kfp.compiler import compile_documents, compile_pipeline, compile_platform

__all__ = ["compile_documents", "compile_pipeline", "compile_platform"]
