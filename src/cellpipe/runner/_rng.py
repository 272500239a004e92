"""The global random generators' state as a value that flows from step to step.

Owns: `capture_random_state` and `restore_random_state`, the step process's side of
`cellpipe.pipeline.RANDOM_STATE`: a step that reads it gets the generators restored before its
code runs; a step that writes it stores their state after its code ran, as a plain JSON value
(so its artifact is small, deterministic, and takes part in cache keys and lineage).

Invariants:
    * the captured value is a dict of JSON values: ``random`` (Python's generator, always),
      ``numpy`` (the legacy global ``RandomState`` of ``np.random.seed``), ``torch`` (the CPU
      generator of ``torch.manual_seed``), each present only when that module is imported;
    * restoring imports numpy when the state has it (cheap, and the stream must continue when
      the step draws after importing it itself); torch is restored only when it is imported
      already (importing it costs seconds);
    * tensorflow's global seed is not capturable and is left alone;
    * the value is never bound in the user's namespace.

Must not depend on: notebooks, the KFP compiler, the CLI or the UI. The pod runtime
(`cellpipe.kfp.runtime`) has its own copy of this format (it cannot import cellpipe).
"""

from __future__ import annotations

import random
import sys
from typing import Any

__all__ = ["capture_random_state", "restore_random_state"]

FORMAT = 1


def capture_random_state() -> dict[str, Any]:
    """Return the state of the global generators of the imported modules (JSON-ready)."""
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {"format": FORMAT, "random": [version, list(internal), gauss]}
    np = sys.modules.get("numpy")
    if np is not None and hasattr(np, "random"):
        name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
        state["numpy"] = [str(name), [int(k) for k in keys], int(pos), int(has_gauss), cached]
    torch: Any = sys.modules.get("torch")
    get_rng_state = getattr(torch, "get_rng_state", None)
    if callable(get_rng_state):
        state["torch"] = [int(b) for b in get_rng_state().tolist()]
    return state


def restore_random_state(state: Any) -> None:
    """Set the global generators from a `capture_random_state` value.

    Raises:
        ValueError: when ``state`` is not such a value.
    """
    if not isinstance(state, dict) or state.get("format") != FORMAT or "random" not in state:
        raise ValueError("not a random state written by cellpipe")
    version, internal, gauss = state["random"]
    random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        import numpy as np

        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch: Any = sys.modules.get("torch")
    if "torch" in state and callable(getattr(torch, "set_rng_state", None)):
        torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
