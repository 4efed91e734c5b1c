"""The `runsense` command line: thin commands over the core, rendered with rich."""

from __future__ import annotations

from .app import app


def main() -> None:
    app(prog_name="runsense")


__all__ = ["app", "main"]
