"""Runs and their event log: the half of the contract that run workers and launchers use."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from ..errors import RunsenseError
from ..identity import pid_of
from ..runs import (
    FINISHED_STATUSES,
    STATUS_EVENT_TYPES,
    ErrorInfo,
    EventType,
    RunEvent,
    RunRecord,
    RunStatus,
    new_run_id,
)
from .launches_sql import LaunchesSql
from .rows import (
    EVENT_COLUMNS,
    LIMITED,
    RUN_CHILDREN,
    RUN_COLUMNS,
    RUN_EVENTS,
    TIME_OF_RUN,
    event_from_row,
    run_from_row,
    status_message,
)
from .shapes import statuses_before

_ID_CHARS = frozenset("0123456789abcdef-")


class RunsSql(LaunchesSql):
    # -- writing runs ------------------------------------------------------------------------

    def create_run(
        self,
        job_name: str,
        location: str,
        run_config: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
        *,
        status: RunStatus = RunStatus.NOT_STARTED,
        run_id: str | None = None,
        parent_run_id: str | None = None,
        root_run_id: str | None = None,
        origin: dict[str, Any] | None = None,
        worker: str | None = None,
        now: float | None = None,
    ) -> RunRecord:
        now = time.time() if now is None else now
        run_id = run_id or new_run_id()
        worker_pid = pid_of(worker)
        run = RunRecord(
            run_id=run_id,
            job_name=job_name,
            status=status,
            location=location,
            run_config=dict(run_config or {}),
            tags=dict(tags or {}),
            created_at=now,
            parent_run_id=parent_run_id,
            root_run_id=root_run_id or run_id,
            worker_pid=worker_pid,
            worker=worker,
        )
        run_config_json = json.dumps(run.run_config)
        tags_json = json.dumps(run.tags)
        origin_json = json.dumps(origin) if origin else None

        def body() -> RunRecord:
            beat, beat_params = (
                self._now_sql() if worker and self.needs_heartbeats else ("NULL", ())
            )
            self._execute(
                "INSERT INTO runs (run_id, job_name, location, status, run_config, tags,"
                " created_at, parent_run_id, root_run_id, worker_pid, origin, worker, heartbeat_at,"
                " parent_created_at)"
                f" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, {beat}, {TIME_OF_RUN})",
                (
                    run.run_id,
                    job_name,
                    location,
                    status.value,
                    run_config_json,
                    tags_json,
                    now,
                    parent_run_id,
                    run.root_run_id,
                    worker_pid,
                    origin_json,
                    worker,
                    *beat_params,
                    parent_run_id,
                ),
            )
            if status in STATUS_EVENT_TYPES:
                self._insert_event(
                    run, STATUS_EVENT_TYPES[status], status_message(run, status), now
                )
            return run

        return self._write(body, wake=status in STATUS_EVENT_TYPES)

    def set_run_status(
        self,
        run: RunRecord,
        status: RunStatus,
        message: str | None = None,
        *,
        error: ErrorInfo | None = None,
        only_from: Iterable[RunStatus] | None = None,
        now: float | None = None,
    ) -> RunRecord | None:
        allowed = [s.value for s in (statuses_before(status) if only_from is None else only_from)]
        if not allowed:
            return None
        text = message or status_message(run, status)

        def body() -> RunRecord | None:
            moment = time.time() if now is None else now
            updates: dict[str, Any] = {"status": status.value}
            if status == RunStatus.STARTED:
                updates["start_time"] = moment
            if status in FINISHED_STATUSES:
                updates["end_time"] = moment
            assignments = ", ".join(f"{column} = ?" for column in updates)
            marks = ", ".join("?" * len(allowed))
            moved_run, event_id = self._move_run(
                f"UPDATE runs SET {assignments} WHERE run_id = ? AND status IN ({marks})",
                (*updates.values(), run.run_id, *allowed),
                run,
                STATUS_EVENT_TYPES[status],
                text,
                moment,
                error,
            )
            if moved_run is None or event_id is None:
                return None
            if status not in FINISHED_STATUSES:
                return moved_run
            # Retry and incident bookkeeping is written as of the status event, so under the
            # write lock: a SUCCESS's may wait for the end of the transaction (it leaves the run
            # as it is); a failure's changes the run returned, so the lock is taken now. Either
            # way after the run's row is locked: every writer locks rows, then the write lock.
            ended, done = moved_run, []
            self._when_written(
                event_id,
                lambda written: done.append(self._after_terminal_status(ended, written, moment)),
            )
            if status != RunStatus.SUCCESS:
                self._write_held()
            return done[0] if done else moved_run

        return self._write(body, wake=True, events_last=True)

    def append_event(
        self,
        run: RunRecord,
        event_type: EventType,
        message: str = "",
        *,
        step_key: str | None = None,
        level: str | None = None,
        error: ErrorInfo | None = None,
        now: float | None = None,
    ) -> int:
        moment = time.time() if now is None else now
        return self._write(
            lambda: self._insert_event(run, event_type, message, moment, step_key, level, error)
        )

    # -- reading runs ------------------------------------------------------------------------

    def get_run(self, run_id: str) -> RunRecord:
        row = self._one(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,))
        if row is None:
            raise RunsenseError(f"no run with id '{run_id}'", "`runsense runs list` shows the runs")
        return run_from_row(row)

    def find_run(self, prefix: str) -> RunRecord:
        prefix = prefix.strip().lower()  # uuid4 ids are lower-case; accept what users paste
        if not prefix:
            raise RunsenseError("an empty run id matches every run", "give a run id or its prefix")
        rows = []
        if set(prefix) <= _ID_CHARS:
            clause, params = self._prefix_clause(prefix)
            rows = self._all(f"SELECT {RUN_COLUMNS} FROM runs WHERE {clause} LIMIT 2", params)
        if not rows:
            raise RunsenseError(
                f"no run id starts with '{prefix}'", "`runsense runs list` shows the runs"
            )
        if len(rows) > 1:
            raise RunsenseError(
                f"several runs start with '{prefix}'", "give more characters of the id"
            )
        return run_from_row(rows[0])

    def _prefix_clause(self, prefix: str) -> tuple[str, list[Any]]:
        """Ids starting with `prefix` (hex digits and dashes only) as an index range."""
        return "run_id >= ? AND run_id < ?", [prefix, prefix + "g"]

    def list_runs(
        self,
        job_name: str | None = None,
        status: RunStatus | None = None,
        limit: int | None = 50,
    ) -> list[RunRecord]:
        clauses, params = [], []
        if job_name:
            clauses.append("job_name = ?")
            params.append(job_name)
        if status:
            clauses.append("status = ?")
            params.append(status.value)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = (
            f"SELECT {RUN_COLUMNS} FROM runs{where} ORDER BY created_at DESC, {self.run_order} DESC"
        )
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [run_from_row(row) for row in self._all(sql, params)]

    def runs_with_status(
        self, statuses: Iterable[RunStatus], limit: int | None = None
    ) -> list[RunRecord]:
        values = [s.value for s in statuses]
        sql = (
            f"SELECT {RUN_COLUMNS} FROM runs WHERE status IN ({', '.join('?' * len(values))})"
            f" ORDER BY created_at, {self.run_order}"
        )
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        # Every daemon pass asks this (runs in progress). Planned with the values each time: the
        # plan PostgreSQL keeps for a prepared statement does not know that these statuses are
        # rare, and may walk every run in created_at order to find the few.
        rows = self._read(lambda: self._execute_planned_each_time(sql, values).fetchall())
        return [run_from_row(row) for row in rows]

    def runs_with_limits(self, statuses: Iterable[RunStatus]) -> list[RunRecord]:
        values = [s.value for s in statuses]
        sql = (
            f"SELECT {RUN_COLUMNS} FROM runs WHERE status IN ({', '.join('?' * len(values))})"
            f" AND {LIMITED} ORDER BY created_at, {self.run_order}"
        )
        rows = self._read(lambda: self._execute_planned_each_time(sql, values).fetchall())
        return [run_from_row(row) for row in rows]

    def job_names(self) -> list[str]:
        # One index probe per distinct name (a loose index scan), not a read of every run's entry
        # as DISTINCT does: neither backend skips through an index by itself.
        rows = self._all(
            "WITH RECURSIVE names (name) AS ("
            " SELECT (SELECT job_name FROM runs ORDER BY job_name LIMIT 1)"
            " UNION ALL SELECT (SELECT job_name FROM runs WHERE job_name > names.name"
            " ORDER BY job_name LIMIT 1) FROM names WHERE names.name IS NOT NULL"
            ") SELECT name FROM names WHERE name IS NOT NULL ORDER BY name"
        )
        return [row[0] for row in rows]

    def requested_runs(self, run_id: str) -> list[RunRecord]:
        rows = self._all(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE {RUN_CHILDREN}"
            f" ORDER BY created_at, {self.run_order}",
            (run_id, run_id),
        )
        return [run_from_row(row) for row in rows]

    def runs_created_between(
        self, since: float, until: float, after: tuple[float, str], limit: int
    ) -> list[RunRecord]:
        rows = self._all(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE created_at >= ? AND created_at <= ?"
            " AND (created_at > ? OR (created_at = ? AND run_id > ?))"
            " ORDER BY created_at, run_id LIMIT ?",
            (since, until, after[0], after[0], after[1], limit),
        )
        return [run_from_row(row) for row in rows]

    def run_origin(self, run_id: str) -> dict[str, Any] | None:
        row = self._one("SELECT origin FROM runs WHERE run_id = ?", (run_id,))
        return json.loads(row[0]) if row and row[0] else None

    def events_for_run(self, run_id: str) -> list[RunEvent]:
        rows = self._all(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE {RUN_EVENTS} ORDER BY id", (run_id, run_id)
        )
        return [event_from_row(row) for row in rows]

    def get_event(self, event_id: int) -> RunEvent | None:
        row = self._one(f"SELECT {EVENT_COLUMNS} FROM events WHERE id = ?", (event_id,))
        return event_from_row(row) if row else None

    def newest_event_id(self) -> int:
        row = self._one("SELECT max(id) FROM events")
        return int(row[0] or 0)

    def status_event_for_run(self, run_id: str, event_type: EventType) -> RunEvent | None:
        row = self._one(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE {RUN_EVENTS} AND event_type = ?"
            " ORDER BY id DESC LIMIT 1",
            (run_id, run_id, event_type.value),
        )
        return event_from_row(row) if row else None
