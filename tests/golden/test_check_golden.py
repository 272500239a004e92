"""`cellpipe check --json` on each example, compared exactly with tests/golden/check/<case>.json.

Machine-specific values are normalised before comparing: the notebook path becomes the path
relative to the repository root and installed package versions become "<version>". Rewrite
the files after a reviewed change with `pytest tests/golden --update-golden` (`make golden`).
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

import pytest

from cellpipe.cli.main import main

GOLDEN_DIR = Path(__file__).parent / "check"

CASES = {
    "wine": "examples/wine/wine.ipynb",
    "diamond": "examples/diamond/diamond.ipynb",
    "diamond_py": "examples/diamond/diamond.py",
    "mistakes": "examples/mistakes/mistakes.ipynb",
}

VERSION = "<version>"


def normalise(document: Any) -> Any:
    """Replace values that depend on the machine (package versions) with placeholders."""
    if isinstance(document, dict):
        result = {key: normalise(value) for key, value in document.items()}
        if {"module", "distribution", "version"} <= result.keys() and result["version"]:
            result["version"] = VERSION
        return result
    if isinstance(document, list):
        return [normalise(item) for item in document]
    return document


@pytest.mark.parametrize(("case", "notebook"), list(CASES.items()), ids=list(CASES))
def test_check_json_matches_golden(case, notebook, repo_root, monkeypatch, capsys, update_golden):
    monkeypatch.chdir(repo_root)
    capsys.readouterr()
    code = main(["check", notebook, "--json"])
    out = capsys.readouterr().out
    document = normalise(json.loads(out))
    document["path"] = Path(document["path"]).as_posix()
    actual = json.dumps({"exit_code": code, **document}, indent=2, ensure_ascii=False) + "\n"

    golden = GOLDEN_DIR / f"{case}.json"
    if update_golden:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(actual, encoding="utf-8")
        return
    if not golden.exists():
        pytest.fail(f"{golden} is missing; create it with `pytest tests/golden --update-golden`")
    expected = golden.read_text(encoding="utf-8")
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                actual.splitlines(keepends=True),
                fromfile=f"tests/golden/check/{case}.json (expected)",
                tofile=f"cellpipe check {notebook} --json (actual)",
            )
        )
        pytest.fail(
            f"`cellpipe check {notebook} --json` differs from the golden file; if the change "
            f"is intended, run `pytest tests/golden --update-golden` and review the diff:\n{diff}",
            pytrace=False,
        )


def test_every_golden_file_has_a_case():
    stale = sorted(p.name for p in GOLDEN_DIR.glob("*.json") if p.stem not in CASES)
    assert not stale, f"golden files without a case in CASES (delete them or add the case): {stale}"
