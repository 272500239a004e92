"""The CLI paper cuts of issue 11: exit statuses in every --help, "did you mean" for a
mistyped step (exit 2), plurals, a failing step's hint and traceback printed once, parameters
as columns in `runs`, `artifacts get -o DIR/`, `cellpipe config`."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from run_helpers import summary, write_notebook

from cellpipe.cli.main import build_parser

pytestmark = pytest.mark.e2e

CELLS = [
    (["imports"], "import cellpipe"),
    (["pipeline-parameters"], "RATE = 0.5\nDEPTH = 3"),
    (["step:load"], "rows = [1, 2, 3]"),
    (["step:train", "prev:load"], 'model = {"w": sum(rows) * RATE}\nprint("trained")'),
    (["step:score", "prev:train"], 'cellpipe.log_metric("acc", model["w"] / 7)'),
]


@pytest.fixture
def notebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "proj"
    path = write_notebook(folder, CELLS)
    monkeypatch.chdir(folder)
    return path


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield from _parsers(sub)


def test_every_help_documents_the_exit_statuses() -> None:
    parsers = list(_parsers(build_parser(None)))
    assert len(parsers) > 20
    for parser in parsers:
        text = parser.format_help()
        assert "exit status:\n  0    success" in text, parser.prog
        assert "2    a usage or definition error" in text, parser.prog
        assert text.count("exit status:") == 1, parser.prog


@pytest.mark.slow
def test_a_mistyped_step_is_a_usage_error_with_did_you_mean(run_cli, notebook) -> None:
    only = run_cli("run", notebook, "--only", "trian")
    assert only.code == 2
    assert "did you mean 'train'?" in only.err
    assert "cellpipe failed" not in only.err
    run_id = summary(run_cli("run", notebook, "--json").out)["run_id"]
    for words in (["why", run_id, "trian"], ["logs", run_id, "trian"]):
        result = run_cli(*words)
        assert result.code == 2, words
        assert "did you mean 'train'?" in result.err, words
        assert "cellpipe failed" not in result.err, words
    lineage = run_cli("lineage", run_id, "trian", "model")
    assert lineage.code == 2
    assert "did you mean 'train'?" in lineage.err


@pytest.mark.slow
def test_a_failing_step_shows_its_traceback_and_hint_once_and_1_step(run_cli, tmp_path) -> None:
    cells = [
        (["imports"], "import cellpipe"),
        (["step:only"], 'raise cellpipe.CellpipeError("bad rows", hint="drop the empty rows")'),
    ]
    path = write_notebook(tmp_path / "fails", cells)
    result = run_cli("run", path)
    assert result.code == 1
    both = result.out + result.err
    assert ": 1 step\n" in result.out
    assert "1 steps" not in both
    assert both.count("Traceback (most recent call last):") == 1, both
    assert both.count("hint: drop the empty rows") == 1, both
    assert "CellpipeError: bad rows (nb.ipynb, cell 2, line 1)" in result.err


@pytest.mark.slow
def test_runs_has_a_column_per_parameter_and_numbers_print_alike(run_cli, notebook) -> None:
    first = summary(run_cli("run", notebook, "--json").out)["run_id"]
    second = summary(run_cli("run", notebook, "-p", "RATE=0.25", "--json").out)["run_id"]
    lines = run_cli("runs").out.splitlines()
    header = lines[0].split()
    assert header[-3:] == ["DEPTH", "RATE", "metrics"]  # the order the run recorded
    row = {line.split()[0]: line.split() for line in lines[1:]}
    assert row[second][-3:-1] == ["3", "0.25"]
    assert row[first][-3:-1] == ["3", "0.5"]
    # 6 * 0.5 / 7 = 0.4285714...: the same digits in show, compare, runs and the run summary.
    assert re.search(r"\bacc +0\.428571\n", run_cli("show", first).out)
    assert re.search(r"\bacc +0\.428571 ", run_cli("compare", first, second).out)
    assert "acc=0.428571" in row[first][-1]
    assert "acc=0.428571" in run_cli("run", notebook).out


@pytest.mark.slow
def test_artifacts_get_into_a_folder_names_the_file_after_the_variable(run_cli, notebook) -> None:
    run_cli("run", notebook)
    got = run_cli("artifacts", "get", "latest", "load", "rows", "-o", "out/", "--json")
    assert got.code == 0, got.err
    written = Path("out") / "rows.json"
    assert got.json()["path"] == str(written)
    assert json.loads(written.read_text()) == [1, 2, 3]
    again = run_cli("artifacts", "get", "latest", "load", "rows", "-o", "out")  # exists now
    assert again.code == 1
    assert "out/rows.json exists" in again.err


def test_config_shows_each_setting_and_its_source_with_passwords_masked(
    run_cli, tmp_path, monkeypatch
) -> None:
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "cellpipe.toml").write_text('[storage]\nartifacts_url = "store"\n')
    monkeypatch.chdir(folder)
    monkeypatch.setenv("CELLPIPE_DB_URL", "postgresql://etl:hunter2@db.example.com/cellpipe")
    monkeypatch.delenv("CELLPIPE_S3_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    doc = run_cli("config", "--json").json()
    assert doc["project"] == str(folder.resolve())
    assert doc["settings"] == {
        "db_url": {
            "value": "postgresql://etl:***@db.example.com/cellpipe",
            "source": "environment variable CELLPIPE_DB_URL",
        },
        "artifacts_url": {"value": str(folder.resolve() / "store"), "source": "cellpipe.toml"},
        "s3_endpoint_url": {"value": None, "source": "default"},
    }
    text = run_cli("config").out
    assert "hunter2" not in text
    assert "environment variable CELLPIPE_DB_URL" in text

    (folder / "cellpipe.toml").write_text('[storge]\nartifacts_url = "store"\n')
    bad = run_cli("config")
    assert bad.code == 1
    assert "cellpipe.toml: unknown section(s) or top-level key(s): storge" in bad.err
    assert "only a [storage] table" in bad.err
