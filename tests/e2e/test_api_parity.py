"""The Python API has the CLI's words: each function returns the command's --json document
(`to_dict`), shows itself as text and HTML, and the CLI calls the same function (issue 11)."""

from __future__ import annotations

import json
import socket
import threading
import urllib.request
from pathlib import Path
from typing import Any

import nbformat
import pytest
from kernel_helpers import write_kernel_spec
from run_helpers import summary, write_notebook

import cellpipe
from cellpipe.views.format import dumps

pytestmark = pytest.mark.e2e

API = ("check", "runs", "show", "compare", "why", "logs", "lineage", "models", "compile", "serve")


def _plain(document: dict[str, Any]) -> Any:
    """The document as the CLI prints it (strict JSON, tuples as lists)."""
    return json.loads(dumps(document))


def test_dir_lists_the_whole_api() -> None:
    names = dir(cellpipe)
    for name in (*API, "run", "load", "restore", "register_model", "load_pipeline"):
        assert name in names
        assert name in cellpipe.__all__
        assert callable(getattr(cellpipe, name))


@pytest.mark.slow
def test_each_function_returns_its_commands_json_document(
    run_cli: Any, project: Path, tmp_path: Path
) -> None:
    first = summary(run_cli("run", project, "--json").out)["run_id"]
    second = summary(run_cli("run", project, "-p", "A=2", "--json").out)["run_id"]

    checked = cellpipe.check(project)
    assert checked.ok
    assert _plain(checked.to_dict()) == run_cli("check", project, "--json").json()
    assert "<svg" in checked._repr_html_()

    listed = cellpipe.runs()
    assert _plain(listed.to_dict()) == run_cli("runs", "--json").json()
    assert [r["run_id"] for r in listed.runs] == [second, first]
    frame = listed.to_pandas()
    assert list(frame["A"]) == [2, 1]
    assert "total" in frame.columns

    shown = cellpipe.show(second)
    assert _plain(shown.to_dict()) == run_cli("show", second, "--json").json()
    assert list(shown.to_pandas()["step"]) == ["a", "b", "c", "d"]
    assert "<table" in shown._repr_html_()

    compared = cellpipe.compare(first, second)
    assert _plain(compared.to_dict()) == run_cli("compare", first, second, "--json").json()
    assert compared.to_pandas().loc[("parameters", "A"), "differs"]

    why = cellpipe.why(second, "a")
    assert _plain(why.to_dict()) == run_cli("why", second, "a", "--json").json()
    assert "parameter A changed" in repr(why)

    log = cellpipe.logs(second, "d")
    assert _plain(log.to_dict()) == run_cli("logs", second, "d", "--json").json()
    assert "total" in log.text

    graph = cellpipe.lineage(second)
    assert _plain(graph.to_dict()) == run_cli("lineage", second, "--json").json()
    assert "<svg" in graph._repr_html_()
    assert graph.text() == run_cli("lineage", second).out

    cellpipe.register_model({"w": 1}, "weights", project=project.parent)
    models = cellpipe.models()
    assert _plain(models.to_dict()) == run_cli("models", "list", "--json").json()
    assert list(models.to_pandas()["name"]) == ["weights"]
    version = cellpipe.models("weights")
    assert _plain(version.to_dict()) == run_cli("models", "show", "weights", "--json").json()

    yaml_file = tmp_path / "nb.yaml"
    compiled = cellpipe.compile(project, yaml_file)
    assert yaml_file.read_text() == compiled.text
    cli = run_cli("compile", project, "-o", tmp_path / "cli.yaml", "--json").json()
    assert {k: v for k, v in _plain(compiled.to_dict()).items() if k != "output"} == {
        k: v for k, v in cli.items() if k != "output"
    }


def test_show_lists_displayed_outputs_and_files_written(run_cli: Any, tmp_path: Path) -> None:
    notebook = write_notebook(
        tmp_path / "shown",
        [
            (["imports"], "from IPython.display import HTML, display"),
            (
                ["step:report"],
                'display(HTML("<b>hello</b>"))\n'
                'with open("out.txt", "w") as f:\n    f.write("x")\n'
                "n = 1",
            ),
            (["step:read"], 'text = open("out.txt").read() * n'),
        ],
    )
    result = run_cli("run", notebook, "--json")
    assert result.code == 0, result.err
    run_id = summary(result.out)["run_id"]
    document = run_cli("show", run_id, "--json", "--project", notebook.parent).json()
    steps = {s["step"]: s for s in document["steps"]}
    assert steps["report"]["displayed"] == {"text/html": 1}
    assert [f["file"] for f in steps["report"]["files_written"]] == ["out.txt"]
    assert steps["read"]["displayed"] == {}
    assert steps["read"]["files_written"] == []
    text = run_cli("show", run_id, "--project", notebook.parent).out
    assert "1 text/html" in text
    assert "out.txt" in text


def _port_is_free(port: int) -> bool:
    """Whether a new server could listen on ``port`` (as servers do: SO_REUSEADDR, so a
    closed connection's TIME_WAIT does not count; a listening socket still does)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.slow
def test_serve_in_the_background_and_stop_frees_the_port(project: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
    (project.parent / ".cellpipe").mkdir()  # a project that never ran
    cellpipe.register_model(model, "tiny", input_example=[[0.5]], project=project.parent)
    before = set(threading.enumerate())
    with cellpipe.serve("tiny", project=project.parent, grpc_port=0) as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert server.running
        assert server.to_dict()["models"][0]["name"] == "tiny"
        assert server.to_dict()["grpc"] == server.grpc
        with urllib.request.urlopen(f"{server.url}/v2/health/ready", timeout=5) as response:
            assert response.status == 200
        import tritonclient.grpc as grpcclient

        assert server.grpc is not None
        assert server.grpc.startswith("127.0.0.1:")
        client = grpcclient.InferenceServerClient(server.grpc)
        try:
            assert client.is_model_ready("tiny")
        finally:
            client.close()
        port = server.port
        assert not _port_is_free(port)
        assert "tiny:1" in repr(server)
        assert "<table" in server._repr_html_()
    assert not server.running
    assert _port_is_free(port)
    assert set(threading.enumerate()) <= before
    server.stop()  # idempotent


@pytest.mark.slow
def test_a_real_kernel_shows_runs_and_the_pipeline_as_html(
    run_cli: Any, project: Path, tmp_path: Path
) -> None:
    import os

    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient

    assert run_cli("run", project, "--json").code == 0
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import cellpipe\ncellpipe.runs()"),
        nbformat.v4.new_code_cell(f"cellpipe.load_pipeline({project.name!r})"),
        nbformat.v4.new_code_cell("sorted(n for n in dir(cellpipe) if not n.startswith('_'))"),
    ]
    specs = KernelSpecManager(
        kernel_dirs=[str(write_kernel_spec(tmp_path))], ensure_native_kernel=False
    )
    client = NotebookClient(
        nb,
        km=AsyncKernelManager(kernel_name="python3", kernel_spec_manager=specs),
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(project.parent)}},
    )
    env = {**os.environ, "JUPYTER_PLATFORM_DIRS": "1"}
    with client.setup_kernel(cwd=str(project.parent), env=env, cleanup_kc=True):
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
    runs_html = nb.cells[0].outputs[0]["data"]["text/html"]
    assert "<table" in runs_html
    assert "1 run" in runs_html
    pipeline = nb.cells[1].outputs[0]["data"]
    assert "<svg" in pipeline["text/html"]
    assert "<table" in pipeline["text/html"]
    assert pipeline["text/plain"].startswith("<cellpipe.Pipeline")
    names = nb.cells[2].outputs[0]["data"]["text/plain"]
    for name in API:
        assert f"'{name}'" in names


def test_check_reports_definition_errors_in_its_result(run_cli: Any, tmp_path: Path) -> None:
    notebook = write_notebook(
        tmp_path / "bad",
        [(["step:a"], "x = undefined_name"), (["step:<b>"], "y = x")],
    )
    result = cellpipe.check(notebook)
    assert not result.ok
    assert result.errors
    cli = run_cli("check", notebook, "--json")
    assert cli.code == 2
    assert _plain(result.to_dict()) == cli.json()
    page = result._repr_html_()
    assert "<b>" not in page
    assert "<table" in page
    assert "error" in repr(result)

    missing = cellpipe.check(tmp_path / "nb.ipnb")
    assert not missing.ok
    assert missing.errors[0]["code"] == "no-such-notebook"
    assert _plain(missing.to_dict()) == run_cli("check", tmp_path / "nb.ipnb", "--json").json()
