"""runsense's storage: one contract (`contract.Storage`), two backends (SQLite, PostgreSQL).

`open_storage` picks the backend from a database URL (`--database-url`,
`RUNSENSE_DATABASE_URL` or `database_url` in the settings), else the home's SQLite file. All of
runsense's SQL lives in this package.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from .contract import Storage
from .shapes import (
    LAG_CAP,
    DaemonRecord,
    NewRun,
    PageResult,
    PruneResult,
    SensorScope,
    WriteBack,
    statuses_before,
)
from .urls import mask_url, parse_url

__all__ = [
    "LAG_CAP",
    "DaemonRecord",
    "NewRun",
    "PageResult",
    "PruneResult",
    "SensorScope",
    "Storage",
    "WriteBack",
    "database_url",
    "mask_url",
    "open_storage",
    "statuses_before",
]


def database_url(url: str | None = None) -> str | None:
    """The URL in force: the one given, else RUNSENSE_DATABASE_URL; None means the home's file."""
    return url or os.environ.get("RUNSENSE_DATABASE_URL") or None


def open_storage(
    home: Any = None,
    *,
    url: str | None = None,
    create: bool = True,
    give_up_after: float | None = 30.0,
    on_outage: Callable[[str], None] | None = None,
) -> Storage:
    """Open the database: `url` (or RUNSENSE_DATABASE_URL) if set, else `<home>/runsense.db`.

    `create=False` opens a missing SQLite file as an empty in-memory database, so read-only
    commands leave nothing behind. A PostgreSQL server that cannot be reached is retried with
    back-off for `give_up_after` seconds (None: forever, as the daemon does).
    """
    url = database_url(url)
    if url is None:
        from .sqlite import SqliteStorage

        return SqliteStorage.open_home(home, create=create)
    kind, target = parse_url(url)
    if kind == "sqlite":
        from .sqlite import SqliteStorage

        return SqliteStorage.open_home(path=target, create=create)  # type: ignore[arg-type]
    from .postgres import PostgresStorage

    return PostgresStorage.connect(str(target), give_up_after=give_up_after, on_outage=on_outage)
