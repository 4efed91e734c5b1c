"""Stored shapes of sensor state: the sensor row, its ticks (and the bound on the log lines a tick
keeps) and its reactions."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class SensorStatus(str, enum.Enum):
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"

    def __str__(self) -> str:
        return self.value


class TickStatus(str, enum.Enum):
    STARTED = "STARTED"
    SUCCESS = "SUCCESS"
    SKIPPED = "SKIPPED"
    FAILURE = "FAILURE"

    def __str__(self) -> str:
        return self.value


class ReactionState(str, enum.Enum):
    """SUCCESS and SKIPPED are final; RETRYING waits for its next attempt; DEAD is parked."""

    SUCCESS = "SUCCESS"
    SKIPPED = "SKIPPED"
    RETRYING = "RETRYING"
    DEAD = "DEAD"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class SensorState:
    sensor_id: int
    location: str
    name: str
    status: SensorStatus
    cursor: int
    started_at: float | None
    last_tick_at: float | None
    # None: the status follows the code's default_status; "user": pinned by sensor start/stop.
    status_source: str | None = None


MAX_TICK_RUN_IDS = 100  # a tick row keeps counts and the first few of each list, so it stays
MAX_TICK_NOTES = 20  # small (SPEC §8: ≤ 64 KB) whatever the backlog: 100,000 run ids were 3.9 MB
MAX_NOTE_CHARS = 500  # and a row rewritten each page made a big tick quadratic


@dataclass
class Tick:
    """One tick's record. Lists are bounded: `run_ids` holds the first MAX_TICK_RUN_IDS runs
    requested (`runs_requested` counts them all), `skip_reasons` the first MAX_TICK_NOTES distinct
    reasons (`skipped` counts skipped reactions), `errors` the first MAX_TICK_NOTES errors
    (`failures` counts failed reactions)."""

    tick_id: int
    sensor: str
    status: TickStatus
    started_at: float
    duration_s: float = 0.0
    events_scanned: int = 0
    reactions: int = 0
    run_ids: list[str] = field(default_factory=list)
    skip_reasons: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    cursor_before: int = 0
    cursor_after: int = 0
    logs: list[str] = field(default_factory=list)  # what the function logged (`context.log`)
    runs_requested: int = 0
    skipped: int = 0
    failures: int = 0

    def count(
        self,
        state: ReactionState,
        run_ids: list[str],
        skip_message: str | None,
        error: str | None,
    ) -> None:
        """Add one reaction to the counts, and to the lists while they have room."""
        self.reactions += 1
        if run_ids:
            self.runs_requested += len(run_ids)
            room = MAX_TICK_RUN_IDS - len(self.run_ids)
            if room > 0:
                self.run_ids += run_ids[:room]
        if state == ReactionState.SKIPPED:
            self.skipped += 1
        elif state != ReactionState.SUCCESS:
            self.failures += 1
        if skip_message:
            self.note(skip_message)
        if error and len(self.errors) < MAX_TICK_NOTES:
            self.errors.append(_short(error))

    def note(self, reason: str) -> None:
        """Keep a skip reason unless it is already there or the list is full."""
        reason = _short(reason)
        if len(self.skip_reasons) < MAX_TICK_NOTES and reason not in self.skip_reasons:
            self.skip_reasons.append(reason)

    def settle(self) -> None:
        """The status from the counts: FAILURE if any reaction failed, SUCCESS if any acted."""
        if self.failures:
            self.status = TickStatus.FAILURE
        elif self.reactions > self.skipped:
            self.status = TickStatus.SUCCESS
        else:
            self.status = TickStatus.SKIPPED


def _short(text: str) -> str:
    return text if len(text) <= MAX_NOTE_CHARS else text[: MAX_NOTE_CHARS - 1] + "…"


MAX_TICK_LOG_LINES = 50  # what a sensor function logs is kept with its tick, bounded: a chatty
MAX_LOG_LINE_CHARS = 500  # function must not turn one tick row into megabytes


class TickLog:
    """Collects the lines a tick's sensor function logs into `tick.logs`, at most
    MAX_TICK_LOG_LINES, the last of them saying how many more were left out."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.left_out = 0

    def keep(self, line: str) -> None:
        if len(line) > MAX_LOG_LINE_CHARS:
            line = line[: MAX_LOG_LINE_CHARS - 1] + "…"
        if len(self.lines) < MAX_TICK_LOG_LINES:
            self.lines.append(line)
            return
        self.left_out += 2 if self.left_out == 0 else 1  # the first time, the last line gives way
        self.lines[-1] = f"… {self.left_out} more log line(s) not kept"


@dataclass
class Reaction:
    """What one sensor did about one status event; unique per (sensor, event)."""

    sensor_id: int
    event_id: int
    run_id: str
    state: ReactionState
    attempts: int = 1
    next_attempt_at: float | None = None
    error: str | None = None
    skip_message: str | None = None
    run_ids: list[str] = field(default_factory=list)
    created_at: float = 0.0
    finished_at: float | None = None
    sensor: str = ""


@dataclass(frozen=True)
class Incident:
    """A job's outage, from its first final failure to the next success (SPEC §11); as a
    reaction sees it, a snapshot taken with the run's status event."""

    incident_id: int
    job_name: str
    location: str
    status: str  # "OPEN" or "RESOLVED"
    failure_count: int
    opened_at: float
    resolved_at: float | None
    first_run_id: str
    last_run_id: str
    opened_by_this_run: bool = False
    resolved_by_this_run: bool = False
    resolved_by_run_id: str | None = None

    @property
    def is_open(self) -> bool:
        return self.status == "OPEN"

    def to_dict(self) -> dict[str, object]:
        from dataclasses import asdict

        return asdict(self)


@dataclass(frozen=True)
class Overdue:
    """What a RUN_OVERDUE event says: the phase and how long the run had been in it."""

    run_id: str
    phase: str  # "QUEUED" or "STARTED"
    overdue_seconds: float
    limit_seconds: float
    event_id: int
