"""Turning stored rows back into records; a row runsense cannot decode is a StorageError."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..errors import DamagedRowError
from ..records import Reaction, ReactionState, SensorState, SensorStatus, Tick, TickStatus
from ..runs import ErrorInfo, EventType, RunEvent, RunRecord, RunStatus

RUN_FIELDS = [
    "run_id",
    "job_name",
    "status",
    "location",
    "run_config",
    "tags",
    "created_at",
    "start_time",
    "end_time",
    "parent_run_id",
    "root_run_id",
    "worker_pid",
    "launcher",
    "worker",
    "heartbeat_at",
]
RUN_COLUMNS = ", ".join(RUN_FIELDS)
RUN_COLUMNS_R = ", ".join(f"r.{name}" for name in RUN_FIELDS)
EVENT_COLUMNS = "id, run_id, event_type, timestamp, message, step_key, level, error"
# The columns a new event is written with, in `LaunchesSql._insert_event`'s order.
EVENT_ROW = (
    "run_id, event_type, timestamp, message, step_key, level, error, job_name, location,"
    " run_created_at"
)
# The creation time of run ? (a primary-key lookup). Schema M007 leads the indexes of rows that
# belong to a run with it (`events_by_run`, `runs_by_parent`), so new entries land at their end.
TIME_OF_RUN = "(SELECT p.created_at FROM runs p WHERE p.run_id = ?)"


def of_run(time_column: str, id_column: str) -> str:
    """The rows of run ? (bind its id twice) in an index keyed (time_column, id_column, ...):
    one range, and a second for rows without the time, written by a runsense from before M007
    still running when a newer one migrated the database."""
    return f"({time_column} = {TIME_OF_RUN} OR {time_column} IS NULL) AND {id_column} = ?"


# Runs whose tags may set max_runtime or max_queue_time (a key ending "/max_...time"): the
# predicate of the `runs_with_limits` partial index, repeated verbatim so queries can use it.
LIMITED = """tags LIKE '%/max_%time"%'"""
RUN_EVENTS = of_run("run_created_at", "run_id")  # the events of run ?
RUN_CHILDREN = of_run("parent_created_at", "parent_run_id")  # the runs run ? requested
EVENT_COLUMNS_E = ", ".join(f"e.{name.strip()}" for name in EVENT_COLUMNS.split(","))
SENSOR_COLUMNS = "id, location, name, status, cursor, started_at, last_tick_at, status_source"
REACTION_COLUMNS = (
    "r.sensor_id, r.event_id, r.run_id, r.state, r.attempts, r.next_attempt_at, r.error,"
    " r.skip_message, r.run_ids, r.created_at, r.finished_at, s.name"
)
TICK_COLUMNS = (
    "t.id, s.name, t.status, t.started_at, t.duration_s, t.events_scanned, t.reactions,"
    " t.run_ids, t.skip_reasons, t.errors, t.cursor_before, t.cursor_after, t.logs,"
    " t.runs_requested, t.skipped, t.failures"
)


# Decoding runs and events is a tick's per-reaction cost (a 100k backlog decodes 100k of each):
# a dict lookup instead of an Enum call, and no JSON parser for the empty mapping most runs have.
# A value missing from the dict still goes through the Enum, so a bad row fails as before.
_RUN_STATUSES = {status.value: status for status in RunStatus}
_EVENT_TYPES = {kind.value: kind for kind in EventType}


def _mapping(text: str) -> Any:
    return {} if text == "{}" else json.loads(text)


def undecodable(what: str, exc: Exception) -> DamagedRowError:
    return DamagedRowError(
        f"the database holds a {what} runsense cannot read ({type(exc).__name__}: {exc})",
        "it was written by another program or is damaged; point --home or --database-url"
        " at another database",
    )


def run_from_row(row: Sequence[Any]) -> RunRecord:
    try:
        status = _RUN_STATUSES.get(row[2]) or RunStatus(row[2])
        # Positional, in RUN_FIELDS order (RunRecord's own field order).
        return RunRecord(
            row[0],
            row[1],
            status,
            row[3],
            _mapping(row[4]),
            _mapping(row[5]),
            row[6],
            row[7],
            row[8],
            row[9],
            row[10],
            row[11],
            row[12],
            row[13],
            row[14],
        )
    except (ValueError, TypeError, IndexError) as exc:
        raise undecodable("run", exc) from None


def event_from_row(row: Sequence[Any]) -> RunEvent:
    try:
        return RunEvent(
            event_id=row[0],
            run_id=row[1],
            event_type=_EVENT_TYPES.get(row[2]) or EventType(row[2]),
            timestamp=row[3],
            message=row[4],
            step_key=row[5],
            level=row[6],
            error=ErrorInfo.from_json(row[7]),
        )
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise undecodable("run event", exc) from None


def sensor_from_row(row: Sequence[Any]) -> SensorState:
    try:
        return SensorState(
            sensor_id=row[0],
            location=row[1],
            name=row[2],
            status=SensorStatus(row[3]),
            cursor=row[4],
            started_at=row[5],
            last_tick_at=row[6],
            status_source=row[7],
        )
    except (ValueError, TypeError, IndexError) as exc:
        raise undecodable("sensor", exc) from None


def reaction_from_row(row: Sequence[Any]) -> Reaction:
    try:
        return Reaction(
            sensor_id=row[0],
            event_id=row[1],
            run_id=row[2],
            state=ReactionState(row[3]),
            attempts=row[4],
            next_attempt_at=row[5],
            error=row[6],
            skip_message=row[7],
            run_ids=json.loads(row[8]),
            created_at=row[9],
            finished_at=row[10],
            sensor=row[11],
        )
    except (ValueError, TypeError, IndexError) as exc:
        raise undecodable("sensor reaction", exc) from None


def tick_from_row(row: Sequence[Any]) -> Tick:
    try:
        run_ids, errors = json.loads(row[7]), json.loads(row[9])
        return Tick(
            tick_id=row[0],
            sensor=row[1],
            status=TickStatus(row[2]),
            started_at=row[3],
            duration_s=row[4],
            events_scanned=row[5],
            reactions=row[6],
            run_ids=run_ids,
            skip_reasons=json.loads(row[8]),
            errors=errors,
            cursor_before=row[10],
            cursor_after=row[11],
            logs=json.loads(row[12]),
            # Rows written before the counts existed kept every id and error: count those.
            runs_requested=max(row[13], len(run_ids)),
            skipped=row[14],
            failures=max(row[15], len(errors)),
        )
    except (ValueError, TypeError, IndexError) as exc:
        raise undecodable("tick", exc) from None


def status_message(run: RunRecord, status: RunStatus) -> str:
    return {
        RunStatus.QUEUED: f'Run of "{run.job_name}" queued.',
        RunStatus.STARTING: f'Starting run of "{run.job_name}".',
        RunStatus.STARTED: f'Started execution of run for "{run.job_name}".',
        RunStatus.SUCCESS: f'Finished execution of run for "{run.job_name}".',
        RunStatus.FAILURE: f'Execution of run for "{run.job_name}" failed.',
        RunStatus.CANCELING: f'Canceling run of "{run.job_name}".',
        RunStatus.CANCELED: f'Run of "{run.job_name}" canceled.',
    }.get(status, status.value)
