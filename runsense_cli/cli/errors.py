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
    """Turns RunsenseError (a corrupt database met mid-command included) into a line and a code."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except RunsenseError as exc:  # the storage turns every driver error into one of these
            fail(ctx, exc, exc.exit_code)


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
