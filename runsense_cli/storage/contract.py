"""The storage contract: what every backend promises, method by method (SPEC §10).

Two implementations keep it: SQLite (embedded, one host) and PostgreSQL (several hosts, several
daemons). The core only ever sees this class, and one contract test suite runs against both.

The guarantees that cut across methods:
1. Event ids become visible in id order: a reader that has seen event N never later finds a new
   event with an id below N (writes that insert events are serialized).
2. A run has at most one terminal status event, and status only moves forward: every status change
   is a compare-and-set (`set_run_status` returns None when the move is not allowed any more).
3. A queued run is claimed by exactly one launcher (`claim_queued_runs`) before any worker starts,
   and a worker runs it only after `register_worker` confirms that claim.
4. Page commits are fenced by the sensor's lease token, checked in the commit's own transaction.
5. Commands win: a page never overwrites a cursor moved meanwhile, and tells the tick when its
   sensor was stopped.
6. Processes are named by `identity.ProcessId` (node, pid, start time); heartbeats use the
   database's clock (`db_time`).
7. `wait_for_change` wakes as soon as another process commits a status event, a queued run or a
   command.

The alerts half (incidents, overdue marks, sensor values) is in `contract_alerts`, the launching
half (claims, workers, heartbeats) in `contract_launches`.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from ..records import Reaction, SensorState, SensorStatus, Tick
from ..runs import ErrorInfo, EventType, RunEvent, RunRecord, RunStatus
from .contract_alerts import AlertsContract
from .contract_launches import LaunchesContract
from .shapes import (
    DaemonRecord,
    NewRun,
    PageResult,
    PruneResult,
    SensorScope,
    WriteBack,
)

T = TypeVar("T")


class Storage(LaunchesContract, AlertsContract):
    """One connection to runsense's database. Not thread-safe: one per thread."""

    #: "sqlite" or "postgresql"
    backend: str = ""
    #: True when every process sharing this database runs on this host (SQLite): one daemon.
    single_host: bool = True
    #: True when other hosts may watch this database: workers must heartbeat.
    needs_heartbeats: bool = False
    #: Grows with every reconnect: what was observed through an older connection may be stale.
    connection_generation: int = 0

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    @abc.abstractmethod
    def description(self) -> str:
        """Where the data lives, safe to show: a path, or a URL with its password masked."""

    @abc.abstractmethod
    def close(self) -> None: ...

    @abc.abstractmethod
    def reopen(self) -> Storage:
        """Another connection to the same database, for another thread."""

    def hold_in_fork(self) -> None:
        """Called first in a process forked from one that has this storage open, before it opens
        its own (this object's connection is the parent's and stays untouched): take whatever
        a fresh connection would hold, which the driver skips because the child inherited the
        parent's bookkeeping. Nothing to do for a server database."""
        return None

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def bulk_writes(self) -> Iterator[None]:
        """Around many commits in a row (a big tick's pages): the backend may defer upkeep to
        the end. Commits inside stay commits; nothing else changes for other connections."""
        yield

    @abc.abstractmethod
    def atomic(self, fn: Callable[[], T], *, events_last: bool = False) -> T:
        """Run `fn`, whose writes are calls on this storage, as one commit: all of them or none
        (the calls inside join it). A connection lost before the commit runs `fn` again from
        the start, so `fn` must do nothing that cannot be done twice.

        `events_last`: the events `fn` appends are written together at its end, and only then
        does the transaction wait for the lock that keeps event ids in order (PostgreSQL: the
        other writers wait for it a round trip or two, not the whole transaction). Ids such
        calls return are stand-ins then; a failure's or cancel's status move writes what came
        before it at once. For a run's own moves (its start, its steps, its end)."""

    @abc.abstractmethod
    def db_time(self) -> float:
        """Now, on the database's clock: leases and heartbeats compare against this only."""

    @abc.abstractmethod
    def wait_for_change(self, timeout: float, also: Sequence[int] = ()) -> bool:
        """Block until another process commits a status event, a queued run or a command
        (True), until one of the file descriptors `also` is readable (True: a child process
        ended or wrote), or until `timeout` seconds pass (False). Best effort: callers keep a
        timed pass."""

    def take_changes(self) -> frozenset[tuple[str, str, str]] | None:
        """What the wake-ups heard since the last call said was committed: the (event type,
        location, job) of every event, so a daemon can tell that none concerns its sensors.
        None when unknown (a command, a big page, missed wake-ups, or a backend that does not
        say): anything may have changed."""
        return None

    # -- runs --------------------------------------------------------------------------------

    @abc.abstractmethod
    def create_run(
        self,
        job_name: str,
        location: str,
        run_config: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
        *,
        status: RunStatus = RunStatus.NOT_STARTED,
        run_id: str | None = None,
        parent_run_id: str | None = None,
        root_run_id: str | None = None,
        origin: dict[str, Any] | None = None,
        worker: str | None = None,
        now: float | None = None,
    ) -> RunRecord:
        """Store a new run; a QUEUED or STARTING run gets its status event in the same commit.
        `worker` (a ProcessId string) marks a run this process executes itself."""

    @abc.abstractmethod
    def set_run_status(
        self,
        run: RunRecord,
        status: RunStatus,
        message: str | None = None,
        *,
        error: ErrorInfo | None = None,
        only_from: Iterable[RunStatus] | None = None,
        now: float | None = None,
    ) -> RunRecord | None:
        """Compare-and-set: move the run to `status` (and write its status event, in one commit)
        only if its stored status may move there (forward only, or one of `only_from`).
        Returns the updated run, or None when another process got there first.

        A terminal move also does, in the same commit (SPEC §11): a FAILURE whose tags allow a
        retry (`alert_tags.will_retry`) gets the tag `runsense/will_retry=true` and a new QUEUED
        run (same job, config, origin and tags, `runsense/retry_of`, `runsense/retry_number`,
        parent = the failed run); a final FAILURE opens or extends its job's incident, a SUCCESS
        resolves an open one; the incident as of this event is kept for `incident_at_event`.
        So a retry is queued exactly once and every reader sees the same incident story."""

    @abc.abstractmethod
    def append_event(
        self,
        run: RunRecord,
        event_type: EventType,
        message: str = "",
        *,
        step_key: str | None = None,
        level: str | None = None,
        error: ErrorInfo | None = None,
        now: float | None = None,
    ) -> int:
        """Append a non-status event to the run's log; returns its id."""

    @abc.abstractmethod
    def get_run(self, run_id: str) -> RunRecord:
        """The run, or RunsenseError when there is none."""

    @abc.abstractmethod
    def find_run(self, prefix: str) -> RunRecord:
        """The one run whose id starts with `prefix` (case-insensitive); an error otherwise."""

    @abc.abstractmethod
    def list_runs(
        self,
        job_name: str | None = None,
        status: RunStatus | None = None,
        limit: int | None = 50,
    ) -> list[RunRecord]:
        """Newest first."""

    @abc.abstractmethod
    def runs_with_status(
        self, statuses: Iterable[RunStatus], limit: int | None = None
    ) -> list[RunRecord]:
        """Oldest first: the order queued runs start in."""

    @abc.abstractmethod
    def runs_with_limits(self, statuses: Iterable[RunStatus]) -> list[RunRecord]:
        """The runs in `statuses` whose tags may set a max_runtime or max_queue_time (all of
        those, and perhaps a few others: check the tags), oldest first; read through an index
        that holds only such runs, so its cost does not grow with the other runs."""

    @abc.abstractmethod
    def job_names(self) -> list[str]:
        """Every job that has runs here, sorted."""

    @abc.abstractmethod
    def requested_runs(self, run_id: str) -> list[RunRecord]:
        """Runs that sensors requested from this run (its children), oldest first."""

    @abc.abstractmethod
    def runs_created_between(
        self, since: float, until: float, after: tuple[float, str], limit: int
    ) -> list[RunRecord]:
        """Up to `limit` runs created in [since, until], in (created_at, run_id) order, after
        `after` (the last run of the previous page): all of them a page at a time."""

    @abc.abstractmethod
    def run_origin(self, run_id: str) -> dict[str, Any] | None:
        """How to import the run's project (stored when it was created)."""

    @abc.abstractmethod
    def events_for_run(self, run_id: str) -> list[RunEvent]: ...

    @abc.abstractmethod
    def get_event(self, event_id: int) -> RunEvent | None: ...

    @abc.abstractmethod
    def newest_event_id(self) -> int: ...

    @abc.abstractmethod
    def status_event_for_run(self, run_id: str, event_type: EventType) -> RunEvent | None: ...

    # -- what sensors read -------------------------------------------------------------------

    @abc.abstractmethod
    def status_events_after(
        self, event_types: Sequence[EventType], cursor: int, scope: SensorScope, limit: int
    ) -> tuple[list[tuple[RunEvent, RunRecord]], int]:
        """Up to `limit` matching events after `cursor`, in id order, with their runs, and the
        cursor to resume from: when the page is not full, the newest event id of the same
        snapshot, so events of other jobs are never scanned again."""

    @abc.abstractmethod
    def has_status_events_after(
        self, event_types: Sequence[EventType], cursor: int, scope: SensorScope
    ) -> bool:
        """Whether a matching event has an id above `cursor`; reads every event of these types
        above it that the scope leaves out, so callers keep `cursor` close (see `skip_cursor`)."""

    @abc.abstractmethod
    def count_status_events_after(
        self,
        event_types: Sequence[EventType],
        cursor: int,
        scope: SensorScope,
        limit: int | None = None,
    ) -> int:
        """How many matching events are after `cursor`, counting no further than `limit`: a
        result equal to `limit` means at least that many, and costs no more at any backlog."""

    # -- sensors and leases ------------------------------------------------------------------

    @abc.abstractmethod
    def sensor_state(self, location: str, name: str) -> SensorState | None: ...

    @abc.abstractmethod
    def running_sensors(self, location: str) -> dict[str, SensorState]:
        """The RUNNING sensors of `location` by name, in one read (a daemon pass)."""

    @abc.abstractmethod
    def ensure_sensor(self, location: str, name: str, running: bool) -> SensorState:
        """The sensor's row, created on first sight; a RUNNING one starts at the newest event."""

    @abc.abstractmethod
    def set_sensor_status(
        self,
        sensor_id: int,
        status: SensorStatus,
        *,
        cursor: int | None = None,
        by_user: bool = True,
    ) -> None:
        """Start or stop a sensor. A first start begins at the newest event, a restart at the
        cursor it stopped at (or `cursor`). `by_user` pins the status against code defaults."""

    @abc.abstractmethod
    def reset_sensor_status(self, sensor_id: int, running: bool) -> None:
        """Hand the status back to the code's `default_status` (`running`)."""

    @abc.abstractmethod
    def set_cursor(self, sensor_id: int, cursor: int) -> None:
        """Move the cursor (a user command); a drain in progress will not overwrite it."""

    @abc.abstractmethod
    def skip_cursor(self, sensor_id: int, expected: int, cursor: int) -> bool:
        """Move the cursor past events found not to match, only if it is still `expected` and
        no tick holds a live lease (so neither a user's move nor a drain is overwritten)."""

    @abc.abstractmethod
    def acquire_lease(self, sensor_id: int, token: str, ttl: float, holder: str) -> bool:
        """Take the sensor's tick lease unless another holder has an unexpired one whose
        process lives (expiry on the database clock; a dead local holder frees it at once)."""

    @abc.abstractmethod
    def renew_lease(self, sensor_id: int, token: str, ttl: float) -> bool:
        """Push the expiry out; False when another holder has taken the lease."""

    @abc.abstractmethod
    def release_lease(self, sensor_id: int, token: str) -> None: ...

    @abc.abstractmethod
    def commit_page(
        self,
        sensor_id: int,
        tick: Tick,
        reactions: Sequence[Reaction],
        new_runs: Sequence[NewRun],
        run_keys: Sequence[tuple[str, str]],
        write_backs: Sequence[WriteBack],
        cursor: int | None,
        expected_cursor: int | None,
        lease_token: str,
        lease_ttl: float,
        state_writes: Mapping[str, Any] | None = None,
    ) -> PageResult:
        """Store one page of a tick in one transaction, or nothing: raises LeaseLost when the
        token no longer holds. The cursor moves only if it still equals `expected_cursor`.
        `state_writes` sets the sensor's durable values (None deletes a key) in the same commit."""

    @abc.abstractmethod
    def record_tick(self, sensor_id: int, tick: Tick) -> None: ...

    @abc.abstractmethod
    def record_idle_tick(self, sensor_id: int, tick: Tick, cursor: int) -> bool:
        """Record a tick that found nothing to do (no event after `cursor`, no retry due) and
        took no lease, in one commit, only if the sensor is RUNNING, its cursor is still
        `cursor` and no tick holds a live lease; otherwise store nothing and return False."""

    @abc.abstractmethod
    def run_key_owner(self, sensor_id: int, run_key: str) -> str | None: ...

    @abc.abstractmethod
    def list_ticks(self, sensor_id: int, limit: int = 20) -> list[Tick]: ...

    def last_tick(self, sensor_id: int) -> Tick | None:
        ticks = self.list_ticks(sensor_id, limit=1)
        return ticks[0] if ticks else None

    @abc.abstractmethod
    def due_reactions(self, sensor_id: int, now: float, limit: int) -> list[Reaction]: ...

    @abc.abstractmethod
    def next_retry_at(self, sensor_id: int) -> float | None: ...

    @abc.abstractmethod
    def reacted_events_after(self, sensor_id: int, cursor: int) -> set[int]:
        """Events past the cursor whose reaction failed (calls whose tick process died, or a
        cursor moved back): a tick leaves them to their retries; successes are replayed."""

    @abc.abstractmethod
    def failed_reactions(self, sensor_ids: Sequence[int]) -> list[Reaction]:
        """Reactions still retrying or parked, oldest event first."""

    @abc.abstractmethod
    def reactions_for(self, sensor_id: int) -> list[Reaction]: ...

    @abc.abstractmethod
    def reactions_to_run(self, run_id: str) -> list[Reaction]:
        """What every sensor did about this run's status events, in event order."""

    @abc.abstractmethod
    def requeue_reactions(self, sensor_id: int, event_id: int | None = None) -> int:
        """Make parked reactions due now with a fresh retry budget; returns how many."""

    @abc.abstractmethod
    def retry_reactions_now(self, sensor_id: int, event_id: int | None = None) -> tuple[int, int]:
        """Make failed reactions due now, skipping their back-off: parked ones get a fresh retry
        budget, retrying ones keep their attempt count. Returns (parked, retrying)."""

    # -- removing history (runs delete, prune, retention) -----------------------------------

    @abc.abstractmethod
    def delete_runs(self, run_ids: Sequence[str]) -> list[str]:
        """Delete finished runs (SUCCESS, FAILURE, CANCELED) with their events and the reactions
        to them, in one transaction; runs in progress or queued are left alone. Returns the ids
        deleted. Event ids are never reused, so no sensor cursor ever points at a new event."""

    @abc.abstractmethod
    def prune(self, before: float, *, dry_run: bool = False) -> PruneResult:
        """Delete history older than `before` (epoch seconds), in one transaction:
        - finished runs that ended before it, with their events and reactions, except a run with
          an event some RUNNING sensor has not consumed yet (id > its cursor) or a reaction still
          RETRYING (it needs the run);
        - ticks started before it, except each sensor's newest (`sensor list` shows it);
        - finished reactions (SUCCESS, SKIPPED) created before it.
        Runs still in progress or queued are never touched. `dry_run` counts, deleting nothing."""

    # -- daemons -----------------------------------------------------------------------------

    @abc.abstractmethod
    def heartbeat_daemon(self, identity: str, info: dict[str, Any]) -> None:
        """Register or refresh a daemon (its row is how other hosts know it lives)."""

    @abc.abstractmethod
    def remove_daemon(self, identity: str) -> None: ...

    @abc.abstractmethod
    def list_daemons(self) -> list[DaemonRecord]: ...

    # -- moving a whole database -------------------------------------------------------------

    @abc.abstractmethod
    def is_empty(self) -> bool: ...

    @abc.abstractmethod
    def export_table(self, table: str) -> tuple[list[str], Iterator[tuple[Any, ...]]]:
        """Every row of `table` (its column names, then rows in primary-key order)."""

    @abc.abstractmethod
    def import_rows(self, table: str, columns: list[str], rows: Iterable[tuple[Any, ...]]) -> int:
        """Insert rows exported from another database (ids kept); returns how many."""
