"""The `runsense` command line: thin commands over the core, rendered with rich.

`app` (the Typer app, cli/root.py) is imported on first use: a plain `runsense run` or `runsense
runs list` never imports Typer (cli/fast.py).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .root import app


def main() -> None:
    _degrade_output()
    from .fast import main as fast_main

    code = fast_main(sys.argv[1:])
    if code is not None:
        sys.exit(code)
    from .root import app

    app(prog_name="runsense")


def __getattr__(name: str) -> Any:
    if name == "app":
        from .root import app

        globals()["app"] = app
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
