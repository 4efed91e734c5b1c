"""The storage contract's alerts half (SPEC §11): incidents, overdue marks and each sensor's small
durable state. `contract.Storage` inherits it; `alerts_sql` keeps it for both backends."""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping
from typing import Any

from ..records import Incident, Overdue


class AlertsContract(abc.ABC):
    @abc.abstractmethod
    def list_incidents(self, open_only: bool = False, limit: int | None = 50) -> list[Incident]:
        """Incidents, newest opened first; `open_only` keeps the unresolved ones."""

    @abc.abstractmethod
    def incident_at_event(self, event_id: int) -> Incident | None:
        """The run's job's incident as it stood right after this status event (a snapshot
        written with the event, with `opened_by_this_run`/`resolved_by_this_run`), or None."""

    @abc.abstractmethod
    def incident_of_run(self, run_id: str) -> Incident | None:
        """The incident this run's status event belonged to, as it is now (for `runs show`)."""

    @abc.abstractmethod
    def open_incident_run_ids(self) -> set[str]:
        """Every run whose status event belongs to an open incident: what prune must keep."""

    @abc.abstractmethod
    def record_overdue(
        self, run_id: str, phase: str, limit_seconds: float, now: float | None = None
    ) -> int | None:
        """Write the run's one RUN_OVERDUE event for `phase` ("QUEUED" or "STARTED") if it is
        still in that phase and has none yet; returns its id, or None when nothing was written.
        Safe to call from several daemons at once: a (run, phase) is written once."""

    @abc.abstractmethod
    def overdue_at_event(self, event_id: int) -> Overdue | None:
        """What a RUN_OVERDUE event records (phase, seconds in that phase, the limit)."""

    @abc.abstractmethod
    def overdue_phases(self, run_ids: Iterable[str]) -> set[tuple[str, str]]:
        """The (run_id, phase) pairs of these runs that already have a RUN_OVERDUE."""

    @abc.abstractmethod
    def sensor_values(self, sensor_id: int) -> dict[str, Any]:
        """The sensor's durable values (JSON-able), as its pages committed them."""

    @abc.abstractmethod
    def set_sensor_values(self, sensor_id: int, values: Mapping[str, Any]) -> None:
        """Set values outside a tick (None deletes); ticks use `commit_page`'s."""
