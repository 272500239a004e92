"""Helpers for the `cellpipe serve` end-to-end tests: a project with a registered model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

NOTEBOOK = """\
# %% tags=["imports"]
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

# %% tags=["step:train"]
x, y = load_iris(return_X_y=True)
model = LogisticRegression(max_iter=500).fit(x, y)
"""
"""A one-step notebook whose ``model`` takes [N, 4] FP64 rows."""

CLI = [sys.executable, "-c", "from cellpipe.cli.main import entry; entry()"]
"""The cellpipe command of this interpreter (what ``cellpipe`` runs)."""


def iris_project(folder: Path) -> Path:
    """Run `NOTEBOOK` in ``folder`` with the real CLI and register its model as
    ``iris@production``; return ``folder``."""
    (folder / "iris.py").write_text(NOTEBOOK)
    ran = subprocess.run([*CLI, "run", "iris.py", "--json"], cwd=folder, capture_output=True,
                         text=True, check=True)  # fmt: skip
    run_id = json.loads(ran.stdout.splitlines()[-1])["run_id"]
    subprocess.run([*CLI, "models", "register", "iris", "--run", run_id, "--step", "train",
                    "--var", "model", "--alias", "production"], cwd=folder, check=True,
                   capture_output=True)  # fmt: skip
    return folder
