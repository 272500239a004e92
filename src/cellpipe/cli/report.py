"""``cellpipe report RUN``: the run as one self-contained HTML page.

Owns: the ``report`` command: find the run, read its executed notebook (``run.ipynb`` in the
run's folder), render the page (`cellpipe.views.report.report_html`) and write it.

Invariants: read-only on the project; writes only the page (default ``RUN_ID.html`` in the
working directory); prints the page's path (``--json``: ``{"path": ...}``); progress goes to
stderr. nbconvert is the ``report`` extra: without it the command fails with the
``pip install`` line to run.

Must not depend on: other command modules.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cellpipe.cli._loading import PROJECT_HELP, RUN_HELP


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    """Add ``report`` to the CLI."""
    parser = subparsers.add_parser(
        "report",
        parents=parents,
        help="write a run as one self-contained HTML page (graph, parameters, metrics, outputs)",
        description="Write one HTML page of a run: its id and status, the graph of its steps, "
        "its parameters and metrics, then every step's cells and outputs (figures, tables, "
        "printed text) from the run's executed notebook, with the notebook's markdown in its "
        "place. The page needs nothing else to be opened: images are embedded and nothing is "
        "fetched from the internet. Needs nbconvert: pip install 'cellpipe[report]'.",
        epilog="examples:\n  cellpipe report latest\n  cellpipe report latest -o run.html"
        "\n  cellpipe report wine-2026 --json     (any unique prefix of a run id)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run", metavar="RUN", help=RUN_HELP)
    parser.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="where to write the page (default: RUN_ID.html in the working directory; a "
        "folder: RUN_ID.html in it)",
    )
    parser.add_argument("--project", default=".", help=PROJECT_HELP)
    parser.add_argument("--json", action="store_true", help='print {"path": ...}')
    parser.set_defaults(handler=report_cmd)


def report_cmd(args: argparse.Namespace) -> int:
    """Write the report of one run."""
    import json

    from cellpipe.api import find_project, open_project
    from cellpipe.cli import render
    from cellpipe.views.report import report_html

    settings = find_project(Path(args.project))
    with open_project(settings, create=False) as project:
        run = project.metadata.get_run(args.run)
        steps = project.metadata.step_runs(run.run_id)
    notebook_file = settings.state_dir / "runs" / run.run_id / "run.ipynb"
    notebook = None
    if notebook_file.is_file():
        notebook = json.loads(notebook_file.read_text(encoding="utf-8"))
    target = Path(args.output) if args.output else Path(f"{run.run_id}.html")
    if target.is_dir() or (args.output or "").endswith(("/", "\\")):
        target = target / f"{run.run_id}.html"
    print(f"rendering run {run.run_id} with nbconvert ...", file=sys.stderr, flush=True)
    page = report_html(run, steps, notebook)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page, encoding="utf-8")
    path = str(target.resolve())
    if args.json:
        render.write_json({"path": path}, sys.stdout)
    else:
        print(path)
    return 0
