"""Lines of plain text written without importing rich where rich would print them unchanged.

A line is (text, style) parts. Piped (not a terminal), rich only drops the styles again, so such
lines skip rich, which is a fifth of a one-op `runsense run` (SPEC §8: ≤ 0.12 s). Text rich would
change (tabs, control characters, a line wider than a pipe) still goes through rich, and so does
everything on a terminal: the output is the same either way.
"""

from __future__ import annotations

import os
import sys
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


def _unchanged_by_rich(text: str) -> bool:
    return len(text) < PLAIN_MAX and all(line.isprintable() for line in text.split("\n"))
