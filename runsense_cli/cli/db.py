"""`runsense db copy`: move history and cursors to another database (SQLite → PostgreSQL)."""

# No `from __future__ import annotations` here: Typer would turn every string annotation of every
# command back into objects with eval at each start (~10 ms of every Typer command).

from typing import Annotated

import typer

from ..errors import RunsenseError
from . import render
from .app_state import state_of
from .command import RunsenseCommand

db_app = typer.Typer(
    help="""Manage the database itself.

    \b
    Examples:
      runsense db copy postgresql://runsense@db.internal/runsense
    """,
    no_args_is_help=True,
    rich_markup_mode=None,
)


@db_app.command("copy", cls=RunsenseCommand)
def copy(
    ctx: typer.Context,
    target_url: Annotated[
        str,
        typer.Argument(
            metavar="TARGET_URL", help="An empty database: postgresql://... or sqlite:///..."
        ),
    ],
) -> None:
    """Copy every run, event, sensor (with its cursor), tick and reaction of the current
    database into an empty one. Stop the daemon first; afterwards point --database-url (or
    RUNSENSE_DATABASE_URL, or database_url in the settings) at the target.

    \b
    Examples:
      runsense db copy postgresql://runsense:secret@db.internal/runsense
      runsense --home ./old db copy sqlite:///backup/runsense.db
    """
    from ..storage import mask_url, open_storage
    from ..storage.copy import copy_database

    state = state_of(ctx)
    source = state.reader
    if source.is_empty():
        raise RunsenseError(
            f"there is nothing to copy: {source.description} holds no runs or sensors",
            "check --home, --database-url or RUNSENSE_DATABASE_URL",
        )
    with open_storage(url=target_url) as target:
        counts = copy_database(source, target)
        where = mask_url(target_url)
    out = render.console()
    summary = ", ".join(f"{n} {table}" for table, n in counts.items())
    out.print(f"Copied {summary} to {where}.", markup=False, soft_wrap=True)
