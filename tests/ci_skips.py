"""A pytest plugin: under CI (CI=true), a test skipped for a missing dependency fails.

`pytest.importorskip` skips with "could not import ..."; our own fixtures skip with "... is not
installed". On a developer machine without an optional tool that is fine; under CI it means the
setup is broken, and a green run with fewer tests must not pass. Other skips (a platform, a
contract that does not apply to a store) stay skips.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

MISSING_DEPENDENCY_SKIPS = ("could not import", "is not installed")
"""Also covers the UI tests: "chromium is not installed" (tests/ui/conftest.py `browser`)."""


def in_ci() -> bool:
    """True when the environment says this is CI (``CI=true``, as GitHub/GitLab and .ci/run set)."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not (in_ci() and report.skipped) or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if any(marker in reason for marker in MISSING_DEPENDENCY_SKIPS):
        report.outcome = "failed"
        report.longrepr = f"CI=true: a skip for a missing dependency is a failure: {reason}"
