"""Run statuses, the events that record them, and the stored shape of a run."""

from __future__ import annotations

import enum
import json
import os
from dataclasses import dataclass, field
from typing import Any

from .text import clean, safe_str


class RunStatus(str, enum.Enum):
    """Where a run is in its life; values equal names so they store and print as themselves."""

    QUEUED = "QUEUED"
    NOT_STARTED = "NOT_STARTED"
    STARTING = "STARTING"
    STARTED = "STARTED"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    CANCELING = "CANCELING"
    CANCELED = "CANCELED"

    def __str__(self) -> str:
        return self.value


DagsterRunStatus = RunStatus


_RANDOM_IDS = 256  # ids drawn from one read of the OS's randomness
_random_hex: list[str] = []  # hex text of 16 random bytes each, used from the end


def new_run_id() -> str:
    """A random (version 4) UUID as text, as `str(uuid.uuid4())` spells it, in a fraction of the
    time: a tick that requests 100k runs makes 100k of them. The bytes come from `os.urandom`,
    256 ids' worth at a time (a system call each releases the GIL to any other thread)."""
    try:
        h = _random_hex.pop()
    except IndexError:  # (another thread may empty it between a check and the pop)
        block = os.urandom(16 * _RANDOM_IDS).hex()
        h = block[:32]
        _random_hex.extend(block[i : i + 32] for i in range(32, len(block), 32))
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


# A forked process must never hand out the ids its parent has drawn but not used yet.
os.register_at_fork(after_in_child=_random_hex.clear)


# What people type for a status: `runs list --status failed` means FAILURE.
STATUS_ALIASES: dict[str, RunStatus] = {
    "FAILED": RunStatus.FAILURE,
    "SUCCEEDED": RunStatus.SUCCESS,
    "SUCCESSFUL": RunStatus.SUCCESS,
    "CANCELLED": RunStatus.CANCELED,
    "CANCELLING": RunStatus.CANCELING,
}


def parse_status(text: str) -> RunStatus:
    """A status as typed on a command line: any case, the aliases above, a did-you-mean else."""
    import difflib

    from .errors import RunsenseError

    key = text.strip().upper().replace("-", "_")
    words = {**{status.value: status for status in RunStatus}, **STATUS_ALIASES}
    if key in words:
        return words[key]
    close = difflib.get_close_matches(key, list(words), n=3, cutoff=0.6)
    guesses = list(dict.fromkeys(words[word].value for word in close))
    hint = (
        f"did you mean {' or '.join(guesses)}?"
        if guesses
        else f"use one of {', '.join(status.value for status in RunStatus)}"
    )
    raise RunsenseError(f"unknown status '{text}'", hint)


FINISHED_STATUSES = frozenset({RunStatus.SUCCESS, RunStatus.FAILURE, RunStatus.CANCELED})
IN_PROGRESS_STATUSES = frozenset({RunStatus.STARTING, RunStatus.STARTED, RunStatus.CANCELING})


class EventType(str, enum.Enum):
    """Every row of a run's event log has one of these types."""

    RUN_ENQUEUED = "RUN_ENQUEUED"
    RUN_STARTING = "RUN_STARTING"
    RUN_START = "RUN_START"
    RUN_SUCCESS = "RUN_SUCCESS"
    RUN_FAILURE = "RUN_FAILURE"
    RUN_CANCELING = "RUN_CANCELING"
    RUN_CANCELED = "RUN_CANCELED"
    STEP_START = "STEP_START"
    STEP_SUCCESS = "STEP_SUCCESS"
    STEP_FAILURE = "STEP_FAILURE"
    LOG = "LOG"
    SENSOR_REACTION = "SENSOR_REACTION"
    RUN_OVERDUE = "RUN_OVERDUE"  # not a status: the run is still QUEUED or in progress

    def __str__(self) -> str:
        return self.value


# The status a run has after each status event; sensors read events of one of these types.
STATUS_EVENT_TYPES: dict[RunStatus, EventType] = {
    RunStatus.QUEUED: EventType.RUN_ENQUEUED,
    RunStatus.STARTING: EventType.RUN_STARTING,
    RunStatus.STARTED: EventType.RUN_START,
    RunStatus.SUCCESS: EventType.RUN_SUCCESS,
    RunStatus.FAILURE: EventType.RUN_FAILURE,
    RunStatus.CANCELING: EventType.RUN_CANCELING,
    RunStatus.CANCELED: EventType.RUN_CANCELED,
}
STATUS_OF_EVENT: dict[EventType, RunStatus] = {v: k for k, v in STATUS_EVENT_TYPES.items()}


@dataclass(frozen=True)
class ErrorInfo:
    """An exception turned into data that survives storage: class, message and traceback."""

    cls_name: str
    message: str
    stack: str = ""

    def to_json(self) -> str:
        return json.dumps({"cls_name": self.cls_name, "message": self.message, "stack": self.stack})

    @classmethod
    def from_json(cls, text: str | None) -> ErrorInfo | None:
        if not text:
            return None
        data = json.loads(text)
        return cls(data["cls_name"], data["message"], data.get("stack", ""))

    @classmethod
    def from_exception(cls, exc: BaseException, skip_frames: int = 0) -> ErrorInfo:
        """`skip_frames` drops runsense's own calling frames, so a user sees their code first.

        The text is cleaned (invalid UTF-8 as U+FFFD) here, so any error can be stored and shown.
        """
        import traceback

        tb = exc.__traceback__
        for _ in range(skip_frames):
            if tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
        stack = clean("".join(traceback.format_exception(type(exc), exc, tb)))
        return cls(clean(type(exc).__name__), safe_str(exc), stack)

    def __str__(self) -> str:
        return f"{self.cls_name}: {self.message}" if self.message else self.cls_name


@dataclass(frozen=True)
class RunEvent:
    """One row of the event log; `event_id` is the global order every sensor reads in."""

    event_id: int
    run_id: str
    event_type: EventType
    timestamp: float
    message: str = ""
    step_key: str | None = None
    level: str | None = None
    error: ErrorInfo | None = None

    @property
    def is_status_event(self) -> bool:
        return self.event_type in STATUS_OF_EVENT


@dataclass(frozen=True)
class RunRecord:
    """A run as stored; what sensors receive as `context.dagster_run`."""

    run_id: str
    job_name: str
    status: RunStatus
    location: str
    run_config: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    created_at: float = 0.0
    start_time: float | None = None
    end_time: float | None = None
    parent_run_id: str | None = None
    root_run_id: str | None = None
    worker_pid: int | None = None
    launcher: str | None = None  # the ProcessId that claimed it (see identity.py)
    worker: str | None = None  # the ProcessId executing it
    heartbeat_at: float | None = None  # its worker's last sign of life, database clock

    @property
    def is_success(self) -> bool:
        return self.status == RunStatus.SUCCESS

    @property
    def is_failure(self) -> bool:
        return self.status == RunStatus.FAILURE

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    @property
    def will_retry(self) -> bool:
        """A failed run that runsense queued again (its `runsense/max_retries` allowed it)."""
        return self.tags.get("runsense/will_retry") == "true"

    @property
    def duration(self) -> float | None:
        if self.start_time is None:
            return None
        return (self.end_time or _now()) - self.start_time

    @property
    def trigger(self) -> str:
        """Who started this run, for the runs table: a sensor's name or how it was launched."""
        if sensor := self.tags.get("runsense/sensor"):
            return f"sensor {sensor}"
        return self.tags.get("runsense/launched_by", "cli")


def _now() -> float:
    import time

    return time.time()
