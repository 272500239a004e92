"""Every value a step binds at top level is loadable later (issue 11).

Values a later step reads were always stored; the others (the last step's ``model`` and
``score``) are now stored too, after the step reported its result, by the same process.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from run_helpers import Cells, summary, write_notebook

import cellpipe
from cellpipe.errors import RunNotFoundError

pytestmark = pytest.mark.e2e

LAST_STEP: Cells = [
    (["imports"], "import math"),
    (["step:prep"], "data = [1.0, 2.0, 3.0]\nhelper = len(data)"),
    (
        ["step:train"],
        "model = {'w': sum(data)}\nscore = math.sqrt(2)\n"
        "gen = (i for i in range(3))\nfh = open('nb.ipynb')\nbig = 'x' * 5000\n"
        "def local_fn():\n    return 1\n",
    ),
]


def _notebook(tmp_path: Path, cells: Cells = LAST_STEP) -> Path:
    return write_notebook(tmp_path / "proj", cells)


def _log(notebook: Path, run_id: str, step: str) -> str:
    return (
        notebook.parent / ".cellpipe" / "runs" / run_id / "steps" / step / "log.txt"
    ).read_text()


@pytest.mark.slow
def test_last_step_values_load_via_api_and_cli_and_from_a_cached_rerun(
    tmp_path, monkeypatch, run_cli
):
    notebook = _notebook(tmp_path)
    monkeypatch.chdir(notebook.parent)
    monkeypatch.setenv("CELLPIPE_EXTRA_VALUES_MAX_BYTES", "2000")
    first = run_cli("run", notebook, "--json")
    assert first.code == 0, first.err
    run_id = summary(first.out)["run_id"]
    assert cellpipe.load(run_id, "train", "model", project=notebook.parent) == {"w": 6.0}
    assert cellpipe.load(run_id, "train", "score", project=notebook.parent) == pytest.approx(2**0.5)
    assert cellpipe.load(run_id, "prep", "helper", project=notebook.parent) == 3
    got = run_cli("artifacts", "get", run_id, "train", "model", "-o", tmp_path / "model.json")
    assert got.code == 0, got.err
    assert json.loads((tmp_path / "model.json").read_text()) == {"w": 6.0}
    # show, why and lineage list them as outputs, marked as not read downstream.
    show = run_cli("show", run_id, "--json").json()
    steps = {s["step"]: s for s in show["steps"]}
    assert set(steps["train"]["outputs"]) == {"model", "score"}
    assert steps["train"]["outputs_not_read_downstream"] == ["model", "score"]
    assert steps["prep"]["outputs_not_read_downstream"] == ["helper"]  # data is read
    why = run_cli("why", run_id, "train")
    assert "outputs: model (not read downstream), score (not read downstream)" in why.out
    lineage = run_cli("lineage", run_id)
    assert lineage.code == 0, lineage.err
    assert "out  helper = " in lineage.out
    assert next(line for line in lineage.out.splitlines() if "out  data = " in line).endswith(
        "(list)"
    )
    assert "(not read downstream)" in next(
        line for line in lineage.out.splitlines() if "out  model = " in line
    )
    # A generator, an open file and a value over the limit are skipped with a note, and
    # the step still succeeded; a function is code, not a value: skipped silently.
    log = _log(notebook, run_id, "train")
    assert "'gen' of step 'train' was not stored" in log
    assert "'fh' of step 'train' was not stored" in log
    assert "'big' of step 'train' was not stored for later loading: it takes" in log
    assert "CELLPIPE_EXTRA_VALUES_MAX_BYTES" in log
    assert "local_fn" not in log
    for name in ("gen", "fh", "big", "local_fn"):
        with pytest.raises(RunNotFoundError, match=f"has no output '{name}'"):
            cellpipe.load(run_id, "train", name, project=notebook.parent)
    # The cache key does not depend on them, and a cache hit reuses them.
    again = cellpipe.run(notebook)
    assert set(again.steps.values()) == {"cached"}
    assert again.load("train", "model") == {"w": 6.0}
    assert again.load("train", "score") == pytest.approx(2**0.5)


@pytest.mark.slow
def test_the_outputs_needed_tag_stores_nothing_extra(tmp_path):
    cells = [*LAST_STEP[:2], (["step:train", "outputs:needed"], "model = {'w': sum(data)}")]
    notebook = _notebook(tmp_path, cells)
    run = cellpipe.run(notebook)
    assert run.status == "succeeded"
    assert run.load("prep", "helper") == 3  # only the tagged step opts out
    with pytest.raises(RunNotFoundError, match="has no output 'model'"):
        run.load("train", "model")


@pytest.mark.slow
def test_the_run_level_switch_stores_only_what_later_steps_read(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLPIPE_EXTRA_VALUES", "0")
    notebook = _notebook(tmp_path)
    run = cellpipe.run(notebook)
    assert run.status == "succeeded"
    assert run.load("prep", "data") == [1.0, 2.0, 3.0]  # read by train: always stored
    with pytest.raises(RunNotFoundError, match="has no output 'helper'"):
        run.load("prep", "helper")


# The extra value of `first` cannot be serialized until `second` (its dependant) has started:
# had the dependant waited for the extra values, the value would wait in vain for a minute and
# be skipped. Ordering by a file the dependant writes, not by timing.
ORDERING: Cells = [
    (["imports"], "import pathlib\nimport time"),
    (
        ["functions"],
        "class WaitsForDependant:\n"
        "    def __reduce__(self):\n"
        "        flag = pathlib.Path('dependant-started')\n"
        "        for _ in range(6000):\n"
        "            if flag.exists():\n"
        "                break\n"
        "            time.sleep(0.01)\n"
        "        return (str, ('dependant started first: ' + str(flag.exists()),))\n",
    ),
    (["step:first"], "x = 1\nwitness = WaitsForDependant()"),
    (["step:second"], "pathlib.Path('dependant-started').write_text('yes')\ny = x + 1"),
]


@pytest.mark.slow
def test_dependants_do_not_wait_for_the_extra_values(tmp_path):
    notebook = _notebook(tmp_path, ORDERING)
    run = cellpipe.run(notebook)
    assert run.status == "succeeded"
    assert run.load("second", "y") == 2
    assert run.load("first", "witness") == "dependant started first: True"


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["spawn", "inprocess"])
def test_the_other_executors_store_them_before_the_next_step(tmp_path, executor):
    # No open file here: the in-process executor's namespace outlives the step.
    cells = [*LAST_STEP[:2], (["step:train"], "model = {'w': sum(data)}\nscore = 0.5")]
    notebook = _notebook(tmp_path, cells)
    run = cellpipe.run(notebook, executor=executor)
    assert run.status == "succeeded"
    assert run.load("train", "model") == {"w": 6.0}
    assert run.load("prep", "helper") == 3


PLOTS: Cells = [
    (["imports"], "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt"),
    (["step:report"], "fig, ax = plt.subplots()\nax.plot([1, 2, 3])\ntotal = 6"),
]


def test_figures_and_axes_are_not_stored_as_values(tmp_path, monkeypatch, run_cli):
    """A figure's pickle differs from run to run: stored, it would make `reproduce` fail."""
    pytest.importorskip("matplotlib")
    notebook = _notebook(tmp_path, PLOTS)
    monkeypatch.chdir(notebook.parent)
    first = run_cli("run", notebook, "--json")
    assert first.code == 0, first.err
    show = run_cli("show", summary(first.out)["run_id"], "--json").json()
    assert set(show["steps"][0]["outputs"]) == {"total"}


def test_underscore_names_are_not_stored(tmp_path, monkeypatch, run_cli):
    """`_deadline = time.monotonic() + 60` differs on every run: stored, `reproduce` would fail."""
    cells: Cells = [
        (["imports"], "import time"),
        (["step:wait"], "_deadline = time.monotonic() + 60\nwaited = 0"),
    ]
    notebook = _notebook(tmp_path, cells)
    monkeypatch.chdir(notebook.parent)
    first = run_cli("run", notebook, "--json")
    assert first.code == 0, first.err
    show = run_cli("show", summary(first.out)["run_id"], "--json").json()
    assert set(show["steps"][0]["outputs"]) == {"waited"}
