"""Settings read once by the CLI and the UI and passed down explicitly.

Owns: where a project's state lives (``.cellpipe/`` beside the notebook) and the backend URLs
(``CELLPIPE_DB_URL``, ``CELLPIPE_ARTIFACTS_URL``).

Invariants: reading settings has no side effect (no directory is created here).

Must not depend on: cli, ui.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

STATE_DIR = ".cellpipe"


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Where a project's metadata and artifacts live.

    Attributes:
        root: the project folder (the notebook's folder).
        db_url: SQLAlchemy URL of the metadata store.
        artifacts_url: fsspec URL or local folder of the artifact store.
    """

    root: Path
    db_url: str
    artifacts_url: str

    @classmethod
    def for_notebook(cls, notebook: Path, env: Mapping[str, str] | None = None) -> Settings:
        """Return the settings of the project the notebook belongs to.

        Args:
            notebook: the notebook file; its folder is the project root.
            env: the environment to read overrides from (default: ``os.environ``).
        """
        environ = os.environ if env is None else env
        root = notebook.resolve().parent
        state = root / STATE_DIR
        return cls(
            root=root,
            db_url=environ.get("CELLPIPE_DB_URL") or f"sqlite:///{state / 'cellpipe.db'}",
            artifacts_url=environ.get("CELLPIPE_ARTIFACTS_URL") or str(state / "artifacts"),
        )

    @classmethod
    def discover(cls, start: Path, env: Mapping[str, str] | None = None) -> Settings | None:
        """Return the settings of the project containing ``start``, like git finds ``.git``.

        Args:
            start: a folder inside the project.
            env: the environment to read overrides from (default: ``os.environ``).

        Returns:
            The settings of the nearest folder at or above ``start`` that has a ``.cellpipe``
            folder, or None when there is none.
        """
        folder = start.resolve()
        for candidate in (folder, *folder.parents):
            if (candidate / STATE_DIR).is_dir():
                return cls.for_notebook(candidate / "_", env)
        return None

    @property
    def state_dir(self) -> Path:
        """The project's ``.cellpipe`` folder."""
        return self.root / STATE_DIR
