"""The global options (-f, -m, --home, --database-url, -v), in one table for the Typer app
(cli/command.py) and the fast path (cli/fast.py); Typer is not imported here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GlobalOption:
    field: str  # the keyword of CliState.apply
    decls: tuple[str, ...]
    help: str
    metavar: str | None = None  # None: a flag

    @property
    def param_name(self) -> str:
        # Prefixed, so a command's own parameter of the same name never collides.
        return f"global_{self.field}"


GLOBAL_OPTIONS: tuple[GlobalOption, ...] = (
    GlobalOption("file", ("--file", "-f"), "Python file holding the Definitions.", "FILE"),
    GlobalOption("module", ("--module", "-m"), "Module holding the Definitions.", "MODULE"),
    GlobalOption(
        "home",
        ("--home",),
        "State directory (default: $RUNSENSE_HOME or the user data dir).",
        "DIR",
    ),
    GlobalOption(
        "database_url",
        ("--database-url",),
        "postgresql://... or sqlite:///... (default: $RUNSENSE_DATABASE_URL, the settings'"
        " database_url, else runsense.db in the home).",
        "URL",
    ),
    GlobalOption("verbose", ("--verbose", "-v"), "Show tracebacks."),
)
