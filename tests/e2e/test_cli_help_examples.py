"""Every example in every `--help` runs on a copy of examples/wine (issue 11).

The examples are read from the parsers' epilogs (the lines under ``examples:``) and their
placeholders filled in: ``train.ipynb`` is wine.ipynb, ``RUN`` and ``wine-2026...`` are the
oldest runs (every step ran in them), a digest is a real one, ``/tmp/`` is the test's folder.
A ``| jq`` or ``> file`` tail is dropped. Each runs in process, in an order that gives it what
it needs (runs before `show`, registered versions before `models alias`). The ones that need
a server, a cluster or Docker are listed in `SKIPPED`, with the reason.
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
from pathlib import Path

import pytest

from cellpipe.cli.main import build_parser

pytestmark = pytest.mark.e2e

SKIPPED = {
    "cellpipe serve": "starts a model server that runs until stopped (tests/e2e/test_cli_serve.py)",
    "cellpipe submit": "needs a Kubeflow Pipelines API",
    "cellpipe ui": "starts the web UI, which runs until stopped (tests/e2e/test_cli_ui.py)",
    "cellpipe image train.ipynb -o build/ --build": "needs Docker",
    "cellpipe image --model wine@production -o build/wine --build": "needs Docker "
    "(tests/e2e/test_cli_image_model.py builds with a stand-in)",
    "cellpipe compile train.ipynb --image-from-context": "needs the image `image --build` made",
    "cellpipe snapshot changes": "wine's steps write no files, so there are no changes to show",
}

# Run in this order (the first matching prefix wins; anything else is phase 2).
PHASES = (
    ("cellpipe run", 1),
    ("cellpipe models register", 3),
    ("cellpipe models alias", 4),
    ("cellpipe models", 5),
    ("cellpipe doctor --repair", 6),
    ("cellpipe reproduce", 6),
    ("cellpipe check", 0),
    ("cellpipe graph", 0),
    ("cellpipe compile", 0),
    ("cellpipe image", 0),
    ("cellpipe config", 0),
)


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                found.extend(_parsers(sub))
    return found


def help_examples() -> list[str]:
    """Return the example command lines of every parser's help, without their comments."""
    lines: list[str] = []
    for parser in _parsers(build_parser(None)):
        inside = False
        for line in (parser.epilog or "").splitlines():
            if line.startswith("examples:"):
                inside = True
            elif inside and not line.strip():
                inside = False
            elif inside:
                command = re.split(r"\s{2,}", line.strip())[0]
                command = re.split(r" [|>] ", command)[0]
                if command not in lines:
                    lines.append(command)
    return lines


def _phase(line: str) -> int:
    return next((phase for prefix, phase in PHASES if line.startswith(prefix)), 2)


def _words(line: str, folder: Path, digest: str, oldest: list[str]) -> list[str]:
    words = shlex.split(line)[1:]
    runs = iter(oldest)
    filled = []
    for word in words:
        if word in ("train.ipynb", "pipeline.py"):
            word = str(folder / "wine.ipynb")
        elif word in ("RUN", "RUN1", "RUN2", "RUN3") or word.startswith("wine-2026"):
            word = next(runs)
        elif word == "STEP":
            word = "train_forest"
        elif word.startswith("sha256:"):
            word = digest
        elif word == "9f2c1a":
            word = digest.removeprefix("sha256:")[:6]
        elif word.startswith("/tmp/"):
            word = str(folder.parent / "out" / word.removeprefix("/tmp/"))
        filled.append(word)
    return filled


def test_the_examples_are_found_and_the_skipped_ones_exist() -> None:
    examples = help_examples()
    assert len(examples) > 60
    for prefix in SKIPPED:
        assert any(e.startswith(prefix) for e in examples), prefix


@pytest.mark.slow
def test_every_help_example_runs_on_the_wine_example(run_cli, repo_root, tmp_path, monkeypatch):
    folder = tmp_path / "wine"
    shutil.copytree(repo_root / "examples" / "wine", folder)
    monkeypatch.chdir(folder)
    examples = [e for e in help_examples() if e.startswith("cellpipe ")]
    runnable = [e for e in examples if not any(e.startswith(p) for p in SKIPPED)]
    digest, oldest = "", []
    for line in sorted(runnable, key=_phase):  # sorted() is stable: help order within a phase
        if _phase(line) >= 2 and not digest:
            oldest = [r["run_id"] for r in reversed(run_cli("runs", "--json").json()["runs"])]
            show = run_cli("show", oldest[0], "--json").json()
            split = next(s for s in show["steps"] if s["step"] == "split")
            digest = split["outputs"]["X_train"]["digest"]
        result = run_cli(*_words(line, folder, digest, oldest))
        assert result.code == 0, f"{line}\n{result.out[-2000:]}\n{result.err[-2000:]}"
