"""Settings read once by the CLI and the UI and passed down explicitly.

Owns: where a project's state lives (``.cellpipe/`` beside the notebook), the backend URLs and
the project file ``cellpipe.toml`` that can set them.

Where a setting comes from, first match wins:

1. the environment: ``CELLPIPE_DB_URL``, ``CELLPIPE_ARTIFACTS_URL``, and for S3-compatible
   servers ``CELLPIPE_S3_ENDPOINT_URL`` (or the AWS tools' ``AWS_ENDPOINT_URL``);
2. ``cellpipe.toml`` in the project root (the notebook's folder)::

       [storage]
       db_url = "postgresql://cellpipe@db.example.com/cellpipe"
       artifacts_url = "s3://team-bucket/cellpipe"
       s3_endpoint_url = "https://minio.example.com"   # optional

   Relative local paths in the file (``artifacts_url = "store"``,
   ``db_url = "sqlite:///meta.db"``) are relative to the project root, so the file means
   the same from any working directory; in environment variables they are relative to the
   working directory, as a shell user expects;
3. the defaults: ``sqlite:///<root>/.cellpipe/cellpipe.db`` and ``<root>/.cellpipe/artifacts``.

Credentials never belong in ``cellpipe.toml`` (it is meant to be committed): PostgreSQL reads
``~/.pgpass`` or ``PGPASSWORD``, S3 the usual AWS variables and profiles. Where a value must
carry one, write ``${VARIABLE}`` and it is taken from the environment when the settings are
read (``db_url = "postgresql://etl:${CELLPIPE_DB_PASSWORD}@db/cellpipe"``); a missing variable
is an error naming the key and the variable, and ``$$`` is a literal ``$``. A
``cellpipe.toml`` that holds a literal password anyway is left out of snapshots.

Invariants: reading settings has no side effect (no directory is created here); a malformed
``cellpipe.toml``, an unknown key in it or an unknown section (a table other than
`SECTIONS`) is an error naming the file, never silently ignored. ``cellpipe.toml`` is
cellpipe's own file (other tools keep theirs in ``pyproject.toml``), so a misspelt
``[storge]`` is caught instead of leaving the storage at its defaults. `setting_sources`
says where each effective value came from (``cellpipe config``).

Must not depend on: cli, ui.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cellpipe.errors import CellpipeError, ProjectNotFoundError

STATE_DIR = ".cellpipe"
CONFIG_FILE = "cellpipe.toml"
PROJECT_ENV = "CELLPIPE_PROJECT"
"""The environment variable naming a folder inside the project when none is given."""

SECTIONS = ("storage",)
"""The tables ``cellpipe.toml`` may have; any other is an error."""

_STORAGE_KEYS = {
    # key in [storage] -> environment variables that override it, strongest first
    "db_url": ("CELLPIPE_DB_URL",),
    "artifacts_url": ("CELLPIPE_ARTIFACTS_URL",),
    "s3_endpoint_url": ("CELLPIPE_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL"),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Where a project's metadata and artifacts live.

    Attributes:
        root: the project folder (the notebook's folder).
        db_url: URL of the metadata store (``sqlite:///...`` or ``postgresql://...``).
        artifacts_url: local folder or ``s3://bucket/prefix`` of the artifact store.
        s3_endpoint_url: endpoint of an S3-compatible server (MinIO, Ceph, ...), or None for
            AWS itself.
    """

    root: Path
    db_url: str
    artifacts_url: str
    s3_endpoint_url: str | None = None

    @classmethod
    def for_notebook(cls, notebook: Path, env: Mapping[str, str] | None = None) -> Settings:
        """Return the settings of the project the notebook belongs to.

        Args:
            notebook: the notebook file; its folder is the project root.
            env: the environment to read overrides from (default: ``os.environ``).

        Raises:
            CellpipeError: if the project's ``cellpipe.toml`` is malformed.
        """
        environ = os.environ if env is None else env
        root = notebook.resolve().parent
        state = root / STATE_DIR
        values: dict[str, str | None] = {
            "db_url": f"sqlite:///{state / 'cellpipe.db'}",
            "artifacts_url": str(state / "artifacts"),
            "s3_endpoint_url": None,
        }
        values.update(_read_project_file(root, environ))
        for key, names in _STORAGE_KEYS.items():
            for name in names:
                if environ.get(name):
                    values[key] = environ[name]
                    break
        db_url, artifacts_url = values["db_url"], values["artifacts_url"]
        assert db_url is not None  # the defaults above
        assert artifacts_url is not None
        return cls(
            root=root,
            db_url=db_url,
            artifacts_url=artifacts_url,
            s3_endpoint_url=values["s3_endpoint_url"],
        )

    @classmethod
    def discover(cls, start: Path, env: Mapping[str, str] | None = None) -> Settings | None:
        """Return the settings of the project containing ``start``, like git finds ``.git``.

        Args:
            start: a folder inside the project.
            env: the environment to read overrides from (default: ``os.environ``).

        Returns:
            The settings of the nearest folder at or above ``start`` that has a ``.cellpipe``
            folder or a ``cellpipe.toml`` file, or None when there is none.
        """
        folder = start.resolve()
        for candidate in (folder, *folder.parents):
            if (candidate / STATE_DIR).is_dir() or (candidate / CONFIG_FILE).is_file():
                return cls.for_notebook(candidate / "_", env)
        return None

    @classmethod
    def find(
        cls, project: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
    ) -> Settings:
        """Return the settings of a project that must exist, found the same way everywhere.

        Where the search starts, first match wins: ``project`` (an explicit ``project=``
        or ``--project``), the ``CELLPIPE_PROJECT`` environment variable, the working
        directory. From there it goes up like `discover`.

        Args:
            project: a folder inside the project (or the notebook file), or None.
            env: the environment (default: ``os.environ``).

        Raises:
            ProjectNotFoundError: naming the folders searched and how to point at the project.
        """
        environ = os.environ if env is None else env
        start, origin = project_start(project, environ)
        folder = start.resolve()
        if folder.is_file():
            folder = folder.parent
        elif not folder.exists():  # a mistyped --project must not find a project above it
            raise ProjectNotFoundError(folder, f"{origin}, which does not exist", searched=[folder])
        settings = cls.discover(folder, environ)
        if settings is None:
            raise ProjectNotFoundError(folder, origin, searched=[folder, *folder.parents])
        return settings

    @property
    def state_dir(self) -> Path:
        """The project's ``.cellpipe`` folder."""
        return self.root / STATE_DIR

    @property
    def cache_dir(self) -> Path:
        """Where a remote artifact store keeps verified local copies."""
        return self.state_dir / "cache" / "artifacts"

    def storage_options(self) -> dict[str, Any]:
        """Return the options for a remote artifact store's file system (fsspec)."""
        if self.s3_endpoint_url:
            return {"endpoint_url": self.s3_endpoint_url}
        return {}


def project_start(
    project: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> tuple[Path, str]:
    """Return where a project search starts, and why (for messages).

    Args:
        project: an explicit folder (``project=``, ``--project``), or None.
        env: the environment (default: ``os.environ``).

    Returns:
        ``(folder, origin)``: ``project`` as given, else ``$CELLPIPE_PROJECT``, else the
        working directory; origin says which of the three it was.
    """
    environ = os.environ if env is None else env
    if project is not None:
        return Path(project).expanduser(), "the folder given"
    named = environ.get(PROJECT_ENV)
    if named:
        return Path(named).expanduser(), f"{PROJECT_ENV}"
    return Path.cwd(), "the working directory"


def _read_project_file(root: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """Return the ``[storage]`` values of ``root/cellpipe.toml`` (empty when there is none)."""
    path = root / CONFIG_FILE
    try:
        with path.open("rb") as f:
            import tomllib  # only for projects that have the file: keeps start-up short

            doc = tomllib.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:  # tomllib.TOMLDecodeError is a ValueError
        raise CellpipeError(
            f"cannot read {path}: {exc}", hint="fix the file's TOML syntax"
        ) from exc
    unknown_sections = sorted(set(doc) - set(SECTIONS))
    if unknown_sections:
        raise CellpipeError(
            f"{path}: unknown section(s) or top-level key(s): {', '.join(unknown_sections)}",
            hint="cellpipe.toml has only a [storage] table, which "
            + _KEYS_HINT.removeprefix("[storage] "),
        )
    storage = doc.get("storage", {})
    if not isinstance(storage, dict):
        raise CellpipeError(f"{path}: [storage] must be a table", hint=_KEYS_HINT)
    unknown = sorted(set(storage) - set(_STORAGE_KEYS))
    if unknown:
        raise CellpipeError(
            f"{path}: unknown key(s) in [storage]: {', '.join(unknown)}", hint=_KEYS_HINT
        )
    values: dict[str, str] = {}
    for key, value in storage.items():
        if any(environ.get(name) for name in _STORAGE_KEYS[key]):
            continue  # the environment wins: a ${VARIABLE} it makes moot need not be set
        if not isinstance(value, str) or not value:
            raise CellpipeError(
                f"{path}: [storage] {key} must be a non-empty string, not {value!r}",
                hint=_KEYS_HINT,
            )
        values[key] = _anchor(key, _expand(path, key, value, environ), root)
    return values


def setting_sources(root: Path, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return where each storage setting of the project at ``root`` comes from.

    Values: ``"environment variable NAME"``, ``"cellpipe.toml"`` or ``"default"``, by the
    same precedence as `Settings.for_notebook` (which has already validated the file when
    called first).
    """
    environ = os.environ if env is None else env
    in_file: set[str] = set()
    path = root / CONFIG_FILE
    if path.is_file():
        import tomllib

        with path.open("rb") as f:
            storage = tomllib.load(f).get("storage", {})
        in_file = set(storage) if isinstance(storage, dict) else set()
    sources: dict[str, str] = {}
    for key, names in _STORAGE_KEYS.items():
        named = next((name for name in names if environ.get(name)), None)
        if named is not None:
            sources[key] = f"environment variable {named}"
        else:
            sources[key] = CONFIG_FILE if key in in_file else "default"
    return sources


_REFERENCE = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)\}|\{[^}]*\}?)")


def _expand(path: Path, key: str, value: str, environ: Mapping[str, str]) -> str:
    """Replace ``${NAME}`` with the environment variable's value (``$$`` is ``$``).

    The expanded value never appears in an error: only the key and the variable's name.
    """

    def one(match: re.Match[str]) -> str:
        text = match.group(0)
        if text == "$$":
            return "$"
        name = match.group(1)
        if name is None:
            raise CellpipeError(
                f"{path}: [storage] {key} has {text!r}, which is not a ${{VARIABLE}} reference",
                hint="write ${NAME} with a letter or _ first, then letters, digits or _; "
                "$$ is a literal $",
            )
        if name not in environ:
            raise CellpipeError(
                f"{path}: [storage] {key} refers to ${{{name}}}, but the environment variable "
                f"{name} is not set",
                hint=f"set it before running cellpipe (export {name}=...), or take the "
                f"reference out of {key}",
            )
        return environ[name]

    return _REFERENCE.sub(one, value)


_KEYS_HINT = "[storage] accepts " + ", ".join(_STORAGE_KEYS) + " (all strings)"


def _anchor(key: str, value: str, root: Path) -> str:
    """Make a relative local path in the project file relative to the project root."""
    if key == "artifacts_url" and "://" not in value and not Path(value).is_absolute():
        return str(root / value)
    if key == "db_url" and value.startswith("sqlite:///"):
        path = value.removeprefix("sqlite:///")
        if path and path != ":memory:" and not path.startswith("/"):
            return f"sqlite:///{root / path}"
    return value
