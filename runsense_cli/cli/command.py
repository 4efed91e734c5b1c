"""Global options accepted before or after the command, and usage lines that read naturally.

`runsense --home DIR runs list` and `runsense runs list --home DIR` mean the same: the root group
and every command take the options of `GLOBAL_OPTIONS`, and whichever level gives one sets it on
the shared `CliState`. A new global option is one more row of `GLOBAL_OPTIONS` (cli/options.py)
and one more field of `CliState.apply`.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperCommand, TyperOption

from .options import GLOBAL_OPTIONS
from .state import CliState


def global_params() -> list[TyperOption]:
    params = []
    for option in GLOBAL_OPTIONS:
        flag = option.metavar is None
        params.append(
            TyperOption(
                param_decls=[option.param_name, *option.decls],
                type=bool if flag else str,
                is_flag=flag or None,
                default=False if flag else None,
                metavar=option.metavar,
                help=option.help,
            )
        )
    return params


def apply_global_options(ctx: Any) -> CliState:
    """Move this level's global option values from `ctx.params` onto the shared CliState."""
    state = ctx.ensure_object(CliState)
    values = {o.field: ctx.params.pop(o.param_name, None) for o in GLOBAL_OPTIONS}
    state.apply(**values)
    return state


class RunsenseCommand(TyperCommand):
    """A command that also takes the global options, with `JOB` rather than `{JOB}` in usage."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.extend(global_params())

    def invoke(self, ctx: Any) -> Any:
        apply_global_options(ctx)
        return super().invoke(ctx)

    def format_options(self, ctx: Any, formatter: Any) -> None:
        """The command's own options first; the global ones under their own heading."""
        own = self.params
        shared = [p for p in own if p.name and p.name.startswith("global_")]
        self.params = [p for p in own if p not in shared]
        try:
            super().format_options(ctx, formatter)
        finally:
            self.params = own
        rows = [record for p in shared if (record := p.get_help_record(ctx))]
        with formatter.section("Global options (also accepted before the command)"):
            formatter.write_dl(rows)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        # Typer marks required arguments as {NAME}; plain NAME is what every man page uses.
        return [
            piece[1:-1] if piece.startswith("{") and piece.endswith("}") else piece
            for piece in super().collect_usage_pieces(ctx)
        ]
