"""The compiled KFP YAML of each example, compared exactly with tests/golden/kfp/<case>.yaml.

Volatile values are fixed arguments (cellpipe and kfp versions, images), so the files need no
normalising. wine is compiled with an image so that installed package versions (which change
with the environment) do not appear. Rewrite after a reviewed change with
`pytest tests/golden --update-golden`. Every golden file is also validated strictly.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from cellpipe.kfp import compile_documents
from cellpipe.kfp.validate import validate_documents
from cellpipe.kfp.yaml import dump_yaml, load_yaml
from cellpipe.notebook import load_pipeline

GOLDEN_DIR = Path(__file__).parent / "kfp"

CASES = {
    "diamond": ("examples/diamond/diamond.ipynb", None),
    "diamond_py": ("examples/diamond/diamond.py", None),
    "wine": ("examples/wine/wine.ipynb", "registry.example.com/cellpipe-wine:golden"),
}

pytestmark = pytest.mark.kfp


def compile_case(repo_root: Path, notebook: str, image: str | None) -> str:
    pipeline = load_pipeline(repo_root / notebook)
    documents = compile_documents(
        pipeline,
        image=image,
        cellpipe_version="0.0.0-golden",
        kfp_version="2.17.3",
        default_image="python:3.11-slim",
    )
    return dump_yaml(documents)


@pytest.mark.parametrize(("case", "spec"), list(CASES.items()), ids=list(CASES))
def test_compiled_yaml_matches_golden(case, spec, repo_root, update_golden):
    notebook, image = spec
    text = compile_case(repo_root, notebook, image)
    golden = GOLDEN_DIR / f"{case}.yaml"
    if update_golden:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
        return
    expected = golden.read_text()
    if text != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                text.splitlines(keepends=True),
                fromfile=str(golden),
                tofile="compiled",
            )
        )
        pytest.fail(f"{case}: compiled YAML differs from the golden file\n{diff}")


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_golden_file_is_valid_ir(case):
    documents = load_yaml((GOLDEN_DIR / f"{case}.yaml").read_text())
    assert validate_documents(documents) == []


def test_golden_loads_with_kfp(tmp_path):
    from kfp import components

    component = components.load_component_from_file(str(GOLDEN_DIR / "wine.yaml"))
    assert component.name == "wine"


def test_every_golden_file_has_a_case():
    stale = sorted(p.name for p in GOLDEN_DIR.glob("*.yaml") if p.stem not in CASES)
    assert not stale, f"golden files without a case in CASES (delete them or add the case): {stale}"
