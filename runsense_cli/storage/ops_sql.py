"""Removing history: `runs delete`, `prune` and the daemon's retention (SPEC §12).

What may go is decided in SQL, inside the deleting transaction, so a run that a sensor has not
consumed yet, or one whose reaction is still retrying, can never be pruned by a race.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..records import ReactionState, SensorStatus
from ..runs import FINISHED_STATUSES
from .shapes import PruneResult
from .sql import SqlBase

_CHUNK = 500  # ids per IN (...) list: well under both backends' parameter limits
_FINISHED = sorted(status.value for status in FINISHED_STATUSES)
# Events e of run r: a range of events_by_run, keyed by the run's creation time (schema M007).
# (Or without that time: see rows.RUN_EVENTS.)
_OF_RUN_R = "(e.run_created_at = r.created_at OR e.run_created_at IS NULL) AND e.run_id = r.run_id"
_DONE_REACTIONS = (ReactionState.SUCCESS.value, ReactionState.SKIPPED.value)


class OpsSql(SqlBase):
    def delete_runs(self, run_ids: Sequence[str]) -> list[str]:
        wanted = list(dict.fromkeys(run_ids))

        def body() -> list[str]:
            finished: list[str] = []
            for chunk in _chunks(wanted):
                rows = self._execute(
                    f"SELECT run_id FROM runs WHERE run_id IN ({_marks(chunk)})"
                    f" AND status IN ({_marks(_FINISHED)}){self.for_update}",
                    (*chunk, *_FINISHED),
                ).fetchall()
                finished += [row[0] for row in rows]
            self._delete_run_rows(finished)
            return finished

        return self._write(body) if wanted else []

    def prune(self, before: float, *, dry_run: bool = False) -> PruneResult:
        def body() -> PruneResult:
            run_ids = self._prunable_runs(before)
            events, reactions = self._delete_run_rows(run_ids)
            # Each sensor keeps its newest tick: `sensor list` shows it as "last tick".
            ticks = self._execute(
                "DELETE FROM ticks WHERE started_at < ?"
                " AND id NOT IN (SELECT max(id) FROM ticks GROUP BY sensor_id)",
                (before,),
            ).rowcount
            reactions += self._execute(
                "DELETE FROM reactions WHERE created_at < ? AND state IN (?, ?)",
                (before, *_DONE_REACTIONS),
            ).rowcount
            result = PruneResult(run_ids, events, ticks, reactions)
            if dry_run:
                raise _DryRun(result)  # the same counts as a real prune, then rolled back
            return result

        try:
            return self._write(body)
        except _DryRun as done:
            return done.result

    def _prunable_runs(self, before: float) -> list[str]:
        """Finished runs that ended before `before` and that nothing still needs."""
        floor = self._execute(
            "SELECT min(cursor) FROM sensors WHERE status = ?", (SensorStatus.RUNNING.value,)
        ).fetchone()[0]
        sql = (
            f"SELECT run_id FROM runs r WHERE r.end_time < ? AND r.status IN ({_marks(_FINISHED)})"
            # A retrying reaction reads the run and its event again.
            " AND NOT EXISTS (SELECT 1 FROM events e JOIN reactions x ON x.event_id = e.id"
            f" WHERE {_OF_RUN_R} AND x.state = ?)"
        )
        params: list[object] = [before, *_FINISHED, ReactionState.RETRYING.value]
        if floor is not None:
            # An event above the lowest running cursor is still to be read by some sensor.
            sql += f" AND NOT EXISTS (SELECT 1 FROM events e WHERE {_OF_RUN_R} AND e.id > ?)"
            params.append(int(floor))
        # An open incident's runs tell its story (first failure, every repeat): keep them.
        sql += (
            " AND NOT EXISTS (SELECT 1 FROM incident_events ie JOIN incidents i"
            " ON i.id = ie.incident_id WHERE ie.run_id = r.run_id AND i.status = 'OPEN')"
        )
        return [row[0] for row in self._execute(sql, params).fetchall()]

    def _delete_run_rows(self, run_ids: list[str]) -> tuple[int, int]:
        """Delete runs with their events and reactions (inside a write): (events, reactions)."""
        events = reactions = 0
        for chunk in _chunks(run_ids):
            marks = _marks(chunk)
            # Reactions are found through their events (schema M007), so they go first.
            of_runs = (
                f"SELECT e.id FROM runs r JOIN events e ON {_OF_RUN_R} WHERE r.run_id IN ({marks})"
            )
            reactions += self._execute(
                f"DELETE FROM reactions WHERE event_id IN ({of_runs})", chunk
            ).rowcount
            events += self._execute(f"DELETE FROM events WHERE id IN ({of_runs})", chunk).rowcount
            # Their incident snapshots and overdue marks go too (what stays flat with retention).
            self._execute(f"DELETE FROM incident_events WHERE run_id IN ({marks})", chunk)
            self._execute(f"DELETE FROM run_overdue WHERE run_id IN ({marks})", chunk)
            self._execute(f"DELETE FROM runs WHERE run_id IN ({marks})", chunk)
        return events, reactions


class _DryRun(Exception):
    def __init__(self, result: PruneResult) -> None:
        self.result = result


def _chunks(ids: list[str]) -> list[list[str]]:
    return [ids[start : start + _CHUNK] for start in range(0, len(ids), _CHUNK)]


def _marks(values: Sequence[object]) -> str:
    return ", ".join("?" * len(values))
