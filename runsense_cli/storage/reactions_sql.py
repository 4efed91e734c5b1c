"""Reactions: retries due, failures to list, and requeueing them (part of the contract that
evaluation and `sensor failures` / `sensor retry` use)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from ..records import Reaction, ReactionState
from .events_sql import EventsSql
from .rows import REACTION_COLUMNS, RUN_EVENTS, reaction_from_row


class ReactionsSql(EventsSql):
    def due_reactions(self, sensor_id: int, now: float, limit: int) -> list[Reaction]:
        rows = self._all(
            f"SELECT {REACTION_COLUMNS} FROM reactions r JOIN sensors s ON s.id = r.sensor_id"
            " WHERE r.sensor_id = ? AND r.state = ? AND r.next_attempt_at <= ?"
            " ORDER BY r.event_id LIMIT ?",
            (sensor_id, ReactionState.RETRYING.value, now, limit),
        )
        return [reaction_from_row(row) for row in rows]

    def reacted_events_after(self, sensor_id: int, cursor: int) -> set[int]:
        rows = self._all(
            "SELECT event_id FROM reactions WHERE sensor_id = ? AND event_id > ?"
            " AND state IN (?, ?)",
            (sensor_id, cursor, ReactionState.RETRYING.value, ReactionState.DEAD.value),
        )
        return {row[0] for row in rows}

    def next_retry_at(self, sensor_id: int) -> float | None:
        row = self._one(
            "SELECT min(next_attempt_at) FROM reactions WHERE sensor_id = ? AND state = ?",
            (sensor_id, ReactionState.RETRYING.value),
        )
        return row[0]

    def failed_reactions(self, sensor_ids: Sequence[int]) -> list[Reaction]:
        if not sensor_ids:
            return []
        marks = ", ".join("?" * len(sensor_ids))
        rows = self._all(
            f"SELECT {REACTION_COLUMNS} FROM reactions r JOIN sensors s ON s.id = r.sensor_id"
            f" WHERE r.sensor_id IN ({marks}) AND r.state IN (?, ?) ORDER BY r.event_id",
            (*sensor_ids, ReactionState.RETRYING.value, ReactionState.DEAD.value),
        )
        return [reaction_from_row(row) for row in rows]

    def reactions_for(self, sensor_id: int) -> list[Reaction]:
        rows = self._all(
            f"SELECT {REACTION_COLUMNS} FROM reactions r JOIN sensors s ON s.id = r.sensor_id"
            " WHERE r.sensor_id = ? ORDER BY r.event_id",
            (sensor_id,),
        )
        return [reaction_from_row(row) for row in rows]

    def reactions_to_run(self, run_id: str) -> list[Reaction]:
        rows = self._all(
            f"SELECT {REACTION_COLUMNS} FROM reactions r JOIN sensors s ON s.id = r.sensor_id"
            f" WHERE r.event_id IN (SELECT id FROM events WHERE {RUN_EVENTS})"
            " ORDER BY r.event_id, s.name",
            (run_id, run_id),
        )
        return [reaction_from_row(row) for row in rows]

    def retry_reactions_now(self, sensor_id: int, event_id: int | None = None) -> tuple[int, int]:
        now = time.time()
        only_event = " AND event_id = ?" if event_id is not None else ""
        extra = [event_id] if event_id is not None else []

        def body() -> tuple[int, int]:
            # RETRYING first, so the parked ones requeued below are not counted twice.
            retrying = self._execute(
                "UPDATE reactions SET next_attempt_at = CASE WHEN next_attempt_at IS NULL OR"
                " next_attempt_at > ? THEN ? ELSE next_attempt_at END"
                " WHERE sensor_id = ? AND state = ?" + only_event,
                [now, now, sensor_id, ReactionState.RETRYING.value, *extra],
            ).rowcount
            parked = self._execute(
                "UPDATE reactions SET state = ?, attempts = 0, next_attempt_at = ?,"
                " finished_at = NULL WHERE sensor_id = ? AND state = ?" + only_event,
                [ReactionState.RETRYING.value, now, sensor_id, ReactionState.DEAD.value, *extra],
            ).rowcount
            return parked, retrying

        return self._write(body, wake=True)

    def requeue_reactions(self, sensor_id: int, event_id: int | None = None) -> int:
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
        return self._write(lambda: self._execute(sql, params).rowcount, wake=True)
