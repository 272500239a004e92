"""The `cellpipe` entry point: command table, lazy registration and the console script's exit."""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cellpipe.cli.main import COMMAND_MODULES, COMMANDS, build_parser, command_of

pytestmark = pytest.mark.e2e


def _registered(module_name: str) -> set[str]:
    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers()
    importlib.import_module(module_name).register(subparsers, [])
    return set(subparsers.choices)


def test_the_command_table_matches_what_each_module_registers() -> None:
    """A command line naming one command imports only its module: the table must be right."""
    by_module = {m: {c for c, mod in COMMAND_MODULES.items() if mod == m} for m in COMMANDS}
    for module_name in COMMANDS:
        assert _registered(module_name) == by_module[module_name], module_name
    assert set(COMMAND_MODULES.values()) == set(COMMANDS)


def test_a_named_command_builds_only_its_parser_and_help_lists_every_command() -> None:
    def commands(parser: argparse.ArgumentParser) -> set[str]:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return set(action.choices)

    assert commands(build_parser("why")) == {"runs", "show", "why"}
    assert commands(build_parser(None)) == set(COMMAND_MODULES)
    assert command_of(["--debug", "run", "nb.ipynb"]) == "run"
    assert command_of(["--version"]) is None
    assert command_of(["nosuch", "x"]) is None
    assert command_of(["--", "run"]) is None


def _entry(*args: str, prelude: str = "") -> subprocess.CompletedProcess[str]:
    code = f"{prelude}from cellpipe.cli.main import entry; entry()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
    )


def test_the_console_script_flushes_output_and_returns_the_exit_status(examples: Path) -> None:
    ok = _entry("check", str(examples / "diamond" / "diamond.ipynb"), "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["ok"] is True  # the whole document, flushed before _exit
    bad = _entry("check", str(examples / "mistakes" / "mistakes.ipynb"))
    assert bad.returncode == 2
    assert "error" in bad.stdout + bad.stderr


def test_the_console_script_still_runs_atexit_handlers() -> None:
    done = _entry("--version", prelude="import atexit; atexit.register(print, 'handler ran'); ")
    assert done.returncode == 0
    assert done.stdout.splitlines() == ["cellpipe 0.1.0", "handler ran"]


def test_python_dash_m_cellpipe_is_the_console_script(repo_root: Path, tmp_path: Path) -> None:
    """`python -m cellpipe` gives the console script's output and exit status (issue 11)."""
    script = Path(sys.executable).parent / "cellpipe"
    wine = repo_root / "examples" / "wine" / "wine.ipynb"
    codes = []
    for args in (["check", str(wine), "--json"], ["check", str(tmp_path / "none.ipynb")]):
        by_module = subprocess.run(
            [sys.executable, "-m", "cellpipe", *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
        by_script = subprocess.run(
            [str(script), *args], capture_output=True, text=True, timeout=120, cwd=tmp_path
        )
        assert by_module.returncode == by_script.returncode, by_module.stderr
        assert by_module.stdout == by_script.stdout
        assert by_module.stderr == by_script.stderr
        codes.append(by_module.returncode)
        if args[-1] == "--json":
            assert json.loads(by_module.stdout)["ok"] is True
    assert codes == [0, 2]
    usage = subprocess.run(
        [sys.executable, "-m", "cellpipe", "nosuch"], capture_output=True, text=True, timeout=120
    )
    assert usage.returncode == 2
    assert usage.stderr.startswith("usage: cellpipe ")
