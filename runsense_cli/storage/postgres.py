"""The PostgreSQL backend (psycopg 3, the `postgres` extra): one database, many hosts and daemons.

- Event ids must become visible in id order, which a plain sequence does not give (a lower id can
  commit after a higher one). Every write transaction first takes one transaction-scoped advisory
  lock, so writes commit one at a time, exactly as SQLite's `BEGIN IMMEDIATE` does; reads never
  wait for it. Claims still select with `FOR UPDATE SKIP LOCKED`.
- Leases and heartbeats use the server's clock (`clock_timestamp()`), never a host's, read inside
  the statement that needs it.
- A write transaction adds two round trips to its statements: BEGIN with the write lock, and
  COMMIT (with its `pg_notify` when it wakes anyone), each sent as one simple query. Every COMMIT
  waits for the disk (fsync), so callers put what belongs together in one (`Storage.atomic`).
- Wake-ups are `pg_notify` inside the committing transaction and LISTEN on a second connection.
- A lost connection is retried with back-off and reported once per outage; a query or a write
  that had not reached COMMIT is run again, a COMMIT whose answer was lost is not (it may have
  happened), and the caller is told instead.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from ..errors import StorageError, StorageUnavailableError
from .ops_sql import OpsSql
from .pg_listen import CHANNEL, Listening
from .rows import EVENT_ROW
from .runs_sql import RunsSql
from .schema import POSTGRES, SCHEMA_VERSION
from .sensors_sql import SensorsSql
from .urls import mask_url, url_password

T = TypeVar("T")

WRITE_LOCK = 0x72756E73656E7365  # "runsense": serializes every write transaction
MIGRATE_LOCK = WRITE_LOCK + 1
CONNECT_TIMEOUT_S = 5
DEADLOCK_RETRIES = 5  # a write the server ended to break a deadlock is run again this often
DB_NOW = "extract(epoch FROM clock_timestamp())::float8"  # the server's clock, in seconds
# A write transaction's first and last round trips: constants, so each is one simple query.
_BEGIN_WRITE = f"BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})"
_EVENT_CASTS = (
    "CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS DOUBLE PRECISION), CAST(? AS TEXT),"
    " CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS TEXT),"
    " CAST(? AS DOUBLE PRECISION)"
)


def _driver() -> Any:
    try:
        import psycopg
    except ImportError:
        raise StorageError(
            "a PostgreSQL database URL needs the psycopg driver, which is not installed",
            "pip install 'runsense[postgres]'",
        ) from None
    return psycopg


class _ConnectionLost(StorageUnavailableError):
    pass


class _TryAgain(StorageError):
    """The server ended the transaction to break a deadlock (it rolled back): run it again."""


class PostgresStorage(Listening, RunsSql, SensorsSql, OpsSql):
    backend = "postgresql"
    single_host = False
    needs_heartbeats = True
    dialect = POSTGRES
    for_update = " FOR UPDATE"
    skip_locked = " FOR UPDATE SKIP LOCKED"
    run_order = "seq"
    update_returning = True
    locks_late = True

    def __init__(
        self,
        url: str,
        conn: Any,
        *,
        give_up_after: float | None,
        on_outage: Callable[[str], None] | None,
    ) -> None:
        super().__init__(conn)
        self.url = url
        self.give_up_after = give_up_after
        self.on_outage = on_outage or _stderr_line
        self._sql_cache: dict[str, str] = {}
        self._listen: Any = None
        self._heard: set[tuple[str, str, str]] | None = set()  # see `take_changes`
        self._secret = url_password(url)
        self._raw_secret = url_password(url, decoded=False)

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        give_up_after: float | None = 30.0,
        on_outage: Callable[[str], None] | None = None,
    ) -> PostgresStorage:
        _driver()
        storage = cls(url, None, give_up_after=give_up_after, on_outage=on_outage)
        storage.conn = storage._connect_retrying()
        storage._prepare()
        return storage

    @property
    def description(self) -> str:
        return mask_url(self.url)

    # -- connecting --------------------------------------------------------------------------

    def _connect_once(self) -> Any:
        psycopg = _driver()
        return psycopg.connect(
            self.url,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT_S,
            # A client paused or cut off inside a transaction holds the write lock: the server
            # ends such a session after 30 s, and keepalives notice a vanished peer.
            options="-c idle_in_transaction_session_timeout=30000",
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
            tcp_user_timeout=30000,
        )

    def _connect_retrying(self) -> Any:
        psycopg = _driver()
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._connect_once()
            except psycopg.OperationalError as exc:
                waited = time.monotonic() - started
                reason = self._clean(str(exc).strip().splitlines()[0] if str(exc) else "")
                if _permanent(exc, reason):
                    raise StorageError(
                        f"cannot use the database {self.description}: {reason}",
                        "check the URL: user, password, database name and options",
                    ) from None
                if self.give_up_after is not None and waited >= self.give_up_after:
                    raise StorageUnavailableError(
                        f"cannot reach the database {self.description} after {waited:.0f} s"
                        f" ({reason})",
                        "check that the server runs and the URL is right",
                    ) from None
                if attempt == 1:
                    self.on_outage(f"database unreachable, retrying (attempt {attempt}): {reason}")
                time.sleep(min(0.2 * 2 ** min(attempt, 5), 2.0))
            except psycopg.Error as exc:  # a URL psycopg cannot even parse: never retried
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise StorageError(
                    f"cannot read the database URL {self.description}: {self._clean(first)}",
                    "write postgresql://USER:PASSWORD@HOST:PORT/DATABASE (percent-encode"
                    " special characters)",
                ) from None

    def _prepare(self) -> None:
        psycopg = _driver()
        try:
            row = self.conn.execute("SELECT version FROM runsense_schema").fetchone()
            version = row[0] if row else 0
        except psycopg.errors.UndefinedTable:
            version = None
        except psycopg.Error as exc:
            raise self._error(exc) from None
        if version == SCHEMA_VERSION:
            return
        if version is not None and version > SCHEMA_VERSION:
            raise StorageError(
                f"the database {self.description} has schema version {version}, newer than this"
                f" runsense understands ({SCHEMA_VERSION})",
                "upgrade runsense (pip install -U 'runsense[postgres]') or use another database",
            )
        # Two hosts upgrading at once: the advisory lock makes the second wait, then see the
        # version the first one wrote.
        try:
            self._migrate_locked()
        except psycopg.Error as exc:
            hint = None
            if isinstance(exc, psycopg.errors.InsufficientPrivilege):
                hint = "let the role create tables: GRANT CREATE ON SCHEMA public TO <role>"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StorageError(
                f"cannot prepare the database {self.description}: {self._clean(first)}", hint
            ) from None

    def _migrate_locked(self) -> None:
        with self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
            self.conn.execute("CREATE TABLE IF NOT EXISTS runsense_schema (version INTEGER)")
            row = self.conn.execute("SELECT version FROM runsense_schema").fetchone()
            if row is None:
                self.conn.execute("INSERT INTO runsense_schema (version) VALUES (0)")
            current = row[0] if row else 0
            if current > SCHEMA_VERSION:
                raise StorageError(
                    f"the database {self.description} has schema version {current}, newer than"
                    f" this runsense understands ({SCHEMA_VERSION})",
                    "upgrade runsense (pip install -U 'runsense[postgres]')",
                )
            if current < SCHEMA_VERSION:
                self._depth = 1
                try:
                    self._migrate(current)
                finally:
                    self._depth = 0

    def _set_version(self, version: int) -> None:
        self._execute("UPDATE runsense_schema SET version = ?", (version,))

    def reopen(self) -> PostgresStorage:
        return PostgresStorage.connect(
            self.url, give_up_after=self.give_up_after, on_outage=self.on_outage
        )

    def close(self) -> None:
        for conn in (self.conn, self._listen):
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
        self._listen = None

    # -- driver hooks ------------------------------------------------------------------------

    def _sql(self, sql: str) -> str:
        converted = self._sql_cache.get(sql)
        if converted is None:
            converted = self._sql_cache[sql] = sql.replace("%", "%%").replace("?", "%s")
        return converted

    @contextlib.contextmanager
    def _driver_errors(self) -> Iterator[None]:
        """The driver's errors as runsense's: a lost connection (retried by `_retrying`), or
        one clear StorageError."""
        psycopg = _driver()
        try:
            yield
        except psycopg.OperationalError as exc:
            if self.conn.broken or self.conn.closed:
                raise _ConnectionLost(self._clean(str(exc))) from None
            if isinstance(exc, psycopg.errors.DeadlockDetected):
                # Rare: a transaction holding rows while it waits for the write lock (one that
                # locks late), and one holding the lock that wants those rows.
                raise _TryAgain(self._clean(str(exc))) from None
            raise self._error(exc) from None
        except psycopg.Error as exc:
            raise self._error(exc) from None

    def _execute(self, sql: str, params: Iterable[Any] = (), prepare: bool | None = None) -> Any:
        with self._driver_errors():
            return self.conn.execute(self._sql(sql), tuple(params), prepare=prepare)

    def _execute_planned_each_time(self, sql: str, params: Iterable[Any] = ()) -> Any:
        # Never prepared: the plan PostgreSQL keeps for a prepared statement is chosen without
        # the values, and for a capped count it walks every event by id (1.7 s at 10^6 runs).
        return self._execute(sql, params, prepare=False)

    def _executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> None:
        batch = [tuple(row) for row in rows]
        if not batch:
            return
        with self._driver_errors(), self.conn.cursor() as cursor:
            cursor.executemany(self._sql(sql), batch)

    def _insert_id(self, sql: str, params: Iterable[Any]) -> int:
        return int(self._execute(sql + " RETURNING id", params).fetchone()[0])

    def _script(self, sql: str) -> None:
        """Constant statements without parameters, sent together in one round trip."""
        with self._driver_errors():
            self.conn.execute(sql)

    def _begin_write(self, lock: bool = True) -> None:
        self._script(_BEGIN_WRITE if lock else "BEGIN")

    def _insert_events_locked(self, rows: list[tuple[Any, ...]]) -> list[int]:
        # One statement: the lock (taken before any id is drawn: ids come from the rows the
        # join produces, in VALUES order), then the events. The first row's casts type the
        # columns (psycopg sends strings and None untyped).
        if not rows:  # the transaction is about to write events directly
            self._execute(f"SELECT pg_advisory_xact_lock({WRITE_LOCK})")
            return []
        marks = ", ".join(
            ["(" + _EVENT_CASTS + ")"] + ["(" + ", ".join("?" * 10) + ")"] * (len(rows) - 1)
        )
        cursor = self._execute(
            f"INSERT INTO events ({EVENT_ROW}) SELECT {EVENT_ROW} FROM (VALUES {marks})"
            f" AS v({EVENT_ROW}) CROSS JOIN (SELECT pg_advisory_xact_lock({WRITE_LOCK})) AS l"
            " RETURNING id",
            [value for row in rows for value in row],
        )
        return sorted(int(row[0]) for row in cursor.fetchall())

    def _begin_read(self) -> None:
        self._execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def _commit(self, notify: bool = False) -> None:
        script = "COMMIT"
        if notify:
            # The wake-up names the transaction's events (`take_changes`), as a literal: with
            # no parameters the notification and COMMIT still go in one round trip.
            payload = _driver().sql.Literal(self._named_changes()).as_string(self.conn)
            script = f"SELECT pg_notify('{CHANNEL}', {payload}); COMMIT"
        try:
            self._script(script)
        except _ConnectionLost:
            # The server may have committed before the answer was lost: running the work again
            # could do it twice, so the caller is told instead (the next call reconnects).
            raise StorageUnavailableError(
                "lost the database while committing; the change may or may not be saved",
                "check with `runsense runs list` or `runsense sensor list`, then try again",
            ) from None

    def _in_list(self, column: str, values: list[str]) -> tuple[str, Any]:
        return f"{column} = ANY(?)", list(values)

    def db_time(self) -> float:
        return float(self._execute(f"SELECT {DB_NOW}").fetchone()[0])

    def _now_sql(self) -> tuple[str, tuple[float, ...]]:
        return DB_NOW, ()

    def _retrying(self, fn: Callable[[], T], *, write: bool) -> T:
        deadlocks = 0
        while True:
            if self.conn is None or self.conn.closed or self.conn.broken:
                self._reconnect()
            try:
                return fn()
            except _ConnectionLost:
                self._depth = 0
                self._reconnect()
            except _TryAgain:
                self._depth = 0
                deadlocks += 1
                if not write or deadlocks > DEADLOCK_RETRIES:
                    raise

    def _reconnect(self) -> None:
        try:
            if self.conn is not None:
                self.conn.close()
        except Exception:
            pass
        self.conn = None
        self.conn = self._connect_retrying()
        self.connection_generation += 1

    def _error(self, exc: Exception) -> StorageError:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return StorageError(f"database error ({self.description}): {self._clean(first)}")

    def _clean(self, text: str) -> str:
        """Driver messages may quote the URL or its password (decoded or as written): never
        pass them on."""
        text = text.replace(self.url, self.description)
        for secret in (self._secret, self._raw_secret):
            if secret:
                text = text.replace(secret, "***")
        return text

    # -- moving a whole database -------------------------------------------------------------

    def _table_columns(self, table: str) -> list[str]:
        rows = self._all(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ?"
            " AND table_schema = current_schema() ORDER BY ordinal_position",
            (table,),
        )
        return [row[0] for row in rows]

    def _after_import(self, table: str) -> None:
        column = {"runs": "seq", "run_keys": None}.get(table, "id")
        if column:
            self._execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'),"
                f" coalesce((SELECT max({column}) FROM {table}), 0) + 1, false)"
            )


# Server answers that waiting will not change: wrong password or role, missing database.
_PERMANENT_STATES = {"28P01", "28000", "3D000", "42501"}
_PERMANENT_TEXT = (
    "password authentication failed",
    "does not exist",
    "invalid sslmode",
    "invalid connection option",
    "no password supplied",
)


def _permanent(exc: Exception, reason: str) -> bool:
    return getattr(exc, "sqlstate", None) in _PERMANENT_STATES or any(
        text in reason for text in _PERMANENT_TEXT
    )


def _stderr_line(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
