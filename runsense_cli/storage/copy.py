"""`runsense db copy`: every run, event, sensor (cursor included), tick, reaction and run key from
one database into an empty one, ids kept, so a user who outgrows SQLite keeps history and cursors."""

from __future__ import annotations

from ..errors import StorageError
from .contract import Storage
from .schema import STORAGE_TABLES

BATCH = 5_000


def copy_database(source: Storage, target: Storage) -> dict[str, int]:
    """Copy table by table, parents first; refuses a target that holds anything already.

    Each table is written in batches of its own transactions; a copy that fails half-way leaves
    a target that is not empty, so it is refused next time rather than merged into.
    """
    if not target.is_empty():
        raise StorageError(
            f"the target database {target.description} is not empty",
            "copy into a new, empty database",
        )
    counts: dict[str, int] = {}
    for table in STORAGE_TABLES:
        columns, rows = source.export_table(table)
        counts[table] = 0
        batch: list[tuple[object, ...]] = []
        for row in rows:
            batch.append(row)
            if len(batch) >= BATCH:
                counts[table] += target.import_rows(table, columns, batch)
                batch = []
        if batch:
            counts[table] += target.import_rows(table, columns, batch)
    return counts
