"""Help text wraps at the terminal's width (COLUMNS honoured); examples stay one line each."""

from __future__ import annotations

import argparse
import re

import pytest

from cellpipe.cli.main import EXIT_STATUS, build_parser

pytestmark = pytest.mark.e2e


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                found.extend(_parsers(sub))
    return found


def _too_long(text: str, width: int) -> list[str]:
    """Lines longer than ``width`` that could have been wrapped."""
    bad: list[str] = []
    in_examples = False
    for line in text.splitlines():
        if line and not line[0].isspace():
            # Commands to copy ("examples:", "then, from another terminal:") are never wrapped.
            in_examples = line.rstrip().endswith(":") and not line.startswith("exit")
        if len(line) <= width or in_examples:
            continue
        # argparse never splits one option group of the usage ([--status {a,b,c}]).
        if re.fullmatch(r"\s+\[[^\[\]]+\]", line):
            continue
        bad.append(line)
    return bad


def test_a_paragraph_is_reflowed_as_one_text(monkeypatch: pytest.MonkeyPatch) -> None:
    # The serve description is written in lines of about 95 columns: at 80 each line is not
    # broken in two with a short rest; the paragraph is re-flowed, every line but the last full.
    monkeypatch.setenv("COLUMNS", "80")
    (serve,) = [p for p in _parsers(build_parser()) if p.prog.endswith(" serve")]
    text = serve.format_help()
    paragraph = text.split("\n\n")[1].splitlines()
    assert paragraph[0].startswith("Serve registered model versions")
    assert len(paragraph) > 3
    assert all(60 <= len(line) <= 78 for line in paragraph[:-1]), paragraph


@pytest.mark.parametrize("columns", [60, 100])
def test_every_help_fits_the_terminal_width(monkeypatch: pytest.MonkeyPatch, columns: int) -> None:
    monkeypatch.setenv("COLUMNS", str(columns))
    parsers = _parsers(build_parser())
    assert len(parsers) > 20
    for parser in parsers:
        text = parser.format_help()
        assert _too_long(text, columns) == [], parser.prog
        assert "exit status:" in text


def test_wide_terminals_keep_the_written_line_breaks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    assert EXIT_STATUS in build_parser().format_help()
    monkeypatch.setenv("COLUMNS", "60")
    narrow = build_parser().format_help()
    assert EXIT_STATUS not in narrow
    # The exit status table wraps under its text column.
    assert "\n  2    a usage or definition error: a bad option, an\n       unknown step" in narrow
