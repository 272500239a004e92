"""Issue 9 (6): non-scalar metrics equal what Jupyter's own machinery computes.

The notebook runs top to bottom in IPython's `InteractiveShell` (in a subprocess, so no shell
singleton leaks into other tests); its metric variables, converted by the documented rule
(`metric_json`), must equal what `cellpipe run` records.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NOTEBOOK = """\
# %% tags=["imports"]
import numpy as np
import pandas as pd
from sklearn.datasets import load_wine
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import classification_report, confusion_matrix
from sklearn.model_selection import train_test_split

# %% tags=["pipeline-parameters"]
C = 0.5

# %% tags=["step:split"]
x, y = load_wine(return_X_y=True)
x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=0)

# %% tags=["step:train"]
model = LogisticRegression(C=C, max_iter=5000).fit(x_train, y_train)

# %% tags=["step:evaluate"]
predicted = model.predict(x_test)
cm = confusion_matrix(y_test, predicted)
report = classification_report(y_test, predicted, output_dict=True)
per_class = pd.Series(report["0"]).rename("class 0")
table = pd.DataFrame(report).T
accuracy = np.float64(report["accuracy"])
undefined = float("nan")

# %% tags=["pipeline-metrics"]
accuracy
cm
report
per_class
table
undefined
"""

METRICS = ["accuracy", "cm", "report", "per_class", "table", "undefined"]

JUPYTER = """
import json, re, sys
from IPython.core.interactiveshell import InteractiveShell
from cellpipe.storage.metric_values import metric_json
shell = InteractiveShell.instance()
text = open(sys.argv[1], encoding="utf-8").read()
for cell in re.split(r"^# %%.*$", text, flags=re.M)[1:]:  # every cell, top to bottom
    result = shell.run_cell(cell, store_history=False, silent=True)
    result.raise_error()
names = json.loads(sys.argv[2])
print(json.dumps({n: metric_json(n, shell.user_ns[n]) for n in names}))
"""


def _jupyter_metrics(notebook: Path) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", JUPYTER, str(notebook), json.dumps(METRICS)],
        capture_output=True,
        text=True,
        check=False,
        cwd=notebook.parent,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_non_scalar_metrics_equal_jupyters(tmp_path, monkeypatch, run_cli):
    notebook = tmp_path / "wine_metrics.py"
    notebook.write_text(NOTEBOOK)
    monkeypatch.chdir(tmp_path)
    result = run_cli("run", notebook, "--json")
    assert result.code == 0, result.err
    recorded = json.loads(result.out.splitlines()[-1])["metrics"]
    expected = _jupyter_metrics(notebook)
    assert recorded == expected
    assert len(recorded["cm"]) == 3
    assert recorded["undefined"] is None  # NaN is recorded as null
    assert recorded["table"]["accuracy"]["precision"] == recorded["accuracy"]
