"""`runsense sensor preview`: what a sensor would do for its waiting events (or one past run),
storing nothing. Alert sensors (Slack, email) and page sensors send nothing either: their messages
are printed as JSON, alone on stdout so they pipe; notes go to stderr."""

from __future__ import annotations

import json
from typing import Any

import typer

from ..text import clean
from . import render
from .render import lit


def show_preview(state: Any, name: str, run_id: str | None, limit: int) -> None:
    from ..evaluation import SensorEvaluator
    from .state import show_sensor_logs

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
                f"[yellow]note:[/yellow] run {run.run_id[:8]} never reached {sensor.status_label}; previewing anyway."
            )
        pairs = [(event or _placeholder_event(run, sensor), run)]
    else:
        cursor = sensor_state.cursor if sensor_state else storage.newest_event_id()
        page, _ = storage.status_events_after(
            sensor.event_types, cursor, sensor.scope(evaluator.location), limit
        )
        pairs = list(page)
    sensor_id = sensor_state.sensor_id if sensor_state else None
    build_message = getattr(sensor, "preview_message", None)
    json_out = sensor.page_fn or build_message is not None
    if not pairs:
        err.print(
            f"No {sensor.status_label} events waiting for {lit(sensor.name)}; use --run RUN_ID"
            " to try a past run."
        )
        if json_out:
            typer.echo("[]")  # still one JSON document on stdout
        return
    if sensor.page_fn:
        _preview_page(evaluator, storage, sensor, sensor_id, pairs)
    elif build_message is not None:
        _preview_messages(storage, sensor, build_message, pairs, one=run_id is not None)
    else:
        _preview_reactions(evaluator, sensor, sensor_id, pairs)


def _header(run: Any) -> str:
    return f"run {run.run_id[:8]} ({lit(run.job_name)}, {run.status.value}):"


def _preview_messages(
    storage: Any, sensor: Any, build_message: Any, pairs: list, one: bool
) -> None:
    """A per-run alert sensor: the message each run would get."""
    err = render.console(stderr=True)
    action = getattr(sensor, "preview_action", "post this to Slack")
    messages = []
    for event, run in pairs:
        try:
            messages.append(build_message(sensor.build_context(run, event, storage)))
        except RuntimeError as exc:  # a text_fn that raises; the message is redacted
            err.print(f"{_header(run)} [red]would fail[/red]: {lit(exc)}")
            continue
        err.print(f"{_header(run)} would {action} (nothing is sent):")
    if not messages:
        if not one:
            typer.echo("[]")  # still one JSON document on stdout
        return
    # Plain JSON, not rich (wrapping would break it), alone on stdout so it pipes.
    typer.echo(json.dumps(messages[0] if one else messages, indent=2))


def _preview_page(evaluator: Any, storage: Any, sensor: Any, sensor_id: Any, pairs: list) -> None:
    """A page sensor, called once for the whole page with `page.preview` set: it records what it
    would send (`page.would_send`) instead of sending. Its state is read, never written."""
    from ..sensor_state import SensorStateStore

    err = render.console(stderr=True)
    if not getattr(sensor, "previews_pages", False):
        err.print(
            "[yellow]warning:[/yellow] preview calls the page sensor's function with "
            "page.preview set; a function that ignores it really sends. Nothing is stored."
        )
    store = SensorStateStore(lambda: storage.sensor_values(sensor_id) if sensor_id else {})
    sent: list[Any] = []
    outcomes = evaluator.react_page(sensor, sensor_id, pairs, store=store, preview=sent)
    for (_, run), outcome in zip(pairs, outcomes, strict=True):
        if outcome.error:
            err.print(f"{_header(run)} [red]would fail[/red]: {lit(outcome.error)}")
        elif outcome.skip_message:
            err.print(f"{_header(run)} would skip: {lit(outcome.skip_message)}")
        else:
            err.print(f"{_header(run)} handled in this page")
    err.print(f"The page would send {len(sent)} message(s) (nothing is sent):")
    typer.echo(json.dumps(sent, indent=2, default=str))


def _preview_reactions(evaluator: Any, sensor: Any, sensor_id: Any, pairs: list) -> None:
    """Any other sensor: its function really runs; what it returns is described."""
    from ..records import ReactionState

    out = render.console()
    render.console(stderr=True).print(
        "[yellow]warning:[/yellow] preview calls the sensor's function for real; its side effects happen, nothing is stored."
    )
    for event, run in pairs:
        outcome = evaluator.react(sensor, sensor_id, event, run)
        header = _header(run)
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
