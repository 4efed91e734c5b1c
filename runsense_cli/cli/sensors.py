"""`runsense sensor ...`: list, start, stop, tick, preview and cursor (ticks, failures and retry
are in sensor_history)."""

# No `from __future__ import annotations` here: Typer would turn every string annotation of every
# command back into objects with eval at each start (~10 ms of every Typer command).

from typing import Annotated, Any

import typer

from ..errors import RunsenseError
from ..values import MAX_INT64
from . import complete, render
from .app_state import state_of
from .command import RunsenseCommand
from .render import lit
from .sensor_group import JsonOption, sensor_app
from .status import warn_if_no_daemon


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


@sensor_app.command("list", cls=RunsenseCommand)
def list_sensors(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List sensors: watched status, running or stopped, monitored jobs, events waiting, last tick.

    \b
    Examples:
      runsense sensor list
      runsense sensor list --json
    """
    evaluator = state_of(ctx).evaluator
    warn_if_no_daemon(state_of(ctx))
    rows = []
    for sensor in evaluator.definitions.sensors.values():
        sensor_state = evaluator.state(sensor)
        last = evaluator.storage.last_tick(sensor_state.sensor_id)
        rows.append((sensor, sensor_state, evaluator.lag(sensor, sensor_state), last))
    if as_json:
        render.print_json(
            [
                render.sensor_json(st, s.status_label, lag, last, s.monitored_names())
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
            sensor.status_label,
            render.styled(sensor_state.status.value),
            lit(", ".join(sensor.monitored_names())),
            render.waiting(lag),
            last_text,
        )
    render.console().print(render.keep_whole(table, [0, 2, 4], flexible=[1, 3, 5]))


@sensor_app.command("start", cls=RunsenseCommand)
def start(
    ctx: typer.Context,
    names: Annotated[list[str] | None, complete.sensor_arg("NAME...", "Sensors to start.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Start every sensor.")] = False,
    from_now: Annotated[
        bool,
        typer.Option("--from-now", help="Skip events that arrived while the sensor was stopped."),
    ] = False,
) -> None:
    """Start sensors; a sensor resumes from its cursor unless --from-now.

    \b
    Examples:
      runsense sensor start report_status_sensor
      runsense sensor start --all --from-now
    """
    import os

    from ..sensor_control import start_sensor

    sensors = _pick(ctx, names, all_)
    evaluator = state_of(ctx).evaluator
    warn_if_no_daemon(state_of(ctx))
    out = render.console()
    err = render.console(stderr=True)
    for sensor in sensors:
        for variable in sensor.required_env:
            if not os.environ.get(variable):
                err.print(
                    f"warning: ${variable} is not set: {sensor.name}'s reactions will fail "
                    "(and be retried) until the daemon or `sensor tick` runs with it",
                    markup=False,
                    soft_wrap=True,  # one line, however narrow the terminal
                )
        change = start_sensor(evaluator, sensor, from_now=from_now)
        waiting = change.waiting
        if not change.changed:
            out.print(
                f"{lit(sensor.name)} is already running (and now stays so whatever its code says)."
            )
            continue
        if waiting:
            out.print(
                f"Started {lit(sensor.name)}: {render.waiting(waiting)} {sensor.status_label}"
                " event(s) waiting will be handled on its next tick (start with --from-now to"
                " skip them)."
            )
        else:
            out.print(
                f"Started {lit(sensor.name)}: it reacts to runs that reach {sensor.status_label} from now on."
            )


@sensor_app.command("stop", cls=RunsenseCommand)
def stop(
    ctx: typer.Context,
    names: Annotated[list[str] | None, complete.sensor_arg("NAME...", "Sensors to stop.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Stop every sensor.")] = False,
) -> None:
    """Stop sensors; each keeps its cursor, so starting it again resumes where it stopped.

    \b
    Examples:
      runsense sensor stop report_status_sensor
      runsense sensor stop --all
    """
    from ..sensor_control import stop_sensor

    sensors = _pick(ctx, names, all_)
    evaluator = state_of(ctx).evaluator
    out = render.console()
    for sensor in sensors:
        change = stop_sensor(evaluator, sensor)
        if not change.changed:
            out.print(
                f"{lit(sensor.name)} is already stopped (and now stays so whatever its code says)."
            )
            continue
        out.print(f"Stopped {lit(sensor.name)} at event {change.cursor}.")


@sensor_app.command("reset", cls=RunsenseCommand)
def reset(
    ctx: typer.Context,
    names: Annotated[list[str] | None, complete.sensor_arg("NAME...", "Sensors to reset.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Reset every sensor.")] = False,
) -> None:
    """Hand a sensor's status back to its code: it runs or stops as its `default_status` says,
    until the next `sensor start` or `sensor stop` (Dagster's "reset sensor status").

    \b
    Examples:
      runsense sensor reset report_status_sensor
      runsense sensor reset --all
    """
    from ..sensor_control import reset_sensor

    sensors = _pick(ctx, names, all_)
    evaluator = state_of(ctx).evaluator
    out = render.console()
    for sensor in sensors:
        change = reset_sensor(evaluator, sensor)
        out.print(
            f"{lit(sensor.name)} follows its code again: {change.now.value}"
            + (f" (was {change.was.value})." if change.changed else ".")
        )


@sensor_app.command("tick", cls=RunsenseCommand)
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
        int | None,
        typer.Option(
            metavar="N", help="Run workers at most at once [default: 4].", min=1, max=10_000
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Tick running sensors once: handle every waiting event, then run what they requested.
    With --json, stdout holds one list of ticks and the progress goes to stderr.

    \b
    Examples:
      runsense sensor tick
      runsense sensor tick log_failures --no-wait --json
    """
    from ..records import SensorStatus
    from ..tick_process import tick_sensors

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
    out = render.console(stderr=as_json)
    if not sensors:
        out.print("No running sensors. Start one with: runsense sensor start NAME")
        if as_json:
            render.print_json([])
        return
    import time

    from ..evaluation import requested_during

    failed = False
    first_ids: list[str] = []  # the first runs each tick requested (Tick.run_ids is capped)
    windows: list[tuple[str, float, float]] = []  # (sensor, from, to): when its tick ran
    requested = 0
    ticks: list[Any] = []
    dot = render.mark("dot")
    since = time.time()
    ends = tick_sensors(evaluator, sensors)  # side by side, each in a process of its own
    until = time.time()
    problems = [end.error for end in ends if end.error]
    for end in ends:
        if end.result is None:
            continue
        sensor, t = end.result.sensor, end.result.tick
        ticks.append(t)
        failed |= bool(t.failures)
        if t.runs_requested:
            requested += t.runs_requested
            first_ids += t.run_ids
            windows.append((sensor, since, until))
        out.print(
            f"{lit(sensor)}: {render.styled(t.status.value)} {dot} {t.events_scanned} event(s), "
            f"{t.reactions} reaction(s), {t.runs_requested} run(s) requested {dot} "
            f"{render.duration(t.duration_s)}"
        )
        for reason in sorted(t.skip_reasons):
            out.print(f"  [yellow]skipped[/yellow]: {lit(reason)}")
        for error in t.errors:
            out.print(f"  [red]failed[/red]: {lit(error)}")
        if t.failures > len(t.errors):
            out.print(f"  [red]failed[/red]: {t.failures - len(t.errors)} more (sensor failures)")
    for problem in problems:
        out.print(f"[red]error[/red]: {lit(problem)}")
    if requested:
        launcher = state.launcher(max_concurrent_runs)
        if no_wait:
            started = launcher.launch_queued(set(first_ids))
            left = requested - len(started)
            out.print(
                f"Launched {len(started)} run worker(s)"
                + (f"; {left} run(s) stay queued for the daemon." if left else ".")
            )
        else:
            out.print(f"Running {requested} requested run(s){render.mark('more')}")

            def finished(run: Any) -> None:
                nonlocal failed
                failed |= not run.is_success
                out.print(
                    f"  run {run.run_id[:8]} {lit(run.job_name)} {render.styled(run.status.value)} "
                    f"in {render.duration(run.duration)}"
                )

            # Every run the ticks requested, read back from storage a page at a time: the
            # ticks keep only the first ids, and a backlog may request a million runs.
            launcher.wait_for(
                (
                    run_id
                    for name, since, until in windows
                    for run_id in requested_during(state.storage, name, since, until)
                ),
                on_finish=finished,
            )
    if as_json:
        render.print_json([render.tick_json(t) for t in ticks])
    raise typer.Exit(2 if problems else 1 if failed else 0)


def _is_running(state: Any, sensor: Any) -> bool:
    """Whether a sensor runs, read without registering it: one never seen has its default."""
    from ..records import SensorStatus

    stored = state.reader.sensor_state(state.definitions.location, sensor.name)
    if stored is None:
        return sensor.default_status.value == SensorStatus.RUNNING.value
    return stored.status == SensorStatus.RUNNING


@sensor_app.command("preview", cls=RunsenseCommand)
def preview(
    ctx: typer.Context,
    name: Annotated[
        str,
        complete.sensor_arg("NAME", "The sensor to evaluate."),
    ],
    run_id: Annotated[
        str | None,
        typer.Option("--run", metavar="RUN_ID", help="Evaluate against this past run."),
    ] = None,
    limit: Annotated[
        int,
        typer.Option(metavar="N", help="At most this many waiting events.", min=1, max=MAX_INT64),
    ] = 20,
) -> None:
    """Evaluate a sensor without storing anything (its function really runs).

    Only the preview goes to stdout: what an alert sensor (Slack, email) would send, as JSON (one
    object for --run, a list for waiting events), and for a page sensor (Slack threads and
    digests included) the list of messages the page would send; notes go to stderr.

    \b
    Examples:
      runsense sensor preview log_failures
      runsense sensor preview slack_on_run_failure --run 534d9094 | python3 -m json.tool
    """
    from .preview import show_preview

    show_preview(state_of(ctx), name, run_id, limit)


@sensor_app.command("cursor", cls=RunsenseCommand)
def cursor(
    ctx: typer.Context,
    name: Annotated[
        str,
        complete.sensor_arg("NAME", "The sensor."),
    ],
    set_to: Annotated[
        int | None,
        typer.Option(
            "--set",
            metavar="EVENT_ID",
            help="Move the cursor to this event id.",
            min=0,
            max=MAX_INT64,
        ),
    ] = None,
    from_now: Annotated[
        bool, typer.Option("--from-now", help="Move the cursor to the newest event.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Show or move a sensor's cursor (the last status event it consumed).

    \b
    Examples:
      runsense sensor cursor log_failures
      runsense sensor cursor log_failures --from-now
    """
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
    before = sensor_state.cursor
    if target is not None:
        storage.set_cursor(sensor_state.sensor_id, target)
        if not as_json:
            out.print(f"Moved {lit(sensor.name)}'s cursor from {before} to {target}.")
        sensor_state = evaluator.state(sensor)
    lag = evaluator.lag(sensor, sensor_state)
    if as_json:
        render.print_json(
            {
                "name": sensor.name,
                "cursor": sensor_state.cursor,
                "previous_cursor": before,
                "newest_event_id": newest,
                **render.lag_json(lag),
            }
        )
        return
    out.print(
        f"{lit(sensor.name)}: cursor {sensor_state.cursor}, newest event {newest}, "
        f"{render.waiting(lag)} {sensor.status_label} event(s) waiting"
    )
