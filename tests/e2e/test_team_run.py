"""`cellpipe run` with team storage: artifacts on S3 (moto) and metadata on PostgreSQL.

The diamond example runs end to end through the CLI with ``CELLPIPE_ARTIFACTS_URL=s3://...``
and ``CELLPIPE_DB_URL=postgresql://...``: a cold run, a fully cached re-run, a parameter
change that re-runs only the steps that read it, and every way of reading a run back (`cellpipe
show`, `cellpipe.load`, `cellpipe artifacts get`, `cellpipe logs`). The bytes must really be in
the bucket and nothing may be written to a local artifact store (only the read cache).
Credentials reach the step processes through the environment, as they would for a user.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from run_helpers import statuses, summary

import cellpipe
from backend_services import S3Service

pytestmark = [pytest.mark.e2e, pytest.mark.s3, pytest.mark.postgres, pytest.mark.slow]

RunCli = Callable[..., Any]  # the `run_cli` fixture of tests/e2e/conftest.py


@dataclass(frozen=True)
class Team:
    """A project folder wired to a fresh bucket prefix and a fresh PostgreSQL database."""

    project: Path
    notebook: Path
    s3: S3Service
    url: str

    @property
    def prefix(self) -> str:
        return self.url.removeprefix(f"s3://{self.s3.bucket}/")

    def bucket_keys(self) -> set[str]:
        """Every object key under the store's prefix, listed with boto3 (not cellpipe)."""
        import boto3

        client = boto3.client("s3", endpoint_url=self.s3.endpoint_url)
        try:
            keys: set[str] = set()
            for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=self.s3.bucket, Prefix=self.prefix + "/"
            ):
                keys.update(item["Key"] for item in page.get("Contents", []))
            return keys
        finally:
            client.close()

    def key_of(self, digest: str) -> str:
        hex_ = digest.removeprefix("sha256:")
        return f"{self.prefix}/sha256/{hex_[:2]}/{hex_}"


def _team_env(monkeypatch: pytest.MonkeyPatch, s3: S3Service, url: str, db_url: str) -> None:
    monkeypatch.setenv("CELLPIPE_ARTIFACTS_URL", url)
    monkeypatch.setenv("CELLPIPE_DB_URL", db_url)
    monkeypatch.setenv("CELLPIPE_S3_ENDPOINT_URL", s3.endpoint_url)
    # Credentials only in the environment: step processes inherit them, job files never hold
    # them.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def team(
    tmp_path: Path,
    repo_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    s3_service: S3Service,
    s3_url: str,
    postgres_url: str,
) -> Team:
    project = tmp_path / "diamond"
    project.mkdir()
    notebook = project / "diamond.ipynb"
    shutil.copy(repo_root / "examples" / "diamond" / "diamond.ipynb", notebook)
    _team_env(monkeypatch, s3_service, s3_url, postgres_url)
    monkeypatch.chdir(project)
    return Team(project=project, notebook=notebook, s3=s3_service, url=s3_url)


def _show(run_cli: RunCli, team: Team, run_id: str) -> dict[str, Any]:
    result = run_cli("show", run_id, "--project", team.project, "--json")
    assert result.code == 0, result.err + result.out
    document: dict[str, Any] = result.json()
    return document


def test_diamond_runs_with_s3_artifacts_and_postgresql(run_cli: RunCli, team: Team) -> None:
    # Cold run: every step runs in its own process and stores its outputs in the bucket.
    result = run_cli("run", team.notebook, "--json")
    assert result.code == 0, result.err + result.out
    assert statuses(result.out) == dict.fromkeys("abcd", "succeeded")
    cold = summary(result.out)
    shown = _show(run_cli, team, cold["run_id"])
    assert shown["status"] == "succeeded"
    keys = team.bucket_keys()
    digests = {ref["digest"] for step in shown["steps"] for ref in step["outputs"].values()} | {
        step[kind] for step in shown["steps"] for kind in ("log", "notebook")
    }
    assert {team.key_of(d) for d in digests} <= keys
    # Nothing in a local artifact store; verified copies only in the read cache.
    state = team.project / ".cellpipe"
    assert not (state / "artifacts").exists()
    assert any((state / "cache" / "artifacts" / "sha256").rglob("*"))

    # Fully cached re-run.
    cached = run_cli("run", team.notebook, "--json")
    assert statuses(cached.out) == dict.fromkeys("abcd", "cached")

    # A parameter change re-runs only the steps that read it: LABEL is read by d only,
    # SCALE by b (through the `scaled` helper) and so d.
    label = run_cli("run", team.notebook, "--json", "-p", "LABEL=team")
    assert statuses(label.out) == {"a": "cached", "b": "cached", "c": "cached", "d": "succeeded"}
    scale = run_cli("run", team.notebook, "--json", "-p", "SCALE=3.0")
    assert statuses(scale.out) == {"a": "cached", "b": "succeeded", "c": "cached", "d": "succeeded"}
    assert not (state / "artifacts").exists()

    # Reading a run back: Python API, artifacts get, logs.
    run_id = summary(label.out)["run_id"]
    spread = cellpipe.load(cold["run_id"], "b", "spread", project=team.project)
    rescaled = cellpipe.load(summary(scale.out)["run_id"], "b", "spread", project=team.project)
    assert rescaled == pytest.approx(spread * 3.0 / 2.5)
    target = team.project / "out" / "numbers.json"
    target.parent.mkdir()
    got = run_cli("artifacts", "get", cold["run_id"], "a", "numbers", "-o", target)
    assert got.code == 0, got.err
    numbers = json.loads(target.read_text())
    assert len(numbers) == 200
    logs = run_cli("logs", run_id, "d", "--project", team.project)
    assert logs.code == 0, logs.err
    assert "'label': 'team'" in logs.out

    # The bucket is the truth: with the read cache gone, values come back from S3.
    shutil.rmtree(state / "cache")
    assert cellpipe.load(cold["run_id"], "a", "numbers", project=team.project) == numbers
    again = run_cli("run", team.notebook, "--json", "-p", "LABEL=team")
    assert statuses(again.out) == dict.fromkeys("abcd", "cached")


@pytest.mark.parametrize("executor", ["spawn", "inprocess"])
def test_every_executor_uses_the_s3_store(run_cli: RunCli, team: Team, executor: str) -> None:
    result = run_cli("run", team.notebook, "--json", "--executor", executor)
    assert result.code == 0, result.err + result.out
    assert statuses(result.out) == dict.fromkeys("abcd", "succeeded")
    shown = _show(run_cli, team, summary(result.out)["run_id"])
    outputs = {ref["digest"] for step in shown["steps"] for ref in step["outputs"].values()}
    assert {team.key_of(d) for d in outputs} <= team.bucket_keys()
    assert not (team.project / ".cellpipe" / "artifacts").exists()


def test_a_missing_bucket_is_an_error_that_says_so(
    run_cli: RunCli, team: Team, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CELLPIPE_ARTIFACTS_URL", "s3://no-such-bucket-here/x")
    result = run_cli("run", team.notebook)
    assert result.code != 0
    assert "bucket s3://no-such-bucket-here" in result.err
    assert "does not exist" in result.err
    assert "aws s3 mb" in result.err


DATA_NOTEBOOK = """\
# %% tags=["imports"]
import cellpipe

# %% tags=["pipeline-parameters"]
SOURCE = "rows.csv"

# %% tags=["step:load"]
path = cellpipe.data(SOURCE)
with open(path) as f:
    rows = f.read().splitlines()

# %% tags=["step:count"]
n_rows = len(rows) - 1

# %% tags=["pipeline-metrics"]
n_rows
"""


def test_cellpipe_data_in_a_step_keeps_the_bytes_in_s3(run_cli: RunCli, team: Team) -> None:
    source = team.project / "rows.csv"
    source.write_text("x\n1\n2\n3\n")
    notebook = team.project / "data_nb.py"
    notebook.write_text(DATA_NOTEBOOK)
    result = run_cli("run", notebook, "--json")
    assert result.code == 0, result.err + result.out
    first = summary(result.out)
    assert first["metrics"] == {"n_rows": 3}

    from cellpipe.storage.artifacts import digest_file

    assert team.key_of(digest_file(source)) in team.bucket_keys()
    assert not (team.project / ".cellpipe" / "artifacts").exists()
    lineage = run_cli("lineage", first["run_id"], "--project", team.project, "--json").json()
    sources = [n for n in lineage["nodes"] if n["kind"] == "data_source"]
    assert [Path(s["label"]).name for s in sources] == ["rows.csv"]

    # A new version of the source is fetched again; the old one stays in the bucket.
    source.write_text("x\n1\n2\n3\n4\n")
    second = run_cli("run", notebook, "--json", "--no-cache")
    assert second.code == 0, second.err + second.out
    assert summary(second.out)["metrics"] == {"n_rows": 4}
    assert team.key_of(digest_file(source)) in team.bucket_keys()
