"""Launching runs: claims, workers taking them, heartbeats, and the two statements every status
move is made of (the run's row, the event)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from ..identity import pid_of
from ..runs import ErrorInfo, EventType, RunRecord, RunStatus
from .alerts_sql import AlertsSql
from .rows import RUN_COLUMNS, run_from_row, status_message

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
                moved = self._update_run(
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
                    run.run_id,
                )
                if moved is not None:
                    self._insert_event(
                        run,
                        EventType.RUN_STARTING,
                        status_message(run, RunStatus.STARTING),
                        now,
                    )
                    claimed.append((moved, token))
            return claimed

        return self._write(body, wake=True)

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

        return self._write(body)

    def record_worker(self, run_id: str, claim_token: str, worker: str) -> bool:
        def body() -> bool:
            return bool(
                self._execute(
                    "UPDATE runs SET worker = ?, worker_pid = ? WHERE run_id = ? AND status = ?"
                    " AND claim_token = ? AND worker IS NULL",
                    (worker, pid_of(worker), run_id, RunStatus.STARTING.value, claim_token),
                ).rowcount
            )

        return self._write(body)

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

        self._write(body)

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
        return self._insert_id(
            "INSERT INTO events (run_id, event_type, timestamp, message, step_key, level, error,"
            " job_name, location, run_created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
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
            ),
        )
