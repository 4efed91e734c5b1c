"""`runsense runs list` and `runsense runs show`."""

from __future__ import annotations

from typing import Annotated

import typer

from ..errors import RunsenseError
from ..text import clean
from ..values import MAX_INT64
from . import render
from .app_state import state_of
from .render import lit

runs_app = typer.Typer(help="Inspect runs.", no_args_is_help=True, rich_markup_mode=None)


@runs_app.command("list")
def list_runs(
    ctx: typer.Context,
    job: Annotated[str | None, typer.Option("--job", help="Only runs of this job.")] = None,
    status: Annotated[
        str | None, typer.Option("--status", help="Only runs with this status.")
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", help="At most this many runs.", min=1, max=MAX_INT64)
    ] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List runs, newest first."""
    from ..runs import RunStatus  # here, not at import: keeps `runsense --help` fast

    wanted = None
    if status is not None:
        try:
            wanted = RunStatus(status.upper())
        except ValueError:
            known = ", ".join(s.value for s in RunStatus)
            raise RunsenseError(f"unknown status '{status}'", f"use one of {known}") from None
    # clean(): an argument that is not UTF-8 (surrogate-escaped) cannot be a query parameter.
    runs = state_of(ctx).reader.list_runs(clean(job) if job else job, wanted, limit)
    if as_json:
        render.print_json([render.run_json(run) for run in runs])
        return
    if not runs:
        render.console().print("No runs yet. Start one with: runsense run JOB")
        return
    render.console().print(render.runs_table(runs))


@runs_app.command("show")
def show_run(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="A run id or a unique prefix.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show a run and its event log."""
    storage = state_of(ctx).reader
    run = storage.find_run(clean(run_id))
    events = storage.events_for_run(run.run_id)
    if as_json:
        render.print_json(
            {**render.run_json(run), "events": [render.event_json(e) for e in events]}
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
    user_tags = {k: v for k, v in run.tags.items()}
    if user_tags:
        text = ", ".join(f"{k}={v}" for k, v in sorted(user_tags.items()))
        out.print("tags: " + clean(text), markup=False)
    if run.run_config:
        import json

        out.print("config: " + json.dumps(run.run_config), markup=False)
    out.print(render.events_table(events))
    for event in events:
        if event.error and event.step_key:
            out.print(f"[red]Error in {lit(event.step_key)}:[/red]")
            out.print(clean(event.error.stack.rstrip()), markup=False, highlight=False)
