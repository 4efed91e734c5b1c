"""One clear line for every problem the user can fix; a traceback only with --verbose."""

from __future__ import annotations

import sys
import traceback
from typing import Any

import typer
from typer.core import TyperGroup

from ..errors import RunsenseError
from .state import CliState


class RunsenseGroup(TyperGroup):
    """Turns RunsenseError (and a corrupt database met mid-command) into a line and an exit code."""

    def invoke(self, ctx: Any) -> Any:
        import sqlite3  # here, not at the top: `--help` never gets this far

        try:
            return super().invoke(ctx)
        except RunsenseError as exc:
            fail(ctx, exc, exc.exit_code)
        except typer.BadParameter as exc:
            if type(exc).__name__ == "MissingParameter":
                raise  # click's usage text shows what is missing
            # A value out of range (`--limit 99999999999999999999`): one line, like every error.
            fail(ctx, RunsenseError(exc.format_message()), 2)
        except sqlite3.DatabaseError as exc:
            fail(
                ctx,
                RunsenseError(
                    f"database error: {exc}", "the file may be damaged; try another --home"
                ),
                2,
            )


def fail(ctx: Any, exc: BaseException, code: int) -> None:
    state = ctx.find_object(CliState)
    if state is not None and state.verbose:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
        cause = exc.__cause__
        if cause is not None:
            sys.stderr.write("\nCaused by:\n")
            traceback.print_exception(type(cause), cause, cause.__traceback__, file=sys.stderr)
    sys.stderr.write(f"Error: {exc}\n")
    if state is not None:
        state.close()
    raise typer.Exit(code)
