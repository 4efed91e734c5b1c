"""All of runsense's SQL: runs, their event log, sensors, ticks and reactions in one SQLite file.

Every write goes through `transaction()`, which takes SQLite's write lock up front
(`BEGIN IMMEDIATE`) so concurrent processes queue on the busy timeout instead of failing with
"database is locked" when a read transaction tries to upgrade.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import RunsenseError, StorageError
from .home import DB_FILENAME, resolve_home
from .processes import pid_alive
from .records import Reaction, ReactionState, SensorState, SensorStatus, Tick, TickStatus
from .runs import (
    FINISHED_STATUSES,
    STATUS_EVENT_TYPES,
    ErrorInfo,
    EventType,
    RunEvent,
    RunRecord,
    RunStatus,
)

BUSY_TIMEOUT_MS = 30_000

# Database files this process has open through Storage, by (device, inode), with how many times.
# Closing *any* descriptor of a file drops every POSIX lock this process holds on it, SQLite's
# included (sqlite.org/howtocorrupt.html, 2.2): reading the header of a file that is already open
# here would let another process think it is the last connection and delete the WAL under us.
_OPEN_FILES: dict[tuple[int, int], int] = {}
SQLITE_HEADER = b"SQLite format 3\x00"


def _run_script(db: sqlite3.Connection, script: str) -> None:
    # Not executescript(): it commits first, and migrations must share one transaction.
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _m001_initial(db: sqlite3.Connection) -> None:
    _run_script(
        db,
        """
        CREATE TABLE runs (
            run_id TEXT PRIMARY KEY,
            job_name TEXT NOT NULL,
            location TEXT NOT NULL,
            status TEXT NOT NULL,
            run_config TEXT NOT NULL,
            tags TEXT NOT NULL,
            created_at REAL NOT NULL,
            start_time REAL,
            end_time REAL,
            parent_run_id TEXT,
            root_run_id TEXT,
            worker_pid INTEGER,
            origin TEXT  -- JSON: how a run worker loads the project (file or module + directory)
        );
        -- "runs of job J, newest first" and the unfiltered listing are index scans.
        CREATE INDEX runs_by_job ON runs (job_name, created_at DESC);
        CREATE INDEX runs_by_created ON runs (created_at DESC);
        CREATE INDEX runs_by_status ON runs (status, created_at);

        -- The id is the one global order every sensor's cursor points into. job_name and
        -- location are copied from the run so a sensor's scan never joins to filter.
        CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id TEXT NOT NULL,
            event_type TEXT NOT NULL,
            timestamp REAL NOT NULL,
            message TEXT NOT NULL DEFAULT '',
            step_key TEXT,
            level TEXT,
            error TEXT,
            job_name TEXT NOT NULL,
            location TEXT NOT NULL
        );
        CREATE INDEX events_by_run ON events (run_id, id);
        -- "status events of type T after id N" is a range scan on this index.
        CREATE INDEX events_by_type ON events (event_type, id);

        CREATE TABLE sensors (
            id INTEGER PRIMARY KEY,
            location TEXT NOT NULL,
            name TEXT NOT NULL,
            status TEXT NOT NULL,
            cursor INTEGER NOT NULL DEFAULT 0,
            started_at REAL,
            last_tick_at REAL,
            lease_pid INTEGER,
            lease_token TEXT,
            lease_expires REAL,
            UNIQUE (location, name)
        );

        CREATE TABLE ticks (
            id INTEGER PRIMARY KEY,
            sensor_id INTEGER NOT NULL REFERENCES sensors (id),
            status TEXT NOT NULL,
            started_at REAL NOT NULL,
            duration_s REAL NOT NULL DEFAULT 0,
            events_scanned INTEGER NOT NULL DEFAULT 0,
            reactions INTEGER NOT NULL DEFAULT 0,
            run_ids TEXT NOT NULL DEFAULT '[]',
            skip_reasons TEXT NOT NULL DEFAULT '[]',
            errors TEXT NOT NULL DEFAULT '[]',
            cursor_before INTEGER NOT NULL,
            cursor_after INTEGER NOT NULL
        );
        CREATE INDEX ticks_by_sensor ON ticks (sensor_id, id DESC);

        -- One row per (sensor, status event): the UNIQUE constraint is the exactly-once guard.
        CREATE TABLE reactions (
            id INTEGER PRIMARY KEY,
            sensor_id INTEGER NOT NULL REFERENCES sensors (id),
            event_id INTEGER NOT NULL,
            run_id TEXT NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            next_attempt_at REAL,
            error TEXT,
            skip_message TEXT,
            run_ids TEXT NOT NULL DEFAULT '[]',
            created_at REAL NOT NULL,
            finished_at REAL,
            UNIQUE (sensor_id, event_id)
        );
        CREATE INDEX reactions_pending ON reactions (sensor_id, state, next_attempt_at);

        -- A run_key a sensor has used, and the run it created.
        CREATE TABLE run_keys (
            sensor_id INTEGER NOT NULL REFERENCES sensors (id),
            run_key TEXT NOT NULL,
            run_id TEXT NOT NULL,
            PRIMARY KEY (sensor_id, run_key)
        );
        """,
    )


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_m001_initial]
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True)
class SensorScope:
    """Which runs a sensor watches: all locations, some (location, job) pairs, or one location."""

    location: str
    jobs: frozenset[tuple[str, str]] | None = None
    all_locations: bool = False

    def sql(self, table: str = "") -> tuple[str, list[Any]]:
        """A WHERE fragment over the events table (aliased `table`) and its parameters."""
        prefix = f"{table}." if table else ""
        if self.all_locations:
            return "", []
        if self.jobs is not None:
            if not self.jobs:
                return " AND 0", []
            keys = sorted(f"{loc}\x1f{name}" for loc, name in self.jobs)
            marks = ", ".join("?" * len(keys))
            return f" AND ({prefix}location || char(31) || {prefix}job_name) IN ({marks})", keys
        return f" AND {prefix}location = ?", [self.location]


@dataclass(frozen=True)
class NewRun:
    """A run to create inside a larger transaction (a sensor page)."""

    run_id: str
    job_name: str
    location: str
    run_config: dict[str, Any]
    tags: dict[str, str]
    parent_run_id: str | None
    root_run_id: str | None
    origin: dict[str, Any] | None


@dataclass(frozen=True)
class WriteBack:
    """An event a sensor writes onto the run it reacted to."""

    run_id: str
    message: str


class Storage:
    """One connection to a home's database, with methods named for what runsense needs."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self.db = connection
        self._depth = 0
        self._file_key: tuple[int, int] | None = None

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, home: str | os.PathLike[str] | None = None, *, create: bool = True) -> Storage:
        """Open (creating if needed) the home's database, refusing files runsense cannot use.

        With `create=False` a missing database opens as an empty one in memory, so commands that
        only read never leave a file behind.
        """
        directory = resolve_home(home)
        path = directory / DB_FILENAME
        if not create and not path.exists():
            storage = cls(path, sqlite3.connect(":memory:", isolation_level=None))
            storage._prepare(0)
            return storage
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"cannot create the runsense home {directory}: {exc.strerror}",
                "choose another with --home or RUNSENSE_HOME",
            ) from None
        _check_header(path)
        if not path.exists():
            # Create the file ourselves so it is 0600 from its first byte.
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        try:
            connection = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
            )
            connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            # Our schema and its version are written in one transaction, so tables at version 0
            # mean another program's database: refuse it before WAL or a migration touches it.
            foreign = not version and connection.execute("SELECT 1 FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StorageError(
                f"{path} is not a usable runsense database ({exc})",
                "move it away or point --home at another directory",
            ) from None
        if foreign:
            connection.close()
            raise StorageError(
                f"{path} is a SQLite database of another program, not runsense's",
                "move it away or point --home at another directory",
            )
        if version > SCHEMA_VERSION:
            connection.close()
            raise StorageError(
                f"{path} has schema version {version}, newer than this runsense understands "
                f"({SCHEMA_VERSION})",
                "upgrade runsense (pip install -U runsense) or use another --home",
            )
        storage = cls(path, connection)
        storage._prepare(version)
        stat = os.stat(path)
        storage._file_key = (stat.st_dev, stat.st_ino)
        _OPEN_FILES[storage._file_key] = _OPEN_FILES.get(storage._file_key, 0) + 1
        return storage

    def _prepare(self, version: int) -> None:
        db = self.db
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                db.execute("PRAGMA journal_mode = WAL")
            # NORMAL in WAL mode survives any process crash; only power loss can drop the
            # last commits, which is the trade Huey, llm and most local tools make too.
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA foreign_keys = ON")
            if version < SCHEMA_VERSION:
                with self.transaction():
                    current = db.execute("PRAGMA user_version").fetchone()[0]
                    for migration in MIGRATIONS[current:]:
                        migration(db)
                    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            db.close()
            raise StorageError(
                f"{self.path} is not a usable runsense database ({exc})",
                "move it away or point --home at another directory",
            ) from None

    def close(self) -> None:
        self.db.close()
        key, self._file_key = self._file_key, None
        if key is not None:
            if _OPEN_FILES.get(key, 0) > 1:
                _OPEN_FILES[key] -= 1
            else:
                _OPEN_FILES.pop(key, None)

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; nested calls join the outer one."""
        if self._depth:
            self._depth += 1
            try:
                yield self.db
            finally:
                self._depth -= 1
            return
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise _locked_error(exc) from None
        self._depth = 1
        try:
            yield self.db
        except BaseException:
            self._depth = 0
            self.db.execute("ROLLBACK")
            raise
        self._depth = 0
        try:
            self.db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            self.db.execute("ROLLBACK")
            raise _locked_error(exc) from None

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query inside sees the same committed state."""
        if self._depth:
            yield self.db
            return
        self.db.execute("BEGIN")
        self._depth = 1
        try:
            yield self.db
        finally:
            self._depth = 0
            self.db.execute("COMMIT")

    # -- runs ------------------------------------------------------------------------------

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
        worker_pid: int | None = None,
        now: float | None = None,
    ) -> RunRecord:
        """Store a new run; a QUEUED or STARTING run gets its status event in the same write."""
        now = time.time() if now is None else now
        run_id = run_id or str(uuid.uuid4())
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
        )
        with self.transaction() as db:
            db.execute(
                "INSERT INTO runs (run_id, job_name, location, status, run_config, tags,"
                " created_at, parent_run_id, root_run_id, worker_pid, origin)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run.run_id,
                    job_name,
                    location,
                    status.value,
                    json.dumps(run.run_config),
                    json.dumps(run.tags),
                    now,
                    parent_run_id,
                    run.root_run_id,
                    worker_pid,
                    json.dumps(origin) if origin else None,
                ),
            )
            if status in STATUS_EVENT_TYPES:
                self._insert_event(
                    run, STATUS_EVENT_TYPES[status], _status_message(run, status), now
                )
        return run

    def set_run_status(
        self,
        run: RunRecord,
        status: RunStatus,
        message: str | None = None,
        *,
        error: ErrorInfo | None = None,
        worker_pid: int | None = None,
        now: float | None = None,
    ) -> RunRecord:
        """Move a run to `status`, writing its status event in the same transaction."""
        now = time.time() if now is None else now
        updates: dict[str, Any] = {"status": status.value}
        if status == RunStatus.STARTED:
            updates["start_time"] = now
        if status in FINISHED_STATUSES:
            updates["end_time"] = now
        if worker_pid is not None:
            updates["worker_pid"] = worker_pid
        assignments = ", ".join(f"{column} = ?" for column in updates)
        with self.transaction() as db:
            db.execute(
                f"UPDATE runs SET {assignments} WHERE run_id = ?", (*updates.values(), run.run_id)
            )
            self._insert_event(
                run,
                STATUS_EVENT_TYPES[status],
                message or _status_message(run, status),
                now,
                error=error,
            )
        return self.get_run(run.run_id)

    def claim_run(self, run_id: str, from_status: RunStatus, worker_pid: int | None) -> bool:
        """Move a run from `from_status` to STARTING unless someone else already did."""
        now = time.time()
        with self.transaction() as db:
            claimed = db.execute(
                "UPDATE runs SET status = ?, worker_pid = ? WHERE run_id = ? AND status = ?",
                (RunStatus.STARTING.value, worker_pid, run_id, from_status.value),
            ).rowcount
            if claimed:
                run = self.get_run(run_id)
                self._insert_event(
                    run, EventType.RUN_STARTING, _status_message(run, RunStatus.STARTING), now
                )
        return bool(claimed)

    def set_worker_pid(self, run_id: str, pid: int) -> None:
        with self.transaction() as db:
            db.execute("UPDATE runs SET worker_pid = ? WHERE run_id = ?", (pid, run_id))

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
        with self.transaction():
            return self._insert_event(
                run,
                event_type,
                message,
                time.time() if now is None else now,
                step_key,
                level,
                error,
            )

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
        cursor = self.db.execute(
            "INSERT INTO events (run_id, event_type, timestamp, message, step_key, level, error,"
            " job_name, location) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            ),
        )
        return int(cursor.lastrowid or 0)

    def get_run(self, run_id: str) -> RunRecord:
        row = self.db.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        if row is None:
            raise RunsenseError(f"no run with id '{run_id}'", "`runsense runs list` shows the runs")
        return _run_from_row(row)

    def find_run(self, prefix: str) -> RunRecord:
        """The run whose id starts with `prefix`; ambiguous or unknown prefixes are errors."""
        prefix = prefix.strip().lower()  # uuid4 ids are lower-case; accept what users paste
        if not prefix:
            raise RunsenseError("an empty run id matches every run", "give a run id or its prefix")
        rows = self.db.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id >= ? AND run_id < ? LIMIT 2",
            (prefix, prefix + "\U0010ffff"),
        ).fetchall()
        if not rows:
            raise RunsenseError(
                f"no run id starts with '{prefix}'", "`runsense runs list` shows the runs"
            )
        if len(rows) > 1:
            raise RunsenseError(
                f"several runs start with '{prefix}'", "give more characters of the id"
            )
        return _run_from_row(rows[0])

    def list_runs(
        self,
        job_name: str | None = None,
        status: RunStatus | None = None,
        limit: int | None = 50,
    ) -> list[RunRecord]:
        """Newest first."""
        clauses, params = [], []
        if job_name:
            clauses.append("job_name = ?")
            params.append(job_name)
        if status:
            clauses.append("status = ?")
            params.append(status.value)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT {_RUN_COLUMNS} FROM runs{where} ORDER BY created_at DESC, rowid DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [_run_from_row(row) for row in self.db.execute(sql, params)]

    def runs_with_status(
        self, statuses: Iterable[RunStatus], limit: int | None = None
    ) -> list[RunRecord]:
        """Oldest first: the order queued runs are started in."""
        values = [s.value for s in statuses]
        sql = (
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE status IN ({', '.join('?' * len(values))})"
            " ORDER BY created_at, rowid"
        )
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [_run_from_row(row) for row in self.db.execute(sql, values)]

    def run_origin(self, run_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT origin FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return json.loads(row[0]) if row and row[0] else None

    def events_for_run(self, run_id: str) -> list[RunEvent]:
        rows = self.db.execute(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE run_id = ? ORDER BY id", (run_id,)
        )
        return [_event_from_row(row) for row in rows]

    def newest_event_id(self) -> int:
        row = self.db.execute("SELECT max(id) FROM events").fetchone()
        return int(row[0] or 0)

    # -- sensors ---------------------------------------------------------------------------

    def sensor_state(self, location: str, name: str) -> SensorState | None:
        row = self.db.execute(
            f"SELECT {_SENSOR_COLUMNS} FROM sensors WHERE location = ? AND name = ?",
            (location, name),
        ).fetchone()
        return _sensor_from_row(row) if row else None

    def ensure_sensor(self, location: str, name: str, running: bool) -> SensorState:
        """The sensor's row, created on first sight; a new RUNNING one starts at the newest event."""
        state = self.sensor_state(location, name)
        if state is not None:
            return state
        with self.transaction() as db:
            now = time.time()
            status = SensorStatus.RUNNING if running else SensorStatus.STOPPED
            db.execute(
                "INSERT OR IGNORE INTO sensors (location, name, status, cursor, started_at)"
                " VALUES (?, ?, ?, (SELECT coalesce(max(id), 0) FROM events), ?)",
                (location, name, status.value, now if running else None),
            )
        state = self.sensor_state(location, name)
        assert state is not None
        return state

    def set_sensor_status(
        self, sensor_id: int, status: SensorStatus, *, cursor: int | None = None
    ) -> None:
        with self.transaction() as db:
            if status == SensorStatus.RUNNING:
                # A first start begins at the newest event (runs that ended before it never
                # fire); a restart resumes from the cursor the sensor stopped at.
                db.execute(
                    "UPDATE sensors SET status = ?, started_at = ?, cursor = coalesce(?,"
                    " CASE WHEN started_at IS NULL THEN (SELECT coalesce(max(id), 0) FROM events)"
                    " ELSE cursor END) WHERE id = ?",
                    (status.value, time.time(), cursor, sensor_id),
                )
            else:
                db.execute("UPDATE sensors SET status = ? WHERE id = ?", (status.value, sensor_id))

    def set_cursor(self, sensor_id: int, cursor: int) -> None:
        with self.transaction() as db:
            db.execute("UPDATE sensors SET cursor = ? WHERE id = ?", (cursor, sensor_id))

    def count_status_events_after(
        self, event_type: EventType, cursor: int, scope: SensorScope
    ) -> int:
        where, params = scope.sql()
        row = self.db.execute(
            f"SELECT count(*) FROM events WHERE event_type = ? AND id > ?{where}",
            (event_type.value, cursor, *params),
        ).fetchone()
        return int(row[0])

    def has_status_events_after(
        self, event_type: EventType, cursor: int, scope: SensorScope
    ) -> bool:
        where, params = scope.sql()
        row = self.db.execute(
            f"SELECT 1 FROM events WHERE event_type = ? AND id > ?{where} LIMIT 1",
            (event_type.value, cursor, *params),
        ).fetchone()
        return row is not None

    def status_events_after(
        self, event_type: EventType, cursor: int, scope: SensorScope, limit: int
    ) -> tuple[list[tuple[RunEvent, RunRecord]], int]:
        """Up to `limit` matching events after `cursor` with their runs, and the new cursor.

        When the page is not full the new cursor is the newest event id of the same snapshot, so
        events of other jobs never have to be scanned again.
        """
        where, params = scope.sql("e")
        with self.snapshot() as db:
            rows = db.execute(
                f"SELECT e.id, e.run_id, e.event_type, e.timestamp, e.message, e.step_key, e.level,"
                f" e.error, {_RUN_COLUMNS_R} FROM events e JOIN runs r ON r.run_id = e.run_id"
                f" WHERE e.event_type = ? AND e.id > ?{where}"
                f" ORDER BY e.id LIMIT ?",
                (event_type.value, cursor, *params, limit),
            ).fetchall()
            if len(rows) == limit:
                high_water = rows[-1][0]
            else:
                high_water = max(cursor, self.newest_event_id())
        pairs = [(_event_from_row(row[:8]), _run_from_row(row[8:])) for row in rows]
        return pairs, high_water

    def status_event_for_run(self, run_id: str, event_type: EventType) -> RunEvent | None:
        row = self.db.execute(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE run_id = ? AND event_type = ?"
            " ORDER BY id DESC LIMIT 1",
            (run_id, event_type.value),
        ).fetchone()
        return _event_from_row(row) if row else None

    def get_event(self, event_id: int) -> RunEvent | None:
        row = self.db.execute(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE id = ?", (event_id,)
        ).fetchone()
        return _event_from_row(row) if row else None

    # -- leases ------------------------------------------------------------------------------

    def acquire_lease(self, sensor_id: int, token: str, ttl: float, pid: int | None = None) -> bool:
        """Take the sensor's tick lease unless a live process holds an unexpired one."""
        pid = os.getpid() if pid is None else pid
        now = time.time()
        with self.transaction() as db:
            row = db.execute(
                "SELECT lease_pid, lease_token, lease_expires FROM sensors WHERE id = ?",
                (sensor_id,),
            ).fetchone()
            holder_pid, holder_token, expires = row
            if (
                holder_token is not None
                and holder_token != token
                and expires is not None
                and expires > now
                and pid_alive(holder_pid)
            ):
                return False
            db.execute(
                "UPDATE sensors SET lease_pid = ?, lease_token = ?, lease_expires = ? WHERE id = ?",
                (pid, token, now + ttl, sensor_id),
            )
        return True

    def renew_lease(self, sensor_id: int, token: str, ttl: float) -> bool:
        """Push the lease's expiry out; False when another process has taken it meanwhile."""
        with self.transaction() as db:
            return bool(
                db.execute(
                    "UPDATE sensors SET lease_expires = ? WHERE id = ? AND lease_token = ?",
                    (time.time() + ttl, sensor_id, token),
                ).rowcount
            )

    def release_lease(self, sensor_id: int, token: str) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE sensors SET lease_pid = NULL, lease_token = NULL, lease_expires = NULL"
                " WHERE id = ? AND lease_token = ?",
                (sensor_id, token),
            )

    # -- ticks and reactions -----------------------------------------------------------------

    def commit_page(
        self,
        sensor_id: int,
        tick: Tick,
        reactions: Sequence[Reaction],
        new_runs: Sequence[NewRun],
        run_keys: Sequence[tuple[str, str]],
        write_backs: Sequence[WriteBack],
        cursor: int | None,
        lease_token: str,
        lease_ttl: float,
    ) -> None:
        """Store one page of a tick atomically: either all of it happens or none of it does."""
        now = time.time()
        with self.transaction() as db:
            holder = db.execute(
                "SELECT lease_token FROM sensors WHERE id = ?", (sensor_id,)
            ).fetchone()
            if holder is None or holder[0] != lease_token:
                raise RunsenseError(
                    "lost the sensor's lease to another process; nothing was stored"
                )
            self._insert_runs(new_runs, now)
            db.executemany(
                "INSERT OR IGNORE INTO run_keys (sensor_id, run_key, run_id) VALUES (?, ?, ?)",
                [(sensor_id, key, run_id) for key, run_id in run_keys],
            )
            db.executemany(
                "INSERT INTO reactions (sensor_id, event_id, run_id, state, attempts,"
                " next_attempt_at, error, skip_message, run_ids, created_at, finished_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (sensor_id, event_id) DO UPDATE SET state = excluded.state,"
                " attempts = excluded.attempts, next_attempt_at = excluded.next_attempt_at,"
                " error = excluded.error, skip_message = excluded.skip_message,"
                " run_ids = excluded.run_ids, finished_at = excluded.finished_at",
                [
                    (
                        sensor_id,
                        r.event_id,
                        r.run_id,
                        r.state.value,
                        r.attempts,
                        r.next_attempt_at,
                        r.error,
                        r.skip_message,
                        json.dumps(r.run_ids),
                        r.created_at or now,
                        r.finished_at,
                    )
                    for r in reactions
                ],
            )
            if write_backs:
                by_id = {
                    run.run_id: run for run in self._runs_by_id({w.run_id for w in write_backs})
                }
                db.executemany(
                    "INSERT INTO events (run_id, event_type, timestamp, message, job_name, location)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (
                            w.run_id,
                            EventType.SENSOR_REACTION.value,
                            now,
                            w.message,
                            by_id[w.run_id].job_name,
                            by_id[w.run_id].location,
                        )
                        for w in write_backs
                    ],
                )
            if cursor is not None:
                db.execute(
                    "UPDATE sensors SET cursor = ?, last_tick_at = ?, lease_expires = ? WHERE id = ?",
                    (cursor, now, now + lease_ttl, sensor_id),
                )
            self._save_tick(sensor_id, tick)

    def _insert_runs(self, new_runs: Sequence[NewRun], now: float) -> None:
        if not new_runs:
            return
        self.db.executemany(
            "INSERT INTO runs (run_id, job_name, location, status, run_config, tags, created_at,"
            " parent_run_id, root_run_id, origin) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                    json.dumps(r.origin) if r.origin else None,
                )
                for r in new_runs
            ],
        )
        self.db.executemany(
            "INSERT INTO events (run_id, event_type, timestamp, message, job_name, location)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [
                (
                    r.run_id,
                    EventType.RUN_ENQUEUED.value,
                    now,
                    f'Run of "{r.job_name}" queued by sensor "{r.tags.get("runsense/sensor", "")}".',
                    r.job_name,
                    r.location,
                )
                for r in new_runs
            ],
        )

    def _runs_by_id(self, run_ids: Iterable[str]) -> list[RunRecord]:
        ids = list(run_ids)
        out: list[RunRecord] = []
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            out += [
                _run_from_row(row)
                for row in self.db.execute(
                    f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id IN ({', '.join('?' * len(chunk))})",
                    chunk,
                )
            ]
        return out

    def _save_tick(self, sensor_id: int, tick: Tick) -> None:
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
        )
        if tick.tick_id:
            self.db.execute(
                "UPDATE ticks SET status = ?, started_at = ?, duration_s = ?, events_scanned = ?,"
                " reactions = ?, run_ids = ?, skip_reasons = ?, errors = ?, cursor_before = ?,"
                " cursor_after = ? WHERE id = ?",
                (*values, tick.tick_id),
            )
        else:
            cursor = self.db.execute(
                "INSERT INTO ticks (status, started_at, duration_s, events_scanned, reactions,"
                " run_ids, skip_reasons, errors, cursor_before, cursor_after, sensor_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*values, sensor_id),
            )
            tick.tick_id = int(cursor.lastrowid or 0)

    def record_tick(self, sensor_id: int, tick: Tick) -> None:
        with self.transaction():
            self._save_tick(sensor_id, tick)
            self.db.execute(
                "UPDATE sensors SET last_tick_at = ? WHERE id = ?", (time.time(), sensor_id)
            )

    def run_key_owner(self, sensor_id: int, run_key: str) -> str | None:
        row = self.db.execute(
            "SELECT run_id FROM run_keys WHERE sensor_id = ? AND run_key = ?", (sensor_id, run_key)
        ).fetchone()
        return row[0] if row else None

    def list_ticks(self, sensor_id: int, limit: int = 20) -> list[Tick]:
        rows = self.db.execute(
            "SELECT t.id, s.name, t.status, t.started_at, t.duration_s, t.events_scanned,"
            " t.reactions, t.run_ids, t.skip_reasons, t.errors, t.cursor_before, t.cursor_after"
            " FROM ticks t JOIN sensors s ON s.id = t.sensor_id WHERE t.sensor_id = ?"
            " ORDER BY t.id DESC LIMIT ?",
            (sensor_id, limit),
        )
        return [
            Tick(
                tick_id=row[0],
                sensor=row[1],
                status=TickStatus(row[2]),
                started_at=row[3],
                duration_s=row[4],
                events_scanned=row[5],
                reactions=row[6],
                run_ids=json.loads(row[7]),
                skip_reasons=json.loads(row[8]),
                errors=json.loads(row[9]),
                cursor_before=row[10],
                cursor_after=row[11],
            )
            for row in rows
        ]

    def last_tick(self, sensor_id: int) -> Tick | None:
        ticks = self.list_ticks(sensor_id, limit=1)
        return ticks[0] if ticks else None

    def due_reactions(self, sensor_id: int, now: float, limit: int) -> list[Reaction]:
        rows = self.db.execute(
            f"SELECT {_REACTION_COLUMNS} FROM reactions r JOIN sensors s ON s.id = r.sensor_id"
            " WHERE r.sensor_id = ? AND r.state = ? AND r.next_attempt_at <= ?"
            " ORDER BY r.event_id LIMIT ?",
            (sensor_id, ReactionState.RETRYING.value, now, limit),
        )
        return [_reaction_from_row(row) for row in rows]

    def next_retry_at(self, sensor_id: int) -> float | None:
        row = self.db.execute(
            "SELECT min(next_attempt_at) FROM reactions WHERE sensor_id = ? AND state = ?",
            (sensor_id, ReactionState.RETRYING.value),
        ).fetchone()
        return row[0]

    def failed_reactions(self, sensor_ids: Sequence[int]) -> list[Reaction]:
        """Reactions still retrying or parked, oldest event first."""
        if not sensor_ids:
            return []
        marks = ", ".join("?" * len(sensor_ids))
        rows = self.db.execute(
            f"SELECT {_REACTION_COLUMNS} FROM reactions r JOIN sensors s ON s.id = r.sensor_id"
            f" WHERE r.sensor_id IN ({marks}) AND r.state IN (?, ?) ORDER BY r.event_id",
            (*sensor_ids, ReactionState.RETRYING.value, ReactionState.DEAD.value),
        )
        return [_reaction_from_row(row) for row in rows]

    def reactions_for(self, sensor_id: int) -> list[Reaction]:
        rows = self.db.execute(
            f"SELECT {_REACTION_COLUMNS} FROM reactions r JOIN sensors s ON s.id = r.sensor_id"
            " WHERE r.sensor_id = ? ORDER BY r.event_id",
            (sensor_id,),
        )
        return [_reaction_from_row(row) for row in rows]

    def requeue_reactions(self, sensor_id: int, event_id: int | None = None) -> int:
        """Make parked reactions due now, with a fresh retry budget; returns how many."""
        sql = (
            "UPDATE reactions SET state = ?, attempts = 0, next_attempt_at = ?, finished_at = NULL"
            " WHERE sensor_id = ? AND state = ?"
        )
        params: list[Any] = [
            ReactionState.RETRYING.value,
            time.time(),
            sensor_id,
            ReactionState.DEAD.value,
        ]
        if event_id is not None:
            sql += " AND event_id = ?"
            params.append(event_id)
        with self.transaction() as db:
            return db.execute(sql, params).rowcount

    def reaction_counts(self) -> dict[str, int]:
        return dict(
            self.db.execute("SELECT state, count(*) FROM reactions GROUP BY state").fetchall()
        )

    # --- cli-polish additions ---

    def job_names(self) -> list[str]:
        """Every job that has runs here, sorted (a covering scan of `runs_by_job`)."""
        return [row[0] for row in self.db.execute("SELECT DISTINCT job_name FROM runs ORDER BY 1")]

    def reactions_to_run(self, run_id: str) -> list[Reaction]:
        """What every sensor did about this run's status events, in event order.

        Probes the (sensor_id, event_id) key once per sensor and status event of the run, so
        it stays an index lookup however many reactions the home holds.
        """
        rows = self.db.execute(
            f"SELECT {_REACTION_COLUMNS} FROM reactions r JOIN sensors s ON s.id = r.sensor_id"
            " WHERE r.sensor_id IN (SELECT id FROM sensors)"
            " AND r.event_id IN (SELECT id FROM events WHERE run_id = ?)"
            " ORDER BY r.event_id, s.name",
            (run_id,),
        )
        return [_reaction_from_row(row) for row in rows]

    def requested_runs(self, run_id: str) -> list[RunRecord]:
        """Runs that sensors requested from this run (parent_run_id = run_id), oldest first.

        Found through the reactions to the run, which list the runs they created: `runs` has
        no index on parent_run_id.
        """
        rows = self.db.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id IN ("
            " SELECT j.value FROM reactions r, json_each(r.run_ids) j"
            " WHERE r.sensor_id IN (SELECT id FROM sensors)"
            " AND r.event_id IN (SELECT id FROM events WHERE run_id = ?))"
            " AND parent_run_id = ? ORDER BY created_at, rowid",
            (run_id, run_id),
        )
        return [_run_from_row(row) for row in rows]

    def retry_reactions_now(self, sensor_id: int, event_id: int | None = None) -> tuple[int, int]:
        """Make failed reactions due now, skipping their back-off: parked (DEAD) ones get a
        fresh retry budget, RETRYING ones keep their attempt count. Returns (parked, retrying)."""
        now = time.time()
        only_event = " AND event_id = ?" if event_id is not None else ""
        extra = [event_id] if event_id is not None else []
        with self.transaction() as db:
            # RETRYING first, so the parked ones requeued below are not counted twice.
            retrying = db.execute(
                "UPDATE reactions SET next_attempt_at = min(coalesce(next_attempt_at, ?), ?)"
                " WHERE sensor_id = ? AND state = ?" + only_event,
                [now, now, sensor_id, ReactionState.RETRYING.value, *extra],
            ).rowcount
            parked = db.execute(
                "UPDATE reactions SET state = ?, attempts = 0, next_attempt_at = ?,"
                " finished_at = NULL WHERE sensor_id = ? AND state = ?" + only_event,
                [ReactionState.RETRYING.value, now, sensor_id, ReactionState.DEAD.value, *extra],
            ).rowcount
        return parked, retrying

    # --- end cli-polish ---


_RUN_FIELDS = (
    "run_id, job_name, status, location, run_config, tags, created_at, start_time, end_time,"
    " parent_run_id, root_run_id, worker_pid"
)
_RUN_COLUMNS = _RUN_FIELDS
_RUN_COLUMNS_R = ", ".join(f"r.{name.strip()}" for name in _RUN_FIELDS.split(","))
_EVENT_COLUMNS = "id, run_id, event_type, timestamp, message, step_key, level, error"
_SENSOR_COLUMNS = "id, location, name, status, cursor, started_at, last_tick_at"
_REACTION_COLUMNS = (
    "r.sensor_id, r.event_id, r.run_id, r.state, r.attempts, r.next_attempt_at, r.error,"
    " r.skip_message, r.run_ids, r.created_at, r.finished_at, s.name"
)


def _run_from_row(row: Sequence[Any]) -> RunRecord:
    return RunRecord(
        run_id=row[0],
        job_name=row[1],
        status=RunStatus(row[2]),
        location=row[3],
        run_config=json.loads(row[4]),
        tags=json.loads(row[5]),
        created_at=row[6],
        start_time=row[7],
        end_time=row[8],
        parent_run_id=row[9],
        root_run_id=row[10],
        worker_pid=row[11],
    )


def _event_from_row(row: Sequence[Any]) -> RunEvent:
    return RunEvent(
        event_id=row[0],
        run_id=row[1],
        event_type=EventType(row[2]),
        timestamp=row[3],
        message=row[4],
        step_key=row[5],
        level=row[6],
        error=ErrorInfo.from_json(row[7]),
    )


def _sensor_from_row(row: Sequence[Any]) -> SensorState:
    return SensorState(
        sensor_id=row[0],
        location=row[1],
        name=row[2],
        status=SensorStatus(row[3]),
        cursor=row[4],
        started_at=row[5],
        last_tick_at=row[6],
    )


def _reaction_from_row(row: Sequence[Any]) -> Reaction:
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


def _status_message(run: RunRecord, status: RunStatus) -> str:
    return {
        RunStatus.QUEUED: f'Run of "{run.job_name}" queued.',
        RunStatus.STARTING: f'Starting run of "{run.job_name}".',
        RunStatus.STARTED: f'Started execution of run for "{run.job_name}".',
        RunStatus.SUCCESS: f'Finished execution of run for "{run.job_name}".',
        RunStatus.FAILURE: f'Execution of run for "{run.job_name}" failed.',
        RunStatus.CANCELING: f'Canceling run of "{run.job_name}".',
        RunStatus.CANCELED: f'Run of "{run.job_name}" canceled.',
    }.get(status, status.value)


def _check_header(path: Path) -> None:
    """Refuse a file that is not SQLite before sqlite3 gets a chance to write to it."""
    try:
        stat = os.stat(path)
    except OSError:
        stat = None
    if stat is not None and (stat.st_dev, stat.st_ino) in _OPEN_FILES:
        return  # open (so checked) already; reading it again would drop SQLite's locks
    try:
        with open(path, "rb") as handle:
            header = handle.read(16)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror}", "check its permissions") from None
    if header and header != SQLITE_HEADER:
        raise StorageError(
            f"{path} is not a SQLite database",
            "move it away or point --home at another directory",
        )


def _locked_error(exc: sqlite3.OperationalError) -> StorageError:
    if "locked" in str(exc) or "busy" in str(exc):
        return StorageError(
            f"the database stayed locked for over {BUSY_TIMEOUT_MS // 1000} s",
            "another runsense process is holding it; try again",
        )
    return StorageError(f"database error: {exc}")
