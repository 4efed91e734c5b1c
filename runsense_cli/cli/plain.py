"""Lines and tables of plain text written without importing rich where rich would print them
unchanged.

A line is (text, style) parts. Piped (not a terminal), rich only drops the styles again, so such
lines skip rich, which is a fifth of a one-op `runsense run` (SPEC §8: ≤ 0.12 s). A table of plain
ASCII cells, piped, is the box rich draws around cells as wide as their content, drawn here: a
sixth of `runs list` on PostgreSQL (SPEC §8: ≤ 0.2 s). Text rich would change (tabs, control
characters, wide characters, markup's brackets and backslashes, a line wider than a pipe) still
goes through rich, and so does everything on a terminal: the output is the same either way
(tests/test_output_pipes.py compares the two).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from . import render

Part = tuple[str, str | None]  # text, and its rich style (None: plain)
PLAIN_MAX = 10_000  # characters of a line written without rich (rich folds at PIPE_WIDTH cells)


def is_terminal(stream: Any) -> bool:
    """rich's own test (Console.is_terminal), so both paths agree on when styles apply."""
    compatible = os.environ.get("TTY_COMPATIBLE", "")
    if compatible in ("0", "1"):
        return compatible == "1"
    force = os.environ.get("FORCE_COLOR")
    if force is not None:
        return force != ""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:
        return False


class LineWriter:
    """Prints lines of parts: plain when rich would print them unchanged, else through rich."""

    def __init__(self, stderr: bool = False) -> None:
        self.stderr = stderr
        self._console: Any = None

    def print(self, *parts: Part) -> None:
        stream = sys.stderr if self.stderr else sys.stdout  # as it is now: tests swap it
        text = "".join(part for part, _ in parts)
        if self._console is None and not is_terminal(stream) and _unchanged_by_rich(text):
            stream.write(text + "\n")
            stream.flush()  # as rich does: progress lines interleave with stderr in order
            return
        from rich.text import Text

        if self._console is None:
            self._console = render.console(stderr=self.stderr)
        self._console.print(Text.assemble(*parts))


# rich's box.HEAVY_HEAD, every runsense table's: (left, fill, between, right) of the top rule, the
# header row, the rule under it, a body row and the bottom rule.
_BOX = ("┏━┳┓", "┃ ┃┃", "┡━╇┩", "│ ││", "└─┴┘")


def table_text(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str | None:
    """What rich prints on a pipe for a table of these cells, as render.keep_whole sizes it (cells
    left-aligned with one space of padding, each column as wide as its widest cell, which must be
    at least its min_width), or None where rich may print something else: on a terminal, in an
    encoding other than UTF-8, or for a cell that is not plain ASCII."""
    stream = sys.stdout
    encoding = (getattr(stream, "encoding", None) or "utf-8").lower()
    if is_terminal(stream) or not encoding.startswith("utf"):
        return None
    cells = [headers, *rows]
    if not all(_plain_cell(cell) for row in cells for cell in row):
        return None
    widths = [max(len(row[i]) for row in cells) + 2 for i in range(len(headers))]
    if sum(widths) + len(widths) + 1 > render.PIPE_WIDTH:
        return None

    def rule(box: str) -> str:
        return box[0] + box[2].join(box[1] * width for width in widths) + box[3]

    def line(box: str, row: Sequence[str]) -> str:
        inner = box[2].join(
            f" {cell.ljust(width - 2)} " for cell, width in zip(row, widths, strict=True)
        )
        return box[0] + inner + box[3]

    top, head, under, body, bottom = _BOX
    lines = [rule(top), line(head, headers), rule(under), *(line(body, r) for r in rows)]
    return "\n".join([*lines, rule(bottom)]) + "\n"


def _plain_cell(text: str) -> bool:
    # rich reads [ ] and \\ as markup (a trailing backslash even shows doubled).
    return text.isascii() and text.isprintable() and not any(c in text for c in "[]\\")


def _unchanged_by_rich(text: str) -> bool:
    return len(text) < PLAIN_MAX and all(line.isprintable() for line in text.split("\n"))
