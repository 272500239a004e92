"""Under CI=true a skip for a missing dependency is a failure (tests/ci_skips.py)."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

PROBE = """
import pytest

def test_needs_a_missing_module():
    pytest.importorskip("cellpipe_no_such_module")

def test_needs_a_missing_tool():
    pytest.skip("the frobnicator is not installed")

def test_needs_chromium():  # as tests/ui/conftest.py's `browser` says it
    pytest.skip("chromium is not installed (apt-get install -y chromium, or `make test` as root)")

def test_does_not_apply():
    pytest.skip("a memory store does not persist")
"""


@pytest.mark.parametrize(("ci", "failed", "skipped"), [("true", 3, 1), ("", 0, 4)])
def test_missing_dependency_skips_fail_only_under_ci(pytester, monkeypatch, ci, failed, skipped):
    monkeypatch.setenv("CI", ci)
    pytester.makepyfile(test_probe=PROBE)
    result = pytester.runpytest("-p", "ci_skips", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=failed, skipped=skipped)
    if failed:
        result.stdout.fnmatch_lines(["*CI=true: a skip for a missing dependency is a failure*"])
