"""``%load_ext cellpipe``: the ``%cellpipe`` line magic, the CLI's words inside a notebook.

Owns: `load_ipython_extension` (called by IPython through ``cellpipe.load_ipython_extension``),
the magic itself, and `default_notebook`: which notebook the kernel is running.

``%cellpipe run -p lr=0.1`` runs `cellpipe.cli.main.main` in the kernel's process (not a
subprocess: no PATH lookup, the kernel's own interpreter and packages), so its output goes
to the cell through the kernel's ``sys.stdout``/``sys.stderr``. A command that takes a
notebook (``check``, ``graph``, ``run``, ``compile``, ``image``, ``submit``) and was given
none gets the kernel's notebook inserted: the first of

1. ``__vsc_ipynb_file__`` in the user namespace (VS Code),
2. the ``JPY_SESSION_NAME`` environment variable (Jupyter Server 2 and later),
3. ``__session__`` in the user namespace (ipykernel),
4. the only notebook (``.ipynb``) in the working directory,

else the magic shows an error saying how to name one. A command that reads a project's records
(``runs``, ``why``, ``compare``, ...) and is given no ``--project`` reads the project of the
kernel's notebook (its folder, which VS Code may not use as the working directory), unless
``CELLPIPE_PROJECT`` names one. Errors show the `CellpipeError`
message and hint, never a traceback (``--debug`` shows one, as on the command line).

Invariants: the magic never raises for a user mistake and never ends the kernel
(``--help`` and usage errors end in argparse's ``SystemExit``, which `main` turns into a
status); it returns None, so nothing extra is displayed.

Must not depend on: ui.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cellpipe.errors import CellpipeError

__all__ = ["NotebookNotFoundError", "cellpipe_magic", "default_notebook", "load_ipython_extension"]

NOTEBOOK_SUFFIXES = (".ipynb", ".py")


class NotebookNotFoundError(CellpipeError):
    """The magic could not tell which notebook the kernel is running."""

    headline = "which notebook?"
    exit_code = 2


def load_ipython_extension(ipython: Any) -> None:
    """Register the ``%cellpipe`` line magic (``%load_ext cellpipe``).

    Args:
        ipython: the running IPython shell.
    """
    ipython.register_magic_function(_magic_for(ipython), magic_kind="line", magic_name="cellpipe")


def _magic_for(ipython: Any) -> Any:
    def cellpipe(line: str) -> None:
        """Run a cellpipe command in this kernel: ``%cellpipe run -p lr=0.1``.

        The words are the command line's (``%cellpipe --help`` lists the commands); a
        command that takes a notebook defaults to the one this kernel is running.
        """
        cellpipe_magic(line, user_ns=getattr(ipython, "user_ns", {}))

    return cellpipe


def cellpipe_magic(
    line: str,
    *,
    user_ns: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Run the CLI's words in this process; return its exit status.

    Args:
        line: the words after ``%cellpipe``, split like a shell does.
        user_ns: the kernel's user namespace (where VS Code and ipykernel name the notebook).
        env: the environment (default: ``os.environ``).
        cwd: the working directory (default: the process's).

    Returns:
        The exit status `cellpipe.cli.main.main` returned (2 for a usage error, a line
        that cannot be split or a notebook that cannot be found).
    """
    from cellpipe.cli import render
    from cellpipe.cli.main import main

    try:
        words = shlex.split(line)
    except ValueError as exc:
        print(f"cellpipe: cannot split {line!r}: {exc}", file=sys.stderr)
        return 2
    try:
        words = with_default_notebook(words, user_ns=user_ns or {}, env=env, cwd=cwd)
    except CellpipeError as error:
        print(render.format_error(error), file=sys.stderr)
        return error.exit_code
    code = main(words)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    return code


def with_default_notebook(
    words: Sequence[str],
    *,
    user_ns: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> list[str]:
    """Return ``words`` with the kernel's notebook inserted when the command needs one.

    Raises:
        NotebookNotFoundError: the command needs a notebook, none was given and none
            could be found.
    """
    from cellpipe.cli.main import build_parser, command_of

    out = list(words)
    command = command_of(out)
    if command is None or "-h" in out or "--help" in out:
        return out
    sub = _subparser(build_parser(command), command)
    at = out.index(command)
    # `models list`, `snapshot list`: the options are the nested command's.
    while sub is not None and at + 1 < len(out):
        nested = _subparser(sub, out[at + 1])
        if nested is None:
            break
        sub, at = nested, at + 1
    if sub is None:
        return out
    if "--project" in sub._option_string_actions:
        return _with_default_project(out, at, user_ns=user_ns, env=env, cwd=cwd)
    if not any(a.dest == "notebook" and not a.option_strings for a in sub._actions):
        return out
    if _positionals(sub, out[at + 1 :]):
        return out
    notebook = default_notebook(user_ns=user_ns, env=env, cwd=cwd)
    return [*out[: at + 1], str(notebook), *out[at + 1 :]]


def _with_default_project(
    words: list[str],
    at: int,
    *,
    user_ns: Mapping[str, Any],
    env: Mapping[str, str] | None,
    cwd: Path | None,
) -> list[str]:
    """Insert ``--project`` = the kernel's notebook's folder when nothing else names one.

    An explicit ``--project`` and ``CELLPIPE_PROJECT`` win; a kernel whose notebook cannot
    be found keeps the working directory (the CLI's default), without an error.
    """
    from cellpipe.config import PROJECT_ENV

    environ = os.environ if env is None else env
    if any(w == "--project" or w.startswith("--project=") for w in words):
        return words
    if environ.get(PROJECT_ENV):
        return words
    try:
        notebook = default_notebook(user_ns=user_ns, env=environ, cwd=cwd)
    except NotebookNotFoundError:
        return words
    folder = notebook.resolve().parent
    if folder == (Path.cwd() if cwd is None else cwd).resolve():
        return words
    return [*words[: at + 1], "--project", str(folder), *words[at + 1 :]]


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found = action.choices.get(command)
            return found if isinstance(found, argparse.ArgumentParser) else None
    return None


def _positionals(parser: argparse.ArgumentParser, words: Sequence[str]) -> int:
    """Count the positional words, skipping options and the values they take."""
    count = 0
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word == "--":
            return count + len(words) - i
        if word.startswith("-") and len(word) > 1:
            name, eq, _ = word.partition("=")
            action = parser._option_string_actions.get(name)
            if action is None or eq:
                continue
            nargs = action.nargs
            if nargs is None:
                i += 1
            elif isinstance(nargs, int):
                i += nargs
            elif nargs in ("*", "+"):
                while i < len(words) and not words[i].startswith("-"):
                    i += 1
            elif nargs == "?" and i < len(words) and not words[i].startswith("-"):
                i += 1
            continue
        count += 1
    return count


def default_notebook(
    *,
    user_ns: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Path:
    """Return the notebook the kernel is running, by the rules in the module docstring.

    Raises:
        NotebookNotFoundError: naming what was tried and how to name the notebook.
    """
    environ = os.environ if env is None else env
    folder = Path.cwd() if cwd is None else cwd
    candidates = (
        ("VS Code's __vsc_ipynb_file__", user_ns.get("__vsc_ipynb_file__")),
        ("JPY_SESSION_NAME", environ.get("JPY_SESSION_NAME")),
        ("ipykernel's __session__", user_ns.get("__session__")),
    )
    for _, value in candidates:
        found = _existing(value, folder)
        if found is not None:
            return found
    notebooks = sorted(p for p in folder.glob("*.ipynb") if p.is_file())
    if len(notebooks) == 1:
        return notebooks[0]
    named = [f"{what}={value!r}" for what, value in candidates if value]
    tried = (
        "the kernel did not say which notebook it runs"
        if not named
        else "the notebook the kernel names was not found (" + ", ".join(named) + ")"
    )
    several = f"{len(notebooks)} notebooks" if notebooks else "no notebook"
    raise NotebookNotFoundError(
        f"{tried}, and {folder} has {several} (.ipynb)",
        hint="name it after the command: %cellpipe run NOTEBOOK.ipynb",
    )


def _existing(value: object, folder: Path) -> Path | None:
    """Return the notebook ``value`` names, if it is a notebook file that exists."""
    if not isinstance(value, str | os.PathLike) or not str(value):
        return None
    path = Path(os.fspath(value)).expanduser()
    if path.suffix not in NOTEBOOK_SUFFIXES:
        return None
    # Jupyter names the session by its path from the server's root; the kernel runs in the
    # notebook's folder, so its file name there is the fallback.
    for candidate in (path, folder / path, folder / path.name):
        if candidate.is_file():
            return candidate
    return None
