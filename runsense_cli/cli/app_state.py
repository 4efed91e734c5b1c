"""Access to the shared CliState from any command module."""

from __future__ import annotations

import typer

from .state import CliState


def state_of(ctx: typer.Context) -> CliState:
    return ctx.ensure_object(CliState)
