"""The `runsense` command line: thin commands over the core, rendered with rich."""

from __future__ import annotations

import sys

from .app import app


def main() -> None:
    _degrade_output()
    app(prog_name="runsense")


def _degrade_output() -> None:
    """On a stream that cannot encode Unicode (PYTHONIOENCODING=ascii), write `?` for what it
    cannot show instead of raising mid-command; commands pick plain markers there too."""
    for stream in (sys.stdout, sys.stderr):
        encoding = getattr(stream, "encoding", None) or "utf-8"
        try:
            "\u2714\u2026".encode(encoding)
        except UnicodeEncodeError:
            if getattr(stream, "errors", "strict") == "strict" and hasattr(stream, "reconfigure"):
                stream.reconfigure(errors="replace")
        except LookupError:
            pass


__all__ = ["app", "main"]
