"""Operating runs: `runs cancel`, `runs logs`, `runs rerun`, `runs delete` and `prune`."""

# No `from __future__ import annotations` here: Typer would turn every string annotation of every
# command back into objects with eval at each start (~10 ms of every Typer command).

from typing import Annotated, Any

import typer

from ..errors import RunsenseError
from ..text import clean
from . import complete, render
from .app_state import state_of
from .command import RunsenseCommand
from .runs import runs_app

RunIds = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="RUN_ID...", help="Run ids or unique prefixes.", autocompletion=complete.run_ids
    ),
]
OneRun = Annotated[
    str,
    typer.Argument(
        metavar="RUN_ID", help="A run id or a unique prefix.", autocompletion=complete.run_ids
    ),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@runs_app.command("cancel", cls=RunsenseCommand)
def cancel(
    ctx: typer.Context,
    run_ids: RunIds = None,
    all_queued: Annotated[
        bool, typer.Option("--all-queued", help="Cancel every QUEUED run.")
    ] = False,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Ask, and do not wait for runs to stop.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Cancel runs: a QUEUED run becomes CANCELED at once; a run in progress becomes CANCELING,
    its worker gets SIGTERM (SIGKILL 10 s later) and the run ends CANCELED. A worker on another
    machine is stopped by that machine's daemon.

    \b
    Examples:
      runsense runs cancel 534d9094
      runsense runs cancel --all-queued --json
    """
    from ..cancel import cancel_runs
    from ..runs import RunStatus

    if all_queued and run_ids:
        raise RunsenseError("give run ids or --all-queued, not both")
    if not all_queued and not run_ids:
        raise RunsenseError("name at least one run, or pass --all-queued")
    storage = state_of(ctx).storage
    if all_queued:
        runs = storage.runs_with_status([RunStatus.QUEUED])
    else:
        runs = [storage.find_run(clean(run_id)) for run_id in run_ids or []]
    before = {run.run_id: run.status for run in runs}
    ended = cancel_runs(storage, runs, wait=not no_wait)
    if as_json:
        render.print_json([render.run_json(run) for run in ended])
        return
    out = render.console()
    if not ended:
        out.print("No queued runs.")
    for run in ended:
        was = before[run.run_id]
        if was.value in ("SUCCESS", "FAILURE", "CANCELED"):
            note = f"had already ended {was.value}"
        elif run.status == RunStatus.CANCELING:
            note = "is CANCELING: its worker is being stopped" + (
                f" by the daemon on {run.worker.split('/')[0]}" if run.worker else ""
            )
        else:
            note = render.styled(run.status.value)
        out.print(f"Run {run.run_id[:8]} {note}")


@runs_app.command("logs", cls=RunsenseCommand)
def logs(
    ctx: typer.Context,
    run_id: OneRun,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow", "-F", help="Keep printing until the run ends; exit 1 unless it succeeds."
        ),
    ] = False,
) -> None:
    """Print a run's event log and its worker's output, in time order.

    \b
    Examples:
      runsense runs logs 534d9094
      runsense runs logs 534d --follow && echo succeeded
    """
    from ..run_output import OutputReader, log_path, merged
    from ..run_output import follow as follow_lines

    state = state_of(ctx)
    storage = state.reader
    run = storage.find_run(clean(run_id))
    if follow:
        lines = follow_lines(storage, state.home, run.run_id)
    else:
        output = OutputReader(log_path(state.home, run.run_id)).read()
        lines = iter(merged(storage.events_for_run(run.run_id), output))
    out = render.console()
    for line in lines:
        out.print(_log_line(line), markup=False, highlight=False, soft_wrap=True)
    if follow:
        raise typer.Exit(0 if storage.get_run(run.run_id).is_success else 1)


def _log_line(line: Any) -> str:
    from datetime import datetime

    clock = datetime.fromtimestamp(line.timestamp).strftime("%H:%M:%S.%f")[:-3]
    if line.event is None:
        return f"{clock}  output  {clean(line.text)}"
    step = f" [{line.event.step_key}]" if line.event.step_key else ""
    return f"{clock}  {line.event.event_type.value}{step}  {clean(line.text)}"


@runs_app.command("rerun", cls=RunsenseCommand)
def rerun(
    ctx: typer.Context,
    run_id: OneRun,
    queue: Annotated[bool, typer.Option("--queue", help="Queue it for a daemon.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Run a run's job again with its config and user tags, as a new run tagged
    runsense/rerun_of (its parent is the old run); in the foreground unless --queue.

    \b
    Examples:
      runsense runs rerun 534d9094
      runsense runs rerun 534d --queue
    """
    from ..operations import rerun_request
    from .run_here import execute_here

    state = state_of(ctx)
    run = state.reader.find_run(clean(run_id))
    definitions = state.definitions
    if run.location != definitions.location:
        raise RunsenseError(
            f"run {run.run_id[:8]} belongs to location '{run.location}',"
            f" not this project's '{definitions.location}'",
            "run the command from that project (-f/-m)",
        )
    job = definitions.get_job(run.job_name)
    request = rerun_request(run)
    code = execute_here(
        state,
        job,
        request["run_config"],
        request["tags"],
        queue=queue,
        as_json=as_json,
        launched_by="rerun",
        parent_run_id=request["parent_run_id"],
        root_run_id=request["root_run_id"],
    )
    raise typer.Exit(code)


@runs_app.command("delete", cls=RunsenseCommand)
def delete(ctx: typer.Context, run_ids: RunIds = None) -> None:
    """Delete finished runs with their events and worker logs (never a run in progress).

    \b
    Examples:
      runsense runs delete 534d9094
      runsense runs delete 534d9094 a031c053
    """
    from ..operations import delete_runs

    if not run_ids:
        raise RunsenseError("name at least one run to delete")
    state = state_of(ctx)
    runs = [state.storage.find_run(clean(run_id)) for run_id in run_ids]
    deleted = delete_runs(state.storage, state.home, runs)
    render.console().print(f"Deleted {len(deleted)} run(s).")


def prune(
    ctx: typer.Context,
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than", metavar="AGE", help="Delete what is older than this: 30d, 12h, 90m."
        ),
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would go; delete nothing.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Delete finished runs (with their events and worker logs), ticks and reactions older than
    AGE. Never a run in progress, a run a running sensor has not read yet, or a reaction still
    retrying. `retention = "30d"` in the settings makes the daemon do this every hour.

    \b
    Examples:
      runsense prune --older-than 30d --dry-run
      runsense prune --older-than 12h
    """
    import time

    from ..operations import parse_age, prune_history

    age = parse_age(older_than)
    state = state_of(ctx)
    result = prune_history(state.storage, state.home, time.time() - age, dry_run=dry_run)
    if as_json:
        render.print_json(
            {
                "dry_run": dry_run,
                "run_ids": result.run_ids,
                "runs": len(result.run_ids),
                "events": result.events,
                "ticks": result.ticks,
                "reactions": result.reactions,
            }
        )
        return
    verb = "Would delete" if dry_run else "Deleted"
    render.console().print(
        f"{verb} {len(result.run_ids)} run(s), {result.events} event(s), {result.ticks} tick(s)"
        f" and {result.reactions} reaction(s) older than {older_than.strip()}."
    )
