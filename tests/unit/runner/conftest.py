"""Fixtures for runner tests; the factories live in runner_testkit.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from runner_testkit import Runner

from cellpipe.runner import Executor, ForkServerExecutor, InProcessExecutor, SpawnExecutor

_KINDS: dict[str, Callable[[], Executor]] = {
    "fork": ForkServerExecutor,
    "spawn": SpawnExecutor,
    "inprocess": InProcessExecutor,
}


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    return root


@pytest.fixture(params=["fork", "spawn"])
def runner(request: pytest.FixtureRequest, workdir: Path) -> Runner:
    """Parametrised over the process executors: the same behaviour is required of both."""
    kind: str = request.param
    return Runner(workdir=workdir, make_executor=_KINDS[kind], kind=kind)


@pytest.fixture
def fork_runner(workdir: Path) -> Runner:
    return Runner(workdir=workdir, make_executor=ForkServerExecutor, kind="fork")


@pytest.fixture
def inprocess_runner(workdir: Path) -> Runner:
    return Runner(workdir=workdir, make_executor=InProcessExecutor, kind="inprocess")
