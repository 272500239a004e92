"""``cellpipe graph``: the pipeline's steps and data edges as Mermaid, Graphviz DOT or JSON.

Owns: the ``graph`` command; the three text forms of a pipeline's graph are
`cellpipe.views.pipeline` (re-exported here).

Must not depend on: the runner, storage or other command modules.
"""

from __future__ import annotations

import argparse
import sys

from cellpipe.cli._loading import NOTEBOOK_HELP, load_notebook
from cellpipe.views.pipeline import to_dot, to_graph_json, to_json_text, to_mermaid

__all__ = ["register", "run", "to_dot", "to_graph_json", "to_json_text", "to_mermaid"]

FORMATS = ("mermaid", "dot", "json")

DESCRIPTION = """\
Print the pipeline's graph: one node per step, one edge per dependency, each edge labelled
with the variables that flow along it and the files one step writes and the other reads
(dashed when it only orders two steps, from a prev: tag).

  mermaid  a Mermaid flowchart: paste it into a Markdown file on GitHub or mermaid.live
  dot      Graphviz: render it with `dot -Tsvg`
  json     {"name", "nodes": [...], "edges": [{"from", "to", "variables"}]}

A notebook with definition errors prints them (as `cellpipe check` does) and exits with 2.
"""

EPILOG = """\
examples:
  cellpipe graph train.ipynb
  cellpipe graph train.ipynb --format dot | dot -Tsvg > pipeline.svg"""


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    """Add the ``graph`` command to the CLI.

    Args:
        subparsers: the top-level parser's subcommands.
        parents: parsers carrying the options every command accepts.
    """
    parser = subparsers.add_parser(
        "graph",
        parents=parents,
        help="print the pipeline's steps and data edges as mermaid, dot or json",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("notebook", metavar="NOTEBOOK", help=NOTEBOOK_HELP)
    parser.add_argument(
        "--format",
        "-f",
        choices=FORMATS,
        default="mermaid",
        help="output format (default: mermaid)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run ``cellpipe graph``.

    Args:
        args: the parsed arguments (``notebook``, ``format``).

    Returns:
        The exit status: 0.

    Raises:
        CellpipeError: any error reading or validating the notebook.
    """
    pipeline = load_notebook(args.notebook)
    renderers = {"mermaid": to_mermaid, "dot": to_dot, "json": to_json_text}
    sys.stdout.write(renderers[args.format](pipeline))
    return 0
