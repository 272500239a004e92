"""The ``cellpipe`` command: argument parsing, dispatch to a command, and error handling.

Owns: the top-level parser, the global options (``--debug``, ``--version``), the list of
command modules, logging set-up and how every error becomes an exit status.

Adding a command: write ``cellpipe/cli/<name>.py`` exposing
``register(subparsers, parents)``, which adds a subparser (``parents=parents`` gives it the
global options, a description and an ``examples:`` epilog) and sets
``handler=<function(args) -> int>`` with ``set_defaults``; then add the module to `COMMANDS`.
Handlers return the exit status and raise `CellpipeError` for anything the user can fix; they
never call ``sys.exit``.

Invariants: start-up stays fast (``cellpipe check`` on a 500-cell notebook in under a second,
interpreter included): command modules import only argparse-level things at the top and load
the notebook reader, rich, and the rest inside their handler. ``main`` never raises: it
returns the exit status (0 ok, 2 definition or usage error, 1 anything else, 130 interrupted).

Must not depend on: ui (the one exception: ``cellpipe ui`` starts `cellpipe.ui.server`).
Nothing in cellpipe imports this package.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn

from cellpipe import __version__

COMMANDS = (
    "cellpipe.cli.check",
    "cellpipe.cli.graph",
    "cellpipe.cli.run",
    "cellpipe.cli.runs",
    "cellpipe.cli.lineage",
    "cellpipe.cli.snapshot",
    "cellpipe.cli.report",
    "cellpipe.cli.models",
    "cellpipe.cli.serve",
    "cellpipe.cli.compile",
    "cellpipe.cli.image",
    "cellpipe.cli.submit",
    "cellpipe.cli.doctor",
    "cellpipe.cli.config",
    "cellpipe.cli.ui",
)

# Which module registers each command: a command line that names one only imports and
# registers that module (most of a short command's start-up was building every parser).
# tests/e2e/test_cli_main.py checks this table against what the modules register.
COMMAND_MODULES = {
    "check": "cellpipe.cli.check",
    "graph": "cellpipe.cli.graph",
    "run": "cellpipe.cli.run",
    "runs": "cellpipe.cli.runs",
    "show": "cellpipe.cli.runs",
    "why": "cellpipe.cli.runs",
    "compare": "cellpipe.cli.lineage",
    "logs": "cellpipe.cli.lineage",
    "lineage": "cellpipe.cli.lineage",
    "artifacts": "cellpipe.cli.lineage",
    "snapshot": "cellpipe.cli.snapshot",
    "reproduce": "cellpipe.cli.snapshot",
    "report": "cellpipe.cli.report",
    "models": "cellpipe.cli.models",
    "serve": "cellpipe.cli.serve",
    "compile": "cellpipe.cli.compile",
    "image": "cellpipe.cli.image",
    "submit": "cellpipe.cli.submit",
    "doctor": "cellpipe.cli.doctor",
    "config": "cellpipe.cli.config",
    "ui": "cellpipe.cli.ui",
}

BUG_REPORT = (
    f"this is a bug in cellpipe {__version__}, please report it with the traceback above "
    "and the command you ran"
)

DESCRIPTION = """\
cellpipe turns a Kale-tagged Jupyter notebook into a checked, cached, reproducible pipeline.
"""

EPILOG = """\
examples:
  cellpipe check train.ipynb               steps, data edges, parameters, metrics, packages
  cellpipe check train.ipynb --json        the same as one JSON document
  cellpipe graph train.ipynb               the pipeline as a Mermaid diagram
  cellpipe run train.ipynb -p MAX_DEPTH=6  run locally; cached steps are reused
  cellpipe runs                            the run history of this project
  cellpipe why RUN STEP                    why a step was a cache hit or a miss
  cellpipe compare RUN RUN                 parameters and metrics side by side
  cellpipe report latest -o run.html       the run as one HTML page, outputs included
  cellpipe compile train.ipynb             Kubeflow Pipelines v2 YAML for a cluster
  cellpipe doctor                          check the project's stores; --repair a damaged one
  cellpipe config                          the storage settings and where each came from

Run `cellpipe COMMAND --help` for a command's options."""

# Every parser's help ends with this (`build_parser` appends it to each epilog).
EXIT_STATUS = """\
exit status:
  0    success
  1    a failed run; any other failure (a missing run, a storage error, a feature
       Kubeflow does not support, `reproduce` outputs that differ)
  2    a usage or definition error: a bad option, an unknown step or parameter,
       an invalid notebook
  130  interrupted (Ctrl-C)"""

Handler = Callable[[argparse.Namespace], int]

if TYPE_CHECKING:
    from cellpipe.runner._bare import BareServer


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Return the ``cellpipe`` argument parser.

    Args:
        command: the command the line names (see `command_of`): only its module is
            registered. None registers every command (for ``--help`` and usage errors).
    """
    parser = argparse.ArgumentParser(
        prog="cellpipe",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"cellpipe {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks and debug logging for any error"
    )
    # Also accepted after the command (`cellpipe check nb.ipynb --debug`); SUPPRESS keeps a
    # subcommand's default from overwriting a --debug given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show tracebacks and debug logging for any error",
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    module = COMMAND_MODULES.get(command or "")
    for module_name in (module,) if module is not None else COMMANDS:
        importlib.import_module(module_name).register(subparsers, [common])
    _add_exit_status(parser)
    return parser


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help that fits the terminal: prose wraps at its width, examples stay one line each.

    The width is the terminal's (``shutil.get_terminal_size``, which honours ``COLUMNS``),
    less 2, as argparse's own. Descriptions and epilogs are kept line by line (they are
    written with intended line breaks) and a line longer than the width is wrapped: prose
    to the left margin, an indented ``TERM   text`` line (the exit status table) under its
    text column. Lines of an ``examples:`` block are commands to copy: never wrapped.
    """

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        if width is None:
            import shutil

            width = max(shutil.get_terminal_size().columns - 2, 30)
        super().__init__(prog, indent_increment, min(max_help_position, width // 3), width)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        import re
        import textwrap

        lines = text.splitlines()
        out: list[str] = []
        in_examples = False
        i = 0
        while i < len(lines):
            line = lines[i]
            i += 1
            stripped = line.strip()
            if not stripped:
                in_examples = False
                out.append("")
                continue
            if not line[0].isspace():
                # A heading such as "examples:" or "then, from another terminal:" starts a
                # block of commands to copy; the exit status table is the one block of terms.
                in_examples = stripped.endswith(":") and not stripped.lower().startswith("exit")
            lead = line[: len(line) - len(stripped) - (len(line) - len(line.rstrip()))]
            term = re.match(r"^(\s+\S+\s{2,})\S", line)
            hang = " " * len(term.group(1)) if term else lead
            group = [line]
            if term:  # the lines under its text column continue it
                while i < len(lines) and re.match(rf"^{hang}\S", lines[i]):
                    group.append(lines[i])
                    i += 1
            elif not in_examples and not stripped.endswith(":"):
                # A paragraph of prose: its lines are one text, re-flowed together when one
                # of them does not fit (never a line broken in two and its rest left short).
                while (
                    i < len(lines)
                    and lines[i].strip()
                    and re.match(rf"^{lead}\S", lines[i])
                    and not re.match(r"^(\s+\S+\s{2,})\S", lines[i])
                    and not lines[i].rstrip().endswith(":")
                ):
                    group.append(lines[i])
                    i += 1
            if in_examples or all(len(indent) + len(g) <= width for g in group):
                out.extend(indent + g for g in group)
                continue
            words = " ".join(g.strip() for g in group)
            first = term.group(1) if term else lead
            out.extend(
                textwrap.wrap(
                    words.removeprefix(first.strip()).strip() if term else words,
                    width,
                    initial_indent=indent + first,
                    subsequent_indent=indent + hang,
                    break_on_hyphens=False,
                    break_long_words=False,
                )
            )
        return "\n".join(out)


def _add_exit_status(parser: argparse.ArgumentParser) -> None:
    """Append `EXIT_STATUS` to the epilog of ``parser`` and of every subparser under it.

    Every parser gets `HelpFormatter` too, so all help wraps at the terminal's width.
    """
    parser.epilog = f"{parser.epilog.rstrip()}\n\n{EXIT_STATUS}" if parser.epilog else EXIT_STATUS
    parser.formatter_class = HelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases share a parser
                _add_exit_status(sub)


def command_of(argv: Sequence[str]) -> str | None:
    """Return the command ``argv`` names (its first word that is not an option), if any."""
    for word in argv:
        if word == "--":
            return None
        if not word.startswith("-"):
            return word if word in COMMAND_MODULES else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``cellpipe`` command line.

    Args:
        argv: the arguments after the program name; ``sys.argv[1:]`` when None.

    Returns:
        The exit status: 0 ok, 2 definition or usage error, 1 other errors and bugs.

    Example::

        >>> main(["check", "examples/diamond/diamond.ipynb", "--json"])  # doctest: +SKIP
        0
    """
    words = list(sys.argv[1:] if argv is None else argv)
    command = command_of(words)
    early = _early_server(words) if command == "run" else None
    try:
        return _main(words, command, early)
    finally:
        if early is not None:
            early.kill()  # a no-op once the run adopted it


def _main(words: list[str], command: str | None, early: BareServer | None) -> int:
    parser = build_parser(command)
    try:
        args = parser.parse_args(words)
    except SystemExit as exc:  # --help, --version and usage errors end in argparse
        return _status(exc.code)
    if early is not None:
        args.bare_server = early
    _project_from_environment(args, words)
    debug: bool = getattr(args, "debug", False)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    _configure_logging(debug)
    return _call(handler, args, debug=debug)


def _project_from_environment(args: argparse.Namespace, words: Sequence[str]) -> None:
    """Let ``CELLPIPE_PROJECT`` stand in for a ``--project`` the command line did not give.

    The project is found the same way everywhere: ``--project`` (or ``project=``), else
    ``CELLPIPE_PROJECT``, else the working directory (`cellpipe.config.project_start`).
    """
    import os

    from cellpipe.config import PROJECT_ENV

    if not hasattr(args, "project") or not os.environ.get(PROJECT_ENV):
        return
    if any(w == "--project" or w.startswith("--project=") for w in words):
        return
    args.project = os.environ[PROJECT_ENV]


def _early_server(words: list[str]) -> BareServer | None:
    """Start `cellpipe run`'s fork server before this process imports anything else.

    Its interpreter start and imports then overlap this process's own; `run_cmd` hands it
    to the run, and `main` kills it if the run never adopts it (a usage error, ``--help``).
    """
    if not sys.platform.startswith("linux") or "-h" in words or "--help" in words:
        return None
    for i, word in enumerate(words):
        choice = word.partition("=")[2] if word.startswith("--executor=") else None
        if word == "--executor" and i + 1 < len(words):
            choice = words[i + 1]
        if choice is not None and choice != "fork":
            return None
    from cellpipe.runner._bare import start_bare

    return start_bare()


def _call(handler: Handler, args: argparse.Namespace, *, debug: bool) -> int:
    import traceback

    from cellpipe.cli import render
    from cellpipe.errors import CellpipeError

    try:
        return handler(args)
    except CellpipeError as error:
        if debug:
            traceback.print_exc()
        _flush_stdout()
        print(render.format_error(error), file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`cellpipe check nb | head`); that is not an error of ours.
        _silence_stdout()
        return 0
    except OSError as exc:
        # The last resort for a write site that did not translate its error itself: a full
        # disk or a read-only folder is the user's to fix, not a bug (issue 10, items 5, 6).
        import errno

        from cellpipe.storage.os_errors import storage_error_for

        # EROFS and a full disk only come from writes; EACCES may come from a read too.
        writing = exc.errno in (errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
        translated = storage_error_for(exc, action="write to" if writing else "access")
        if translated is None:
            traceback.print_exc()
            print(f"\n{BUG_REPORT}", file=sys.stderr)
            return 1
        if debug:
            traceback.print_exc()
        _flush_stdout()
        print(render.format_error(translated), file=sys.stderr)
        return translated.exit_code
    except Exception:
        traceback.print_exc()
        print(f"\n{BUG_REPORT}", file=sys.stderr)
        return 1


def _status(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _configure_logging(debug: bool) -> None:
    import logging

    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _flush_stdout() -> None:
    # The report printed so far should appear before the error, not after it.
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        _silence_stdout()


def _silence_stdout() -> None:
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        return


def entry() -> NoReturn:
    """The ``cellpipe`` console script: `main`, then leave without interpreter teardown.

    Everything a command writes is closed by the command itself (stores, files) or flushed
    here; the atexit handlers still run (logging, temporary folders). What is skipped is
    the teardown of every imported module, which costs a `cellpipe run` 20-30 ms at its end
    for nothing.
    """
    import atexit
    import contextlib
    import os

    code = main()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()

    atexit._run_exitfuncs()
    os._exit(code)


if __name__ == "__main__":
    entry()
