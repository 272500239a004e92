"""Kale's notebook-level metadata (``metadata.kubeflow_notebook``) -> `NotebookSettings`.

Owns: `read_settings`. Known keys: ``pipeline_name``, ``pipeline_description``,
``experiment_name`` or ``experiment: {name}``, ``docker_image``, ``volumes`` and
``steps_defaults`` (Kale's ``annotation:``/``label:``/``limit:`` tags applied to every step).

Kale's Katib keys (``katib_metadata``, ``katib_run``) are kept in ``raw`` for hyperparameter
sweeps, without a warning.

Invariants: never fails. Other Kale keys (``autosnapshot``, ``snapshot_volumes``, ...) and values
of the wrong type are accepted with a warning (code ``notebook-metadata``) and ignored; the whole
dict is kept in ``raw`` for targets that need more.

Must not depend on: anything in cellpipe but errors, the pipeline model and `tags`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from cellpipe.errors import Problem
from cellpipe.notebook.tags import parse_tags
from cellpipe.pipeline import JsonValue, NotebookSettings

METADATA_KEY = "kubeflow_notebook"
_KNOWN = frozenset(
    {
        "pipeline_name",
        "pipeline_description",
        "experiment_name",
        "experiment",
        "docker_image",
        "volumes",
        "steps_defaults",
    }
)
_KEPT = frozenset({"katib_metadata", "katib_run"})
"""Kale's Katib keys: not used yet, kept in ``raw`` (for sweeps) without a warning."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StepDefaults:
    """Settings from ``steps_defaults`` applied to every step (a step's own tags win).

    Attributes:
        limits: resource limits.
        annotations: pod annotations.
        labels: pod labels.
    """

    limits: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()


def read_settings(
    metadata: Mapping[str, Any], *, path: str
) -> tuple[NotebookSettings, StepDefaults, list[Problem]]:
    """Read Kale's notebook metadata.

    Args:
        metadata: the notebook-level metadata.
        path: the notebook path, for messages.

    Returns:
        The settings, the per-step defaults and the warnings.
    """
    raw = metadata.get(METADATA_KEY)
    warnings: list[Problem] = []
    if raw is None:
        return NotebookSettings(), StepDefaults(), warnings
    if not isinstance(raw, dict):
        warnings.append(_warning(f"'{METADATA_KEY}' is not an object; it is ignored"))
        return NotebookSettings(), StepDefaults(), warnings

    def text(key: str) -> str | None:
        value = raw.get(key)
        if value is None or value == "":
            return None
        if isinstance(value, str):
            return value
        warnings.append(_warning(f"'{METADATA_KEY}.{key}' is not a string; it is ignored"))
        return None

    for key in sorted(raw.keys() - _KNOWN - _KEPT):
        warnings.append(
            _warning(f"notebook metadata '{METADATA_KEY}.{key}' is not used by cellpipe; ignored")
        )
    experiment = text("experiment_name")
    nested = raw.get("experiment")
    if experiment is None and isinstance(nested, dict) and isinstance(nested.get("name"), str):
        experiment = nested["name"] or None
    volumes: list[Mapping[str, JsonValue]] = []
    raw_volumes = raw.get("volumes") or []
    if isinstance(raw_volumes, list) and all(isinstance(v, dict) for v in raw_volumes):
        volumes = [MappingProxyType(dict(v)) for v in raw_volumes]
    else:
        warnings.append(_warning(f"'{METADATA_KEY}.volumes' is not a list of objects; ignored"))
    settings = NotebookSettings(
        pipeline_name=text("pipeline_name"),
        description=text("pipeline_description"),
        experiment=experiment,
        image=text("docker_image"),
        volumes=tuple(volumes),
        raw=MappingProxyType(dict(raw)),
    )
    return settings, _defaults(raw.get("steps_defaults"), path, warnings), warnings


def _defaults(value: object, path: str, warnings: list[Problem]) -> StepDefaults:
    if not value:
        return StepDefaults()
    if not isinstance(value, list):
        warnings.append(_warning(f"'{METADATA_KEY}.steps_defaults' is not a list; ignored"))
        return StepDefaults()
    limits: list[tuple[str, str]] = []
    annotations: list[tuple[str, str]] = []
    labels: list[tuple[str, str]] = []
    for entry in value:
        tags = parse_tags((entry,), cell=0)
        if (
            tags.problems
            or not isinstance(entry, str)
            or not entry.startswith(("limit:", "annotation:", "label:"))
        ):
            warnings.append(
                _warning(f"'{METADATA_KEY}.steps_defaults' entry {entry!r} is not understood")
            )
            continue
        limits.extend(tags.limits)
        annotations.extend(tags.annotations)
        labels.extend(tags.labels)
    return StepDefaults(limits=tuple(limits), annotations=tuple(annotations), labels=tuple(labels))


def _warning(message: str) -> Problem:
    return Problem(code="notebook-metadata", message=message)
