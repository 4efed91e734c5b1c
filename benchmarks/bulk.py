"""Big histories, built outside any timing by cloning the rows of one real run.

Why clone instead of writing rows by hand: the clones are what runsense itself wrote (every
column, the step events, tags, error JSON), on either backend, and stay so when the schema grows.
Each clone gets a new run id and timestamps 1 ms apart ending just before now. SQLite gets one
transaction of `executemany`; PostgreSQL gets COPY in one transaction holding runsense's write
lock, so `runs.seq` and `events.id` come from their BIGSERIAL sequences in insertion order.
"""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from benchmarks.harness import Db

SPACING_S = 1e-3
CHUNK = 50_000
SHIFTED = ("created_at", "start_time", "end_time", "heartbeat_at")


@dataclass
class Template:
    """One finished run as runsense stored it: its `runs` row and its events, in order."""

    run: dict[str, Any]
    events: list[dict[str, Any]]

    @property
    def run_columns(self) -> list[str]:
        return [c for c in self.run if c != "seq"]  # PostgreSQL numbers runs itself

    @property
    def event_columns(self) -> list[str]:
        return [c for c in self.events[0] if c != "id"]


def template(db: Db, job: Any) -> Template:
    """Execute `job` once in process on `db` and read back what was stored."""
    run_id = db.execute_in_process(job).run_id
    [run] = db.query_dicts("SELECT * FROM runs WHERE run_id = ?", (run_id,))
    events = db.query_dicts("SELECT * FROM events WHERE run_id = ? ORDER BY id", (run_id,))
    return Template(run, events)


def clone_runs(db: Db, original: Template, count: int) -> float:
    """Insert `count` copies of `original`; return the seconds it took (never part of a timing)."""
    started = time.perf_counter()
    if db.url is None:
        _sqlite(db, original, count)
    else:
        _postgres(db, original, count)
    return time.perf_counter() - started


def _chunks(original: Template, count: int) -> Iterator[tuple[list[tuple], list[tuple]]]:
    """(run rows, event rows) for `count` clones, CHUNK runs at a time."""
    run_columns, event_columns = original.run_columns, original.event_columns
    origin = original.run["created_at"]
    first = time.time() - 1.0 - count * SPACING_S
    for start in range(0, count, CHUNK):
        runs, events = [], []
        for i in range(start, min(count, start + CHUNK)):
            run_id = str(uuid.uuid4())
            shift = first + i * SPACING_S - origin
            row = dict(original.run, run_id=run_id, root_run_id=run_id)
            for column in SHIFTED:
                if row.get(column) is not None:
                    row[column] += shift
            runs.append(tuple(row[c] for c in run_columns))
            for event in original.events:
                events.append(
                    tuple(
                        run_id
                        if c == "run_id"
                        else event[c] + shift
                        if c in ("timestamp", "run_created_at")
                        else event[c]
                        for c in event_columns
                    )
                )
        yield runs, events


def _sqlite(db: Db, original: Template, count: int) -> None:
    run_columns, event_columns = original.run_columns, original.event_columns
    connection = sqlite3.connect(db.home / "runsense.db", timeout=30, isolation_level=None)
    try:
        connection.execute("PRAGMA synchronous = OFF")
        connection.execute("BEGIN IMMEDIATE")
        for runs, events in _chunks(original, count):
            connection.executemany(
                f"INSERT INTO runs ({', '.join(run_columns)})"
                f" VALUES ({', '.join('?' * len(run_columns))})",
                runs,
            )
            connection.executemany(
                f"INSERT INTO events ({', '.join(event_columns)})"
                f" VALUES ({', '.join('?' * len(event_columns))})",
                events,
            )
        connection.execute("COMMIT")
        # Steady state: runs that arrive one by one are checkpointed as they go, so the timed
        # part must not pay for copying this bulk load out of the WAL.
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()
    # And on disk: else the first fsync of a timed commit waits for the kernel to write it all.
    os.sync()


def _postgres(db: Db, original: Template, count: int) -> None:
    import psycopg

    from runsense_cli.storage.postgres import WRITE_LOCK

    assert db.url is not None
    run_columns, event_columns = original.run_columns, original.event_columns
    with psycopg.connect(db.url) as connection:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            for runs, events in _chunks(original, count):
                with cursor.copy(f"COPY runs ({', '.join(run_columns)}) FROM STDIN") as copy:
                    for row in runs:
                        copy.write_row(row)
                with cursor.copy(f"COPY events ({', '.join(event_columns)}) FROM STDIN") as copy:
                    for row in events:
                        copy.write_row(row)
        connection.commit()
        # Steady state for the timed part: statistics and the visibility map as autovacuum would
        # leave them, and the bulk load's dirty pages written out (as SQLite's checkpoint above).
        connection.autocommit = True
        connection.execute("VACUUM ANALYZE runs")
        connection.execute("VACUUM ANALYZE events")
        connection.execute("CHECKPOINT")
