"""Alerts in the shared SQL: retries and incidents written with a run's terminal status event,
overdue marks, and each sensor's small durable state (SPEC §11)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

from .. import alert_tags
from ..records import Incident, Overdue
from ..runs import EventType, RunRecord, RunStatus, new_run_id
from .sql import SqlBase

OPEN, RESOLVED = "OPEN", "RESOLVED"
INCIDENT_COLUMNS = (
    "id, job_name, location, status, failure_count, opened_at, resolved_at, first_run_id,"
    " last_run_id, resolved_by_run_id"
)
PHASE_STATUSES = {
    "QUEUED": (RunStatus.QUEUED,),
    "STARTED": (RunStatus.STARTING, RunStatus.STARTED),
}


def _incident(row: Any, **flags: bool) -> Incident:
    return Incident(
        incident_id=int(row[0]),
        job_name=row[1],
        location=row[2],
        status=row[3],
        failure_count=int(row[4]),
        opened_at=row[5],
        resolved_at=row[6],
        first_run_id=row[7],
        last_run_id=row[8],
        resolved_by_run_id=row[9],
        **flags,
    )


class AlertsSql(SqlBase):
    # -- inside a status move (called from set_run_status's transaction) --------------------

    def _after_terminal_status(self, run: RunRecord, event_id: int, moment: float) -> RunRecord:
        """Retry and incident bookkeeping for a run that just reached SUCCESS, FAILURE or
        CANCELED, in the transaction that wrote `event_id`; returns the run as now stored."""
        if run.status == RunStatus.FAILURE and alert_tags.will_retry(run.tags):
            tags = {**run.tags, alert_tags.WILL_RETRY: "true"}
            self._execute(
                "UPDATE runs SET tags = ? WHERE run_id = ?", (json.dumps(tags), run.run_id)
            )
            self._queue_retry(run, moment)
            run = self.get_run(run.run_id)
        open_row = self._execute(
            f"SELECT {INCIDENT_COLUMNS} FROM incidents WHERE location = ? AND job_name = ?"
            f" AND status = ?{self.for_update}",
            (run.location, run.job_name, OPEN),
        ).fetchone()
        opened = resolved = False
        incident_id = open_row[0] if open_row else None
        if run.status == RunStatus.FAILURE and not run.will_retry:
            if open_row is None:
                incident_id = self._insert_id(
                    "INSERT INTO incidents (location, job_name, status, failure_count, opened_at,"
                    " first_run_id, last_run_id) VALUES (?, ?, ?, 1, ?, ?, ?)",
                    (run.location, run.job_name, OPEN, moment, run.run_id, run.run_id),
                )
                opened = True
            else:
                self._execute(
                    "UPDATE incidents SET failure_count = failure_count + 1, last_run_id = ?"
                    " WHERE id = ?",
                    (run.run_id, incident_id),
                )
        elif run.status == RunStatus.SUCCESS and open_row is not None:
            self._execute(
                "UPDATE incidents SET status = ?, resolved_at = ?, resolved_by_run_id = ?"
                " WHERE id = ?",
                (RESOLVED, moment, run.run_id, incident_id),
            )
            resolved = True
        if incident_id is None:
            return run
        row = self._execute(
            f"SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = ?", (incident_id,)
        ).fetchone()
        snapshot = _incident(row, opened_by_this_run=opened, resolved_by_this_run=resolved)
        self._execute(
            "INSERT INTO incident_events (event_id, run_id, incident_id, snapshot)"
            " VALUES (?, ?, ?, ?)",
            (event_id, run.run_id, incident_id, json.dumps(snapshot.to_dict())),
        )
        return run

    def _queue_retry(self, run: RunRecord, moment: float) -> None:
        retry_id = new_run_id()
        tags = alert_tags.retry_tags(run.tags, run.run_id)
        self._execute(
            "INSERT INTO runs (run_id, job_name, location, status, run_config, tags, created_at,"
            " parent_run_id, root_run_id, origin, parent_created_at)"
            " SELECT ?, job_name, location, ?, run_config, ?, ?, run_id, root_run_id, origin,"
            " created_at FROM runs WHERE run_id = ?",
            (retry_id, RunStatus.QUEUED.value, json.dumps(tags), moment, run.run_id),
        )
        self._write_held()  # (events written directly keep their place in id order)
        self._note_event(EventType.RUN_ENQUEUED.value, run.location, run.job_name)
        self._execute(
            "INSERT INTO events (run_id, event_type, timestamp, message, job_name, location,"
            " run_created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                retry_id,
                EventType.RUN_ENQUEUED.value,
                moment,
                f'Run of "{run.job_name}" queued: retry {tags[alert_tags.RETRY_NUMBER]} of'
                f" run {run.run_id}.",
                run.job_name,
                run.location,
                moment,
            ),
        )

    # -- incidents ---------------------------------------------------------------------------

    def list_incidents(self, open_only: bool = False, limit: int | None = 50) -> list[Incident]:
        where = " WHERE status = ?" if open_only else ""
        sql = f"SELECT {INCIDENT_COLUMNS} FROM incidents{where} ORDER BY opened_at DESC, id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [_incident(row) for row in self._all(sql, [OPEN] if open_only else [])]

    def incident_at_event(self, event_id: int) -> Incident | None:
        row = self._one("SELECT snapshot FROM incident_events WHERE event_id = ?", (event_id,))
        return Incident(**json.loads(row[0])) if row else None

    def incident_of_run(self, run_id: str) -> Incident | None:
        row = self._one(
            "SELECT incident_id FROM incident_events WHERE run_id = ? ORDER BY event_id DESC"
            " LIMIT 1",
            (run_id,),
        )
        if row is None:
            return None
        found = self._one(f"SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = ?", (row[0],))
        return _incident(found) if found else None

    def open_incident_run_ids(self) -> set[str]:
        rows = self._all(
            "SELECT ie.run_id FROM incident_events ie JOIN incidents i ON i.id = ie.incident_id"
            " WHERE i.status = ?",
            (OPEN,),
        )
        return {row[0] for row in rows}

    # -- overdue runs ------------------------------------------------------------------------

    def record_overdue(
        self, run_id: str, phase: str, limit_seconds: float, now: float | None = None
    ) -> int | None:
        statuses = [s.value for s in PHASE_STATUSES[phase]]

        def body() -> int | None:
            moment = time.time() if now is None else now
            run = self.get_run(run_id)
            if run.status.value not in statuses:
                return None  # it moved on meanwhile: not overdue any more
            since = run.created_at if phase == "QUEUED" else (run.start_time or run.created_at)
            overdue = moment - since
            if self._execute(
                "SELECT 1 FROM run_overdue WHERE run_id = ? AND phase = ?", (run_id, phase)
            ).fetchone():
                return None
            limit_text = f"{limit_seconds:g}s"
            self._write_held()
            self._note_event(EventType.RUN_OVERDUE.value, run.location, run.job_name)
            event_id = self._insert_id(
                "INSERT INTO events (run_id, event_type, timestamp, message, job_name, location,"
                " run_created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    EventType.RUN_OVERDUE.value,
                    moment,
                    f"Run has been {phase} for {overdue:.0f}s, over its limit of {limit_text}.",
                    run.job_name,
                    run.location,
                    run.created_at,
                ),
            )
            self._execute(
                "INSERT INTO run_overdue (run_id, phase, event_id, overdue_seconds, limit_seconds)"
                " VALUES (?, ?, ?, ?, ?)",
                (run_id, phase, event_id, overdue, limit_seconds),
            )
            return event_id

        return self._write(body, wake=True)

    def overdue_at_event(self, event_id: int) -> Overdue | None:
        row = self._one(
            "SELECT run_id, phase, overdue_seconds, limit_seconds, event_id FROM run_overdue"
            " WHERE event_id = ?",
            (event_id,),
        )
        return Overdue(row[0], row[1], float(row[2]), float(row[3]), int(row[4])) if row else None

    def overdue_phases(self, run_ids: Iterable[str]) -> set[tuple[str, str]]:
        ids = list(run_ids)
        if not ids:
            return set()
        found: set[tuple[str, str]] = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = self._all(
                f"SELECT run_id, phase FROM run_overdue WHERE run_id IN ({', '.join('?' * len(chunk))})",
                chunk,
            )
            found |= {(row[0], row[1]) for row in rows}
        return found

    # -- per-sensor durable state ------------------------------------------------------------

    def sensor_values(self, sensor_id: int) -> dict[str, Any]:
        rows = self._all("SELECT key, value FROM sensor_values WHERE sensor_id = ?", (sensor_id,))
        return {row[0]: json.loads(row[1]) for row in rows}

    def _write_sensor_values(self, sensor_id: int, values: Mapping[str, Any], now: float) -> None:
        """Inside a page's transaction: set each key (None deletes it)."""
        gone = [(sensor_id, key) for key, value in values.items() if value is None]
        kept = [
            (sensor_id, key, json.dumps(value), now)
            for key, value in values.items()
            if value is not None
        ]
        self._executemany("DELETE FROM sensor_values WHERE sensor_id = ? AND key = ?", gone)
        self._executemany(
            "INSERT INTO sensor_values (sensor_id, key, value, updated_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (sensor_id, key) DO UPDATE SET value = excluded.value,"
            " updated_at = excluded.updated_at",
            kept,
        )

    def set_sensor_values(self, sensor_id: int, values: Mapping[str, Any]) -> None:
        self._write(lambda: self._write_sensor_values(sensor_id, values, time.time()))
