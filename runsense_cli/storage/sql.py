"""What both SQL backends share: statements, transactions and migrations over a DB-API connection.

SQL here is written once with `?` placeholders; a backend converts it to its driver's style.
Backends provide the connection and the few things that differ (how a write transaction takes its
lock, the database clock, row order, wake-ups). The runs/events and sensors/ticks halves of the
contract live in `runs_sql` and `sensors_sql`, both built on `SqlBase`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from ..errors import StorageError
from ..identity import ProcessId
from .contract import Storage
from .schema import MIGRATIONS, SCHEMA_VERSION, STORAGE_TABLES, Dialect, statements
from .shapes import DaemonRecord, SensorScope

T = TypeVar("T")
CHANGES_NAMED = 50  # a transaction with more distinct events wakes everyone for anything
CHANGES_BYTES = 4000  # and one whose names are longer (PostgreSQL refuses 8000-byte payloads)


class SqlBase(Storage):
    """Shared SQL over `self.conn`; backends set the dialect hooks below."""

    dialect: Dialect
    #: Appended to a SELECT that a write transaction is about to update (row lock).
    for_update = ""
    #: Appended to a SELECT of queued runs to claim: locked rows are skipped, not waited for.
    skip_locked = ""
    #: The column that orders runs by creation.
    run_order = "rowid"
    #: UPDATE ... RETURNING gives the updated row in the same round trip (else: SELECT it).
    update_returning = False
    #: A transaction that asks for it (`atomic(..., events_last=True)`) takes the write lock only
    #: to write its events, at its end (PostgreSQL; SQLite's lock is taken at BEGIN anyway).
    locks_late = False

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self._depth = 0
        self._wake = False
        # The events the write transaction in progress inserted, for its wake-up to name (see
        # `take_changes`); None: too many, or written where they are not noted.
        self._changes: set[tuple[str, str, str]] | None = set()
        # Events held back to the end of a late-locking transaction, and what waits for their ids.
        self._held: list[tuple[Any, ...]] | None = None
        self._once_written: list[tuple[int, Callable[[int], Any]]] = []

    # -- driver hooks ------------------------------------------------------------------------

    def _execute(self, sql: str, params: Iterable[Any] = ()) -> Any:
        raise NotImplementedError

    def _execute_planned_each_time(self, sql: str, params: Iterable[Any] = ()) -> Any:
        """`_execute` for a statement whose best plan depends on its values: a backend that
        keeps prepared plans (PostgreSQL) plans this one with the values at every call."""
        return self._execute(sql, params)

    def _executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> None:
        raise NotImplementedError

    def _insert_id(self, sql: str, params: Iterable[Any]) -> int:
        """Run an INSERT into a table with an `id` key and return the new id."""
        raise NotImplementedError

    def _begin_write(self, lock: bool = True) -> None:
        """BEGIN a write transaction; `lock`: take the write lock now (else `_write_held`)."""
        raise NotImplementedError

    def _insert_events_locked(self, rows: list[tuple[Any, ...]]) -> list[int]:
        """Take the write lock and insert these events in order; their ids (`locks_late`)."""
        raise NotImplementedError

    def _begin_read(self) -> None:
        self._execute("BEGIN")

    def _commit(self, notify: bool = False) -> None:
        """COMMIT. `notify`: the transaction wakes waiters; a backend whose notifications are
        transactional (PostgreSQL) sends them with the commit, the others in `_notify` after."""
        self._execute("COMMIT")

    def _rollback(self) -> None:
        self._execute("ROLLBACK")

    def _notify(self) -> None:
        """Tell waiting processes that something they wait for was committed."""

    def _in_list(self, column: str, values: list[str]) -> tuple[str, Any]:
        """`column` is one of `values`, as SQL with one parameter, and that parameter (however
        many values: a list of job names must not run into a parameter limit)."""
        return f"{column} IN (SELECT value FROM json_each(?))", json.dumps(values)

    def _now_sql(self) -> tuple[str, tuple[float, ...]]:
        """The database's clock (`db_time`) inside a statement: SQL and its parameters. Here a
        bound value; a server backend reads its own clock in the statement (no round trip)."""
        return "?", (self.db_time(),)

    def _retrying(self, fn: Callable[[], T], *, write: bool) -> T:
        """Run `fn`; a backend that can lose its connection retries here."""
        return fn()

    # -- transactions ------------------------------------------------------------------------

    def _write(self, fn: Callable[[], T], *, wake: bool = False, events_last: bool = False) -> T:
        """Run `fn` in one write transaction (joining an outer one); `wake` notifies waiters;
        `events_last`: see `Storage.atomic`."""
        if self._depth:
            self._wake = self._wake or wake
            return fn()

        def attempt() -> T:
            self._depth = 1
            self._wake = wake
            self._changes = set()
            late = events_last and self.locks_late
            self._held, self._once_written = ([] if late else None), []
            try:
                # Inside the try: a BEGIN or lock statement that fails (a lock_timeout, a
                # cancelled statement) must still roll back, or the connection stays unusable.
                self._begin_write(lock=not late)
                result = fn()
                self._write_held(end=True)
            except BaseException:
                self._depth = 0
                self._held = None
                self._safe_rollback()
                raise
            self._depth = 0
            try:
                self._commit(notify=self._wake)
            except BaseException:
                self._safe_rollback()
                raise
            if self._wake:
                self._notify()
            return result

        return self._retrying(attempt, write=True)

    def _note_event(self, event_type: str, location: str, job_name: str) -> None:
        """An event this write transaction inserts, for its wake-up to name."""
        if self._changes is not None:
            self._changes.add((event_type, location, job_name))
            if len(self._changes) > CHANGES_NAMED:
                self._changes = None

    def _named_changes(self) -> str:
        """The committing transaction's events as a wake-up's text: one `type TAB location TAB
        job` line each, or "*" (anything may have changed: a command, or too many to name)."""
        if not self._changes or any(
            "\t" in part or "\n" in part for change in self._changes for part in change
        ):
            return "*"
        text = "\n".join("\t".join(change) for change in sorted(self._changes))
        return text if len(text.encode()) <= CHANGES_BYTES else "*"

    def atomic(self, fn: Callable[[], T], *, events_last: bool = False) -> T:
        return self._write(fn, events_last=events_last)

    def _hold(self, row: tuple[Any, ...]) -> int | None:
        """Hold back an event row to the end of a late-locking transaction: a stand-in id
        (negative) for `_when_written`; None when events are written as they come."""
        if self._held is None:
            return None
        self._held.append(row)
        return -len(self._held)

    def _when_written(self, event_id: int, fn: Callable[[int], T]) -> T | None:
        """`fn(event_id)` now, or, for a held event, once it is written (then None here)."""
        if event_id >= 0:
            return fn(event_id)
        self._once_written.append((-event_id - 1, fn))
        return None

    def _write_held(self, end: bool = False) -> None:
        """Take the write lock and write the held events, then what waited for their ids; from
        here on the transaction writes events as they come, under the lock. At its `end`, a
        transaction that holds no event takes no lock: it has nothing to keep in order."""
        held, self._held = self._held, None
        if held is None or (end and not held):
            return
        ids = self._insert_events_locked(held)
        waiting, self._once_written = self._once_written, []
        for index, fn in waiting:
            fn(ids[index])

    def _read(self, fn: Callable[[], T]) -> T:
        """Run `fn`'s queries; outside a transaction each one sees the latest commits."""
        if self._depth:
            return fn()
        return self._retrying(fn, write=False)

    def _safe_rollback(self) -> None:
        # If the connection is gone the server rolled back for us.
        with contextlib.suppress(Exception):
            self._rollback()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """A write transaction for a sequence of calls; nested calls join the outer one."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._depth = 1
        self._changes = set()
        try:
            self._begin_write()
            yield
        except BaseException:
            self._depth = 0
            self._safe_rollback()
            raise
        self._depth = 0
        self._commit()

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read transaction: every query inside sees the same committed state."""
        if self._depth:
            yield
            return
        self._begin_read()
        self._depth = 1
        try:
            yield
        finally:
            self._depth = 0
            self._safe_rollback()

    # -- schema ------------------------------------------------------------------------------

    def _migrate(self, current: int) -> None:
        """Apply every missing migration in one transaction, then record the version."""
        for migration in MIGRATIONS[current:]:
            for statement in statements(migration, self.dialect):
                self._execute(statement)
        self._set_version(SCHEMA_VERSION)

    def _set_version(self, version: int) -> None:
        raise NotImplementedError

    # -- shared helpers ----------------------------------------------------------------------

    def _one(self, sql: str, params: Iterable[Any] = ()) -> Any:
        return self._read(lambda: self._execute(sql, params).fetchone())

    def _all(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        return self._read(lambda: self._execute(sql, params).fetchall())

    def _scope_sql(self, scope: SensorScope, table: str = "") -> tuple[str, list[Any]]:
        """A WHERE fragment over the events table (aliased `table`) and its parameters."""
        prefix = f"{table}." if table else ""
        if scope.all_locations:
            return "", []
        clauses: list[str] = []
        params: list[Any] = []
        if scope.jobs is None and not scope.locations:
            return f" AND {prefix}location = ?", [scope.location]
        if scope.jobs:
            pairs = sorted(scope.jobs)
            values = ", ".join("(?, ?)" for _ in pairs)
            clauses.append(f"({prefix}location, {prefix}job_name) IN (VALUES {values})")
            params += [value for pair in pairs for value in pair]
        if scope.locations:
            names = sorted(scope.locations)
            clauses.append(f"{prefix}location IN ({', '.join('?' * len(names))})")
            params += names
        if not clauses:
            return " AND 1 = 0", []
        return f" AND ({' OR '.join(clauses)})", params

    # -- daemons -----------------------------------------------------------------------------

    def heartbeat_daemon(self, identity: str, info: dict[str, Any]) -> None:
        parsed = ProcessId.parse(identity)
        node, pid = (parsed.node, parsed.pid) if parsed else (identity, 0)

        def body() -> None:
            now = self.db_time()
            self._execute(
                "INSERT INTO daemons (identity, node, pid, started_at, heartbeat_at, info)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (identity) DO UPDATE SET"
                " heartbeat_at = excluded.heartbeat_at, info = excluded.info",
                (identity, node, int(pid or 0), now, now, json.dumps(info)),
            )

        self._write(body)

    def remove_daemon(self, identity: str) -> None:
        self._write(lambda: self._execute("DELETE FROM daemons WHERE identity = ?", (identity,)))

    def list_daemons(self) -> list[DaemonRecord]:
        rows = self._all(
            "SELECT identity, node, pid, started_at, heartbeat_at, info FROM daemons"
            " ORDER BY started_at"
        )
        return [DaemonRecord(r[0], r[1], r[2], r[3], r[4], json.loads(r[5] or "{}")) for r in rows]

    # -- moving a whole database -------------------------------------------------------------

    def is_empty(self) -> bool:
        return not any(self._one(f"SELECT 1 FROM {table} LIMIT 1") for table in STORAGE_TABLES)

    def export_table(self, table: str) -> tuple[list[str], Iterator[tuple[Any, ...]]]:
        if table not in STORAGE_TABLES:
            raise StorageError(f"unknown table {table!r}")
        columns = self._table_columns(table)
        order = {"runs": f"created_at, {self.run_order}", "run_keys": "sensor_id, run_key"}
        order_by = f" ORDER BY {order.get(table, 'id')}"
        rows = self._all(f"SELECT {', '.join(columns)} FROM {table}{order_by}")
        return columns, iter([tuple(row) for row in rows])

    def _table_columns(self, table: str) -> list[str]:
        raise NotImplementedError

    def import_rows(self, table: str, columns: list[str], rows: Iterable[tuple[Any, ...]]) -> int:
        if table not in STORAGE_TABLES:
            raise StorageError(f"unknown table {table!r}")
        # `seq` orders runs on PostgreSQL only; the target numbers runs in the (creation) order
        # they arrive in.
        mine = set(self._table_columns(table)) - {"seq"}
        keep = [i for i, name in enumerate(columns) if name in mine]
        names = [columns[i] for i in keep]
        marks = ", ".join("?" * len(names))
        batch = [tuple(row[i] for i in keep) for row in rows]

        def body() -> int:
            self._executemany(f"INSERT INTO {table} ({', '.join(names)}) VALUES ({marks})", batch)
            self._after_import(table)
            return len(batch)

        return self._write(body)

    def _after_import(self, table: str) -> None:
        """Backends with sequences move them past the imported ids."""
