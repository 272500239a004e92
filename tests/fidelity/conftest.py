"""Fixtures of the fidelity tests: the kernel spec every notebook's Jupyter run uses.

The spec is written once per test process (per xdist worker) in a temporary folder and points
at this interpreter, so the tests need no installed kernel spec.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fidelity_harness import write_kernel_spec


@pytest.fixture(scope="session")
def kernels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder holding the ``python3`` kernel spec (for ``KernelSpecManager.kernel_dirs``)."""
    return write_kernel_spec(tmp_path_factory.mktemp("jupyter"))
