"""`runsense sensor ...`: list, start, stop, tick, preview, cursor, ticks, failures, retry."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from ..errors import RunsenseError
from ..text import clean
from ..values import MAX_INT64
from . import render
from .app_state import state_of
from .render import lit

sensor_app = typer.Typer(
    help="Inspect and drive run status sensors.", no_args_is_help=True, rich_markup_mode=None
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _pick(ctx: typer.Context, names: list[str] | None, all_: bool) -> list[Any]:
    definitions = state_of(ctx).definitions
    if all_ and names:
        raise RunsenseError("give sensor names or --all, not both")
    if all_:
        return list(definitions.sensors.values())
    if not names:
        raise RunsenseError(
            "name at least one sensor, or pass --all", "`runsense sensor list` lists them"
        )
    return [definitions.get_sensor(name) for name in names]


@sensor_app.command("list")
def list_sensors(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List sensors: watched status, running or stopped, monitored jobs, events waiting, last tick."""
    evaluator = state_of(ctx).evaluator
    rows = []
    for sensor in evaluator.definitions.sensors.values():
        sensor_state = evaluator.state(sensor)
        last = evaluator.storage.last_tick(sensor_state.sensor_id)
        rows.append((sensor, sensor_state, evaluator.lag(sensor, sensor_state), last))
    if as_json:
        render.print_json(
            [
                render.sensor_json(st, s.run_status.value, lag, last, s.monitored_names())
                for s, st, lag, last in rows
            ]
        )
        return
    if not rows:
        render.console().print("This project defines no sensors.")
        return
    from rich.table import Table

    table = Table(header_style="bold")
    for column in ("sensor", "watches", "state", "monitors", "waiting", "last tick"):
        table.add_column(column, overflow="fold")
    for sensor, sensor_state, lag, last in rows:
        last_text = (
            f"{render.styled(last.status.value)} {render.ago(last.started_at)}" if last else "never"
        )
        table.add_row(
            lit(sensor.name),
            sensor.run_status.value,
            render.styled(sensor_state.status.value),
            lit(", ".join(sensor.monitored_names())),
            str(lag),
            last_text,
        )
    render.console().print(table)


@sensor_app.command("start")
def start(
    ctx: typer.Context,
    names: Annotated[
        list[str] | None, typer.Argument(metavar="NAME...", help="Sensors to start.")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Start every sensor.")] = False,
    from_now: Annotated[
        bool,
        typer.Option("--from-now", help="Skip events that arrived while the sensor was stopped."),
    ] = False,
) -> None:
    """Start sensors; a sensor resumes from its cursor unless --from-now."""
    from ..records import SensorStatus

    sensors = _pick(ctx, names, all_)
    evaluator = state_of(ctx).evaluator
    storage = evaluator.storage
    out = render.console()
    for sensor in sensors:
        sensor_state = evaluator.state(sensor)
        if sensor_state.status == SensorStatus.RUNNING:
            out.print(f"{lit(sensor.name)} is already running.")
            continue
        cursor = storage.newest_event_id() if from_now else None
        waiting = 0 if from_now else evaluator.lag(sensor, sensor_state)
        storage.set_sensor_status(sensor_state.sensor_id, SensorStatus.RUNNING, cursor=cursor)
        if waiting:
            out.print(
                f"Started {lit(sensor.name)}: {waiting} {sensor.run_status.value} event(s) waiting will be "
                "handled on its next tick (start with --from-now to skip them)."
            )
        else:
            out.print(
                f"Started {lit(sensor.name)}: it reacts to runs that reach {sensor.run_status.value} from now on."
            )


@sensor_app.command("stop")
def stop(
    ctx: typer.Context,
    names: Annotated[
        list[str] | None, typer.Argument(metavar="NAME...", help="Sensors to stop.")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Stop every sensor.")] = False,
) -> None:
    """Stop sensors; each keeps its cursor, so starting it again resumes where it stopped."""
    from ..records import SensorStatus

    sensors = _pick(ctx, names, all_)
    evaluator = state_of(ctx).evaluator
    out = render.console()
    for sensor in sensors:
        sensor_state = evaluator.state(sensor)
        if sensor_state.status == SensorStatus.STOPPED:
            out.print(f"{lit(sensor.name)} is already stopped.")
            continue
        evaluator.storage.set_sensor_status(sensor_state.sensor_id, SensorStatus.STOPPED)
        out.print(f"Stopped {lit(sensor.name)} at event {sensor_state.cursor}.")


@sensor_app.command("tick")
def tick(
    ctx: typer.Context,
    names: Annotated[
        list[str] | None,
        typer.Argument(metavar="[NAME...]", help="Sensors to tick (default: all running)."),
    ] = None,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Do not wait for the requested runs.")
    ] = False,
    max_concurrent_runs: Annotated[
        int, typer.Option(help="Run workers at most at once.", min=1, max=10_000)
    ] = 4,
) -> None:
    """Tick running sensors once: handle every waiting event, then run what they requested."""
    from ..launcher import RunLauncher
    from ..records import SensorStatus

    state = state_of(ctx)
    if names:
        # Checked before state.evaluator, which registers sensors: bad input writes nothing.
        sensors = [state.definitions.get_sensor(name) for name in names]
        for sensor in sensors:
            if not _is_running(state, sensor):
                raise RunsenseError(
                    f"sensor '{sensor.name}' is stopped",
                    f"start it first: runsense sensor start {sensor.name}",
                )
    evaluator = state.evaluator
    if not names:
        sensors = [
            s
            for s in state.definitions.sensors.values()
            if evaluator.state(s).status == SensorStatus.RUNNING
        ]
    out = render.console()
    if not sensors:
        out.print("No running sensors. Start one with: runsense sensor start NAME")
        return
    failed = False
    requested: list[str] = []
    for sensor in sensors:
        result = evaluator.tick(sensor)
        t = result.tick
        failed |= bool(t.errors)
        requested += t.run_ids
        out.print(
            f"{lit(sensor.name)}: {render.styled(t.status.value)} · {t.events_scanned} event(s), "
            f"{t.reactions} reaction(s), {len(t.run_ids)} run(s) requested · "
            f"{render.duration(t.duration_s)}"
        )
        for reason in sorted(set(t.skip_reasons)):
            out.print(f"  [yellow]skipped[/yellow]: {lit(reason)}")
        for error in t.errors:
            out.print(f"  [red]failed[/red]: {lit(error)}")
    if requested:
        launcher = RunLauncher(state.storage, state.home, max_concurrent_runs)
        if no_wait:
            started = launcher.launch_queued(set(requested))
            left = len(requested) - len(started)
            out.print(
                f"Launched {len(started)} run worker(s)"
                + (f"; {left} run(s) stay queued for the daemon." if left else ".")
            )
        else:
            out.print(f"Running {len(requested)} requested run(s)…")

            def finished(run: Any) -> None:
                nonlocal failed
                failed |= not run.is_success
                out.print(
                    f"  run {run.run_id[:8]} {lit(run.job_name)} {render.styled(run.status.value)} "
                    f"in {render.duration(run.duration)}"
                )

            launcher.wait_for(set(requested), on_finish=finished)
    raise typer.Exit(1 if failed else 0)


def _is_running(state: Any, sensor: Any) -> bool:
    """Whether a sensor runs, read without registering it: one never seen has its default."""
    from ..records import SensorStatus

    stored = state.reader.sensor_state(state.definitions.location, sensor.name)
    if stored is None:
        return sensor.default_status.value == SensorStatus.RUNNING.value
    return stored.status == SensorStatus.RUNNING


@sensor_app.command("preview")
def preview(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The sensor to evaluate.")],
    run_id: Annotated[
        str | None, typer.Option("--run", help="Evaluate against this past run.")
    ] = None,
    limit: Annotated[
        int, typer.Option(help="At most this many waiting events.", min=1, max=MAX_INT64)
    ] = 20,
) -> None:
    """Evaluate a sensor without storing anything (its function really runs)."""
    from ..evaluation import SensorEvaluator
    from ..records import ReactionState
    from .state import show_sensor_logs

    state = state_of(ctx)
    sensor = state.definitions.get_sensor(name)
    show_sensor_logs()  # state.evaluator does it for the other commands
    # Not state.evaluator: registering sensors would write, and a preview stores nothing;
    # not state.storage either: on a fresh home it would create the database.
    storage = state.reader
    evaluator = SensorEvaluator(storage, state.definitions, state.project_ref.to_origin())
    sensor_state = storage.sensor_state(evaluator.location, sensor.name)
    err = render.console(stderr=True)
    if run_id is not None:
        run = storage.find_run(clean(run_id))
        event = storage.status_event_for_run(run.run_id, sensor.event_type)
        if event is None:
            err.print(
                f"[yellow]note:[/yellow] run {run.run_id[:8]} never reached {sensor.run_status.value}; previewing anyway."
            )
        pairs = [(event, run)]
    else:
        cursor = sensor_state.cursor if sensor_state else storage.newest_event_id()
        page, _ = storage.status_events_after(
            sensor.event_type, cursor, sensor.scope(evaluator.location), limit
        )
        pairs = list(page)
        if not pairs:
            render.console().print(
                f"No {sensor.run_status.value} events waiting for {sensor.name}; use --run RUN_ID to try a past run."
            )
            return
    build_message = getattr(sensor, "preview_message", None)
    out = render.console()
    if build_message is None:
        err.print(
            "[yellow]warning:[/yellow] preview calls the sensor's function for real; its side effects happen, nothing is stored."
        )
    sensor_id = sensor_state.sensor_id if sensor_state else None
    for event, run in pairs:
        header = f"run {run.run_id[:8]} ({lit(run.job_name)}, {run.status.value}):"
        if build_message is not None:
            try:
                message = build_message(sensor.build_context(run, event, storage))
            except RuntimeError as exc:
                out.print(f"{header} [red]would fail[/red]: {lit(exc)}")
                continue
            out.print(f"{header} would post to Slack (nothing is sent):")
            typer.echo(json.dumps(message, indent=2))  # not rich: wrapping would break the JSON
            continue
        outcome = evaluator.react(sensor, sensor_id, event or _placeholder_event(run, sensor), run)
        if outcome.error:
            out.print(f"{header} [red]would fail[/red]: {lit(outcome.error)}")
        elif outcome.new_runs:
            for new in outcome.new_runs:
                config = lit(json.dumps(new.run_config))
                out.print(
                    f"{header} would request a run of {lit(new.job_name)} with config {config}"
                )
        elif outcome.state == ReactionState.SKIPPED:
            out.print(f"{header} would skip: {lit(outcome.skip_message)}")
        else:
            out.print(f"{header} would write: {lit(outcome.write_back)}")


def _placeholder_event(run: Any, sensor: Any) -> Any:
    from ..runs import RunEvent

    return RunEvent(0, run.run_id, sensor.event_type, run.end_time or run.created_at, "")


@sensor_app.command("cursor")
def cursor(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME")],
    set_to: Annotated[
        int | None,
        typer.Option("--set", help="Move the cursor to this event id.", min=0, max=MAX_INT64),
    ] = None,
    from_now: Annotated[
        bool, typer.Option("--from-now", help="Move the cursor to the newest event.")
    ] = False,
) -> None:
    """Show or move a sensor's cursor (the last status event it consumed)."""
    state = state_of(ctx)
    sensor = state.definitions.get_sensor(name)
    if set_to is not None and from_now:
        raise RunsenseError("give --set or --from-now, not both")
    # Checked before state.evaluator, which registers sensors: bad input writes nothing.
    if set_to is not None and set_to > (newest := state.reader.newest_event_id()):
        raise RunsenseError(f"event {set_to} does not exist yet (newest is {newest})")
    evaluator = state.evaluator
    storage = evaluator.storage
    sensor_state = evaluator.state(sensor)
    newest = storage.newest_event_id()
    target = newest if from_now else set_to
    out = render.console()
    if target is not None:
        storage.set_cursor(sensor_state.sensor_id, target)
        out.print(f"Moved {lit(sensor.name)}'s cursor from {sensor_state.cursor} to {target}.")
        sensor_state = evaluator.state(sensor)
    out.print(
        f"{lit(sensor.name)}: cursor {sensor_state.cursor}, newest event {newest}, "
        f"{evaluator.lag(sensor, sensor_state)} {sensor.run_status.value} event(s) waiting"
    )


@sensor_app.command("ticks")
def ticks(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME")],
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=MAX_INT64)] = 20,
    as_json: JsonOption = False,
) -> None:
    """Show a sensor's recent ticks."""
    sensor = state_of(ctx).definitions.get_sensor(name)
    evaluator = state_of(ctx).evaluator
    sensor_state = evaluator.state(sensor)
    found = evaluator.storage.list_ticks(sensor_state.sensor_id, limit)
    if as_json:
        render.print_json([render.tick_json(t) for t in found])
        return
    render.console().print(render.ticks_table(found))


@sensor_app.command("failures")
def failures(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(metavar="[NAME]")] = None,
    as_json: JsonOption = False,
) -> None:
    """List failed reactions: RETRYING ones wait for their next attempt, DEAD ones are parked."""
    definitions = state_of(ctx).definitions
    sensors = [definitions.get_sensor(name)] if name else list(definitions.sensors.values())
    evaluator = state_of(ctx).evaluator
    found = evaluator.storage.failed_reactions([evaluator.state(s).sensor_id for s in sensors])
    if as_json:
        render.print_json([render.failure_json(r) for r in found])
        return
    if not found:
        render.console().print("No failed reactions.")
        return
    from rich.table import Table

    table = Table(header_style="bold")
    for column in ("sensor", "event", "run", "attempts", "state", "next attempt", "error"):
        table.add_column(column, overflow="fold")
    for r in found:
        table.add_row(
            lit(r.sensor),
            str(r.event_id),
            r.run_id[:8],
            str(r.attempts),
            render.styled(r.state.value),
            render.local_time(r.next_attempt_at) if r.next_attempt_at else "-",
            lit(r.error.strip().splitlines()[-1]) if r.error and r.error.strip() else "",
        )
    render.console().print(table)
    render.console().print("Retry parked ones with: runsense sensor retry NAME --all")


@sensor_app.command("retry")
def retry(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME")],
    all_: Annotated[
        bool, typer.Option("--all", help="Every parked reaction of the sensor.")
    ] = False,
    event: Annotated[
        int | None,
        typer.Option("--event", help="Only the reaction to this event id.", min=0, max=MAX_INT64),
    ] = None,
) -> None:
    """Queue parked (DEAD) reactions again, with a fresh retry budget."""
    if all_ == (event is not None):
        raise RunsenseError(
            "give --all or --event ID", "`runsense sensor failures` lists parked reactions"
        )
    state = state_of(ctx)
    sensor = state.definitions.get_sensor(name)
    # Not state.evaluator: a sensor never registered has nothing parked, and bad input writes nothing.
    stored = state.reader.sensor_state(state.definitions.location, sensor.name)
    count = state.storage.requeue_reactions(stored.sensor_id, event) if stored else 0
    if event is not None and count == 0:
        raise RunsenseError(
            f"sensor '{name}' has no parked reaction for event {event}",
            "`runsense sensor failures` lists them",
        )
    if count == 0:
        render.console().print(f"{lit(name)} has no parked reactions; nothing to retry.")
        return
    render.console().print(
        f"Queued {count} reaction(s) of {lit(name)} for retry; the daemon or `runsense sensor tick {lit(name)}` runs them."
    )
