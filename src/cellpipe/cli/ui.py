"""The ``cellpipe ui`` command: the local web UI over a project.

Owns: the arguments, the warning for a host other than loopback, printing the URL (with its
token) or ``{"url": ...}`` with ``--json``, opening a browser (only on loopback, never with
``--no-browser`` or ``--json``), and exit status 0 on Ctrl-C.

Invariants: a thin shell over `cellpipe.ui.server.serve` (the one import of ``cellpipe.ui``
from the CLI, listed in the layers contract's ``ignore_imports``).

Must not depend on: other command modules.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cellpipe.cli import render
from cellpipe.cli._loading import PROJECT_HELP, port_number

DESCRIPTION = """\
Start the local web UI: the runs table (sort, filter, compare), each run's graph with live step
states, each step's logs, rendered outputs (in a sandboxed frame), values with downloads and
changed files, lineage, models, and a form to start a run. It listens on 127.0.0.1 by default
and every page needs the token in the printed URL (it is kept in a cookie after the first
visit). While it runs, `cellpipe show` prints a link to the run's page."""

EPILOG = """\
examples:
  cellpipe ui                          serve this project's UI on a free port, open a browser
  cellpipe ui --port 8765 --no-browser
  cellpipe ui --project ~/work/wine --json   print {"url": ...} once it accepts connections"""


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    """Add the ``ui`` command to the CLI."""
    parser = subparsers.add_parser(
        "ui",
        parents=parents,
        help="start the local web UI (runs, graphs, outputs, lineage, models)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--project", default=".", help=PROJECT_HELP)
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)"
    )
    parser.add_argument(
        "--port", type=port_number, default=0, help="TCP port (default 0: any free port)"
    )
    parser.add_argument("--no-browser", action="store_true", help="do not open a web browser")
    parser.add_argument(
        "--json", action="store_true", help='print {"url": ...} once started, nothing else'
    )
    parser.set_defaults(handler=ui_cmd)


def ui_cmd(args: argparse.Namespace) -> int:
    """Serve the UI until Ctrl-C."""
    from cellpipe import api
    from cellpipe.ui.server import is_loopback, serve

    api.find_project(args.project)  # fails early (exit 1) outside a project folder
    loopback = is_loopback(args.host)
    if not loopback:
        print(
            f"warning: listening on {args.host}: anyone who can reach this address and has "
            "the link can read every run and start runs; use --host 127.0.0.1 unless you "
            "mean it",
            file=sys.stderr,
        )

    def announce(document: dict[str, Any]) -> None:
        if args.json:
            render.write_json({"url": document["url"]}, sys.stdout)
        else:
            print(f"cellpipe UI: {document['url']}")
            print("Ctrl-C stops it", file=sys.stderr)
        sys.stdout.flush()
        if loopback and not args.no_browser and not args.json:
            import webbrowser

            webbrowser.open(document["url"])

    serve(args.project, host=args.host, port=args.port, announce=announce)
    return 0
