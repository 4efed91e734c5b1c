"""What a sensor's `context.instance` offers user code: reading runs and their logs, nothing else.

Sensor functions run inside a tick's transaction boundaries and under its lease; handing them the
raw storage would let user code write around both. This read-only view has Dagster's names for
the few reads sensors need.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from .errors import RunsenseError
from .runs import RunEvent, RunRecord, RunStatus

if TYPE_CHECKING:
    from .storage import Storage


class RunsenseInstance:
    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    def get_run_by_id(self, run_id: str) -> RunRecord | None:
        try:
            return self._storage.get_run(run_id)
        except RunsenseError:
            return None

    def get_runs(
        self,
        job_name: str | None = None,
        statuses: Iterable[RunStatus] | None = None,
        limit: int | None = 50,
    ) -> list[RunRecord]:
        """Newest first."""
        wanted = list(statuses or [])
        if len(wanted) <= 1:
            return self._storage.list_runs(job_name, wanted[0] if wanted else None, limit)
        runs = [
            run for run in self._storage.list_runs(job_name, None, None) if run.status in wanted
        ]
        return runs[:limit] if limit is not None else runs

    def all_logs(self, run_id: str) -> list[RunEvent]:
        """The run's event log, oldest first."""
        return self._storage.events_for_run(run_id)

    @property
    def storage(self) -> Storage:
        """The storage handle, for what Dagster's instance has no name for (incidents)."""
        return self._storage

    def __repr__(self) -> str:
        return f"<RunsenseInstance {self._storage.description}>"


def as_instance(value: object) -> RunsenseInstance | None:
    """Accept a storage or an instance (tests build contexts with either)."""
    if value is None or isinstance(value, RunsenseInstance):
        return value
    return RunsenseInstance(value)  # type: ignore[arg-type]
