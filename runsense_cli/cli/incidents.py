"""`runsense incidents`: each job's outages, from its first final failure to its recovery."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from . import render
from .app_state import state_of
from .command import RunsenseCommand

if TYPE_CHECKING:
    from ..records import Incident


def incident_json(incident: Incident) -> dict[str, Any]:
    document = incident.to_dict()
    for key in ("opened_by_this_run", "resolved_by_this_run"):
        document.pop(key, None)
    document["opened_at"] = render.iso(incident.opened_at)
    document["resolved_at"] = render.iso(incident.resolved_at)
    return document


def incident_line(incident: Incident) -> str:
    """One line for people: what failed, how often, for how long, and whether it is over."""
    end = incident.resolved_at or time.time()
    span = render.duration(end - incident.opened_at)
    if incident.is_open:
        return (
            f"incident #{incident.incident_id}: OPEN, {incident.failure_count} failure(s) "
            f"since {render.local_time(incident.opened_at)} ({span})"
        )
    return (
        f"incident #{incident.incident_id}: RESOLVED after {incident.failure_count} failure(s) "
        f"and {span}"
    )


def register(app: typer.Typer) -> None:
    @app.command("incidents", cls=RunsenseCommand)
    def incidents(
        ctx: typer.Context,
        open_only: Annotated[bool, typer.Option("--open", help="Only unresolved ones.")] = False,
        limit: Annotated[
            int,
            typer.Option("--limit", metavar="N", help="How many, newest first.", min=1, max=10**9),
        ] = 50,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """List incidents: one per outage of a job, opened by a failure that will not be
        retried, counting further failures, resolved by the job's next success.

        \b
        Examples:
          runsense incidents --open
          runsense incidents --json
        """
        found = state_of(ctx).reader.list_incidents(open_only, limit)
        if as_json:
            render.print_json([incident_json(i) for i in found])
            return
        out = render.console()
        if not found:
            out.print("No open incidents." if open_only else "No incidents yet.")
            return
        from rich.table import Table

        table = Table(header_style="bold")
        for column in ("id", "job", "status", "failures", "opened", "resolved", "last run"):
            table.add_column(column, no_wrap=True)
        for i in found:
            table.add_row(
                str(i.incident_id),
                render.lit(f"{i.location}:{i.job_name}"),
                f"[red]{i.status}[/red]" if i.is_open else f"[green]{i.status}[/green]",
                str(i.failure_count),
                render.local_time(i.opened_at),
                render.local_time(i.resolved_at) if i.resolved_at else "-",
                i.last_run_id[:8],
            )
        out.print(table)
