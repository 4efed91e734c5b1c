"""Run status sensors as users declare them: decorators, definitions and what functions return.
Their contexts are in `sensor_context`."""

from __future__ import annotations

import enum
import inspect
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import DefinitionError
from .instance import RunsenseInstance
from .jobs import JobDefinition
from .runs import STATUS_EVENT_TYPES, STATUS_OF_EVENT, EventType, RunEvent, RunRecord, RunStatus
from .sensor_context import (
    RunFailureSensorContext,
    RunOverdueSensorContext,
    RunStatusSensorContext,
    SensorStateStore,
)
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
    run_config: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, Any] = field(default_factory=dict)
    job_name: str | None = None

    def __post_init__(self) -> None:
        # As in Dagster, an explicit None reads back as {}: tests compare `run_config == {}`.
        if self.run_config is None:
            self.run_config = {}
        if self.tags is None:
            self.tags = {}


@dataclass
class SkipReason:
    """Say why the sensor did nothing for this run; recorded on the reaction and the tick."""

    skip_message: str | None = None


@dataclass(frozen=True)
class CodeLocationSelector:
    """Every job of a code location, for `monitored_jobs` (Dagster's name; same as "location:*")."""

    location_name: str


class PermanentReactionError(Exception):
    """Raise from a sensor to park the reaction at once: retrying cannot help (bad auth, say)."""


SensorFn = Callable[..., Any]


class RunStatusSensorDefinition:
    """A sensor: the user's function plus which runs it watches and what it may launch."""

    # Environment variables the sensor reads when it reacts (a token's EnvVar, say), so that
    # `runsense sensor start` can warn at once when one is not set. Set it on your own sensor
    # objects too: `my_sensor.required_env = ("API_KEY",)`.
    required_env: tuple[str, ...] = ()

    def __init__(
        self,
        fn: SensorFn,
        run_status: RunStatus | Sequence[RunStatus],
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
        monitored_tags: Mapping[str, str] | None = None,
        *,
        event_types: Sequence[EventType] | None = None,
        page_fn: bool = False,
    ) -> None:
        self.fn = fn
        # True: `fn` takes a whole page (`SensorPage`) rather than one run's context.
        self.page_fn = page_fn
        self.name = name or fn.__name__
        self._context_param, self._context_by_keyword = _context_parameter(fn, self.name)
        self._logger = logging.getLogger(f"runsense.sensor.{self.name}")  # once, not per reaction
        self.run_statuses = _statuses(run_status, self.name)
        self.run_status = self.run_statuses[0]  # the first: Dagster's single-status attribute
        self._event_types = tuple(event_types or (STATUS_EVENT_TYPES[s] for s in self.run_statuses))
        self.monitored_tags = _tags(monitored_tags, self.name)
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
            if not isinstance(monitored, (JobDefinition, str, CodeLocationSelector)):
                raise DefinitionError(
                    f"sensor '{self.name}': monitored_jobs holds {monitored!r}",
                    'use job objects, "job_name", "location:job_name" or "location:*"',
                )
        if max_retries < 0 or retry_delay_seconds < 0:
            raise DefinitionError(
                f"sensor '{self.name}': max_retries and retry_delay_seconds must be >= 0"
            )
        self.minimum_interval_seconds = minimum_interval_seconds
        self.description = description or (fn.__doc__ or "").strip() or None
        self.monitored_jobs: list[JobDefinition | str | CodeLocationSelector] = list(
            monitored_jobs or []
        )
        self.monitor_all_code_locations = monitor_all_code_locations
        self.default_status = DefaultSensorStatus(default_status)
        self.max_retries = int(max_retries)
        self.retry_delay_seconds = float(retry_delay_seconds)

    @property
    def event_type(self) -> EventType:
        return self._event_types[0]

    @property
    def event_types(self) -> tuple[EventType, ...]:
        """The events this sensor reads: one per status it watches."""
        return self._event_types

    @property
    def status_label(self) -> str:
        """What it watches, for people: "FAILURE" or "FAILURE, CANCELED"."""
        return ", ".join(
            t.value.removeprefix("RUN_") if t not in STATUS_OF_EVENT else STATUS_OF_EVENT[t].value
            for t in self._event_types
        )

    @property
    def is_failure_sensor(self) -> bool:
        return self._event_types == (EventType.RUN_FAILURE,)

    def matches(self, run: RunRecord) -> bool:
        """`monitored_tags`: the run carries every one of them, with exactly that value. Checked
        in the tick, after the scoped read, so the cursor still moves past runs that don't match."""
        tags = run.tags
        return all(tags.get(key) == value for key, value in self.monitored_tags.items())

    def scope(self, location: str) -> SensorScope:
        if self.monitor_all_code_locations:
            return SensorScope(location, all_locations=True)
        if not self.monitored_jobs:
            return SensorScope(location)
        pairs: set[tuple[str, str]] = set()
        locations: set[str] = set()  # whole locations: "location:*" or CodeLocationSelector
        for monitored in self.monitored_jobs:
            if isinstance(monitored, JobDefinition):
                pairs.add((monitored.location, monitored.name))
            elif isinstance(monitored, CodeLocationSelector):
                locations.add(monitored.location_name)
            elif ":" in monitored:
                other_location, job_name = monitored.split(":", 1)
                if job_name == "*":
                    locations.add(other_location)
                else:
                    pairs.add((other_location, job_name))
            else:
                pairs.add((location, monitored))
        if not locations:
            return SensorScope(location, jobs=frozenset(pairs))
        # `locations` is the storage's to add (see SensorScope): runs of these locations match too.
        return SensorScope(location, jobs=frozenset(pairs), locations=frozenset(locations))  # type: ignore[call-arg]

    def monitored_names(self) -> list[str]:
        if self.monitor_all_code_locations:
            return ["all locations"]
        if not self.monitored_jobs:
            return ["all jobs of this location"]
        return [_monitored_name(m) for m in self.monitored_jobs]

    def build_context(
        self,
        run: RunRecord,
        event: RunEvent | None,
        instance: RunsenseInstance | Storage | None,
        keep_log: Callable[[str], None] | None = None,
        state: SensorStateStore | None = None,
    ) -> RunStatusSensorContext:
        """The context for one run; `keep_log` receives each line its function logs, `state`
        is the sensor's durable state for this tick."""
        kind = event.event_type if event is not None else None
        if self.is_failure_sensor or kind == EventType.RUN_FAILURE:
            context_type: type[RunStatusSensorContext] = RunFailureSensorContext
        elif kind == EventType.RUN_OVERDUE:
            context_type = RunOverdueSensorContext
        else:
            context_type = RunStatusSensorContext
        context = context_type(self.name, run, event, instance, self._logger, keep_log)
        if state is not None:
            context.state = state
        return context

    def evaluate_run(self, context: RunStatusSensorContext | None) -> Any:
        """Call the function; a generator is drained here so its errors count as the function's."""
        # Called directly, without a helper: a traceback then goes from here into user code.
        if self._context_param is None:
            result = self.fn()
        elif self._context_by_keyword:
            result = self.fn(**{self._context_param: context})
        else:
            result = self.fn(context)
        if not isinstance(result, (RunRequest, SkipReason, dict, str)) and isinstance(
            result, Iterable
        ):
            return list(result)
        return result

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function as a unit test does, by Dagster's rules: `my_sensor(context)` or
        `my_sensor(context=...)`; `my_sensor()` when the function takes no context, which then
        ignores one given. A failure sensor given a plain context gets `for_run_failure()`."""
        if len(args) + len(kwargs) > 1:
            raise TypeError(f"sensor '{self.name}' takes one argument, its context")
        name = self._context_param or "context"
        if kwargs and name not in kwargs:
            raise TypeError(f"sensor '{self.name}' expected argument '{name}'")
        if not args and not kwargs and self._context_param is not None:
            raise TypeError(
                f"sensor '{self.name}' needs a context: pass build_run_status_sensor_context(...)"
            )
        context = args[0] if args else kwargs.get(name)
        if self.is_failure_sensor and type(context) is RunStatusSensorContext:
            context = context.for_run_failure()
        return self.evaluate_run(context)

    def __repr__(self) -> str:
        return f"<run_status_sensor {self.name} on {self.status_label}>"


def _statuses(run_status: Any, name: str) -> tuple[RunStatus, ...]:
    """`run_status` as a tuple: one status or a list of them (SPEC §11), each checked."""
    given = (
        list(run_status) if isinstance(run_status, (list, tuple, set, frozenset)) else [run_status]
    )
    if not given:
        raise DefinitionError(f"sensor '{name}': run_status is an empty list")
    found: list[RunStatus] = []
    for one in given:
        try:
            status = RunStatus(one)
        except ValueError:
            raise DefinitionError(
                f"sensor '{name}': unknown run_status {one!r}",
                "use a RunStatus such as RunStatus.SUCCESS",
            ) from None
        if status == RunStatus.NOT_STARTED:
            raise DefinitionError(
                f"sensor '{name}': run_status NOT_STARTED is never reached by an event",
                "watch QUEUED, STARTING, STARTED, SUCCESS, FAILURE, CANCELING or CANCELED",
            )
        if status not in found:
            found.append(status)
    return tuple(found)


def _tags(tags: Mapping[str, str] | None, name: str) -> dict[str, str]:
    if tags is None:
        return {}
    if not isinstance(tags, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in tags.items()
    ):
        raise DefinitionError(
            f"sensor '{name}': monitored_tags must map tag names to string values",
            'e.g. monitored_tags={"team": "data"}',
        )
    return dict(tags)


def _context_parameter(fn: Callable[..., Any], sensor_name: str) -> tuple[str | None, bool]:
    """The parameter that receives the context (Dagster's rule: the first one, any name, or none)
    and whether it must be passed by keyword; read once, so each reaction just calls."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature: assume it takes the context
        return "context", False
    for extra in params[1:]:
        if extra.default is inspect.Parameter.empty and extra.kind not in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
        ):
            raise DefinitionError(
                f"sensor '{sensor_name}': parameter '{extra.name}' would get no value",
                "a sensor function takes its context only (Dagster resources are not supported)",
            )
    if not params or params[0].kind == inspect.Parameter.VAR_KEYWORD:
        return None, False
    return params[0].name, params[0].kind == inspect.Parameter.KEYWORD_ONLY


def _monitored_name(monitored: JobDefinition | str | CodeLocationSelector) -> str:
    if isinstance(monitored, JobDefinition):
        return monitored.name
    if isinstance(monitored, CodeLocationSelector):
        return f"{monitored.location_name}:*"
    return monitored


def run_status_sensor(
    run_status: RunStatus | Sequence[RunStatus],
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
    monitored_tags: Mapping[str, str] | None = None,
) -> Callable[[SensorFn], RunStatusSensorDefinition]:
    """Decorate `fn(context)` to be called once for every run that reaches `run_status` (one
    status or a list); `monitored_tags` keeps only runs carrying all these tags."""

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
            monitored_tags=monitored_tags,
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
    monitored_tags: Mapping[str, str] | None = None,
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
        monitored_tags=monitored_tags,
    )
    return decorate(fn) if fn is not None else decorate
