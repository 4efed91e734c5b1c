"""What sensors read: status events after a cursor, in id order, within a scope, in pages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..runs import EventType, RunEvent, RunRecord
from .rows import EVENT_COLUMNS_E, RUN_COLUMNS_R, event_from_row, run_from_row
from .shapes import SensorScope
from .sql import SqlBase


class EventsSql(SqlBase):
    def _types_sql(self, event_types: Sequence[EventType], table: str = "") -> tuple[str, list]:
        prefix = f"{table}." if table else ""
        values = [t.value for t in event_types]
        if len(values) == 1:
            return f"{prefix}event_type = ?", values
        return f"{prefix}event_type IN ({', '.join('?' * len(values))})", values

    def status_events_after(
        self, event_types: Sequence[EventType], cursor: int, scope: SensorScope, limit: int
    ) -> tuple[list[tuple[RunEvent, RunRecord]], int]:
        types, type_params = self._types_sql(event_types, "e")
        where, params = self._scope_sql(scope, "e")

        def read() -> tuple[list[Any], int]:
            with self.snapshot():
                rows = self._execute(
                    f"SELECT {EVENT_COLUMNS_E}, {RUN_COLUMNS_R} FROM events e"
                    f" JOIN runs r ON r.run_id = e.run_id WHERE {types} AND e.id > ?{where}"
                    " ORDER BY e.id LIMIT ?",
                    (*type_params, cursor, *params, limit),
                ).fetchall()
                if len(rows) == limit:
                    return rows, rows[-1][0]
                newest = self._execute("SELECT max(id) FROM events").fetchone()[0] or 0
                return rows, max(cursor, int(newest))

        rows, high_water = self._read(read)
        return [(event_from_row(row[:8]), run_from_row(row[8:])) for row in rows], high_water

    def has_status_events_after(
        self, event_types: Sequence[EventType], cursor: int, scope: SensorScope
    ) -> bool:
        types, type_params = self._types_sql(event_types)
        where, params = self._scope_sql(scope)
        row = self._one(
            # ORDER BY id: with it PostgreSQL's generic plan (used once a prepared statement has
            # run a few times) walks the (event_type, id) index from the cursor, instead of
            # scanning every event (1.6 s a pass at 10^6 events without it).
            f"SELECT 1 FROM events WHERE {types} AND id > ?{where} ORDER BY id LIMIT 1",
            (*type_params, cursor, *params),
        )
        return row is not None

    def count_status_events_after(
        self,
        event_types: Sequence[EventType],
        cursor: int,
        scope: SensorScope,
        limit: int | None = None,
    ) -> int:
        types, type_params = self._types_sql(event_types)
        where, params = self._scope_sql(scope)
        if limit is None:
            sql = f"SELECT count(*) FROM events WHERE {types} AND id > ?{where}"
            row = self._one(sql, (*type_params, cursor, *params))
            return int(row[0])
        # Counting stops after `limit` rows, so `sensor list` costs the same with 10^7 events
        # waiting as with 10^4 (a plain count(*) reads every one: 1.1 s at 10^6). One capped
        # count per event type: each a range of the (event_type, id) index from the cursor, and
        # in any order the same count. Planned with its values every time: a rare type behind a
        # long history needs that index, a common one may be quicker by id.
        capped = (
            "(SELECT count(*) FROM (SELECT 1 FROM events WHERE event_type = ? AND id > ?"
            f"{where} LIMIT ?) AS waiting)"
        )
        values: list[Any] = []
        for event_type in event_types:
            values += [event_type.value, cursor, *params, int(limit)]
        sql = "SELECT " + " + ".join([capped] * len(event_types))
        row = self._read(lambda: self._execute_planned_each_time(sql, values).fetchone())
        return min(int(row[0]), int(limit))
