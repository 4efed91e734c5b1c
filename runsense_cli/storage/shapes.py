"""The shapes the storage contract trades in, besides the records of `runs` and `records`: which
events a sensor watches, runs and write-backs created inside a page, how a page commit went, a
daemon's registration, and the forward-only order of run statuses."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from ..runs import RunStatus

# What `sensor list`, `sensor cursor`, `status` and the daemon's live view count of a sensor's
# waiting events: this many at most (shown as "≥ 10,000"), so they cost the same at any lag.
LAG_CAP = 10_000


@dataclass(frozen=True)
class SensorScope:
    """Which runs a sensor watches: every location, some (location, job) pairs, whole locations,
    or (the default) its own location."""

    location: str
    jobs: frozenset[tuple[str, str]] | None = None
    all_locations: bool = False
    locations: frozenset[str] = frozenset()

    def covers(self, location: str, job_name: str) -> bool:
        """Whether a run of `job_name` in `location` is watched (as `SqlBase._scope_sql`)."""
        if self.all_locations:
            return True
        if self.jobs is None and not self.locations:
            return location == self.location
        return (location, job_name) in (self.jobs or ()) or location in self.locations


@dataclass(frozen=True)
class NewRun:
    """A run to create inside a larger transaction (a sensor page)."""

    run_id: str
    job_name: str
    location: str
    run_config: dict[str, Any]
    tags: dict[str, str]
    parent_run_id: str | None
    root_run_id: str | None
    origin: dict[str, Any] | None


@dataclass(frozen=True)
class WriteBack:
    """An event a sensor writes onto the run it reacted to."""

    run_id: str
    job_name: str
    location: str
    message: str
    run_created_at: float  # leads the events' run index (schema M007)


class PageResult(str, enum.Enum):
    """How a page commit went; anything but COMMITTED tells the tick to stop after this page."""

    COMMITTED = "COMMITTED"
    CURSOR_MOVED = "CURSOR_MOVED"  # a user moved the cursor: reactions kept, cursor left alone
    STOPPED = "STOPPED"  # the sensor was stopped meanwhile: the page is stored, the drain ends


@dataclass(frozen=True)
class DaemonRecord:
    identity: str
    node: str
    pid: int
    started_at: float
    heartbeat_at: float
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PruneResult:
    """What `prune` deleted (or, with `dry_run`, would delete)."""

    run_ids: list[str]
    events: int
    ticks: int
    reactions: int


# Forward-only run statuses: a move is allowed only to a higher rank (guarantee 2).
STATUS_RANK: dict[RunStatus, int] = {
    RunStatus.NOT_STARTED: 0,
    RunStatus.QUEUED: 1,
    RunStatus.STARTING: 2,
    RunStatus.STARTED: 3,
    RunStatus.CANCELING: 4,
    RunStatus.SUCCESS: 5,
    RunStatus.FAILURE: 5,
    RunStatus.CANCELED: 5,
}


def statuses_before(status: RunStatus) -> list[RunStatus]:
    """The statuses a run may move to `status` from."""
    rank = STATUS_RANK[status]
    return [s for s, r in STATUS_RANK.items() if r < rank]
