"""Run status sensors as users declare them: decorators, return types and evaluation contexts."""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .definitions import JobDefinition
from .errors import DefinitionError
from .instance import RunsenseInstance, as_instance
from .runs import STATUS_EVENT_TYPES, ErrorInfo, EventType, RunEvent, RunRecord, RunStatus
from .storage import SensorScope

if TYPE_CHECKING:
    from .storage import Storage


class DefaultSensorStatus(str, enum.Enum):
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"


@dataclass
class RunRequest:
    """Ask for a run of the sensor's `request_job` (or `job_name` among its `request_jobs`)."""

    run_key: str | None = None
    run_config: dict[str, Any] | None = None
    tags: dict[str, Any] | None = None
    job_name: str | None = None


@dataclass
class SkipReason:
    """Say why the sensor did nothing for this run; recorded on the reaction and the tick."""

    skip_message: str | None = None


class PermanentReactionError(Exception):
    """Raise from a sensor to park the reaction at once: retrying cannot help (bad auth, say)."""


@dataclass
class StepFailureEvent:
    """One failed op of a failed run, for `RunFailureSensorContext.get_step_failure_events()`."""

    step_key: str
    message: str
    error: ErrorInfo | None
    event_id: int = 0


class RunStatusSensorContext:
    """What a run status sensor's function receives for one run that reached its status."""

    def __init__(
        self,
        sensor_name: str,
        dagster_run: RunRecord,
        dagster_event: RunEvent | None,
        instance: RunsenseInstance | Storage | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        self.sensor_name = sensor_name
        self.dagster_run = dagster_run
        self.dagster_event = dagster_event
        self.instance = as_instance(instance)
        self.log = log or logging.getLogger(f"runsense.sensor.{sensor_name}")

    @property
    def run(self) -> RunRecord:
        return self.dagster_run

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


SensorFn = Callable[[RunStatusSensorContext], Any]


class RunStatusSensorDefinition:
    """A sensor: the user's function plus which runs it watches and what it may launch."""

    # Environment variables the sensor reads when it reacts (a token's EnvVar, say), so that
    # `runsense sensor start` can warn at once when one is not set. Set it on your own sensor
    # objects too: `my_sensor.required_env = ("API_KEY",)`.
    required_env: tuple[str, ...] = ()

    def __init__(
        self,
        fn: SensorFn,
        run_status: RunStatus,
        name: str | None = None,
        minimum_interval_seconds: float | None = None,
        description: str | None = None,
        monitored_jobs: Sequence[JobDefinition | str] | None = None,
        monitor_all_code_locations: bool = False,
        default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
        request_job: JobDefinition | None = None,
        request_jobs: Sequence[JobDefinition] | None = None,
        max_retries: int = 5,
        retry_delay_seconds: float = 5.0,
    ) -> None:
        self.fn = fn
        self.name = name or fn.__name__
        try:
            self.run_status = RunStatus(run_status)
        except ValueError:
            raise DefinitionError(
                f"sensor '{self.name}': unknown run_status {run_status!r}",
                "use a RunStatus such as RunStatus.SUCCESS",
            ) from None
        if self.run_status == RunStatus.NOT_STARTED:
            raise DefinitionError(
                f"sensor '{self.name}': run_status NOT_STARTED is never reached by an event",
                "watch QUEUED, STARTING, STARTED, SUCCESS, FAILURE, CANCELING or CANCELED",
            )
        if monitored_jobs and monitor_all_code_locations:
            raise DefinitionError(
                f"sensor '{self.name}': give monitored_jobs or monitor_all_code_locations, not both",
                "monitor_all_code_locations=True already watches every job",
            )
        if request_job is not None and request_jobs:
            raise DefinitionError(
                f"sensor '{self.name}': give request_job or request_jobs, not both"
            )
        self.request_jobs: list[JobDefinition] = (
            [request_job] if request_job is not None else list(request_jobs or [])
        )
        for target in self.request_jobs:
            if not isinstance(target, JobDefinition):
                raise DefinitionError(f"sensor '{self.name}': request_job {target!r} is not a @job")
        for monitored in monitored_jobs or []:
            if not isinstance(monitored, (JobDefinition, str)):
                raise DefinitionError(
                    f"sensor '{self.name}': monitored_jobs holds {monitored!r}",
                    'use job objects, "job_name" or "location:job_name"',
                )
        if max_retries < 0 or retry_delay_seconds < 0:
            raise DefinitionError(
                f"sensor '{self.name}': max_retries and retry_delay_seconds must be >= 0"
            )
        self.minimum_interval_seconds = minimum_interval_seconds
        self.description = description or (fn.__doc__ or "").strip() or None
        self.monitored_jobs = list(monitored_jobs or [])
        self.monitor_all_code_locations = monitor_all_code_locations
        self.default_status = DefaultSensorStatus(default_status)
        self.max_retries = int(max_retries)
        self.retry_delay_seconds = float(retry_delay_seconds)

    @property
    def event_type(self) -> EventType:
        return STATUS_EVENT_TYPES[self.run_status]

    @property
    def event_types(self) -> tuple[EventType, ...]:
        """The status events this sensor reads."""
        return (self.event_type,)

    @property
    def is_failure_sensor(self) -> bool:
        return self.run_status == RunStatus.FAILURE

    def scope(self, location: str) -> SensorScope:
        if self.monitor_all_code_locations:
            return SensorScope(location, all_locations=True)
        if not self.monitored_jobs:
            return SensorScope(location)
        pairs = set()
        for monitored in self.monitored_jobs:
            if isinstance(monitored, JobDefinition):
                pairs.add((monitored.location, monitored.name))
            elif ":" in monitored:
                other_location, job_name = monitored.split(":", 1)
                pairs.add((other_location, job_name))
            else:
                pairs.add((location, monitored))
        return SensorScope(location, jobs=frozenset(pairs))

    def monitored_names(self) -> list[str]:
        if self.monitor_all_code_locations:
            return ["all locations"]
        if not self.monitored_jobs:
            return ["all jobs of this location"]
        return [m.name if isinstance(m, JobDefinition) else m for m in self.monitored_jobs]

    def build_context(
        self, run: RunRecord, event: RunEvent | None, instance: Storage | None
    ) -> RunStatusSensorContext:
        context_type = RunFailureSensorContext if self.is_failure_sensor else RunStatusSensorContext
        return context_type(self.name, run, event, instance)

    def evaluate_run(self, context: RunStatusSensorContext) -> Any:
        """Call the function; a generator is drained here so its errors count as the function's."""
        result = self.fn(context)
        if not isinstance(result, (RunRequest, SkipReason, dict, str)) and isinstance(
            result, Iterable
        ):
            return list(result)
        return result

    def __call__(self, context: RunStatusSensorContext) -> Any:
        return self.evaluate_run(context)

    def __repr__(self) -> str:
        return f"<run_status_sensor {self.name} on {self.run_status.value}>"


def run_status_sensor(
    run_status: RunStatus,
    name: str | None = None,
    minimum_interval_seconds: float | None = None,
    description: str | None = None,
    monitored_jobs: Sequence[JobDefinition | str] | None = None,
    monitor_all_code_locations: bool = False,
    default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
    request_job: JobDefinition | None = None,
    request_jobs: Sequence[JobDefinition] | None = None,
    max_retries: int = 5,
    retry_delay_seconds: float = 5.0,
) -> Callable[[SensorFn], RunStatusSensorDefinition]:
    """Decorate `fn(context)` to be called once for every run that reaches `run_status`."""

    def decorate(fn: SensorFn) -> RunStatusSensorDefinition:
        return RunStatusSensorDefinition(
            fn,
            run_status,
            name=name,
            minimum_interval_seconds=minimum_interval_seconds,
            description=description,
            monitored_jobs=monitored_jobs,
            monitor_all_code_locations=monitor_all_code_locations,
            default_status=default_status,
            request_job=request_job,
            request_jobs=request_jobs,
            max_retries=max_retries,
            retry_delay_seconds=retry_delay_seconds,
        )

    return decorate


def run_failure_sensor(
    fn: SensorFn | None = None,
    *,
    name: str | None = None,
    minimum_interval_seconds: float | None = None,
    description: str | None = None,
    monitored_jobs: Sequence[JobDefinition | str] | None = None,
    monitor_all_code_locations: bool = False,
    default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
    request_job: JobDefinition | None = None,
    request_jobs: Sequence[JobDefinition] | None = None,
    max_retries: int = 5,
    retry_delay_seconds: float = 5.0,
) -> Any:
    """`run_status_sensor(RunStatus.FAILURE, ...)`, usable bare (`@run_failure_sensor`) too."""
    decorate = run_status_sensor(
        RunStatus.FAILURE,
        name=name,
        minimum_interval_seconds=minimum_interval_seconds,
        description=description,
        monitored_jobs=monitored_jobs,
        monitor_all_code_locations=monitor_all_code_locations,
        default_status=default_status,
        request_job=request_job,
        request_jobs=request_jobs,
        max_retries=max_retries,
        retry_delay_seconds=retry_delay_seconds,
    )
    return decorate(fn) if fn is not None else decorate


def build_run_status_sensor_context(
    sensor_name: str,
    dagster_run: RunRecord,
    dagster_event: RunEvent | None = None,
    instance: Storage | None = None,
) -> RunStatusSensorContext:
    """A context for unit-testing a sensor function: `my_sensor(build_run_status_sensor_context(...))`."""
    if dagster_run.status == RunStatus.FAILURE:
        return RunFailureSensorContext(sensor_name, dagster_run, dagster_event, instance)
    return RunStatusSensorContext(sensor_name, dagster_run, dagster_event, instance)
