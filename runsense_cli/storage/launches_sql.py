"""Launching runs: claims, workers taking them, heartbeats, and the two writes every status
move is made of (the run's row, the event)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from ..identity import pid_of
from ..runs import STATUS_EVENT_TYPES, ErrorInfo, EventType, RunRecord, RunStatus
from .alerts_sql import AlertsSql
from .rows import EVENT_ROW, RUN_COLUMNS, RUN_EVENTS, run_from_row, status_message

_CHUNK = 500  # ids per IN (...) list: well under both backends' parameter limits


class LaunchesSql(AlertsSql):
    def _update_run(self, sql: str, params: Sequence[Any], run_id: str) -> RunRecord | None:
        """Run an UPDATE of the run `run_id`: the run as updated, or None if it matched nothing."""
        if self.update_returning:
            row = self._execute(f"{sql} RETURNING {RUN_COLUMNS}", params).fetchone()
            return run_from_row(row) if row else None
        if self._execute(sql, params).rowcount != 1:
            return None
        return self.get_run(run_id)

    def _move_run(
        self,
        sql: str,
        params: Sequence[Any],
        run: RunRecord,
        event_type: EventType,
        message: str,
        now: float,
        error: ErrorInfo | None = None,
    ) -> tuple[RunRecord | None, int | None]:
        """An UPDATE of `run` and, if it matched, its status event: the run as updated and the
        event's id, a stand-in while events are held back (None, None: it matched nothing)."""
        moved = self._update_run(sql, params, run.run_id)
        if moved is None:
            return None, None
        return moved, self._insert_event(run, event_type, message, now, error=error)

    def claim_queued_runs(
        self,
        launcher: str,
        limit: int,
        run_ids: Iterable[str] | None = None,
        workers: Sequence[str] = (),
    ) -> list[tuple[RunRecord, str]]:
        wanted = None if run_ids is None else list(run_ids)
        if limit <= 0 or wanted == []:
            return []
        # An idle pass must not take the write lock: look before claiming. Planned with its value
        # each time: for `status = $1 LIMIT 1` PostgreSQL's generic plan (a prepared statement's,
        # after a few runs) may be a scan expecting an early hit, which finds no QUEUED run only
        # after reading every run, on every pass.
        queued = self._read(
            lambda: self._execute_planned_each_time(
                "SELECT 1 FROM runs WHERE status = ? LIMIT 1", (RunStatus.QUEUED.value,)
            ).fetchone()
        )
        if not queued:
            return []

        def candidates() -> list[RunRecord]:
            sql = f"SELECT {RUN_COLUMNS} FROM runs WHERE status = ?"
            order = f" ORDER BY created_at, {self.run_order} LIMIT ?{self.skip_locked}"
            if wanted is None:
                rows = self._execute(sql + order, (RunStatus.QUEUED.value, limit)).fetchall()
                return [run_from_row(row) for row in rows]
            found: list[RunRecord] = []
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start : start + _CHUNK]
                marks = ", ".join("?" * len(chunk))
                rows = self._execute(
                    sql + f" AND run_id IN ({marks})" + order,
                    (RunStatus.QUEUED.value, *chunk, limit - len(found)),
                ).fetchall()
                found += [run_from_row(row) for row in rows]
                if len(found) >= limit:
                    break
            return found

        def body() -> list[tuple[RunRecord, str]]:
            now = time.time()
            beat, beat_params = self._now_sql()
            claimed = []
            for run in candidates():
                token = uuid.uuid4().hex
                worker = workers[len(claimed)] if len(claimed) < len(workers) else None
                moved, _ = self._move_run(
                    "UPDATE runs SET status = ?, launcher = ?, claim_token = ?, worker = ?,"
                    f" worker_pid = ?, heartbeat_at = {beat} WHERE run_id = ? AND status = ?",
                    (
                        RunStatus.STARTING.value,
                        launcher,
                        token,
                        worker,
                        pid_of(worker) if worker else None,
                        *beat_params,
                        run.run_id,
                        RunStatus.QUEUED.value,
                    ),
                    run,
                    EventType.RUN_STARTING,
                    status_message(run, RunStatus.STARTING),
                    now,
                )
                if moved is not None:
                    claimed.append((moved, token))
            return claimed

        return self._write(body, wake=True, events_last=True)

    def claim_next_run(
        self,
        launcher: str,
        worker: str,
        after_run_id: str,
        *,
        origin: dict[str, Any] | None = None,
        jobs: Collection[str] = (),
    ) -> tuple[RunRecord, dict[str, Any] | None] | None:
        # The cancel check is a constant subquery, evaluated once; the run row found is locked
        # (skipped when another claim holds it).
        oldest = (
            f"SELECT {{columns}} FROM runs WHERE status = ?"
            f" AND NOT EXISTS (SELECT 1 FROM events WHERE {RUN_EVENTS} AND event_type = ?)"
            f" ORDER BY created_at, {self.run_order} LIMIT 1{self.skip_locked}"
        )
        conditions = (
            RunStatus.QUEUED.value,
            after_run_id,
            after_run_id,
            EventType.RUN_CANCELING.value,
        )
        beat, beat_params = self._now_sql()
        # A run of the server's own project starts in the same statement (one row version,
        # not two): STARTED when its job is one of `jobs` and its origin is `origin` as stored.
        names = sorted(jobs) if origin else []
        in_jobs, jobs_value = self._in_list("job_name", names)
        ours = f"{in_jobs} AND origin = ?" if names else "1 = 0"
        claim = (
            f"UPDATE runs SET status = CASE WHEN {ours} THEN ? ELSE ? END,"
            f" start_time = CASE WHEN {ours} THEN ? END, launcher = ?, claim_token = ?,"
            f" worker = ?, worker_pid = ?, heartbeat_at = {beat}"
            " WHERE run_id = {run} AND status = ?"
        )

        def claim_params(moment: float) -> tuple[Any, ...]:
            token = f"{uuid.uuid4().hex}:registered"  # as register_worker leaves it
            mine = (jobs_value, json.dumps(origin)) if names else ()
            return (
                *mine,
                RunStatus.STARTED.value,
                RunStatus.STARTING.value,
                *mine,
                moment,
                launcher,
                token,
                worker,
                pid_of(worker),
                *beat_params,
            )

        def body() -> tuple[RunRecord, dict[str, Any] | None] | None:
            moment = time.time()
            if self.update_returning:  # one statement: find, lock and claim
                row = self._execute(
                    claim.format(run=f"({oldest.format(columns='run_id')})")
                    + f" RETURNING {RUN_COLUMNS}, origin",
                    (*claim_params(moment), *conditions, RunStatus.QUEUED.value),
                ).fetchone()
                if row is None:
                    return None
                moved = run_from_row(row[:-1])
            else:
                row = self._execute(
                    oldest.format(columns=f"{RUN_COLUMNS}, origin"), conditions
                ).fetchone()
                if row is None:
                    return None
                moved = self._update_run(
                    claim.format(run="?"),
                    (*claim_params(moment), row[0], RunStatus.QUEUED.value),
                    row[0],
                )
                if moved is None:
                    return None
            passed = [RunStatus.STARTING]
            if moved.status == RunStatus.STARTED:
                passed.append(RunStatus.STARTED)
            for status in passed:
                event_type = STATUS_EVENT_TYPES[status]
                self._insert_event(moved, event_type, status_message(moved, status), moment)
            return moved, json.loads(row[-1]) if row[-1] else None

        return self._write(body, wake=True, events_last=True)

    def register_worker(self, run_id: str, claim_token: str, worker: str) -> RunRecord | None:
        def body() -> RunRecord | None:
            now, now_params = self._now_sql()
            return self._update_run(
                f"UPDATE runs SET worker = ?, worker_pid = ?, heartbeat_at = {now},"
                " claim_token = ? WHERE run_id = ? AND status = ? AND claim_token = ?"
                " AND (worker IS NULL OR worker = ?)",
                (
                    worker,
                    pid_of(worker),
                    *now_params,
                    f"{claim_token}:registered",  # a second registration finds no claim
                    run_id,
                    RunStatus.STARTING.value,
                    claim_token,
                    worker,
                ),
                run_id,
            )

        return self._write(body, events_last=True)  # no event: no lock

    def record_worker(self, run_id: str, claim_token: str, worker: str) -> bool:
        def body() -> bool:
            return bool(
                self._execute(
                    "UPDATE runs SET worker = ?, worker_pid = ? WHERE run_id = ? AND status = ?"
                    " AND claim_token = ? AND worker IS NULL",
                    (worker, pid_of(worker), run_id, RunStatus.STARTING.value, claim_token),
                ).rowcount
            )

        return self._write(body, events_last=True)  # no event: no lock

    def heartbeat_runs(self, run_ids: Sequence[str]) -> None:
        ids = list(run_ids)
        if not ids:
            return

        def body() -> None:
            now = self.db_time()
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                self._execute(
                    f"UPDATE runs SET heartbeat_at = ? WHERE run_id IN ({', '.join('?' * len(chunk))})",
                    (now, *chunk),
                )

        self._write(body, events_last=True)  # no event: no lock

    def _insert_event(
        self,
        run: RunRecord,
        event_type: EventType,
        message: str,
        now: float,
        step_key: str | None = None,
        level: str | None = None,
        error: ErrorInfo | None = None,
    ) -> int:
        """Insert one event of `run`: its id, or a stand-in while events are held back (see
        `SqlBase._hold`)."""
        self._note_event(event_type.value, run.location, run.job_name)
        row = (
            run.run_id,
            event_type.value,
            now,
            message,
            step_key,
            level,
            error.to_json() if error else None,
            run.job_name,
            run.location,
            run.created_at,
        )
        held = self._hold(row)
        if held is not None:
            return held
        return self._insert_id(
            f"INSERT INTO events ({EVENT_ROW}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row
        )
