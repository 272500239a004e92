"""Fixtures for end-to-end CLI tests: run `cellpipe` in process on a copy of the examples."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cellpipe.cli.main import main


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


RunCli = Callable[..., CliResult]


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> RunCli:
    """Run `cellpipe ARGS...` in process and return its exit code, stdout and stderr."""

    def run(*args: str | Path) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code=code, out=captured.out, err=captured.err)

    return run


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The BASIC notebook (``nb.ipynb``) alone in a fresh project folder, the working directory.

    Test files that need another project define their own ``project`` fixture, which wins.
    """
    from run_helpers import BASIC, write_notebook

    folder = tmp_path / "proj"
    write_notebook(folder, BASIC)
    monkeypatch.chdir(folder)
    return folder / "nb.ipynb"


@pytest.fixture
def examples(repo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of examples/ in a temporary folder, which is also the working directory."""
    target = tmp_path / "examples"
    shutil.copytree(repo_root / "examples", target, ignore=shutil.ignore_patterns(".cellpipe"))
    monkeypatch.chdir(tmp_path)
    return target
