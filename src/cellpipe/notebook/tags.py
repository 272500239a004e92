"""Kale's cell-tag language: what each tag on a code cell means.

Owns: `parse_tags`, which checks one cell's tags against the grammar and returns `CellTags`.

The grammar (Kale's, plus ``cache:``, ``secret:`` and ``report:`` settings):

==========================  ============================================================
``imports``                 run at the start of every step
``functions``               definitions run at the start of every step, after the imports
``pipeline-parameters``     ``NAME = literal`` lines
``pipeline-metrics``        ``name`` / ``print(name)`` lines
``skip``                    not part of the pipeline
``step:NAME``/``block:NAME`` the cell belongs to step NAME (several names: it belongs to each,
                            as Kale merges it); an empty name continues the step above
``prev:NAME``               the step runs after step NAME
``image:IMG``               container image of the step
``limit:KEY:VALUE``         resource limit (``limit:nvidia.com/gpu:1``)
``cache:true|false``        switch the step's cache on or off
``annotation:KEY:VALUE``    pod annotation; ``label:KEY:VALUE`` pod label
``secret:SPEC``             a Kubernetes secret to expose, kept as written
``report:true|false``       switch the HTML report of captured outputs on or off
``processes:keep|stop``     keep the processes the step started running after it ends
                            (``keep``, for intentional daemons); by default (``stop``) the
                            step's process group is terminated when the step ends
``outputs:needed|all``      store only the values later steps read (``needed``); by default
                            (``all``) every value the step binds is stored, to load later
==========================  ============================================================

``skip`` wins over step tags on the same cell (Kale's rule): the role is `Role.SKIP` and the step
names and settings are still returned, so the caller can warn that they are ignored.

Invariants: never raises on tag content. A tag outside the grammar (``unknown-tag``), a malformed
setting tag (``malformed-tag``), a step name outside ``[a-z_][a-z0-9_]*`` (``bad-step-name``)
and two roles on one cell (``conflicting-tags``) are returned as `Problem` values with the cell
number, so they are reported together with every other definition error; the offending tag is
then ignored (a bad name is replaced by `suggest_step_name`) so the analysis can go on.

Must not depend on: anything in cellpipe but errors.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from enum import StrEnum

from cellpipe.errors import Problem

STEP_NAME = re.compile(r"[a-z_][a-z0-9_]*")
# A step name becomes a folder of the run (.cellpipe/runs/<run>/steps/<step>), a Kubeflow task
# name and part of pod names: 63 is the Kubernetes name-label limit (RFC 1123) and far below
# any file system's 255-byte name limit, so a name `check` accepts can always run.
MAX_STEP_NAME = 63


class Role(StrEnum):
    """What a code cell is for."""

    NONE = "none"  # no role tag: continues the block above
    STEP = "step"
    SKIP = "skip"
    IMPORTS = "imports"
    FUNCTIONS = "functions"
    PARAMETERS = "pipeline-parameters"
    METRICS = "pipeline-metrics"


_ROLE_TAGS = {
    "skip": Role.SKIP,
    "imports": Role.IMPORTS,
    "functions": Role.FUNCTIONS,
    "pipeline-parameters": Role.PARAMETERS,
    "pipeline-metrics": Role.METRICS,
}

_K8S_KEY = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?")
_LIMIT_KEY = re.compile(r"[A-Za-z0-9_./-]+")
_BOOL = {"true": True, "false": False}
_PROCESSES = {"keep": True, "stop": False}

KNOWN_TAGS = (
    "imports",
    "functions",
    "pipeline-parameters",
    "pipeline-metrics",
    "skip",
    "step:NAME",
    "block:NAME",
    "prev:NAME",
    "image:IMAGE",
    "limit:KEY:VALUE",
    "cache:false",
    "annotation:KEY:VALUE",
    "label:KEY:VALUE",
    "secret:SPEC",
    "report:false",
    "processes:keep",
    "outputs:needed",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class CellTags:
    """The meaning of one code cell's tags.

    Attributes:
        role: what the cell is for; `Role.STEP` also for ``step:`` with an empty name.
        steps: the step names it belongs to (empty for a ``step:`` tag with no name).
        prev: steps named by ``prev:`` tags.
        image: the ``image:`` value.
        limits: ``limit:KEY:VALUE`` pairs.
        cache: the ``cache:`` value.
        annotations: ``annotation:KEY:VALUE`` pairs.
        labels: ``label:KEY:VALUE`` pairs.
        secrets: ``secret:`` values.
        report: the ``report:`` value.
        keep_processes: the ``processes:`` value (True for ``keep``).
        has_settings: whether any per-step setting or ``prev:`` tag is present.
        problems: non-fatal problems (bad step names, conflicting roles).
    """

    role: Role = Role.NONE
    steps: tuple[str, ...] = ()
    prev: tuple[str, ...] = ()
    image: str | None = None
    limits: tuple[tuple[str, str], ...] = ()
    cache: bool | None = None
    annotations: tuple[tuple[str, str], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    secrets: tuple[str, ...] = ()
    report: bool | None = None
    keep_processes: bool | None = None
    all_outputs: bool | None = None
    has_settings: bool = False
    problems: tuple[Problem, ...] = field(default=())


def suggest_step_name(name: str) -> str:
    """Return the nearest valid step name (``Train-Model`` -> ``train_model``)."""
    fixed = re.sub(r"[^a-z0-9_]", "_", name.strip().lower()) or "step"
    return (f"_{fixed}" if fixed[0].isdigit() else fixed)[:MAX_STEP_NAME]


def parse_tags(tags: tuple[object, ...], *, cell: int) -> CellTags:
    """Check one code cell's tags and return what they mean.

    Args:
        tags: the tags as written in the cell metadata.
        cell: the 1-based cell number, for messages.

    Returns:
        The cell's role, step names, ``prev:`` names, settings and problems.
    """
    roles: list[Role] = []
    steps: list[str] = []
    prev: list[str] = []
    image: str | None = None
    limits: list[tuple[str, str]] = []
    cache: bool | None = None
    annotations: list[tuple[str, str]] = []
    labels: list[tuple[str, str]] = []
    secrets: list[str] = []
    report: bool | None = None
    keep_processes: bool | None = None
    all_outputs: bool | None = None
    problems: list[Problem] = []
    settings = False

    def bad(tag: str, expected: str) -> None:
        problems.append(
            Problem(
                code="malformed-tag",
                message=f"cell {cell} has a malformed tag '{tag}': expected {expected}",
                cell=cell,
                hint=f"write it as {expected}",
            )
        )

    for raw in tags:
        if not isinstance(raw, str):
            problems.append(
                Problem(
                    code="malformed-tag",
                    message=f"cell {cell} has tag {raw!r}, which is not a string",
                    cell=cell,
                    hint="tags must be strings",
                )
            )
            continue
        tag = raw.strip()
        if tag in _ROLE_TAGS:
            roles.append(_ROLE_TAGS[tag])
            continue
        key, sep, value = tag.partition(":")
        if not sep:
            problems.append(_unknown(tag, cell))
            continue
        if key in ("step", "block"):
            roles.append(Role.STEP)
            name = value.strip()
            if name:
                if not STEP_NAME.fullmatch(name) or len(name) > MAX_STEP_NAME:
                    problems.append(_bad_name(name, cell, f"{key}:{name}"))
                    name = suggest_step_name(name)
                steps.append(name)
        elif key == "prev":
            settings = True
            name = value.strip()
            if not name:
                bad(tag, "prev:NAME")
                continue
            if not STEP_NAME.fullmatch(name) or len(name) > MAX_STEP_NAME:
                problems.append(_bad_name(name, cell, tag))
                name = suggest_step_name(name)
            prev.append(name)
        elif key == "image":
            settings = True
            if not value.strip():
                bad(tag, "image:IMAGE")
                continue
            image = value.strip()
        elif key == "limit":
            settings = True
            lkey, lsep, lvalue = value.partition(":")
            if not lsep or not _LIMIT_KEY.fullmatch(lkey) or not lvalue.strip():
                bad(tag, "limit:KEY:VALUE, e.g. limit:memory:4Gi")
                continue
            limits.append((lkey, lvalue.strip()))
        elif key in ("annotation", "label"):
            settings = True
            akey, asep, avalue = value.partition(":")
            if not asep or not _K8S_KEY.fullmatch(akey):
                bad(tag, f"{key}:KEY:VALUE")
                continue
            (annotations if key == "annotation" else labels).append((akey, avalue))
        elif key == "secret":
            settings = True
            if not value.strip():
                bad(tag, "secret:SPEC")
                continue
            secrets.append(value.strip())
        elif key in ("cache", "report"):
            settings = True
            flag = _BOOL.get(value.strip().lower())
            if flag is None:
                bad(tag, f"{key}:true or {key}:false")
                continue
            if key == "cache":
                cache = flag
            else:
                report = flag
        elif key == "processes":
            settings = True
            keep = _PROCESSES.get(value.strip().lower())
            if keep is None:
                bad(tag, "processes:keep or processes:stop")
                continue
            keep_processes = keep
        elif key == "outputs":
            settings = True
            choice = value.strip().lower()
            if choice not in ("needed", "all"):
                bad(tag, "outputs:needed or outputs:all")
                continue
            all_outputs = choice == "all"
        else:
            problems.append(_unknown(tag, cell))

    distinct = sorted(set(roles))
    role = Role.NONE
    if len(distinct) == 1:
        role = distinct[0]
    elif set(distinct) == {Role.SKIP, Role.STEP}:
        # Kale's rule: `skip` wins over step tags. The caller warns (skip-with-step-tags).
        role = Role.SKIP
    elif len(distinct) > 1:
        problems.append(
            Problem(
                code="conflicting-tags",
                message=f"cell {cell} has tags for different roles: "
                + ", ".join(str(r) for r in distinct),
                cell=cell,
                hint="give the cell one of: skip, imports, functions, pipeline-parameters, "
                "pipeline-metrics, or step names",
            )
        )
        role = Role.SKIP
    return CellTags(
        role=role,
        steps=tuple(dict.fromkeys(steps)),
        prev=tuple(dict.fromkeys(prev)),
        image=image,
        limits=tuple(limits),
        cache=cache,
        annotations=tuple(annotations),
        labels=tuple(labels),
        secrets=tuple(secrets),
        report=report,
        keep_processes=keep_processes,
        all_outputs=all_outputs,
        has_settings=settings,
        problems=tuple(problems),
    )


def _bad_name(name: str, cell: int, tag: str) -> Problem:
    if STEP_NAME.fullmatch(name):
        return Problem(
            code="step-name-too-long",
            message=f"step name '{name[:20]}...' (cell {cell}) is {len(name)} characters long; "
            f"step names are limited to {MAX_STEP_NAME} (they name run folders and Kubeflow tasks)",
            cell=cell,
            hint=f"shorten it, e.g. to '{suggest_step_name(name)[:40].rstrip('_')}'",
        )
    return Problem(
        code="bad-step-name",
        message=f"'{name}' (tag '{tag}') is not a valid step name: use lowercase letters, "
        "digits and underscores, not starting with a digit",
        cell=cell,
        hint=f"rename it to '{suggest_step_name(name)}'",
    )


def _unknown(tag: str, cell: int) -> Problem:
    words = [t.split(":")[0] for t in KNOWN_TAGS]
    close = difflib.get_close_matches(tag.split(":")[0], words, n=1)
    hint = "known tags: " + ", ".join(KNOWN_TAGS)
    if close:
        hint = f"did you mean '{close[0]}'? " + hint
    return Problem(
        code="unknown-tag", message=f"cell {cell} has an unknown tag '{tag}'", cell=cell, hint=hint
    )
