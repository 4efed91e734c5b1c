"""What a run status sensor's function receives: the context for one run that reached the status
it watches, its logger, and `build_run_status_sensor_context` for unit tests."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .instance import RunsenseInstance, as_instance
from .records import Incident, Overdue
from .runs import ErrorInfo, EventType, RunEvent, RunRecord, RunStatus
from .sensor_state import SensorStateStore

if TYPE_CHECKING:
    from .storage import Storage


@dataclass
class StepFailureEvent:
    """One failed op of a failed run, for `RunFailureSensorContext.get_step_failure_events()`."""

    step_key: str
    message: str
    error: ErrorInfo | None
    event_id: int = 0


class SensorLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """`context.log`: the sensor's logger (its lines still reach stderr), that also hands each line
    to `keep`, prefixed with the run it is about, so a tick can store what its function said."""

    def __init__(
        self, logger: logging.Logger, run_id: str = "", keep: Callable[[str], None] | None = None
    ) -> None:
        super().__init__(logger, {})
        self._prefix = f"run {run_id[:8]}: " if run_id else ""
        self._keep = keep

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        enabled = self.logger.isEnabledFor(level)
        # INFO and up are kept even when stderr shows less: the tick is where one looks later.
        if self._keep is not None and (enabled or level >= logging.INFO):
            self._keep(f"{logging.getLevelName(level)} {self._prefix}{_log_message(msg, args)}")
        if enabled:
            # One frame up: the record names the user's line, as a plain Logger's would.
            kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + 1
            self.logger.log(level, msg, *args, **kwargs)


def _log_message(msg: object, args: tuple[Any, ...]) -> str:
    """The text `logging` would print for `msg % args`, never an exception (user code logs it)."""
    if len(args) == 1 and isinstance(args[0], Mapping) and args[0]:
        args = args[0]  # type: ignore[assignment]  # logging's `log("%(x)s", {"x": 1})` form
    try:
        return str(msg) % args if args else str(msg)
    except (TypeError, ValueError, KeyError):
        return f"{msg} {args!r}"


class RunStatusSensorContext:
    """What a run status sensor's function receives for one run that reached its status."""

    def __init__(
        self,
        sensor_name: str,
        dagster_run: RunRecord,
        dagster_event: RunEvent | None,
        instance: RunsenseInstance | Storage | None = None,
        logger: logging.Logger | None = None,
        keep_log: Callable[[str], None] | None = None,
    ) -> None:
        self.sensor_name = sensor_name
        self.dagster_run = dagster_run
        self.dagster_event = dagster_event
        self.instance = as_instance(instance)
        self._logger = logger  # where `log` lines go: the sensor's own logger by default
        self._keep_log = keep_log
        self._log: SensorLog | None = None
        # The sensor's durable state: the tick's store; an in-memory one in unit tests.
        self.state: SensorStateStore = SensorStateStore()
        self._incident: tuple[Incident | None] | None = None

    @property
    def log(self) -> SensorLog:
        """Made on first use: most functions never log, and a reaction should not pay for it."""
        if self._log is None:
            logger = self._logger or logging.getLogger(f"runsense.sensor.{self.sensor_name}")
            self._log = SensorLog(logger, self.dagster_run.run_id, self._keep_log)
        return self._log

    def for_run_failure(self) -> RunFailureSensorContext:
        """This context as a failure sensor's, for the same run and event (Dagster's method)."""
        context = RunFailureSensorContext(
            self.sensor_name,
            self.dagster_run,
            self.dagster_event,
            self.instance,
            self._logger,
            self._keep_log,
        )
        context.state = self.state
        return context

    @property
    def run(self) -> RunRecord:
        return self.dagster_run

    @property
    def incident(self) -> Incident | None:
        """The job's incident as of this run's status event (SPEC §11), or None: read once."""
        if self._incident is None:
            event, instance = self.dagster_event, self.instance
            found = None
            if event is not None and event.event_id and instance is not None:
                found = instance.storage.incident_at_event(event.event_id)
            self._incident = (found,)
        return self._incident[0]

    @property
    def event(self) -> RunEvent | None:
        return self.dagster_event

    @property
    def partition_key(self) -> str | None:
        tags = self.dagster_run.tags
        return tags.get("partition") or tags.get("dagster/partition")


class RunFailureSensorContext(RunStatusSensorContext):
    """A failure sensor's context: adds the failure event and each failed op's error."""

    @property
    def failure_event(self) -> RunEvent | None:
        return self.dagster_event

    def get_step_failure_events(self) -> list[StepFailureEvent]:
        if self.instance is None:
            return []
        return [
            StepFailureEvent(e.step_key or "", e.message, e.error, e.event_id)
            for e in self.instance.all_logs(self.dagster_run.run_id)
            if e.event_type == EventType.STEP_FAILURE
        ]


class RunOverdueSensorContext(RunStatusSensorContext):
    """A `run_overdue_sensor`'s context: adds how long the run had been QUEUED or STARTED."""

    def _overdue(self) -> Overdue | None:
        event, instance = self.dagster_event, self.instance
        if event is None or not event.event_id or instance is None:
            return None
        return instance.storage.overdue_at_event(event.event_id)

    @property
    def phase(self) -> str:
        """ "QUEUED" (over `runsense/max_queue_time`) or "STARTED" (over `max_runtime`)."""
        overdue = self._overdue()
        if overdue is not None:
            return overdue.phase
        return "QUEUED" if self.dagster_run.status == RunStatus.QUEUED else "STARTED"

    @property
    def overdue_seconds(self) -> float:
        """Seconds the run had spent in that phase when runsense noticed."""
        overdue = self._overdue()
        return overdue.overdue_seconds if overdue is not None else 0.0


def build_run_status_sensor_context(
    sensor_name: str,
    dagster_run: RunRecord,
    dagster_event: RunEvent | None = None,
    instance: RunsenseInstance | Storage | None = None,
    *,
    dagster_instance: RunsenseInstance | Storage | None = None,
) -> RunStatusSensorContext:
    """A context for unit-testing a sensor function: `my_sensor(build_run_status_sensor_context(...))`.

    `dagster_instance` is Dagster's name for `instance`. A failed run gets a failure sensor's
    context at once (Dagster needs `.for_run_failure()`, which works here too).
    """
    if instance is not None and dagster_instance is not None and instance is not dagster_instance:
        raise TypeError("give instance or dagster_instance, not both")
    storage = instance if instance is not None else dagster_instance
    if dagster_run.status == RunStatus.FAILURE:
        return RunFailureSensorContext(sensor_name, dagster_run, dagster_event, storage)
    return RunStatusSensorContext(sensor_name, dagster_run, dagster_event, storage)
