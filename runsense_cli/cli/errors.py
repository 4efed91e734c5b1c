"""The root group of the Typer app: global options, and a RunsenseError as one line and an exit
code (cli/failure.py)."""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from ..errors import RunsenseError
from .command import apply_global_options, global_params
from .failure import report
from .state import CliState


class RunsenseGroup(TyperGroup):
    """The root group: takes the global options, and turns RunsenseError (and a corrupt
    database met mid-command) into a line and an exit code."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params[:0] = global_params()  # first in `runsense --help`, as before

    def invoke(self, ctx: Any) -> Any:
        try:
            state = apply_global_options(ctx)
            ctx.call_on_close(state.close)
            return super().invoke(ctx)
        except RunsenseError as exc:  # the storage turns every driver error into one of these
            fail(ctx, exc, exc.exit_code)
        except typer.BadParameter as exc:
            if type(exc).__name__ == "MissingParameter":
                raise  # click's usage text shows what is missing
            # A value out of range (`--limit 99999999999999999999`): one line, like every error.
            fail(ctx, RunsenseError(exc.format_message()), 2)


def fail(ctx: Any, exc: BaseException, code: int) -> None:
    report(ctx.find_object(CliState), exc)
    raise typer.Exit(code)
