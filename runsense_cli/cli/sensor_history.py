"""`runsense sensor ticks`, `failures` and `retry`: what sensors did, and bringing failed
reactions back."""

# No `from __future__ import annotations` here: Typer would turn every string annotation of every
# command back into objects with eval at each start (~10 ms of every Typer command).

import shlex
from typing import Annotated

import typer

from ..errors import RunsenseError
from ..values import MAX_INT64
from . import complete, render
from .app_state import state_of
from .command import RunsenseCommand
from .sensor_group import JsonOption, sensor_app
from .status import warn_if_no_daemon


@sensor_app.command("ticks", cls=RunsenseCommand)
def ticks(
    ctx: typer.Context,
    name: Annotated[
        str,
        complete.sensor_arg("NAME", "The sensor."),
    ],
    limit: Annotated[
        int,
        typer.Option(
            "--limit", "-n", metavar="N", help="At most this many ticks.", min=1, max=MAX_INT64
        ),
    ] = 20,
    as_json: JsonOption = False,
) -> None:
    """Show a sensor's recent ticks, newest first, then what their function logged.

    \b
    Examples:
      runsense sensor ticks log_failures
      runsense sensor ticks log_failures -n 5 --json
    """
    sensor = state_of(ctx).definitions.get_sensor(name)
    evaluator = state_of(ctx).evaluator
    sensor_state = evaluator.state(sensor)
    found = evaluator.storage.list_ticks(sensor_state.sensor_id, limit)
    if as_json:
        render.print_json([render.tick_json(t) for t in found])
        return
    out = render.console()
    out.print(render.ticks_table(found))
    render.print_tick_logs(out, found)


@sensor_app.command("failures", cls=RunsenseCommand)
def failures(
    ctx: typer.Context,
    name: Annotated[
        str | None, typer.Argument(metavar="[NAME]", help="Only this sensor's failures.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """List failed reactions: RETRYING ones wait for their next attempt, DEAD ones are parked.

    \b
    Examples:
      runsense sensor failures
      runsense sensor failures slack_on_run_failure --json
    """
    from ..records import ReactionState

    definitions = state_of(ctx).definitions
    sensors = [definitions.get_sensor(name)] if name else list(definitions.sensors.values())
    evaluator = state_of(ctx).evaluator
    warn_if_no_daemon(state_of(ctx))
    found = evaluator.storage.failed_reactions([evaluator.state(s).sensor_id for s in sensors])
    if as_json:
        render.print_json([render.failure_json(r) for r in found])
        return
    out = render.console()
    if not found:
        out.print("No failed reactions.")
        return
    from rich.table import Table

    table = Table(header_style="bold")
    for column in ("sensor", "event", "run", "attempts", "state", "next attempt", "error"):
        table.add_column(column, overflow="fold")
    for r in found:
        table.add_row(
            render.lit(r.sensor),
            str(r.event_id),
            r.run_id[:8],
            str(r.attempts),
            render.styled(r.state.value),
            render.local_time(r.next_attempt_at) if r.next_attempt_at else "-",
            render.lit(render.last_line(r.error)),
        )
    out.print(render.keep_whole(table, [0, 1, 2, 3, 4], flexible=[5, 6]))
    waiting: dict[str, int] = {}  # sensor -> failed reactions; --now when any is RETRYING
    retrying: set[str] = set()
    for r in found:
        waiting[r.sensor] = waiting.get(r.sensor, 0) + 1
        if r.state == ReactionState.RETRYING:
            retrying.add(r.sensor)
    for sensor_name, count in waiting.items():
        flag = "--now" if sensor_name in retrying else "--all"
        out.print(
            f"Retry {sensor_name}'s {count} failed reaction(s) now: "
            f"runsense sensor retry {shlex.quote(sensor_name)} {flag}",
            markup=False,
        )


@sensor_app.command("retry", cls=RunsenseCommand)
def retry(
    ctx: typer.Context,
    name: Annotated[
        str,
        complete.sensor_arg("NAME", "The sensor."),
    ],
    all_: Annotated[
        bool, typer.Option("--all", help="Every parked reaction of the sensor.")
    ] = False,
    event: Annotated[
        int | None,
        typer.Option(
            "--event",
            metavar="EVENT_ID",
            help="Only the reaction to this event id.",
            min=0,
            max=MAX_INT64,
        ),
    ] = None,
    now: Annotated[
        bool,
        typer.Option(
            "--now", help="Also skip the back-off of RETRYING reactions: all are due at once."
        ),
    ] = False,
) -> None:
    """Queue parked (DEAD) reactions again with a fresh retry budget; with --now, make
    RETRYING ones due at once too. The daemon's next pass (or `sensor tick`) runs them.

    \b
    Examples:
      runsense sensor retry slack_on_run_failure --all
      runsense sensor retry slack_on_run_failure --now
      runsense sensor retry slack_on_run_failure --event 42 --now
    """
    if all_ and event is not None:
        raise RunsenseError("give --all or --event ID, not both")
    if not (all_ or now or event is not None):
        raise RunsenseError(
            "give --all or --event ID (add --now to skip the back-off of retrying ones)",
            "`runsense sensor failures` lists failed reactions",
        )
    state = state_of(ctx)
    sensor = state.definitions.get_sensor(name)
    # Not state.evaluator: a sensor never registered has nothing parked, and bad input writes nothing.
    stored = state.reader.sensor_state(state.definitions.location, sensor.name)
    if now:
        parked, hurried = (
            state.storage.retry_reactions_now(stored.sensor_id, event) if stored else (0, 0)
        )
        count, kind = parked + hurried, "failed"
    else:
        count = state.storage.requeue_reactions(stored.sensor_id, event) if stored else 0
        kind = "parked"
    if event is not None and count == 0:
        raise RunsenseError(
            f"sensor '{name}' has no {kind} reaction for event {event}",
            "`runsense sensor failures` lists them",
        )
    out = render.console()
    if count == 0:
        out.print(f"{name} has no {kind} reactions; nothing to retry.", markup=False)
        return
    tick = f"runsense sensor tick {shlex.quote(name)}"
    if now:
        out.print(
            f"Made {count} reaction(s) of {name} due now ({parked} parked, {hurried} retrying): "
            f"the daemon retries them on its next pass, or run `{tick}`.",
            markup=False,
        )
    else:
        out.print(
            f"Queued {count} reaction(s) of {name} for retry; the daemon or `{tick}` runs them.",
            markup=False,
        )
    from ..records import SensorStatus

    if stored is not None and stored.status != SensorStatus.RUNNING:
        out.print(
            f"{name} is stopped: start it (`runsense sensor start {shlex.quote(name)}`) "
            "for its reactions to be retried.",
            markup=False,
        )
