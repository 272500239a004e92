"""``python -m cellpipe``: the ``cellpipe`` command, for when the console script is not on PATH.

A kernel's environment is often not on the shell's PATH (``!cellpipe`` in a notebook is "not
found"); ``!python -m cellpipe ...`` (or ``sys.executable -m cellpipe``) always is. This is
exactly the console script: same parser (its ``prog`` is ``cellpipe``), same exit statuses,
and the same lean exit through `cellpipe.cli.main.entry` (``os._exit`` after flushing).
"""

from __future__ import annotations

if __name__ == "__main__":
    from cellpipe.cli.main import entry

    entry()
