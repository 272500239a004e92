"""`cellpipe.run` in a real Jupyter kernel (nbclient + ipykernel): the live view (issue 11).

A driver notebook calls `cellpipe.run` on a small pipeline notebook beside it. The kernel runs
this interpreter (a kernel spec written to a temporary folder), with the same PYTHONPATH, so
it imports the cellpipe under test. What the front end receives is recorded message by
message: the live view is one ``display_data`` followed by ``update_display_data`` messages
with the same display id.
"""

from __future__ import annotations

import asyncio
import copy
import os
from pathlib import Path
from typing import Any

import nbformat
import pytest
from kernel_helpers import write_kernel_spec
from run_helpers import BASIC, write_notebook

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TIMEOUT_S = 240

SHOW = (
    ["step:show", "prev:d"],
    "from IPython.display import HTML, display\n"
    'display(HTML("<b>rich &amp; inline</b>"))\n'
    'for i in range(0, 101, 20):\n    print(f"\\r{i:3d}%", end="", flush=True)\nprint()',
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["JUPYTER_PLATFORM_DIRS"] = "1"
    env.pop("PYTEST_CURRENT_TEST", None)
    env.pop("PYTEST_XDIST_WORKER", None)
    return env


class _Recorder:
    """A NotebookClient that keeps every IOPub message it processes, in order."""

    def __init__(self, folder: Path, kernels: Path, cells: list[str]) -> None:
        from jupyter_client.kernelspec import KernelSpecManager
        from jupyter_client.manager import AsyncKernelManager
        from nbclient import NotebookClient

        recorded: list[dict[str, Any]] = []
        self.messages = recorded

        class Client(NotebookClient):  # type: ignore[misc]
            def process_message(self, msg: dict[str, Any], cell: Any, cell_index: int) -> Any:
                # A deep copy: nbclient rewrites an update's header when it applies it.
                recorded.append({"index": cell_index, **copy.deepcopy(msg)})
                return super().process_message(msg, cell, cell_index)

        self.nb = nbformat.v4.new_notebook()
        self.nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
        specs = KernelSpecManager(kernel_dirs=[str(kernels)], ensure_native_kernel=False)
        self.client = Client(
            self.nb,
            km=AsyncKernelManager(kernel_name="python3", kernel_spec_manager=specs),
            timeout=TIMEOUT_S,
            kernel_name="python3",
            resources={"metadata": {"path": str(folder)}},
            allow_errors=True,
        )
        self.folder = folder

    def of_cell(self, index: int) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["index"] == index]


def _outputs(recorder: _Recorder, index: int) -> list[tuple[str, str | None, dict[str, Any]]]:
    """(msg_type, display id, data) of a cell's display messages, in order."""
    found = []
    for msg in recorder.of_cell(index):
        kind = msg["header"]["msg_type"]
        if kind in ("display_data", "update_display_data"):
            content = msg["content"]
            found.append((kind, content.get("transient", {}).get("display_id"), content["data"]))
    return found


async def _run_cells(recorder: _Recorder, interrupt_when: Path | None = None) -> None:
    client = recorder.client
    async with client.async_setup_kernel(cwd=str(recorder.folder), env=_env(), cleanup_kc=True):
        for index, cell in enumerate(recorder.nb.cells):
            task = asyncio.ensure_future(client.async_execute_cell(cell, index))
            if interrupt_when is not None and index == 0:
                for _ in range(TIMEOUT_S * 10):  # until the step is asleep (or the cell ended)
                    if interrupt_when.exists() or task.done():
                        break
                    await asyncio.sleep(0.1)
                await client.km.interrupt_kernel()
            await task


def _execute(folder: Path, tmp_path: Path, cells: list[str], **kwargs: Any) -> _Recorder:
    recorder = _Recorder(folder, write_kernel_spec(tmp_path / "jupyter"), cells)
    asyncio.run(_run_cells(recorder, **kwargs))
    return recorder


def _printed(cell: Any) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o["output_type"] == "stream")


def test_the_live_view_is_one_display_updated_in_place(tmp_path: Path) -> None:
    folder = tmp_path / "proj"
    write_notebook(folder, [*BASIC[:-1], SHOW, BASIC[-1]])
    recorder = _execute(
        folder,
        tmp_path,
        [
            "import cellpipe\nprint(cellpipe.__file__)\n"
            'run = cellpipe.run("nb.ipynb", params={"A": 2})',
            "print(run.status, sorted(set(run.steps.values())))",
        ],
    )
    first, second = recorder.nb.cells
    assert [o["output_type"] for o in first.outputs if o["output_type"] == "error"] == []
    assert os.environ.get("PYTHONPATH", "").split(os.pathsep)[0] in _printed(first)
    assert _printed(second).strip() == "succeeded ['succeeded']"
    shown = _outputs(recorder, 0)
    live_id = shown[0][1]
    assert shown[0][0] == "display_data"
    assert live_id
    updates = [s for s in shown if s[1] == live_id]
    kinds = [kind for kind, _, _ in updates]
    assert kinds[0] == "display_data"
    assert set(kinds[1:]) == {"update_display_data"}
    assert len(updates) >= 3  # started, steps ran, final
    # The updates are in order: the steps' states only move forward, the last shows all done.
    final = updates[-1][2]
    assert "text/html" in final
    assert "<svg" in final["text/html"]
    for step in ("a", "b", "c", "d", "show"):
        assert f"✓ {step} succeeded" in final["text/plain"]
    done = [u[2]["text/plain"].count("succeeded") for u in updates]
    assert done == sorted(done)
    assert "100%" in final["text/html"]
    assert " 40%" not in final["text/html"]  # the progress line is one line, at its end
    # After the live view: the metrics, then the steps' rich outputs, inline.
    after = [data for kind, did, data in shown if did != live_id]
    assert any("metrics" in d.get("text/html", "") for d in after)
    assert any(d.get("text/html") == "<b>rich &amp; inline</b>" for d in after)
    # The notebook keeps the final state (nbclient applied the updates).
    html = [o for o in first.outputs if "text/html" in o.get("data", {})]
    assert "show succeeded" in html[0]["data"]["text/plain"]


def test_a_failed_run_shows_its_traceback_and_raises_or_returns(tmp_path: Path) -> None:
    folder = tmp_path / "proj"
    write_notebook(
        folder, [(["step:a"], "x = 1"), (["step:b"], "y = x / 0"), (["step:c"], "z = y")]
    )
    recorder = _execute(
        folder,
        tmp_path,
        [
            'import cellpipe\ncellpipe.run("nb.ipynb")',
            'run = cellpipe.run("nb.ipynb", raise_on_error=False)\nprint(run.status, run.steps)',
        ],
    )
    first, second = recorder.nb.cells
    errors = [o for o in first.outputs if o["output_type"] == "error"]
    assert [e["ename"] for e in errors] == ["RunFailedError"]
    assert "step 'b' failed: ZeroDivisionError" in errors[0]["evalue"]
    # The error shows as its message and hint, without cellpipe's own frames.
    shown = "\n".join(errors[0]["traceback"])
    assert "hint: fix the step and run again" in shown
    assert "api.py" not in shown
    live = next(o for o in first.outputs if "text/html" in o.get("data", {}))["data"]
    assert 'File "nb.ipynb [cell 2]", line 1' in live["text/plain"]
    assert "ZeroDivisionError" in live["text/html"]
    assert "nb.ipynb [cell 2]" in live["text/html"]
    assert not [o for o in second.outputs if o["output_type"] == "error"]
    assert _printed(second).strip() == ("failed {'a': 'cached', 'b': 'failed', 'c': 'skipped'}")


def test_interrupting_the_kernel_cancels_the_run(tmp_path: Path) -> None:
    folder = tmp_path / "proj"
    pid_file = folder / "step.pid"
    write_notebook(
        folder,
        [
            (["step:a"], "x = 1"),
            (
                ["step:slow", "prev:a"],
                "import os, time\n"
                f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
                "time.sleep(120)\ny = x",
            ),
        ],
    )
    recorder = _execute(
        folder,
        tmp_path,
        [
            "import os\nimport cellpipe\ntry:\n"
            '    cellpipe.run("nb.ipynb")\n'
            "except KeyboardInterrupt as exc:\n"
            "    report = exc.report\n"
            '    print("cancelled:", report.run.status.value, report.steps["slow"].status.value)\n'
            f"    pid = open({str(pid_file)!r}).read()\n"
            '    print("step process left:", os.path.exists("/proc/" + pid))\n'
            "    raise",
            'print("kernel still alive")',
        ],
        interrupt_when=pid_file,
    )
    first, second = recorder.nb.cells
    assert "cancelled: cancelled cancelled" in _printed(first)
    assert "step process left: False" in _printed(first)  # stopped by the cancel itself
    assert [o["ename"] for o in first.outputs if o["output_type"] == "error"] == ["RunCancelled"]
    live = next(o for o in first.outputs if "text/html" in o.get("data", {}))["data"]
    assert "■ slow cancelled" in live["text/plain"]
    assert _printed(second).strip() == "kernel still alive"
    # The step process was stopped (its process group killed and reaped by the runner).
    pid = int(pid_file.read_text())
    assert not Path(f"/proc/{pid}").exists()
