"""`runsense runs list` and `runsense runs show`."""

# No `from __future__ import annotations` here: Typer would turn every string annotation of every
# command back into objects with eval at each start (~10 ms of every Typer command).

from typing import Annotated

import typer

from ..text import clean
from ..values import MAX_INT64
from . import complete, render
from .app_state import state_of
from .command import RunsenseCommand
from .incidents import incident_json, incident_line
from .render import lit

runs_app = typer.Typer(
    help="""Inspect runs.

    \b
    Examples:
      runsense runs list
      runsense runs show 534d9094
    """,
    no_args_is_help=True,
    rich_markup_mode=None,
)


@runs_app.command("list", cls=RunsenseCommand)
def list_runs(
    ctx: typer.Context,
    job: Annotated[
        str | None,
        typer.Option(
            "--job", metavar="JOB", help="Only runs of this job.", autocompletion=complete.job_names
        ),
    ] = None,
    status: Annotated[
        str | None,
        typer.Option(
            "--status",
            metavar="STATUS",
            autocompletion=complete.statuses,
            help="Only runs with this status (any case: failed, SUCCESS, queued...).",
        ),
    ] = None,
    limit: Annotated[
        int,
        typer.Option(
            "--limit",
            "-n",
            metavar="N",
            help="At most this many runs (0: all).",
            min=0,
            max=MAX_INT64,
        ),
    ] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List runs, newest first.

    \b
    Examples:
      runsense runs list --status failed
      runsense runs list --job etl_job --limit 5 --json
    """
    from .runs_list import list_runs as show_runs

    show_runs(state_of(ctx), job, status, limit, as_json)


@runs_app.command("show", cls=RunsenseCommand)
def show_run(
    ctx: typer.Context,
    run_id: Annotated[
        str,
        typer.Argument(
            metavar="RUN_ID", help="A run id or a unique prefix.", autocompletion=complete.run_ids
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show a run, its event log, what sensors did about it and the runs they requested.

    \b
    Examples:
      runsense runs show 534d9094
      runsense runs show 534d --json
    """
    storage = state_of(ctx).reader
    run = storage.find_run(clean(run_id))
    events = storage.events_for_run(run.run_id)
    reactions = storage.reactions_to_run(run.run_id)
    requested = storage.requested_runs(run.run_id)
    incident = storage.incident_of_run(run.run_id)
    if as_json:
        render.print_json(
            {
                **render.run_json(run),
                "incident": incident_json(incident) if incident else None,
                "events": [render.event_json(e) for e in events],
                "reactions": [render.reaction_json(r) for r in reactions],
                "requested_runs": [render.run_json(r) for r in requested],
            }
        )
        return
    out = render.console()
    out.print(f"[bold]Run {run.run_id}[/bold]  {render.styled(run.status.value)}")
    out.print(
        f"job: {lit(run.job_name)}   location: {lit(run.location)}   trigger: {lit(run.trigger)}"
    )
    out.print(
        f"started: {render.local_time(run.start_time)}   duration: {render.duration(run.duration)}"
    )
    if run.parent_run_id:
        out.print(f"parent run: {run.parent_run_id}   root run: {run.root_run_id}")
    if incident is not None:
        out.print(incident_line(incident), markup=False)
    user_tags = {k: v for k, v in run.tags.items()}
    if user_tags:
        text = ", ".join(f"{k}={v}" for k, v in sorted(user_tags.items()))
        out.print("tags: " + clean(text), markup=False)
    if run.run_config:
        import json

        out.print("config: " + json.dumps(run.run_config), markup=False)
    out.print(render.events_table(events))
    if reactions:
        out.print("[bold]Sensor reactions[/bold]")
        out.print(render.reactions_table(reactions))
    else:
        out.print(
            "No sensor has reacted to this run yet "
            "(`runsense sensor list` shows which sensors run and what they wait for)."
        )
    if requested:
        out.print("[bold]Runs requested by sensors[/bold]")
        out.print(render.runs_table(requested))
    for event in events:
        if event.error and event.step_key:
            out.print(f"[red]Error in {lit(event.step_key)}:[/red]")
            out.print(clean(event.error.stack.rstrip()), markup=False, highlight=False)
