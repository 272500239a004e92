"""The model registry commands: ``cellpipe models list|show|register|alias|history``.

Owns: listing the registered models, showing one version (lineage, parameters, metrics,
signature, aliases), registering a step output of a recorded run as a new version, moving and
removing aliases, and the history of every alias move.

Invariants: thin shells over `cellpipe.api.models`, `register_run_output`, `move_alias` and
`alias_history` (the documents are `cellpipe.views.models`); ``--json`` prints exactly one
JSON document; versions are never changed, only aliases move, and every move is recorded.
The project is found like git finds ``.git``.

Must not depend on: other command modules.
"""

from __future__ import annotations

import argparse
import sys

from cellpipe.cli import render
from cellpipe.cli._loading import PROJECT_HELP, RUN_HELP

_RAW = argparse.RawDescriptionHelpFormatter
REF_HELP = "NAME (the newest version), NAME:VERSION, NAME@ALIAS or NAME@latest"


def _version_number(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a version number from 1, got {text!r}")
    return int(text)


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    """Add ``models`` and its commands to the CLI."""
    models = subparsers.add_parser(
        "models",
        parents=parents,
        help="the model registry: versions with lineage, aliases and their history",
        description="Registered models: immutable, numbered versions of a named model, each "
        "with the run, step and variable it came from, the run's parameters and metrics and "
        "its input/output signature. Aliases (production, staging) point at versions; they "
        "are the only thing that changes, and every move is recorded. References: "
        "NAME (newest), NAME:3, NAME@production, NAME@latest.",
        epilog="examples:\n  cellpipe models list\n  cellpipe models show wine@production\n"
        "  cellpipe models register wine --run wine-2026 --step train_forest --var forest\n"
        "  cellpipe models alias wine production 2\n  cellpipe models history wine",
        formatter_class=_RAW,
    )
    commands = models.add_subparsers(title="commands", metavar="COMMAND")

    listing = commands.add_parser(
        "list",
        parents=parents,
        help="list the registered models",
        description="List the registered models: newest version, number of versions, aliases.",
        epilog="examples:\n  cellpipe models list\n  cellpipe models list --json",
        formatter_class=_RAW,
    )
    _common(listing)
    listing.set_defaults(handler=list_cmd)

    show = commands.add_parser(
        "show",
        parents=parents,
        help="show one model version: lineage, parameters, metrics, signature",
        description="Show the version a reference names: the stored object (digest, format, "
        "size, type), the run, step and variable it came from, the run's parameters and "
        "metrics, its input/output signature (OIP tensors), its aliases, and the model's "
        "other versions.",
        epilog="examples:\n  cellpipe models show wine            (the newest version)\n"
        "  cellpipe models show wine:2\n  cellpipe models show wine@production --json",
        formatter_class=_RAW,
    )
    show.add_argument("ref", metavar="REF", help=REF_HELP)
    _common(show)
    show.set_defaults(handler=show_cmd)

    reg = commands.add_parser(
        "register",
        parents=parents,
        help="register a step output of a recorded run as a new version",
        description="Register the value a step output in a recorded run as the next version "
        "of model NAME, with its lineage (run, step, variable), the run's parameters and "
        "metrics, and a signature inferred from the object (e.g. scikit-learn's "
        "n_features_in_). The stored bytes are reused, not copied.",
        epilog="examples:\n"
        "  cellpipe models register wine --run wine-2026 --step train_forest --var forest\n"
        "  cellpipe models register wine --run wine-2026 --step train_logreg --var logreg "
        "--alias staging --description 'C=1.0' --json",
        formatter_class=_RAW,
    )
    reg.add_argument("name", metavar="NAME", help="the model's name")
    reg.add_argument("--run", required=True, metavar="RUN", help=RUN_HELP)
    reg.add_argument("--step", required=True, metavar="STEP", help="the step that output it")
    reg.add_argument("--var", required=True, metavar="VARIABLE", help="the step's output variable")
    reg.add_argument("--alias", metavar="ALIAS", help="also point this alias at the new version")
    reg.add_argument("--description", default="", help="free text about this version")
    _common(reg)
    reg.set_defaults(handler=register_cmd)

    alias = commands.add_parser(
        "alias",
        parents=parents,
        help="point an alias at a version, or remove it (--delete)",
        description="Point ALIAS of model NAME at VERSION (creating or moving it), or remove "
        "it with --delete. Every move is recorded: `cellpipe models history NAME`. 'latest' "
        "is reserved: it always means the newest version.",
        epilog="examples:\n  cellpipe models alias wine production 2\n"
        "  cellpipe models alias wine staging 1 --json\n"
        "  cellpipe models alias wine staging --delete",
        formatter_class=_RAW,
    )
    alias.add_argument("name", metavar="NAME", help="the model's name")
    alias.add_argument("alias", metavar="ALIAS", help="the alias (production, staging, ...)")
    alias.add_argument(
        "version", metavar="VERSION", nargs="?", type=_version_number, help="the version number"
    )
    alias.add_argument("--delete", action="store_true", help="remove the alias")
    _common(alias)
    alias.set_defaults(handler=alias_cmd)

    history = commands.add_parser(
        "history",
        parents=parents,
        help="every move of a model's aliases, oldest first",
        description="List every move of the model's aliases, oldest first: when, which "
        "alias, from which version to which (- when it did not exist, or was removed).",
        epilog="examples:\n  cellpipe models history wine\n  cellpipe models history wine --json",
        formatter_class=_RAW,
    )
    history.add_argument("name", metavar="NAME", help="the model's name")
    _common(history)
    history.set_defaults(handler=history_cmd)

    models.set_defaults(handler=lambda _args: _usage(models))


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--project", default=".", help=PROJECT_HELP)
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _when(text: str) -> str:
    return text[:19].replace("T", " ")


def _num(value: int | None) -> str:
    return render.EMPTY if value is None else str(value)


# -- commands ------------------------------------------------------------------------------------


def list_cmd(args: argparse.Namespace) -> int:
    """List the registered models."""
    from cellpipe import api

    result = api.models(project=args.project)
    if args.json:
        render.write_json(result.to_dict(), sys.stdout)
        return 0
    rows = [
        [
            m["name"],
            str(m["latest"]),
            str(m["versions"]),
            ", ".join(f"{a}={v}" for a, v in m["aliases"].items()) or render.EMPTY,
            _when(m["created_at"]),
            m["description"] or render.EMPTY,
        ]
        for m in result.to_dict()["models"]
    ]
    out = render.Output(sys.stdout)
    out.table(["model", "latest", "versions", "aliases", "created (UTC)", "description"], rows)
    return 0


def show_cmd(args: argparse.Namespace) -> int:
    """Show one version."""
    from cellpipe import api

    document = api.models(args.ref, project=args.project).to_dict()
    if args.json:
        render.write_json(document, sys.stdout)
        return 0
    out = render.Output(sys.stdout)
    aliases = document["aliases"]
    out.line(f"model {document['ref']}" + (f" ({', '.join(aliases)})" if aliases else ""))
    out.line(f"registered {_when(document['created_at'])} UTC")
    if document["description"]:
        out.line(document["description"])
    a = document["artifact"]
    out.line(f"object {a['type']}, {a['serializer']}, {a['size']} bytes, {a['digest']}")
    if document["run_id"]:
        out.line(
            f"from run {document['run_id']}, step {document['step']}, "
            f"variable {document['variable']}"
        )
    else:
        out.line("registered outside a run (no lineage)")
    out.heading("Parameters")
    out.table(["name", "value"], [[k, repr(v)] for k, v in document["parameters"].items()])
    out.heading("Metrics")
    out.table(["name", "value"], [[k, str(v)] for k, v in document["metrics"].items()])
    out.heading("Signature")
    signature = document["signature"]
    if signature is None:
        out.line("  (unknown: register with an input example to infer it)")
    else:
        rows = [
            [kind, t["name"], t["datatype"], str(list(t["shape"]))]
            for kind, key in (("input", "inputs"), ("output", "outputs"))
            for t in signature[key]
        ]
        out.table(["", "tensor", "datatype", "shape"], rows)
    out.heading("Versions")
    out.table(
        ["version", "registered (UTC)", "aliases"],
        [
            [str(v["version"]), _when(v["created_at"]), ", ".join(v["aliases"]) or render.EMPTY]
            for v in document["versions"]
        ],
    )
    return 0


def register_cmd(args: argparse.Namespace) -> int:
    """Register a step output of a recorded run."""
    from cellpipe import api

    document = api.register_run_output(
        args.run,
        args.step,
        args.var,
        args.name,
        description=args.description,
        alias=args.alias,
        project=args.project,
    )
    if args.json:
        render.write_json(document, sys.stdout)
        return 0
    out = render.Output(sys.stdout)
    aliases = f" ({', '.join(document['aliases'])})" if document["aliases"] else ""
    where = f"run {document['run_id']}, step {document['step']}, variable {args.var}"
    out.line(f"registered {document['ref']}{aliases} from {where}")
    return 0


def alias_cmd(args: argparse.Namespace) -> int:
    """Point an alias at a version, or remove it."""
    from cellpipe import api
    from cellpipe.errors import CellpipeError

    if args.delete == (args.version is not None):
        raise CellpipeError(
            "give either a VERSION or --delete",
            hint=f"cellpipe models alias {args.name} {args.alias} 2, or "
            f"cellpipe models alias {args.name} {args.alias} --delete",
        )
    move = api.move_alias(
        args.name, args.alias, None if args.delete else args.version, project=args.project
    )
    if args.json:
        render.write_json(move, sys.stdout)
        return 0
    out = render.Output(sys.stdout)
    where = f"{move['name']}@{move['alias']}"
    if move["version"] is None:
        out.line(f"removed {where} (was version {move['previous']})")
    elif move["previous"] is None:
        out.line(f"{where} -> version {move['version']}")
    else:
        out.line(f"{where} -> version {move['version']} (was {move['previous']})")
    return 0


def history_cmd(args: argparse.Namespace) -> int:
    """List every move of a model's aliases."""
    from cellpipe import api

    document = api.alias_history(args.name, project=args.project)
    if args.json:
        render.write_json(document, sys.stdout)
        return 0
    out = render.Output(sys.stdout)
    rows = [
        [_when(m["moved_at"]), m["alias"], _num(m["previous"]), _num(m["version"])]
        for m in document["moves"]
    ]
    out.table(["moved (UTC)", "alias", "from", "to"], rows)
    return 0
