"""The `runsense sensor` command group, which `sensors` and `sensor_history` add commands to."""

from __future__ import annotations

from typing import Annotated

import typer

sensor_app = typer.Typer(
    help="""Inspect and drive run status sensors.

    \b
    Examples:
      runsense sensor list
      runsense sensor start --all && runsense sensor tick
    """,
    no_args_is_help=True,
    rich_markup_mode=None,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
