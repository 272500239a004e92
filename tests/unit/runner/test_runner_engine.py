"""The execution engine end to end: scheduler + executor + step process, fork and spawn."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest
from runner_testkit import Runner, pipeline, step

from cellpipe.runner import StepResult
from cellpipe.runner.events import (
    RunFinished,
    RunStarted,
    StepCached,
    StepCancelled,
    StepFailed,
    StepSkipped,
    StepStarted,
    StepSucceeded,
)
from cellpipe.storage.artifacts import LocalArtifactStore
from cellpipe.storage.records import RunStatus, StepStatus
from cellpipe.storage.serializers import deserialize


def load_output(workdir: Path, result: StepResult, name: str) -> object:
    ref = result.outputs[name]
    store = LocalArtifactStore(workdir / ".cellpipe" / "artifacts")
    return deserialize(ref.serializer, store.local_path(ref.digest))


def notebook_outputs(result: StepResult) -> list[dict]:
    assert result.notebook_path is not None
    nb = nbformat.read(result.notebook_path, as_version=4)
    nbformat.validate(nb)
    return [out for cell in nb.cells for out in cell.get("outputs", [])]


# Upper bounds for a loaded machine (load average 8 on 2 cores), never expected durations: a
# test waits for a state (a file written, a process gone), and only a broken run hits them.
BOUND_S = 300.0


def wait_for_file(path: Path, timeout: float = BOUND_S, stop: threading.Event | None = None) -> str:
    """Wait until ``path`` has content; give up at the bound or when ``stop`` is set."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not (stop is not None and stop.is_set()):
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.01)
    raise AssertionError(f"{path} never appeared")


class WhenWritten:
    """Act (in a thread) once the step processes wrote files that prove they run.

    It waits for the files with no time limit but the bound, and stops waiting as soon as
    the test is done with it (`stop`), so a run that ends early never leaves it behind.
    """

    def __init__(self, *files: Path, then: Callable[[list[str]], None]) -> None:
        self.files = files
        self.then = then
        self.contents: list[str] = []
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for path in self.files:
                self.contents.append(wait_for_file(path, stop=self.done))
            self.then(self.contents)
        except BaseException as exc:  # reported by `stop`, in the test's thread
            self.error = exc

    def stop(self) -> None:
        self.done.set()
        self.thread.join()
        if self.error is not None:
            raise AssertionError(f"the steps never got there: {self.error}")


def _ctrl_c(_contents: list[str]) -> None:
    import _thread

    _thread.interrupt_main()  # what Ctrl-C in a terminal does to the runner


def ctrl_c_after(*files: Path) -> WhenWritten:
    """Press Ctrl-C once ``files`` were written by the steps."""
    return WhenWritten(*files, then=_ctrl_c)


def test_values_flow_between_steps_and_mutation_is_seen_downstream(runner: Runner) -> None:
    pipe = pipeline(
        step("a", 4, "items = [1]", outputs=["items"]),
        step("b", 5, "items.append(2)", inputs={"items": "a"}, outputs=["items"]),
        step("c", 6, "total = sum(items)\nseen = list(items)", inputs={"items": "b"},
             outputs=["seen", "total"]),
    )  # fmt: skip
    outcome, sink = runner.run(pipe)
    assert outcome.status is RunStatus.SUCCEEDED
    assert load_output(runner.workdir, outcome.results["c"], "seen") == [1, 2]
    assert load_output(runner.workdir, outcome.results["c"], "total") == 3
    assert load_output(runner.workdir, outcome.results["a"], "items") == [1]
    kinds = [type(e) for e in sink.events]
    assert kinds[0] is RunStarted
    assert kinds[-1] is RunFinished
    assert [e.step for e in sink.of_type(StepSucceeded)] == ["a", "b", "c"]


def test_a_step_cannot_see_a_variable_it_did_not_declare(runner: Runner) -> None:
    pipe = pipeline(
        step("a", 4, "secret = 42\npublic = 1", outputs=["public"]),
        step("b", 7, "x = public + 1\ny = secret", inputs={"public": "a"}, outputs=["y"]),
    )
    outcome, sink = runner.run(pipe)
    result = outcome.results["b"]
    assert result.status is StepStatus.FAILED
    assert result.error == ("NameError: name 'secret' is not defined (train.ipynb, cell 7, line 2)")
    assert result.traceback is not None
    assert 'File "train.ipynb [cell 7]", line 2' in result.traceback
    assert "y = secret" in result.traceback
    assert "cellpipe/runner" not in result.traceback
    assert outcome.status is RunStatus.FAILED
    failed = sink.of_type(StepFailed)
    assert [e.step for e in failed] == ["b"]
    assert failed[0].log_path is not None
    assert "NameError" in Path(failed[0].log_path).read_text()


def test_functions_and_classes_from_the_notebook_pass_between_steps(runner: Runner) -> None:
    functions = (
        "def double(v):\n    return 2 * v\n\n"
        "class Box:\n    def __init__(self, v):\n        self.v = v\n"
    )
    pipe = pipeline(
        step("a", 4, "box = Box(double(3))\nsquare = lambda v: v * v\n"
             "class Local:\n    k = 7\nlocal = Local()", outputs=["box", "local", "square"]),
        step("b", 5, "out = (box.v, square(box.v), local.k, type(box).__name__)",
             inputs={"box": "a", "square": "a", "local": "a"}, outputs=["out"]),
    )  # fmt: skip
    outcome, _ = runner.run(pipeline(*pipe.steps, functions=functions))
    assert outcome.status is RunStatus.SUCCEEDED, outcome.failed
    assert load_output(runner.workdir, outcome.results["b"], "out") == (6, 36, 7, "Box")


def test_parameters_arrive_as_values_never_as_code(runner: Runner) -> None:
    tricky = 'it\'s "quoted"\nand multi-line'
    pipe = pipeline(
        step("a", 4, "got = (TEXT, RATE * 2)", outputs=["got"], parameters=["RATE", "TEXT"]),
        params={"TEXT": "default", "RATE": 0.5},
    )
    outcome, _ = runner.run(pipe, params={"TEXT": tricky})
    assert load_output(runner.workdir, outcome.results["a"], "got") in (
        [tricky, 1.0],
        (tricky, 1.0),
    )


def test_failure_skips_descendants_and_independent_branch_finishes(runner: Runner) -> None:
    pipe = pipeline(
        step("bad", 4, "x = 1\nraise ValueError('broken data')", outputs=["x"]),
        step("child", 5, "y = x", inputs={"x": "bad"}, outputs=["y"]),
        step("grandchild", 6, "z = y", inputs={"y": "child"}),
        step("other", 7, "w = 1", outputs=["w"]),
        step("other2", 8, "v = w + 1", inputs={"w": "other"}),
    )
    outcome, sink = runner.run(pipe)
    statuses = {name: r.status for name, r in outcome.results.items()}
    assert statuses == {
        "bad": StepStatus.FAILED,
        "child": StepStatus.SKIPPED,
        "grandchild": StepStatus.SKIPPED,
        "other": StepStatus.SUCCEEDED,
        "other2": StepStatus.SUCCEEDED,
    }
    skipped = {e.step: e.reason for e in sink.of_type(StepSkipped)}
    assert skipped == {
        "child": "upstream step 'bad' failed",
        "grandchild": "upstream step 'bad' failed",
    }
    bad = outcome.results["bad"]
    assert bad.error == "ValueError: broken data (train.ipynb, cell 4, line 2)"
    assert bad.traceback is not None
    assert "[cell 4]" in bad.traceback
    assert "raise ValueError('broken data')" in bad.traceback
    assert "cellpipe/runner" not in bad.traceback
    assert "child.py" not in bad.traceback
    assert {e.step for e in sink.of_type(StepStarted)} == {"bad", "other", "other2"}
    finished = sink.of_type(RunFinished)[0]
    assert finished.status is RunStatus.FAILED
    assert finished.counts == {"failed": 1, "skipped": 2, "succeeded": 2}


def test_traceback_through_a_notebook_function_names_both_cells(runner: Runner) -> None:
    functions = (
        "def check(v):\n    if v < 0:\n        raise ValueError(f'negative: {v}')\n    return v\n"
    )
    pipe = pipeline(step("a", 9, "a = 1\ncheck(-a)"), functions=functions)
    outcome, _ = runner.run(pipe)
    result = outcome.results["a"]
    assert result.error == "ValueError: negative: -1 (train.ipynb, cell 2, line 3)"
    assert result.traceback is not None
    assert 'File "train.ipynb [cell 9]", line 2' in result.traceback
    assert 'File "train.ipynb [cell 2]", line 3, in check' in result.traceback


@pytest.mark.slow
def test_parallel_branches_overlap(runner: Runner) -> None:
    code = "import time\nstart = time.time()\ntime.sleep(0.5)\nend = time.time()"
    pipe = pipeline(
        step("left", 4, code, outputs=["end", "start"]),
        step("right", 5, code, outputs=["end", "start"]),
    )
    executor = runner.make_executor()
    try:
        outcome, _ = runner.run(pipe, jobs=2, executor=executor)
    finally:
        executor.close()
    assert outcome.status is RunStatus.SUCCEEDED
    left, right = outcome.results["left"], outcome.results["right"]
    l0, l1 = (load_output(runner.workdir, left, n) for n in ("start", "end"))
    r0, r1 = (load_output(runner.workdir, right, n) for n in ("start", "end"))
    # Each started before the other ended: they overlapped (proved by their own clocks, not
    # by how long the run took, which a loaded machine can stretch at will).
    assert l0 < r1  # type: ignore[operator]
    assert r0 < l1  # type: ignore[operator]


def test_jobs_one_runs_steps_one_at_a_time_in_order(fork_runner: Runner) -> None:
    code = "import time\nstart = time.time()\ntime.sleep(0.05)\nend = time.time()"
    pipe = pipeline(step("a", 4, code, outputs=["end", "start"]),
                    step("b", 5, code, outputs=["end", "start"]))  # fmt: skip
    outcome, sink = fork_runner.run(pipe, jobs=1)
    a_end = load_output(fork_runner.workdir, outcome.results["a"], "end")
    b_start = load_output(fork_runner.workdir, outcome.results["b"], "start")
    assert a_end <= b_start  # type: ignore[operator]
    assert [type(e).__name__ for e in sink.events if not hasattr(e, "text")] == [
        "RunStarted", "StepStarted", "StepSucceeded", "StepStarted", "StepSucceeded",
        "RunFinished",
    ]  # fmt: skip


@pytest.mark.slow
def test_kill_9_of_a_step_process_is_a_failed_step(runner: Runner) -> None:
    pid_file = runner.workdir / "pid.txt"
    pipe = pipeline(
        step("victim", 4, "import os, time\nopen('pid.txt', 'w').write(str(os.getpid()))\n"
             "time.sleep(60)", outputs=[]),
        step("after", 5, "z = 1", after=["victim"]),
        step("free", 6, "w = 1"),
    )  # fmt: skip

    killer = WhenWritten(pid_file, then=lambda pid: os.kill(int(pid[0]), signal.SIGKILL))
    try:
        outcome, _ = runner.run(pipe)
    finally:
        killer.stop()
    victim = outcome.results["victim"]
    assert victim.status is StepStatus.FAILED
    assert victim.error == "step process died from SIGKILL (signal 9)"
    assert victim.hint is not None
    assert "out-of-memory killer" in victim.hint
    assert outcome.results["after"].status is StepStatus.SKIPPED
    assert outcome.results["free"].status is StepStatus.SUCCEEDED


def test_a_segfault_is_named_as_a_crash_not_a_kill(runner: Runner) -> None:
    """Issue 10, item 10: SIGSEGV was explained as "kill -9 or the out-of-memory killer"."""
    pipe = pipeline(
        step("crash", 4, "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)", outputs=[]),
        step("free", 5, "w = 1"),
    )
    outcome, _ = runner.run(pipe)
    crash = outcome.results["crash"]
    assert crash.status is StepStatus.FAILED
    assert crash.error == "step process died from SIGSEGV (signal 11)"
    assert crash.hint is not None
    assert crash.hint.startswith("it crashed with a segmentation fault")
    assert "kill -9" not in crash.hint
    assert "out-of-memory" not in crash.hint
    assert outcome.results["free"].status is StepStatus.SUCCEEDED


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _gone_soon(pid: int, timeout: float = 60.0) -> bool:
    """A process we did not start is reaped by init, a moment after it is killed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state == "Z":  # killed, waiting for init to reap it
            return True
        time.sleep(0.02)
    return False


@pytest.mark.slow
def test_ctrl_c_kills_every_step_process_and_reports_cancelled(runner: Runner) -> None:
    code = (
        "import os, subprocess, time\n"
        "child = subprocess.Popen(['sleep', '60'])\n"
        "open('pid-{n}.txt', 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
        "time.sleep(60)"
    )
    pipe = pipeline(
        step("one", 4, code.format(n=1)),
        step("two", 5, code.format(n=2)),
        step("three", 6, "x = 1", after=["one"]),
    )
    pids: list[int] = []
    interrupter = ctrl_c_after(runner.workdir / "pid-1.txt", runner.workdir / "pid-2.txt")
    executor = runner.make_executor()
    sink_events = None
    try:
        with pytest.raises(KeyboardInterrupt):
            _, sink_events = runner.run(pipe, executor=executor)
    finally:
        try:
            interrupter.stop()
        finally:
            pids = [int(p) for text in interrupter.contents for p in text.split()]
            # Step processes are reaped before the scheduler re-raises; what they started
            # (same process group) is killed with them.
            step_pids, grandchildren = pids[0::2], pids[1::2]
            steps_alive = [pid for pid in step_pids if _alive(pid)]
            grandchildren_alive = [pid for pid in grandchildren if not _gone_soon(pid)]
            executor.close()
            for pid in pids:  # whatever went wrong, nothing outlives the test
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
    assert len(pids) == 4
    assert steps_alive == []
    assert grandchildren_alive == []
    assert sink_events is None  # the run raised


@pytest.mark.slow
def test_ctrl_c_events(fork_runner: Runner) -> None:
    from runner_testkit import Orchestrator

    from cellpipe.runner import ForkServerExecutor, run_steps
    from cellpipe.runner.events import CollectingSink

    pipe = pipeline(
        step("slow", 4, "import time\nopen('go.txt', 'w').write('1')\ntime.sleep(60)"),
        step("next", 5, "x = 1", after=["slow"]),
    )
    sink = CollectingSink()
    interrupter = ctrl_c_after(fork_runner.workdir / "go.txt")
    with ForkServerExecutor() as executor:
        try:
            with pytest.raises(KeyboardInterrupt):
                run_steps(pipe, prepare=Orchestrator(pipe, fork_runner.workdir),
                          executor=executor, sink=sink)  # fmt: skip
        finally:
            interrupter.stop()
    assert [e.step for e in sink.of_type(StepCancelled)] == ["slow", "next"]
    assert sink.of_type(RunFinished)[0].status is RunStatus.CANCELLED


def test_cached_step_completes_at_once_and_feeds_downstream(runner: Runner) -> None:
    first, _ = runner.run(pipeline(step("a", 4, "x = 41", outputs=["x"])))
    cached = StepResult.cached("a", first.results["a"].outputs, reason="hit: same key")
    pipe = pipeline(
        step("a", 4, "raise RuntimeError('must not run')", outputs=["x"]),
        step("b", 5, "y = x + 1", inputs={"x": "a"}, outputs=["y"]),
    )
    outcome, sink = runner.run(pipe, cached={"a": cached})
    assert [(e.step, e.reason) for e in sink.of_type(StepCached)] == [("a", "hit: same key")]
    assert [e.step for e in sink.of_type(StepStarted)] == ["b"]
    assert load_output(runner.workdir, outcome.results["b"], "y") == 42


def test_only_selected_steps_run(fork_runner: Runner) -> None:
    pipe = pipeline(step("a", 4, "x = 1"), step("b", 5, "y = 2"))
    outcome, sink = fork_runner.run(pipe, steps=["b"])
    assert list(outcome.results) == ["b"]
    assert sink.of_type(RunStarted)[0].steps == ("b",)


def test_display_capture_into_a_valid_executed_notebook(runner: Runner) -> None:
    code = (
        "from IPython.display import HTML, display\n"
        "import matplotlib.pyplot as plt\n"
        "print('printed')\n"
        "display(HTML('<b>bold</b>'))\n"
        "plt.plot([1, 2, 3])\n"
        "{'last': 1}"
    )
    pipe = pipeline(step("show", 4, code), step("quiet", 5, "x = 1\nx;"))
    outcome, _ = runner.run(pipe)
    assert outcome.status is RunStatus.SUCCEEDED, outcome.failed
    outputs = notebook_outputs(outcome.results["show"])
    kinds = [o["output_type"] for o in outputs]
    assert kinds == ["stream", "display_data", "execute_result", "display_data"]
    assert outputs[0]["text"] == "printed\n"
    assert outputs[1]["data"]["text/html"] == "<b>bold</b>"
    assert outputs[2]["data"]["text/plain"] == "{'last': 1}"
    assert outputs[3]["data"]["image/png"].startswith("iVBOR")  # base64 of the PNG magic
    assert notebook_outputs(outcome.results["quiet"]) == []


def test_a_pipeline_that_needs_no_shell_never_imports_ipython(runner: Runner) -> None:
    """IPython (about 0.13 s) is only imported when the code can need it."""
    pipe = pipeline(
        step("a", 4, "x = 1\nfree = 'IPython' not in sys.modules", outputs=["free"]),
        imports="import sys",
    )
    outcome, _ = runner.run(pipe)
    assert outcome.status is RunStatus.SUCCEEDED, outcome.failed
    assert load_output(runner.workdir, outcome.results["a"], "free") is True


def test_a_shell_the_analysis_cannot_see_is_built_on_first_use(runner: Runner) -> None:
    """``display`` and ``get_ipython`` reached dynamically still work, bound to the step."""
    code = (
        "before = 'IPython' in sys.modules\n"
        "eval('display')('shown late')\n"
        "bound = eval('get_ipython')().user_ns is globals()\n"
        "print('done')"
    )
    pipe = pipeline(step("a", 4, code, outputs=["before", "bound"]), imports="import sys")
    outcome, _ = runner.run(pipe)
    assert outcome.status is RunStatus.SUCCEEDED, outcome.failed
    assert load_output(runner.workdir, outcome.results["a"], "before") is False
    assert load_output(runner.workdir, outcome.results["a"], "bound") is True
    outputs = notebook_outputs(outcome.results["a"])
    assert [o["output_type"] for o in outputs] == ["display_data", "stream"]
    assert outputs[0]["data"]["text/plain"] == "'shown late'"


def test_the_executed_notebook_lists_what_the_code_imported(runner: Runner) -> None:
    """Third-party modules the code imported, indirectly too; not cellpipe's own, not IPython."""
    (runner.workdir / "helper.py").write_text("def load():\n    import yaml\n    return 1\n")
    pipe = pipeline(
        step("a", 4, "import helper\nx = helper.load()"),
        step("b", 5, "eval('display')('shown')\ny = 2"),  # builds IPython on first use
        imports="import json",
    )
    outcome, _ = runner.run(pipe)
    assert outcome.status is RunStatus.SUCCEEDED, outcome.failed

    def imported(step_name: str) -> list[str]:
        path = outcome.results[step_name].notebook_path
        assert path is not None
        return json.loads(Path(path).read_text())["metadata"]["cellpipe"]["imported"]

    assert imported("a") == ["helper", "yaml"]
    assert imported("b") == []


def test_a_last_expression_builds_the_shell_before_the_step(runner: Runner) -> None:
    pipe = pipeline(
        step("a", 4, "ready = 'IPython' in sys.modules", outputs=["ready"]),
        step("b", 5, "x = 2\nx"),
        imports="import sys",
    )
    outcome, _ = runner.run(pipe)
    assert outcome.status is RunStatus.SUCCEEDED, outcome.failed
    assert load_output(runner.workdir, outcome.results["a"], "ready") is True
    outputs = notebook_outputs(outcome.results["b"])
    assert outputs[0]["data"]["text/plain"] == "2"


def test_plt_show_emits_the_figure_once(runner: Runner) -> None:
    code = "import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()\nprint('after')"
    outcome, _ = runner.run(pipeline(step("fig", 4, code)))
    outputs = notebook_outputs(outcome.results["fig"])
    assert [o["output_type"] for o in outputs] == ["display_data", "stream"]
    assert "image/png" in outputs[0]["data"]
    log = Path(outcome.results["fig"].log_path or "").read_text()
    assert "Warning" not in log


def test_error_is_in_the_executed_notebook_and_later_cells_are_unexecuted(runner: Runner) -> None:
    pipe = pipeline(step("bad", 4, "print('before')\n1 / 0"))
    outcome, _ = runner.run(pipe)
    outputs = notebook_outputs(outcome.results["bad"])
    assert [o["output_type"] for o in outputs] == ["stream", "error"]
    assert outputs[1]["ename"] == "ZeroDivisionError"


def test_stdout_and_stderr_go_to_the_log_and_stream_live(runner: Runner) -> None:
    code = (
        "import sys, os\nprint('out line')\nprint('err line', file=sys.stderr)\n"
        "os.system('echo from-fd')"
    )
    outcome, sink = runner.run(pipeline(step("talk", 4, code)))
    log = Path(outcome.results["talk"].log_path or "").read_text()
    assert "out line\n" in log
    assert "err line\n" in log
    assert "from-fd\n" in log
    assert "out line" in sink.output("talk")


def test_files_read_are_recorded_relative_to_the_workspace(runner: Runner) -> None:
    (runner.workdir / "data").mkdir()
    (runner.workdir / "data" / "in.csv").write_text("a,b\n1,2\n")
    (runner.workdir / "config.json").write_text("{}")
    code = (
        "import json\n"
        "rows = open('data/in.csv').read().splitlines()\n"
        "with open('written.txt', 'w') as f:\n    f.write('x')\n"
        "try:\n    open('missing.txt')\nexcept FileNotFoundError:\n    pass\n"
        "import numpy  # reading the installation does not count\n"
    )
    pipe = pipeline(
        step("read", 4, code), imports="import json\ncfg = json.load(open('config.json'))"
    )
    outcome, _ = runner.run(pipe)
    assert outcome.status is RunStatus.SUCCEEDED, outcome.failed
    assert outcome.results["read"].files_read == ("config.json", "data/in.csv")


def test_log_metric_is_reported_with_the_result(runner: Runner) -> None:
    code = (
        "import numpy as np\n"
        "from cellpipe.runner.context import log_metric\n"
        "log_metric('accuracy', np.float64(0.9))\n"
        "log_metric('n', 3)\n"
        "acc = 0.75"
    )
    pipe = pipeline(step("train", 4, code, outputs=["acc"]))
    outcome, sink = runner.run(pipe)
    result = outcome.results["train"]
    assert dict(result.metrics) == {"accuracy": 0.9, "n": 3}
    assert sink.of_type(StepSucceeded)[0].to_json()["metrics"] == {"accuracy": 0.9, "n": 3}


def test_magics_work_and_pip_is_not_run(runner: Runner) -> None:
    code = (
        "%pip install definitely-not-a-real-package-xyz\n"
        "%matplotlib inline\n"
        "%time total = sum(range(10))\n"
        "!echo hi from the shell\n"
        "lines = !echo captured\n"
        "result = (total, list(lines))"
    )
    pipe = pipeline(step("magic", 4, code, outputs=["result"]))
    outcome, _ = runner.run(pipe)
    result = outcome.results["magic"]
    assert result.status is StepStatus.SUCCEEDED, result.error
    assert load_output(runner.workdir, result, "result") == (45, ["captured"])
    text = "".join(o.get("text", "") for o in notebook_outputs(result))
    assert "hi from the shell" in text
    assert "Wall time" in text
    assert "not run" in text
    assert "definitely-not-a-real-package-xyz" in text


def test_missing_output_names_the_step_and_variable(runner: Runner) -> None:
    pipe = pipeline(step("a", 4, "if False:\n    x = 1", outputs=["x"]))
    outcome, _ = runner.run(pipe)
    result = outcome.results["a"]
    assert result.status is StepStatus.FAILED
    assert result.error == "step 'a' finished without defining 'x', which it must output"
    assert result.hint is not None


def test_unserializable_output_names_the_step_and_variable(runner: Runner) -> None:
    (runner.workdir / "f.txt").write_text("x")
    pipe = pipeline(step("load", 4, "handle = open('f.txt')", outputs=["handle"]))
    outcome, _ = runner.run(pipe)
    result = outcome.results["load"]
    assert result.status is StepStatus.FAILED
    assert result.error is not None
    assert "step 'load' output 'handle' is an open file" in result.error
    assert result.hint == "return its contents or a path instead"


def test_steps_run_in_the_notebook_folder_with_local_modules_importable(runner: Runner) -> None:
    (runner.workdir / "helpers.py").write_text("VALUE = 7\n")
    pipe = pipeline(step("a", 4, "import os, helpers\nwhere = os.getcwd()\nv = helpers.VALUE",
                         outputs=["v", "where"]))  # fmt: skip
    outcome, _ = runner.run(pipe)
    assert outcome.status is RunStatus.SUCCEEDED, outcome.failed
    assert load_output(runner.workdir, outcome.results["a"], "where") == str(runner.workdir)
    assert load_output(runner.workdir, outcome.results["a"], "v") == 7
    assert "helpers.py" in outcome.results["a"].files_read


def test_an_error_in_the_imports_cell_fails_every_step_with_its_cell(runner: Runner) -> None:
    pipe = pipeline(
        step("a", 4, "x = 1"), step("b", 5, "y = 2"), imports="import os\nimport nope_xyz"
    )
    outcome, _ = runner.run(pipe)
    for name in ("a", "b"):
        result = outcome.results[name]
        assert result.status is StepStatus.FAILED
        assert result.error == (
            "ModuleNotFoundError: No module named 'nope_xyz' (train.ipynb, cell 1, line 2)"
        )


def test_pipeline_metrics_values_are_reported(fork_runner: Runner) -> None:
    pipe = pipeline(step("a", 4, "import numpy as np\nacc = np.float32(0.5)\nname = 'm'",
                         outputs=["acc", "name"]))  # fmt: skip
    from runner_testkit import Orchestrator

    orchestrator = Orchestrator(pipe, fork_runner.workdir)
    job = orchestrator(pipe.steps[0], {})
    assert not isinstance(job, StepResult)
    import dataclasses

    from cellpipe.runner import ForkServerExecutor

    job = dataclasses.replace(job, metrics=("acc", "name"))
    with ForkServerExecutor() as executor:
        executor.submit(job)
        results: list[StepResult] = []
        while not results:
            results = executor.poll(5)
    assert dict(results[0].pipeline_metrics) == {"acc": 0.5, "name": "m"}


def test_in_process_executor_runs_steps_and_restores_the_process(
    inprocess_runner: Runner,
) -> None:
    import sys

    cwd = Path.cwd()
    main = sys.modules["__main__"]
    pipe = pipeline(
        step("a", 4, "x = [1]\nprint('hi')", outputs=["x"]),
        step("b", 5, "x.append(2)\ny = secret", inputs={"x": "a"}),
    )
    outcome, _ = inprocess_runner.run(pipe)
    assert outcome.results["a"].status is StepStatus.SUCCEEDED
    assert outcome.results["b"].error == (
        "NameError: name 'secret' is not defined (train.ipynb, cell 5, line 2)"
    )
    assert Path.cwd() == cwd
    assert sys.modules["__main__"] is main


def test_results_are_json_round_trippable(fork_runner: Runner) -> None:
    outcome, _ = fork_runner.run(pipeline(step("a", 4, "x = 1", outputs=["x"])))
    result = outcome.results["a"]
    assert StepResult.from_json(json.loads(json.dumps(result.to_json()))) == result


def test_a_warmed_fork_server_runs_jobs_and_one_never_used_is_killed_at_close(
    workdir: Path,
) -> None:
    from runner_testkit import Orchestrator

    from cellpipe.runner import ForkServerExecutor, StepJob, run_steps

    slow = pipeline(step("a", 4, "y = 1", outputs=["y"]), imports="import time\ntime.sleep(600)")
    job = Orchestrator(slow, workdir)(slow.step("a"), {})
    assert isinstance(job, StepJob)
    executor = ForkServerExecutor()
    executor.warm(job)
    started = time.perf_counter()
    executor.close()  # not waited for: it is still in its 600 s imports cell
    assert time.perf_counter() - started < 120  # a bound for a loaded machine, far below 600

    fast = pipeline(step("a", 4, "y = 1", outputs=["y"]), step("b", 5, "z = 2", outputs=["z"]))
    prepare = Orchestrator(fast, workdir)
    with ForkServerExecutor() as executor:
        executor.warm(prepare(fast.step("a"), {}))  # type: ignore[arg-type]
        outcome = run_steps(fast, prepare=prepare, executor=executor)
        assert len(executor._servers) == 1  # the warmed server ran both steps
    assert outcome.status is RunStatus.SUCCEEDED
