"""Sensors, their leases, ticks and reactions: the half of the contract that evaluation uses."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import LeaseLostError
from ..identity import ProcessId, pid_alive, pid_of
from ..records import Reaction, ReactionState, SensorState, SensorStatus, Tick
from ..runs import EventType, RunStatus
from .reactions_sql import ReactionsSql
from .rows import (
    SENSOR_COLUMNS,
    TICK_COLUMNS,
    TIME_OF_RUN,
    sensor_from_row,
    tick_from_row,
)
from .shapes import NewRun, PageResult, WriteBack

USER = "user"  # sensors.status_source once `sensor start`/`stop` pinned the status
_STATE_TEXTS = {state: state.value for state in ReactionState}


class SensorsSql(ReactionsSql):
    # -- sensor rows -------------------------------------------------------------------------

    def sensor_state(self, location: str, name: str) -> SensorState | None:
        row = self._one(
            f"SELECT {SENSOR_COLUMNS} FROM sensors WHERE location = ? AND name = ?",
            (location, name),
        )
        return sensor_from_row(row) if row else None

    def running_sensors(self, location: str) -> dict[str, SensorState]:
        rows = self._all(
            f"SELECT {SENSOR_COLUMNS} FROM sensors WHERE location = ? AND status = ?",
            (location, SensorStatus.RUNNING.value),
        )
        return {state.name: state for state in map(sensor_from_row, rows)}

    def ensure_sensor(self, location: str, name: str, running: bool) -> SensorState:
        """Also makes a sensor whose status nobody pinned follow its code's default_status."""
        wanted = SensorStatus.RUNNING if running else SensorStatus.STOPPED
        state = self.sensor_state(location, name)
        if state is not None:
            if state.status_source == USER or state.status == wanted:
                return state
            self.set_sensor_status(state.sensor_id, wanted, by_user=False)
        else:

            def body() -> None:
                self._execute(
                    "INSERT INTO sensors (location, name, status, cursor, started_at)"
                    " VALUES (?, ?, ?, (SELECT coalesce(max(id), 0) FROM events), ?)"
                    " ON CONFLICT (location, name) DO NOTHING",
                    (location, name, wanted.value, time.time() if running else None),
                )

            self._write(body)
        state = self.sensor_state(location, name)
        assert state is not None
        return state

    def set_sensor_status(
        self,
        sensor_id: int,
        status: SensorStatus,
        *,
        cursor: int | None = None,
        by_user: bool = True,
    ) -> None:
        source = USER if by_user else None

        def body() -> None:
            if status == SensorStatus.RUNNING:
                # A first start begins at the newest event (runs that ended before it never
                # fire); a restart resumes from the cursor the sensor stopped at.
                self._execute(
                    "UPDATE sensors SET status = ?, started_at = ?, status_source = coalesce(?,"
                    " status_source), cursor = coalesce(?, CASE WHEN started_at IS NULL THEN"
                    " (SELECT coalesce(max(id), 0) FROM events) ELSE cursor END) WHERE id = ?",
                    (status.value, time.time(), source, cursor, sensor_id),
                )
            else:
                self._execute(
                    "UPDATE sensors SET status = ?, status_source = coalesce(?, status_source)"
                    " WHERE id = ?",
                    (status.value, source, sensor_id),
                )

        self._write(body, wake=True)

    def reset_sensor_status(self, sensor_id: int, running: bool) -> None:
        def body() -> None:
            wanted = SensorStatus.RUNNING if running else SensorStatus.STOPPED
            row = self._execute("SELECT status FROM sensors WHERE id = ?", (sensor_id,)).fetchone()
            if row and row[0] != wanted.value:
                self.set_sensor_status(sensor_id, wanted, by_user=False)
            self._execute("UPDATE sensors SET status_source = NULL WHERE id = ?", (sensor_id,))

        self._write(body, wake=True)

    def set_cursor(self, sensor_id: int, cursor: int) -> None:
        self._write(
            lambda: self._execute(
                "UPDATE sensors SET cursor = ? WHERE id = ?", (cursor, sensor_id)
            ),
            wake=True,
        )

    def skip_cursor(self, sensor_id: int, expected: int, cursor: int) -> bool:
        def body() -> bool:
            now, now_params = self._now_sql()
            return bool(
                self._execute(
                    "UPDATE sensors SET cursor = ? WHERE id = ? AND cursor = ? AND status = ?"
                    f" AND (lease_token IS NULL OR lease_expires < {now})",
                    (cursor, sensor_id, expected, SensorStatus.RUNNING.value, *now_params),
                ).rowcount
            )

        return self._write(body)

    # -- leases ------------------------------------------------------------------------------

    def acquire_lease(self, sensor_id: int, token: str, ttl: float, holder: str) -> bool:
        def body() -> bool:
            db_now, now_params = self._now_sql()
            row = self._execute(
                f"SELECT lease_holder, lease_token, lease_expires, lease_pid, {db_now}"
                f" FROM sensors WHERE id = ?{self.for_update}",
                (*now_params, sensor_id),
            ).fetchone()
            if row is None:
                return False
            holder_id, holder_token, expires, holder_pid, now = row
            now = float(now)
            if holder_token not in (None, token) and expires is not None and expires > now:
                other = ProcessId.parse(holder_id)
                alive = other.alive() if other else pid_alive(holder_pid)
                if alive is not False:  # alive, or on another host: only expiry frees it
                    return False
            self._execute(
                "UPDATE sensors SET lease_holder = ?, lease_pid = ?, lease_token = ?,"
                " lease_expires = ? WHERE id = ?",
                (
                    holder,
                    pid_of(holder),
                    token,
                    now + ttl,
                    sensor_id,
                ),
            )
            return True

        return self._write(body)

    def renew_lease(self, sensor_id: int, token: str, ttl: float) -> bool:
        def body() -> bool:
            now, now_params = self._now_sql()
            return bool(
                self._execute(
                    f"UPDATE sensors SET lease_expires = {now} + ? WHERE id = ?"
                    " AND lease_token = ?",
                    (*now_params, ttl, sensor_id, token),
                ).rowcount
            )

        return self._write(body)

    def release_lease(self, sensor_id: int, token: str) -> None:
        self._write(
            lambda: self._execute(
                "UPDATE sensors SET lease_holder = NULL, lease_pid = NULL, lease_token = NULL,"
                " lease_expires = NULL WHERE id = ? AND lease_token = ?",
                (sensor_id, token),
            )
        )

    # -- pages and ticks ---------------------------------------------------------------------

    def commit_page(
        self,
        sensor_id: int,
        tick: Tick,
        reactions: Sequence[Reaction],
        new_runs: Sequence[NewRun],
        run_keys: Sequence[tuple[str, str]],
        write_backs: Sequence[WriteBack],
        cursor: int | None,
        expected_cursor: int | None,
        lease_token: str,
        lease_ttl: float,
        state_writes: Mapping[str, Any] | None = None,
    ) -> PageResult:
        # Built once per reaction of a big tick: the enum's text through a dict (`.value` is a
        # descriptor call) and no JSON encoder for the usual empty list.
        texts = _STATE_TEXTS
        reaction_rows = [
            (
                sensor_id,
                r.event_id,
                r.run_id,
                texts.get(r.state) or r.state.value,
                r.attempts,
                r.next_attempt_at,
                r.error,
                r.skip_message,
                json.dumps(r.run_ids) if r.run_ids else "[]",
                r.created_at or time.time(),
                r.finished_at,
            )
            for r in reactions
        ]

        def body() -> tuple[PageResult, int]:
            now = time.time()
            row = self._execute(
                f"SELECT lease_token, cursor, status FROM sensors WHERE id = ?{self.for_update}",
                (sensor_id,),
            ).fetchone()
            if row is None or row[0] != lease_token:
                raise LeaseLostError(
                    "lost the sensor's lease to another process; nothing was stored"
                )
            self._insert_runs(new_runs, now)
            if state_writes:
                self._write_sensor_values(sensor_id, state_writes, now)
            self._executemany(
                "INSERT INTO run_keys (sensor_id, run_key, run_id) VALUES (?, ?, ?)"
                " ON CONFLICT (sensor_id, run_key) DO NOTHING",
                [(sensor_id, key, run_id) for key, run_id in run_keys],
            )
            self._executemany(
                "INSERT INTO reactions (sensor_id, event_id, run_id, state, attempts,"
                " next_attempt_at, error, skip_message, run_ids, created_at, finished_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (sensor_id, event_id) DO UPDATE SET state = excluded.state,"
                " attempts = excluded.attempts, next_attempt_at = excluded.next_attempt_at,"
                " error = excluded.error, skip_message = excluded.skip_message,"
                " run_ids = excluded.run_ids, finished_at = excluded.finished_at",
                reaction_rows,
            )
            self._write_held()
            for w in write_backs:
                self._note_event(EventType.SENSOR_REACTION.value, w.location, w.job_name)
            self._executemany(
                "INSERT INTO events (run_id, event_type, timestamp, message, job_name, location,"
                " run_created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        w.run_id,
                        EventType.SENSOR_REACTION.value,
                        now,
                        w.message,
                        w.job_name,
                        w.location,
                        w.run_created_at,
                    )
                    for w in write_backs
                ],
            )
            result = PageResult.COMMITTED
            if row[2] != "RUNNING":
                result = PageResult.STOPPED
            if cursor is not None and expected_cursor is not None and row[1] != expected_cursor:
                result = PageResult.CURSOR_MOVED
            db_now, now_params = self._now_sql()
            expires = f"lease_expires = {db_now} + ?"
            if cursor is not None and result != PageResult.CURSOR_MOVED:
                self._execute(
                    f"UPDATE sensors SET cursor = ?, last_tick_at = ?, {expires} WHERE id = ?",
                    (cursor, now, *now_params, lease_ttl, sensor_id),
                )
            else:
                self._execute(
                    f"UPDATE sensors SET last_tick_at = ?, {expires} WHERE id = ?",
                    (now, *now_params, lease_ttl, sensor_id),
                )
            return result, self._save_tick(sensor_id, tick)

        result, tick_id = self._write(body, wake=bool(new_runs))
        tick.tick_id = tick_id
        return result

    def _insert_runs(self, new_runs: Sequence[NewRun], now: float) -> None:
        if not new_runs:
            return
        # Every run a tick requests usually carries the same origin object: encode it once.
        origins: dict[int, str] = {}

        def origin_json(origin: Any) -> str | None:
            if not origin:
                return None
            text = origins.get(id(origin))
            if text is None:
                text = origins[id(origin)] = json.dumps(origin)
            return text

        self._executemany(
            "INSERT INTO runs (run_id, job_name, location, status, run_config, tags, created_at,"
            " parent_run_id, root_run_id, origin, parent_created_at)"
            f" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, {TIME_OF_RUN})",
            [
                (
                    r.run_id,
                    r.job_name,
                    r.location,
                    RunStatus.QUEUED.value,
                    json.dumps(r.run_config),
                    json.dumps(r.tags),
                    now,
                    r.parent_run_id,
                    r.root_run_id,
                    origin_json(r.origin),
                    r.parent_run_id,
                )
                for r in new_runs
            ],
        )
        self._write_held()
        for r in new_runs:
            self._note_event(EventType.RUN_ENQUEUED.value, r.location, r.job_name)
        self._executemany(
            "INSERT INTO events (run_id, event_type, timestamp, message, job_name, location,"
            " run_created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    r.run_id,
                    EventType.RUN_ENQUEUED.value,
                    now,
                    f'Run of "{r.job_name}" queued by sensor "{r.tags.get("runsense/sensor", "")}".',
                    r.job_name,
                    r.location,
                    now,
                )
                for r in new_runs
            ],
        )

    def _save_tick(self, sensor_id: int, tick: Tick) -> int:
        """Insert or update the tick's row; returns its id (set on `tick` only after commit). The
        row is rewritten every page, so it must stay small: Tick bounds its lists."""
        values = (
            tick.status.value,
            tick.started_at,
            tick.duration_s,
            tick.events_scanned,
            tick.reactions,
            json.dumps(tick.run_ids),
            json.dumps(tick.skip_reasons),
            json.dumps(tick.errors),
            tick.cursor_before,
            tick.cursor_after,
            json.dumps(tick.logs),
            tick.runs_requested,
            tick.skipped,
            tick.failures,
        )
        if tick.tick_id:
            self._execute(
                "UPDATE ticks SET status = ?, started_at = ?, duration_s = ?, events_scanned = ?,"
                " reactions = ?, run_ids = ?, skip_reasons = ?, errors = ?, cursor_before = ?,"
                " cursor_after = ?, logs = ?, runs_requested = ?, skipped = ?, failures = ?"
                " WHERE id = ?",
                (*values, tick.tick_id),
            )
            return tick.tick_id
        return self._insert_id(
            "INSERT INTO ticks (status, started_at, duration_s, events_scanned, reactions,"
            " run_ids, skip_reasons, errors, cursor_before, cursor_after, logs, runs_requested,"
            " skipped, failures, sensor_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*values, sensor_id),
        )

    def record_tick(self, sensor_id: int, tick: Tick) -> None:
        def body() -> int:
            tick_id = self._save_tick(sensor_id, tick)
            self._execute(
                "UPDATE sensors SET last_tick_at = ? WHERE id = ?", (time.time(), sensor_id)
            )
            return tick_id

        tick.tick_id = self._write(body)

    def record_idle_tick(self, sensor_id: int, tick: Tick, cursor: int) -> bool:
        def body() -> int:
            now, now_params = self._now_sql()
            # One statement checks and takes the row: RUNNING, the cursor as the tick read it,
            # and no tick holding a live lease (that one records its own ticks).
            if not self._execute(
                "UPDATE sensors SET last_tick_at = ? WHERE id = ? AND status = ? AND cursor = ?"
                f" AND (lease_token IS NULL OR lease_expires < {now})",
                (time.time(), sensor_id, SensorStatus.RUNNING.value, cursor, *now_params),
            ).rowcount:
                return 0
            return self._save_tick(sensor_id, tick)

        tick_id = self._write(body)
        if tick_id:
            tick.tick_id = tick_id
        return bool(tick_id)

    def run_key_owner(self, sensor_id: int, run_key: str) -> str | None:
        row = self._one(
            "SELECT run_id FROM run_keys WHERE sensor_id = ? AND run_key = ?", (sensor_id, run_key)
        )
        return row[0] if row else None

    def list_ticks(self, sensor_id: int, limit: int = 20) -> list[Tick]:
        rows = self._all(
            f"SELECT {TICK_COLUMNS} FROM ticks t JOIN sensors s ON s.id = t.sensor_id"
            " WHERE t.sensor_id = ? ORDER BY t.id DESC LIMIT ?",
            (sensor_id, limit),
        )
        return [tick_from_row(row) for row in rows]
