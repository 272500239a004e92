"""cellpipe.runner: runs a pipeline's steps locally, in parallel, each in its own process.

Owns: the execution engine the orchestrator drives: `run_steps` (the DAG scheduler), the
executors (`ForkServerExecutor`, `SpawnExecutor`, `InProcessExecutor`), the process-boundary
values (`StepJob`, `StepResult`) and the progress events (`cellpipe.runner.events`).

Invariants: importing this package is cheap (no IPython, no numpy); step processes import the
heavy parts themselves.

Must not depend on: cellpipe.notebook, cellpipe.kfp, cellpipe.cli or cellpipe.ui.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cellpipe.runner.execute import (
        Executor,
        ForkServerExecutor,
        InProcessExecutor,
        SpawnExecutor,
        default_executor,
    )
    from cellpipe.runner.jobs import StepJob, StepResult
    from cellpipe.runner.scheduler import Prepare, RunOutcome, run_steps

__all__ = [
    "Executor",
    "ForkServerExecutor",
    "InProcessExecutor",
    "Prepare",
    "RunOutcome",
    "SpawnExecutor",
    "StepJob",
    "StepResult",
    "default_executor",
    "run_steps",
]

# Loaded on first use: step processes import `cellpipe.runner.child` and must not pay for
# the scheduler and executors they never use.
_WHERE = {
    "Executor": "execute",
    "ForkServerExecutor": "execute",
    "InProcessExecutor": "execute",
    "SpawnExecutor": "execute",
    "default_executor": "execute",
    "StepJob": "jobs",
    "StepResult": "jobs",
    "Prepare": "scheduler",
    "RunOutcome": "scheduler",
    "run_steps": "scheduler",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'cellpipe.runner' has no attribute {name!r}")
    return getattr(importlib.import_module(f"cellpipe.runner.{module}"), name)
