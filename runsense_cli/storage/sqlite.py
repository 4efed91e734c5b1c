"""The embedded backend: one SQLite file in the runsense home, nothing to set up.

Every write takes SQLite's write lock up front (`BEGIN IMMEDIATE`), so concurrent processes queue
on the busy timeout instead of failing with "database is locked" when a read transaction tries to
upgrade; that lock also serializes event inserts, so event ids become visible in id order.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import StorageError
from ..home import DB_FILENAME, resolve_home
from .checkpointer import WalCheckpointer
from .ops_sql import OpsSql
from .runs_sql import RunsSql
from .schema import SCHEMA_VERSION, SQLITE
from .sensors_sql import SensorsSql
from .wake import WakeListener, poke, wait_readable

BUSY_TIMEOUT_MS = 30_000
SQLITE_HEADER = b"SQLite format 3\x00"
MOVE_AWAY = "move it away or point --home at another directory"
BULK_CHECKPOINT_PAGES = 10_000  # ~40 MB of WAL before a checkpoint, during a big tick only
BULK_CACHE_KIB = -16_000  # page cache during a big tick (negative: KiB, SQLite's convention)

# Database files this process has open, by (device, inode), with how many times. Closing *any*
# descriptor of a file drops every POSIX lock this process holds on it, SQLite's included
# (sqlite.org/howtocorrupt.html, 2.2): reading the header of a file that is already open here
# would let another process think it is the last connection and delete the WAL under us.
_OPEN_FILES: dict[tuple[int, int], int] = {}
# SQLite's lock bytes (os_unix.c; fixed, as every version must agree): a WAL connection holds a
# read lock on the database file's SHARED range and on the -shm file's dead-man-switch byte.
_SHARED_FIRST, _SHARED_SIZE = 0x40000000 + 2, 510
_SHM_DMS = (22 + 8) * 4 + 8
_HELD_AFTER_FORK: list[int] = []


class SqliteStorage(RunsSql, SensorsSql, OpsSql):
    backend = "sqlite"
    single_host = True
    needs_heartbeats = False
    dialect = SQLITE
    run_order = "rowid"

    def __init__(self, path: Path, connection: sqlite3.Connection, *, memory: bool = False):
        super().__init__(connection)
        self.path = path
        self.memory = memory
        self._file_key: tuple[int, int] | None = None
        self._listener: WakeListener | None = None
        self._bulk_commits: int | None = None  # commits inside bulk_writes()
        self._checkpointer: WalCheckpointer | None = None

    # -- opening -----------------------------------------------------------------------------

    @classmethod
    def open_home(cls, home: Any = None, *, path: Path | None = None, create: bool = True):
        """Open (creating if needed) the database, refusing files runsense cannot use.

        With `create=False` a missing database opens as an empty one in memory, so commands that
        only read never leave a file behind.
        """
        if path is None:
            path = resolve_home(home) / DB_FILENAME
        directory = path.parent
        try:
            exists = path.exists()
            dangling = not exists and path.is_symlink()
        except OSError as exc:  # a home runsense may not look into (mode 000, say)
            raise StorageError(
                f"cannot read the runsense home {directory}: {exc.strerror}",
                "fix its permissions, or choose another home with --home or RUNSENSE_HOME",
            ) from None
        if not create and not exists and not dangling:
            storage = cls(path, sqlite3.connect(":memory:", isolation_level=None), memory=True)
            storage._prepare(0)
            return storage
        if dangling:
            raise StorageError(
                f"{path} is a link to {os.readlink(path)}, which does not exist",
                "remove the link or point it at a runsense database",
            )
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
            try:
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            except OSError as exc:
                raise _os_error(path, exc) from None
        if not os.access(directory, os.W_OK) or not os.access(path, os.R_OK | os.W_OK):
            raise StorageError(
                f"cannot write to {path if os.access(directory, os.W_OK) else directory}"
                " (permission denied or read-only)",
                "fix its permissions, or choose another home with --home or RUNSENSE_HOME",
            )
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
            if "disk" in str(exc) or "readonly" in str(exc):  # full, failing or read-only
                raise _storage_error(path, exc) from None
            raise StorageError(
                f"{path} is not a usable runsense database ({exc})", MOVE_AWAY
            ) from None
        if foreign:
            connection.close()
            raise StorageError(
                f"{path} is a SQLite database of another program, not runsense's", MOVE_AWAY
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
        db = self.conn
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                db.execute("PRAGMA journal_mode = WAL")
            # NORMAL in WAL mode survives any process crash; only power loss can drop the
            # last commits, which is the trade Huey, llm and most local tools make too.
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA foreign_keys = ON")
            if version < SCHEMA_VERSION:
                with self.transaction():
                    self._migrate(db.execute("PRAGMA user_version").fetchone()[0])
        except sqlite3.DatabaseError as exc:
            db.close()
            raise StorageError(
                f"{self.path} is not a usable runsense database ({exc})", MOVE_AWAY
            ) from None

    def _set_version(self, version: int) -> None:
        self.conn.execute(f"PRAGMA user_version = {int(version)}")

    @property
    def description(self) -> str:
        return str(self.path)

    def reopen(self) -> SqliteStorage:
        return SqliteStorage.open_home(path=self.path)

    def hold_in_fork(self) -> None:
        """SQLite keeps one lock state per file and process; a forked child inherits the parent's
        and so believes it already holds the read locks every WAL connection keeps, which the
        kernel did not pass on. Without them a parent closing its last connection takes the
        file for its own, checkpoints and deletes the WAL under the child: the child's later
        commits are lost (tested). Take them for real, on descriptors kept until exit."""
        if self.memory:
            return
        for name, start, length in (
            (self.path, _SHARED_FIRST, _SHARED_SIZE),
            (Path(f"{self.path}-shm"), _SHM_DMS, 1),
        ):
            try:
                fd = os.open(name, os.O_RDONLY)
            except OSError:
                continue  # no -shm: no connection is open anywhere, nothing to share
            fcntl.lockf(fd, fcntl.LOCK_SH, length, start)  # waits out a closer's checkpoint
            _HELD_AFTER_FORK.append(fd)  # never closed: that would drop SQLite's locks too

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self.conn.close()
        key, self._file_key = self._file_key, None
        if key is not None:
            if _OPEN_FILES.get(key, 0) > 1:
                _OPEN_FILES[key] -= 1
            else:
                _OPEN_FILES.pop(key, None)

    @contextmanager
    def bulk_writes(self) -> Iterator[None]:
        # A big tick commits page after page. From its second page on, a thread of its own
        # (checkpointer.py) copies the WAL back on the other core; the writer's autocheckpoint is
        # raised to stay out of its way, as a backstop only. Index pages are read again page
        # after page (the runs' primary key, random uuid4s, most): SQLite's default 2 MB cache
        # holds a fraction of them, so a bigger one for the tick only (given back after it, so an
        # idle daemon stays small).
        cache = self.conn.execute("PRAGMA cache_size").fetchone()[0]
        self.conn.execute(f"PRAGMA wal_autocheckpoint = {BULK_CHECKPOINT_PAGES}")
        self.conn.execute(f"PRAGMA cache_size = {BULK_CACHE_KIB}")
        self._bulk_commits = 0
        try:
            yield
        finally:
            self._bulk_commits = None
            checkpointer, self._checkpointer = self._checkpointer, None
            if checkpointer is not None:
                checkpointer.stop()
            self.conn.execute("PRAGMA wal_autocheckpoint = 1000")  # SQLite's default
            self.conn.execute(f"PRAGMA cache_size = {int(cache)}")

    def _commit(self, notify: bool = False) -> None:
        super()._commit(notify)
        if self._bulk_commits is not None:
            self._bulk_commits += 1
            if self._bulk_commits == 2 and not self.memory:
                self._checkpointer = WalCheckpointer(str(self.path))
                self._checkpointer.start()

    # -- driver hooks ------------------------------------------------------------------------

    def _execute(self, sql: str, params: Iterable[Any] = ()) -> Any:
        try:
            return self.conn.execute(sql, tuple(params))
        except sqlite3.DatabaseError as exc:
            raise self._error(exc) from None

    def _executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> None:
        try:
            self.conn.executemany(sql, rows)
        except sqlite3.DatabaseError as exc:
            raise self._error(exc) from None

    def _insert_id(self, sql: str, params: Iterable[Any]) -> int:
        return int(self._execute(sql, params).lastrowid or 0)

    def _begin_write(self, lock: bool = True) -> None:
        self._execute("BEGIN IMMEDIATE")

    def _error(self, exc: sqlite3.DatabaseError) -> StorageError:
        return _storage_error(self.path, exc)

    def db_time(self) -> float:
        return time.time()  # one host: the local clock is the database's

    # -- wake-ups ----------------------------------------------------------------------------

    def wait_for_change(self, timeout: float, also: Sequence[int] = ()) -> bool:
        if self.memory:
            return wait_readable(also, timeout)
        if self._listener is None:
            self._listener = WakeListener(self.path.parent / "wake")
        return self._listener.wait(timeout, also)

    def _notify(self) -> None:
        if not self.memory:
            poke(self.path.parent / "wake")

    # -- moving a whole database -------------------------------------------------------------

    def _table_columns(self, table: str) -> list[str]:
        return [row[1] for row in self._execute(f"PRAGMA table_info({table})").fetchall()]


def _storage_error(path: Path, exc: sqlite3.DatabaseError) -> StorageError:
    """One line for a driver error: what is wrong with which file, and what to do."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        return StorageError(
            f"the database stayed locked for over {BUSY_TIMEOUT_MS // 1000} s",
            "another runsense process is holding it; try again",
        )
    if "disk is full" in text or "disk I/O" in text:
        return StorageError(
            f"cannot write to {path}: the disk is full or failing; nothing was saved",
            "free some space (or choose another --home) and try again",
        )
    if "readonly" in text:
        return StorageError(
            f"cannot write to {path}: it is read-only",
            "fix its permissions, or choose another home with --home or RUNSENSE_HOME",
        )
    return StorageError(
        f"database error in {path}: {exc}", "the file may be damaged; try another --home"
    )


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
        raise _os_error(path, exc) from None
    if header and header != SQLITE_HEADER:
        raise StorageError(f"{path} is not a SQLite database", MOVE_AWAY)


def _os_error(path: Path, exc: OSError) -> StorageError:
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StorageError(
            f"cannot open {path}: {exc.strerror}",
            "fix its permissions, or choose another home with --home or RUNSENSE_HOME",
        )
    return StorageError(f"cannot open {path}: {exc.strerror}", "check the path and its disk")
