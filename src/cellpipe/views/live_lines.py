r"""A step's printed output as lines, with progress lines (``\r`` rewrites) collapsed.

Owns: `collapse_cr`, `ProgressLines` and `reason_text`, shared by the live view and the
``cellpipe run`` text and ``--json`` views.

Invariants: pure and import-free, so the CLI can use it without slowing its start.

Must not depend on: anything in cellpipe.
"""

from __future__ import annotations

__all__ = ["ProgressLines", "collapse_cr", "reason_text"]


def collapse_cr(line: str) -> str:
    r"""Return what a terminal (or Jupyter) shows for one line written with ``\r`` rewrites.

    The text after the last carriage return that is followed by text wins: ``"10%\r50%\r"``
    shows ``50%``.
    """
    if "\r" not in line:
        return line
    for segment in reversed(line.split("\r")):
        if segment:
            return segment
    return ""


def reason_text(reason: str) -> str:
    """Return a cache decision as the sentence the views show (without ``hit:``/``miss:``)."""
    for prefix in ("hit: ", "miss: ", "hit:", "miss:"):
        if reason.startswith(prefix):
            return reason[len(prefix) :].strip()
    return reason.strip()


class ProgressLines:
    r"""A stream's text split into lines, a line rewritten with ``\r`` kept as one line.

    Example::

        lines = ProgressLines()
        lines.feed("epoch 1\n 10%\r 50%")   # -> ["epoch 1"]; lines.current == " 50%"
        lines.feed("\r100%\n")              # -> ["100%"]
    """

    def __init__(self) -> None:
        self._current = ""

    @property
    def current(self) -> str:
        """The line being written (not ended by a newline yet), as it shows now."""
        return collapse_cr(self._current)

    def feed(self, text: str) -> list[str]:
        """Add text; return the lines it completed (each collapsed)."""
        buffer = self._current + text
        *done, rest = buffer.split("\n")
        # Keep the partial line short: only its latest rewrite matters (a trailing \r too,
        # so that the next text replaces it).
        if "\r" in rest:
            rest = collapse_cr(rest) + ("\r" if rest.endswith("\r") else "")
        self._current = rest
        return [collapse_cr(line) for line in done]

    def flush(self) -> list[str]:
        """End the partial line, if any: return it as the last line."""
        rest, self._current = self.current, ""
        return [rest] if rest else []
