"""Issue 9, the runtime side: in-place change guard, global random state, notebook classes,
figures that cannot be rendered, and the files a step writes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from runner_testkit import Runner, pipeline, step

from cellpipe.pipeline.model import RANDOM_STATE, Metric
from cellpipe.runner._guard import GUARD_ENV, Fingerprints, fingerprint, guarded_inputs
from cellpipe.runner.jobs import StepResult
from cellpipe.storage.artifacts import LocalArtifactStore
from cellpipe.storage.records import RunStatus, StepStatus
from cellpipe.storage.serializers import deserialize


def load_output(workdir: Path, result: StepResult, name: str) -> object:
    ref = result.outputs[name]
    store = LocalArtifactStore(workdir / ".cellpipe" / "artifacts")
    return deserialize(ref.serializer, store.local_path(ref.digest))


IMPORTS = "import numpy as np\nimport pandas as pd"

# -- 1. the in-place change guard ------------------------------------------------------------

MAKERS = {
    "list": "data = [1, 2, 3]",
    "ndarray": "data = np.arange(100_000, dtype=np.float64)",
    "dataframe": "data = pd.DataFrame({'a': np.arange(50), 'b': ['x'] * 50})",
    "dict": "data = {'rows': np.arange(10), 'name': 'd'}",
}
CHANGES = {
    "list": "helper = getattr(data, 'append')\nhelper(4)",
    "ndarray": "view = data[10:20]\nview[0] = -1.0",
    "dataframe": "frame = data\nframe.loc[3, 'a'] = 99",
    "dict": "rows = data['rows']\nrows[0] = 7",
}
READS = {
    "list": "total = sum(data) + len(data)",
    "ndarray": "total = float(data.sum()) + float(data[10:20].mean())",
    # reads that consolidate blocks and fill pandas' caches must not count as changes
    "dataframe": "total = float(data.values[:, 0].sum()) + len(data.describe())"
    " + int(data['b'].is_unique) + int(data.index.is_monotonic_increasing)",
    "dict": "total = float(data['rows'].sum())",
}


def _guard_pipe(kind: str, middle: str, *, middle_outputs: tuple[str, ...] = ()):
    return pipeline(
        step("make", 4, MAKERS[kind], outputs=["data"]),
        step("use", 5, middle + "\nn = 1", inputs={"data": "make"}, outputs=["n", *middle_outputs]),
        step("later", 6, "m = len(data)", inputs={"data": "make"}, outputs=["m"]),
        imports=IMPORTS,
    )


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_a_change_the_analysis_missed_stops_the_step(runner: Runner, kind: str) -> None:
    outcome, _ = runner.run(_guard_pipe(kind, CHANGES[kind]))
    result = outcome.results["use"]
    assert result.status is StepStatus.FAILED
    assert result.error == (
        "step 'use' changed 'data' in place, but cellpipe did not see the change statically, "
        "so later steps would get the old value (in Jupyter they see the change)"
    )
    assert result.hint is not None
    assert "`data = data`" in result.hint
    assert "`data = data.copy()`" in result.hint
    assert f"{GUARD_ENV}=0" in result.hint
    assert not result.outputs
    assert outcome.results["later"].status is StepStatus.SUCCEEDED  # independent branch


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_reading_is_not_a_change(runner: Runner, kind: str) -> None:
    outcome, _ = runner.run(_guard_pipe(kind, READS[kind]))
    assert outcome.status is RunStatus.SUCCEEDED, outcome.failed


def test_a_step_that_outputs_the_value_is_not_guarded(runner: Runner) -> None:
    outcome, _ = runner.run(_guard_pipe("list", "data.append(4)", middle_outputs=("data",)))
    assert outcome.status is RunStatus.SUCCEEDED, outcome.failed


def test_the_guard_can_be_switched_off(runner: Runner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(GUARD_ENV, "0")
    outcome, _ = runner.run(_guard_pipe("ndarray", CHANGES["ndarray"]))
    assert outcome.status is RunStatus.SUCCEEDED, outcome.failed


def test_guarded_inputs_follow_notebook_order_metrics_and_outputs() -> None:
    pipe = pipeline(
        step("make", 4, "a = 1\nb = 2\nc = 3", outputs=["a", "b", "c"]),
        # notebook order: cell 9 comes after cell 5 even if it were scheduled first
        step("late", 9, "x = a + b", inputs={"a": "make", "b": "make"}, outputs=["x"]),
        step("early", 5, "y = a + b + c\nb = 5", inputs={"a": "make", "b": "make", "c": "make"},
             outputs=["b", "y"]),
        step("last", 10, "z = a", inputs={"a": "make"}, outputs=["z"]),
        metrics=[Metric(name="c", producer="make", cell=11, line=1)],
    )  # fmt: skip
    guarded = guarded_inputs(pipe)
    # early: a is read later from make; b it outputs itself; c is a metric of make
    assert guarded["early"] == ("a", "c")
    # late: a is read by `last` (cell 10); b is read by nobody after cell 9
    assert guarded["late"] == ("a",)
    assert "last" not in guarded
    assert "make" not in guarded


def test_random_state_is_never_guarded() -> None:
    pipe = pipeline(
        step("a", 4, "x = 1", outputs=["x", RANDOM_STATE]),
        step("b", 5, "y = x", inputs={"x": "a", RANDOM_STATE: "a"}, outputs=["y"]),
        step("c", 6, "z = x", inputs={"x": "a", RANDOM_STATE: "a"}, outputs=["z"]),
    )
    assert guarded_inputs(pipe) == {"b": ("x",)}


def test_fingerprints_of_content_not_identity() -> None:
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame({"a": [1.0, float("nan")], "s": ["x", "y"]})
    assert fingerprint(frame) == fingerprint(frame.copy())
    assert fingerprint(np.arange(4)) != fingerprint(np.arange(4).astype(np.int32))
    assert fingerprint(np.arange(4)) != fingerprint(np.arange(4).reshape(2, 2))
    changed = frame.copy()
    changed.loc[1, "s"] = "z"
    assert fingerprint(changed) != fingerprint(frame)
    assert fingerprint(lambda: 1) is None  # cannot be pickled: skipped, no error


def test_copy_on_write_arrays_are_compared_with_their_file(tmp_path: Path) -> None:
    import numpy as np

    path = tmp_path / "a.npy"
    np.save(path, np.arange(1 << 20, dtype=np.float64))
    untouched = np.load(path, mmap_mode="c")
    same = np.load(path, mmap_mode="c")
    written = np.load(path, mmap_mode="c")
    namespace = {"untouched": untouched, "same": same, "written": written}
    guard = Fingerprints(namespace, namespace)
    float(untouched.sum())
    same[5] = same[5]  # a written page with the same bytes is no change
    written[-1] = -1.0
    assert guard.changed(namespace) == ["written"]
    namespace["untouched"] = np.zeros(3)  # a rebinding the analysis missed
    assert guard.changed(namespace) == ["untouched", "written"]


# -- 2. global random state ------------------------------------------------------------------

RNG_IMPORTS = "import random\nimport numpy as np\nnp.random.seed(0)\nrandom.seed(0)"
RNG_CELLS = {
    "first": "a = np.random.rand(3).tolist()\nra = random.random()",
    "second": "b = np.random.randint(0, 1000, 4).tolist()\nrb = random.randint(0, 10**6)",
    "third": "c = np.random.normal(size=2).tolist()\nrc = random.choice(range(1000))",
}


def _single_process() -> dict[str, object]:
    """What one interpreter running the cells top to bottom prints (a fresh process)."""
    names = ["a", "ra", "b", "rb", "c", "rc"]
    code = "\n".join([RNG_IMPORTS, *RNG_CELLS.values()])
    code += f"\nimport json\nprint(json.dumps({{n: globals()[n] for n in {names!r}}}))"
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    return dict(json.loads(out))


def test_global_random_state_flows_from_step_to_step_in_notebook_order(runner: Runner) -> None:
    pipe = pipeline(
        step("first", 4, RNG_CELLS["first"], outputs=["a", "ra", RANDOM_STATE]),
        step("second", 5, RNG_CELLS["second"], inputs={RANDOM_STATE: "first"},
             outputs=["b", "rb", RANDOM_STATE]),
        step("third", 6, RNG_CELLS["third"] + f"\nbound = '{RANDOM_STATE}' in globals()",
             inputs={RANDOM_STATE: "second"}, outputs=["bound", "c", "rc"]),
        imports=RNG_IMPORTS,
    )  # fmt: skip
    outcome, _ = runner.run(pipe)
    assert outcome.status is RunStatus.SUCCEEDED, outcome.failed
    got = {}
    for name in ("first", "second", "third"):
        result = outcome.results[name]
        got.update({k: load_output(runner.workdir, result, k) for k in result.outputs})
    assert got.pop("bound") is False  # never bound in the user's namespace
    state = got.pop(RANDOM_STATE)
    assert isinstance(state, dict)
    assert set(state) == {"format", "random", "numpy"}
    assert outcome.results["first"].outputs[RANDOM_STATE].serializer == "json"
    assert got == _single_process()


def test_without_the_random_state_each_step_restarts_from_the_imports_cell(runner: Runner) -> None:
    # The contrast that makes the test above meaningful.
    pipe = pipeline(
        step("first", 4, RNG_CELLS["first"], outputs=["a"]),
        step("again", 5, RNG_CELLS["first"].replace("a =", "a2 ="), outputs=["a2"]),
        imports=RNG_IMPORTS,
    )
    outcome, _ = runner.run(pipe)
    a = load_output(runner.workdir, outcome.results["first"], "a")
    assert a == load_output(runner.workdir, outcome.results["again"], "a2")


# -- 9. classes defined in the notebook pickle in later steps ---------------------------------

CLASS_FUNCTIONS = textwrap.dedent(
    """
    class Box:
        def __init__(self, v):
            self.v = v
        def twice(self):
            return 2 * self.v * FACTOR

    FACTOR = 1
    """
)
CLASS_MAKE = textwrap.dedent(
    """
    from sklearn.base import BaseEstimator, TransformerMixin
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline

    class Doubler(BaseEstimator, TransformerMixin):
        def fit(self, x, y=None):
            return self
        def transform(self, x):
            return x * 2

    x = np.arange(20, dtype=float).reshape(10, 2)
    model = make_pipeline(Doubler(), LinearRegression()).fit(x, x[:, 0] + x[:, 1])
    box = Box(3)
    """
)
CLASS_SAVE = textwrap.dedent(
    """
    import pickle
    import joblib
    with open("model.pkl", "wb") as f:
        pickle.dump(model, f)
    joblib.dump(model, "model.joblib")
    with open("box.pkl", "wb") as f:
        pickle.dump(box, f)
    same_class = type(box) is Box
    twice = box.twice()
    """
)


def test_notebook_classes_pickle_in_a_later_step(runner: Runner) -> None:
    pipe = pipeline(
        step("make", 4, CLASS_MAKE, outputs=["box", "model"]),
        step("save", 5, CLASS_SAVE, inputs={"box": "make", "model": "make"},
             outputs=["same_class", "twice"]),
        imports="import numpy as np",
        functions=CLASS_FUNCTIONS,
    )  # fmt: skip
    outcome, _ = runner.run(pipe)
    assert outcome.status is RunStatus.SUCCEEDED, outcome.failed
    save = outcome.results["save"]
    assert load_output(runner.workdir, save, "same_class") is True  # the functions cell's Box
    assert load_output(runner.workdir, save, "twice") == 6
    # A fresh process where the classes are defined again (as a notebook would) loads them.
    check = "\n".join(
        [
            "import numpy as np",
            CLASS_FUNCTIONS,
            CLASS_MAKE.split("x = np.arange")[0],
            "import pickle, joblib",
            "model = pickle.load(open('model.pkl', 'rb'))",
            "again = joblib.load('model.joblib')",
            "box = pickle.load(open('box.pkl', 'rb'))",
            "x = np.ones((1, 2))",
            "print(type(model[0]).__name__, round(float(model.predict(x)[0]), 6),",
            "      round(float(again.predict(x)[0]), 6), box.v)",
        ]
    )
    out = subprocess.run(
        [sys.executable, "-c", check],
        cwd=runner.workdir,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert out == ["Doubler", "2.0", "2.0", "3"]


# -- 10. figures that cannot be rendered ------------------------------------------------------

BAD_FIGURE = (
    "import matplotlib.pyplot as plt\n"
    "fig, ax = plt.subplots()\n"
    "ax.set_title(r'$\\undefinedcommand{x}$')\n"  # mathtext fails only when drawn
)


def _stderr_text(result: StepResult) -> str:
    assert result.notebook_path is not None
    nb = json.loads(Path(result.notebook_path).read_text())
    return "".join(
        out.get("text", "")
        for cell in nb["cells"]
        for out in cell["outputs"]
        if out.get("name") == "stderr"
    )


def test_a_figure_that_cannot_be_rendered_is_a_warning(runner: Runner) -> None:
    pipe = pipeline(step("plot", 4, BAD_FIGURE + "done = True", outputs=["done"]))
    outcome, _ = runner.run(pipe)
    result = outcome.results["plot"]
    assert result.status is StepStatus.SUCCEEDED, result.error
    assert result.log_path is not None
    log = Path(result.log_path).read_text()
    assert "[cellpipe] warning: figure 1 could not be rendered: ValueError" in log
    assert "cellpipe/runner" not in log  # no traceback from cellpipe's capture code
    assert "[cellpipe] warning: figure 1 could not be rendered" in _stderr_text(result)


def test_a_figure_error_never_hides_the_cells_own_error(runner: Runner) -> None:
    pipe = pipeline(step("plot", 4, BAD_FIGURE + "1 / 0\ndone = True", outputs=["done"]))
    outcome, _ = runner.run(pipe)
    result = outcome.results["plot"]
    assert result.status is StepStatus.FAILED
    assert result.error == "ZeroDivisionError: division by zero (train.ipynb, cell 4, line 4)"
    assert result.log_path is not None
    assert "figure 1 could not be rendered" in Path(result.log_path).read_text()


def test_the_pod_runtime_renders_figures_the_same_way(capsys: pytest.CaptureFixture[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from cellpipe.kfp import runtime

    namespace: dict[str, object] = {}
    fragments = runtime._cp_run_cell(4, BAD_FIGURE + "x = 1", namespace, "nb.ipynb")
    assert namespace["x"] == 1
    assert not any("<img" in f for f in fragments)
    assert "figure 1 could not be rendered" in capsys.readouterr().err


# -- 8. files written --------------------------------------------------------------------------

WRITES = textwrap.dedent(
    """
    import os
    open("w.txt", "w").write("1")
    open("a.txt", "a").write("1")
    with open("x.bin", "xb") as f:
        f.write(b"1")
    os.close(os.open("flags.txt", os.O_WRONLY | os.O_CREAT, 0o644))
    open("tmp.txt", "w").close()
    os.remove("tmp.txt")
    text = open("input.txt").read() + open("w.txt").read()
    """
)


def test_files_written_are_reported_relative_to_the_workspace(runner: Runner) -> None:
    (runner.workdir / "input.txt").write_text("0")
    outcome, _ = runner.run(pipeline(step("io", 4, WRITES, outputs=["text"])))
    result = outcome.results["io"]
    assert result.status is StepStatus.SUCCEEDED, result.error
    assert result.files_written == ("a.txt", "flags.txt", "w.txt", "x.bin")
    assert result.files_read == ("input.txt", "w.txt")
    assert result.notebook_path is not None
    meta = json.loads(Path(result.notebook_path).read_text())["metadata"]["cellpipe"]
    assert meta["files_written"] == ["a.txt", "flags.txt", "w.txt", "x.bin"]


class _Artifact:
    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.metadata: dict[str, object] = {}


def test_the_pod_runtime_carries_the_random_state(tmp_path: Path) -> None:
    import random

    import numpy as np

    from cellpipe.kfp import runtime

    saved = random.getstate(), np.random.get_state()
    state_file = tmp_path / "state"
    values: dict[str, object] = {}
    try:
        for index, (name, cell) in enumerate(RNG_CELLS.items()):
            outputs = {f"o{k}": k for k in ("a", "ra", "b", "rb", "c", "rc") if f"{k} =" in cell}
            arguments: dict[str, object] = {key: _Artifact(tmp_path / key) for key in outputs}
            inputs = {}
            if index:
                inputs["rs_in"] = RANDOM_STATE
                arguments["rs_in"] = _Artifact(state_file)
            if index < 2:
                outputs["rs_out"] = RANDOM_STATE
                arguments["rs_out"] = _Artifact(tmp_path / f"state{index}")
            # every pod starts from its own interpreter state: scramble it first
            random.seed(12345)
            np.random.seed(12345)
            spec = {
                "step": name, "notebook": "nb.ipynb", "image": "python",
                "preamble": [[1, RNG_IMPORTS]], "cells": [[4 + index, cell]],
                "parameters": {}, "inputs": inputs, "outputs": outputs,
                "metrics": [], "metrics_key": None, "report_key": None,
            }  # fmt: skip
            runtime.run_step(spec, arguments)
            for key, variable in outputs.items():
                artifact = arguments[key]
                assert isinstance(artifact, _Artifact)
                if variable == RANDOM_STATE:
                    assert artifact.metadata["format"] == "json"
                    state_file = Path(artifact.path)
                else:
                    values[variable] = runtime._cp_load(artifact.path)
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
    assert values == _single_process()
