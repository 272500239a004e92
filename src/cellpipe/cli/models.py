"""The model registry commands: ``cellpipe models list|show|register|alias|history|...``.

The rest of the verbs are a version's life: ``archive|unarchive|delete|tag|describe``.

Owns: listing the registered models, showing one version (lineage, parameters, metrics,
signature, aliases, tags, packages, input example, archived), registering a step output of a
recorded run as a new version, moving and removing aliases, the history of every alias move,
archiving and unarchiving, deleting (``--yes``, or a confirmation on a terminal), tags and
descriptions.

Invariants: thin shells over `cellpipe.api.models`, `register_run_output`, `move_alias`,
`alias_history`, `archive_model_version`, `unarchive_model_version`, `delete_model_version`,
`tag_model_version` and `describe_model_version` (the documents are `cellpipe.views.models`);
``--json`` prints exactly one JSON document; a version's object and lineage never change;
every alias move is recorded; a version number is ASCII digits from 1 to 2**63-1 (anything
else is a usage error, exit 2). The verbs follow MLflow's client (``delete_model_version``,
``set_model_version_tag``, ``update_model_version``), its archived stage included. The project
is found like git finds ``.git``.

Must not depend on: other command modules.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cellpipe.cli import render
from cellpipe.cli._loading import PROJECT_HELP, RUN_HELP

_RAW = argparse.RawDescriptionHelpFormatter
REF_HELP = "NAME (the newest version), NAME:VERSION, NAME@ALIAS or NAME@latest"


def _version_number(text: str) -> int:
    from cellpipe.errors import RegistryError
    from cellpipe.registry.model import MAX_VERSION, parse_version

    try:
        return parse_version(text)
    except RegistryError:
        raise argparse.ArgumentTypeError(
            f"expected a version number from 1 to {MAX_VERSION} in ASCII digits, got {text!r}"
        ) from None


def _tag(text: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not equals:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


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
        "  cellpipe models alias wine production 2\n  cellpipe models history wine\n"
        "  cellpipe models archive wine:1\n  cellpipe models tag wine:2 team=ml",
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

    _life_commands(commands, parents)

    models.set_defaults(handler=lambda _args: _usage(models))


def _life_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    """``archive``, ``unarchive``, ``delete``, ``tag`` and ``describe``."""
    archive = commands.add_parser(
        "archive",
        parents=parents,
        help="archive a version: NAME and NAME@latest skip it, no alias may point at it",
        description="Archive one version (MLflow's archived stage): `NAME` and `NAME@latest` "
        "then resolve to the newest version that is not archived, and no alias may point at "
        "it; NAME:VERSION still shows, loads and serves it. A version an alias points at "
        "cannot be archived: move the alias first. Archiving an archived version changes "
        "nothing. `cellpipe models unarchive` brings it back.",
        epilog="examples:\n  cellpipe models archive wine:1\n"
        "  cellpipe models archive wine:1 --json",
        formatter_class=_RAW,
    )
    archive.add_argument("ref", metavar="NAME:VERSION", help="the version")
    _common(archive)
    archive.set_defaults(handler=archive_cmd, archived=True)

    unarchive = commands.add_parser(
        "unarchive",
        parents=parents,
        help="bring an archived version back",
        description="Unarchive one version: `NAME` and `NAME@latest` may resolve to it again "
        "and aliases may point at it.",
        epilog="examples:\n  cellpipe models unarchive wine:1",
        formatter_class=_RAW,
    )
    unarchive.add_argument("ref", metavar="NAME:VERSION", help="the version")
    _common(unarchive)
    unarchive.set_defaults(handler=archive_cmd, archived=False)

    delete = commands.add_parser(
        "delete",
        parents=parents,
        help="delete a version (its number is never given again)",
        description="Delete one version. A version an alias points at cannot be deleted: "
        "move or remove the alias first. The number is never given to another version; the "
        "stored object stays in the content-addressed artifact store (step outputs and other "
        "versions may share it); the alias history that names the version stays. Asks for "
        "confirmation on a terminal; --yes skips the question (needed without a terminal).",
        epilog="examples:\n  cellpipe models delete wine:1 --yes",
        formatter_class=_RAW,
    )
    delete.add_argument("ref", metavar="NAME:VERSION", help="the version")
    delete.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    _common(delete)
    delete.set_defaults(handler=delete_cmd)

    tag = commands.add_parser(
        "tag",
        parents=parents,
        help="set or remove key=value tags on a version",
        description="Set KEY=VALUE tags on the version REF names, and remove keys with "
        "--remove. Keys are 1-128 letters, digits, '_', '-', '.' or '/', starting with a "
        "letter or '_'; values are text of at most 5000 characters.",
        epilog="examples:\n  cellpipe models tag wine:2 data.version=v3 candidate=yes\n"
        "  cellpipe models tag wine@production approved=yes --remove candidate --json",
        formatter_class=_RAW,
    )
    tag.add_argument("ref", metavar="REF", help=REF_HELP)
    tag.add_argument("tags", metavar="KEY=VALUE", nargs="*", type=_tag, help="tags to set")
    tag.add_argument(
        "--remove", metavar="KEY", action="append", default=[], help="a tag key to remove"
    )
    _common(tag)
    tag.set_defaults(handler=tag_cmd)

    describe = commands.add_parser(
        "describe",
        parents=parents,
        help="replace the description of a version (or of the model: --model)",
        description="Replace the description of the version REF names; with --model, of the "
        "model NAME (shown by `cellpipe models list`).",
        epilog="examples:\n  cellpipe models describe wine:2 'forest, 200 trees'\n"
        "  cellpipe models describe wine 'wine cultivar classifier' --model",
        formatter_class=_RAW,
    )
    describe.add_argument("ref", metavar="REF", help=REF_HELP + " (NAME with --model)")
    describe.add_argument("text", metavar="TEXT", help="the new description ('' clears it)")
    describe.add_argument("--model", action="store_true", help="describe the model, not a version")
    _common(describe)
    describe.set_defaults(handler=describe_cmd)


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


def _count(model: dict[str, Any]) -> str:
    """``3``, or ``3 (+1 archived)``."""
    archived = model.get("archived", 0)
    return f"{model['versions']} (+{archived} archived)" if archived else str(model["versions"])


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
            _num(m["latest"]),
            _count(m),
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
    archived = " [archived]" if document["archived"] else ""
    out.line(
        f"model {document['ref']}" + (f" ({', '.join(aliases)})" if aliases else "") + archived
    )
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
    out.heading("Tags")
    out.table(["key", "value"], [[k, v] for k, v in document["tags"].items()])
    out.heading("Packages")
    out.table(["distribution", "version"], [[k, v] for k, v in document["packages"].items()])
    out.heading("Input example")
    example = document["input_example"]
    if example is None:
        out.line("  (none: register with an input example to keep its first rows)")
    else:
        out.table(
            ["tensor", "datatype", "shape", "data"],
            [[t["name"], t["datatype"], str(t["shape"]), _short(t["data"])] for t in example],
        )
    out.heading("Versions")
    out.table(
        ["version", "registered (UTC)", "aliases", "archived"],
        [
            [
                str(v["version"]),
                _when(v["created_at"]),
                ", ".join(v["aliases"]) or render.EMPTY,
                "archived" if v.get("archived") else render.EMPTY,
            ]
            for v in document["versions"]
        ],
    )
    return 0


def _short(data: list[Any], width: int = 60) -> str:
    text = ", ".join(str(x) for x in data)
    return text if len(text) <= width else text[: width - 3] + "..."


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


def archive_cmd(args: argparse.Namespace) -> int:
    """Archive or unarchive one version."""
    from cellpipe import api

    if args.archived:
        document = api.archive_model_version(args.ref, project=args.project)
    else:
        document = api.unarchive_model_version(args.ref, project=args.project)
    if args.json:
        render.write_json(document, sys.stdout)
        return 0
    state = "archived" if args.archived else "not archived"
    if document["changed"]:
        action = "archived" if args.archived else "unarchived"
        render.Output(sys.stdout).line(f"{action} {document['ref']}")
    else:
        render.Output(sys.stdout).line(f"{document['ref']} was already {state}: no change")
    return 0


def delete_cmd(args: argparse.Namespace) -> int:
    """Delete one version (after a confirmation, or with --yes)."""
    from cellpipe import api
    from cellpipe.errors import CellpipeError

    if not args.yes:
        if not (sys.stdin.isatty() and sys.stderr.isatty()):
            raise CellpipeError(
                f"deleting {args.ref} needs --yes when there is no terminal to ask",
                hint=f"cellpipe models delete {args.ref} --yes",
            )
        sys.stderr.write(f"delete {args.ref}? Its number will not be used again. [y/N] ")
        sys.stderr.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            sys.stderr.write("not deleted\n")
            return 1
    document = api.delete_model_version(args.ref, project=args.project)
    if args.json:
        render.write_json(document, sys.stdout)
        return 0
    render.Output(sys.stdout).line(
        f"deleted {document['ref']} (its object stays in the artifact store: "
        f"{document['artifact']['digest']})"
    )
    return 0


def tag_cmd(args: argparse.Namespace) -> int:
    """Set and remove tags on one version."""
    from cellpipe import api
    from cellpipe.errors import CellpipeError

    if not args.tags and not args.remove:
        raise CellpipeError(
            "give tags to set (KEY=VALUE) or keys to remove (--remove KEY)",
            hint=f"cellpipe models tag {args.ref} team=ml",
        )
    keys = [k for k, _ in args.tags]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise CellpipeError(f"tag {repeated[0]!r} is given twice", hint="give each key once")
    document = api.tag_model_version(args.ref, dict(args.tags), args.remove, project=args.project)
    if args.json:
        render.write_json(document, sys.stdout)
        return 0
    tags = ", ".join(f"{k}={v}" for k, v in document["tags"].items()) or "none"
    render.Output(sys.stdout).line(f"{document['ref']} tags: {tags}")
    return 0


def describe_cmd(args: argparse.Namespace) -> int:
    """Replace a version's (or the model's) description."""
    from cellpipe import api

    document = api.describe_model_version(
        args.ref, args.text, model=args.model, project=args.project
    )
    if args.json:
        render.write_json(document, sys.stdout)
        return 0
    what = f"model {document['name']}" if args.model else document["ref"]
    render.Output(sys.stdout).line(f"described {what}: {document['description'] or '(empty)'}")
    return 0
