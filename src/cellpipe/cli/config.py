"""``cellpipe config``: the project's effective settings and where each one came from.

Owns: the command's arguments and rendering. Reading the settings and their sources is
`cellpipe.config` (`Settings`, `setting_sources`).

Invariants: nothing is written; URLs are shown through `cellpipe.storage._urls.redact_url`,
so a password (from ``${VARIABLE}`` or the environment) never reaches the terminal.

Must not depend on: other command modules.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cellpipe.cli import render
from cellpipe.cli._loading import PROJECT_HELP


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    """Add ``config`` to the CLI."""
    config = subparsers.add_parser(
        "config",
        parents=parents,
        help="show the effective settings (storage URLs) and where each came from",
        description="Show the project's effective settings, each with its source: an "
        "environment variable (CELLPIPE_DB_URL, CELLPIPE_ARTIFACTS_URL, CELLPIPE_S3_ENDPOINT_URL "
        "or AWS_ENDPOINT_URL), cellpipe.toml's [storage] table, or the default. Passwords "
        "in URLs are shown as ***.",
        epilog="examples:\n  cellpipe config\n  cellpipe config --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config.add_argument("--project", default=".", help=PROJECT_HELP)
    config.add_argument("--json", action="store_true", help="print one JSON document")
    config.set_defaults(handler=config_cmd)


def config_cmd(args: argparse.Namespace) -> int:
    """Print the effective settings."""
    from cellpipe.config import CONFIG_FILE, Settings, setting_sources
    from cellpipe.storage._urls import redact_url

    start = Path(args.project)
    settings = Settings.discover(start)
    found = settings is not None
    if settings is None:  # no project yet: what a first `cellpipe run` here would use
        settings = Settings.for_notebook(start / "_")
    sources = setting_sources(settings.root)
    values = {
        "db_url": redact_url(settings.db_url),
        "artifacts_url": redact_url(settings.artifacts_url),
        "s3_endpoint_url": (
            redact_url(settings.s3_endpoint_url) if settings.s3_endpoint_url else None
        ),
    }
    config_file = settings.root / CONFIG_FILE
    document = {
        "project": str(settings.root),
        "found": found,
        "config_file": str(config_file) if config_file.is_file() else None,
        "settings": {k: {"value": v, "source": sources[k]} for k, v in values.items()},
    }
    if args.json:
        render.write_json(document, sys.stdout)
        return 0
    out = render.Output(sys.stdout)
    where = "" if found else " (no project yet: what a first run here would use)"
    out.line(f"project {settings.root}{where}")
    out.line(f"config file {document['config_file'] or '(none)'}")
    out.table(
        ["setting", "value", "from"],
        [[k, v if v is not None else "-", sources[k]] for k, v in values.items()],
    )
    return 0
