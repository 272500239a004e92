"""Sending compiled pipelines to a Kubeflow Pipelines endpoint with ``kfp.Client``.

Owns: `submit_package`, which uploads a compiled YAML file as a pipeline (or a new version of
the pipeline with that name) or starts a run of it in an experiment.

Invariants: talks to the endpoint only through kfp's own client; kfp's printed links go to
the returned result, never to the caller's stdout; kfp's client errors become a
`CellpipeError` naming the host. kfp is imported lazily.

Must not depend on: the runner, storage.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cellpipe.errors import CellpipeError
from cellpipe.pipeline.model import JsonValue


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitResult:
    """What the endpoint created.

    Attributes:
        host: the endpoint.
        kind: ``run``, ``pipeline`` or ``pipeline_version``.
        ids: the ids the endpoint returned (``run_id``, ``experiment_id``, ``pipeline_id``,
            ``pipeline_version_id``).
        messages: what kfp's client printed (links to the UI).
    """

    host: str
    kind: str
    ids: dict[str, str] = field(default_factory=dict)
    messages: tuple[str, ...] = ()

    def to_json(self) -> dict[str, JsonValue]:
        """Return a JSON-ready dict."""
        return {
            "host": self.host,
            "kind": self.kind,
            "ids": dict(self.ids),
            "messages": list(self.messages),
        }


def _client(host: str, namespace: str | None) -> Any:
    import kfp

    with warnings.catch_warnings():
        # kfp.Client warns on every construction that it needs KFP >= 2.0.0-beta.2.
        warnings.simplefilter("ignore", FutureWarning)
        return kfp.Client(host=host, namespace=namespace or "kubeflow")


def submit_package(
    package: Path,
    *,
    host: str,
    pipeline_name: str,
    experiment: str | None = None,
    run_name: str | None = None,
    arguments: Mapping[str, JsonValue] | None = None,
    namespace: str | None = None,
    upload_only: bool = False,
) -> SubmitResult:
    """Upload or run a compiled pipeline file on a KFP endpoint.

    Args:
        package: the compiled YAML file.
        host: the endpoint URL (``http://localhost:8080`` for a port-forward).
        pipeline_name: the pipeline's name in KFP (upload) or in the run name.
        experiment: the experiment of a run (``Default`` when None).
        run_name: the run's name, or the version's name with ``upload_only``.
        arguments: parameter values for the run.
        namespace: the Kubernetes namespace (multi-user deployments).
        upload_only: upload a pipeline (version) instead of starting a run.

    Returns:
        What was created.

    Raises:
        CellpipeError: when the endpoint cannot be reached or refuses the request.
    """
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            client = _client(host, namespace)
            if upload_only:
                kind, ids = _upload(client, package, pipeline_name, run_name, namespace)
            else:
                result = client.create_run_from_pipeline_package(
                    str(package),
                    arguments=dict(arguments or {}),
                    run_name=run_name or f"{pipeline_name} {_digest(package)}",
                    experiment_name=experiment,
                    namespace=namespace,
                )
                kind, ids = "run", {"run_id": str(result.run_id)}
    except CellpipeError:
        raise
    except Exception as exc:
        raise CellpipeError(
            f"the Kubeflow Pipelines endpoint {host} refused or did not answer: "
            f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}",
            hint="check --host (for a port-forward: kubectl port-forward -n kubeflow "
            "svc/ml-pipeline-ui 8080:80, then --host http://localhost:8080) and --namespace",
        ) from exc
    messages = tuple(line for line in printed.getvalue().splitlines() if line.strip())
    return SubmitResult(host=host, kind=kind, ids=ids, messages=messages)


def _upload(
    client: Any, package: Path, name: str, version: str | None, namespace: str | None
) -> tuple[str, dict[str, str]]:
    pipeline_id = client.get_pipeline_id(name)
    if pipeline_id is None:
        created = client.upload_pipeline(str(package), pipeline_name=name, namespace=namespace)
        return "pipeline", {"pipeline_id": str(created.pipeline_id)}
    uploaded = client.upload_pipeline_version(
        str(package),
        pipeline_version_name=version or f"{name}-{_digest(package)}",
        pipeline_id=pipeline_id,
    )
    return "pipeline_version", {
        "pipeline_id": str(uploaded.pipeline_id),
        "pipeline_version_id": str(uploaded.pipeline_version_id),
    }


def _digest(package: Path) -> str:
    # A version named by its content: uploading the same file twice gives the same name.
    return hashlib.sha256(package.read_bytes()).hexdigest()[:12]
