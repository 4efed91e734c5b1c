"""Sensors beyond one-run-at-a-time: a sensor that reacts to a whole page of runs at once
(`run_status_page_sensor`, what digests and threaded alerts are built on) and
`run_overdue_sensor` (runs over `runsense/max_runtime` or `runsense/max_queue_time`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .jobs import JobDefinition
from .runs import EventType, RunStatus
from .sensor_context import RunStatusSensorContext
from .sensor_state import SensorStateStore
from .sensors import DefaultSensorStatus, RunStatusSensorDefinition, SensorFn


class SensorPage:
    """What a page sensor's function receives: every run of this page, in event order.

    `contexts` are ordinary run contexts (with `incident` and `state`); `state` is the sensor's
    durable state, committed with the page. Each context's reaction is recorded as if its own
    function had returned None, unless `set_result(context, value)` gives another outcome (a
    `SkipReason`, a `RunRequest`, a list of them, or an exception: that run's reaction fails
    and is retried, or parked at once for a `PermanentReactionError`). If the function raises,
    every run of the page gets a failed reaction; retries come back as one page.

    In `runsense sensor preview`, `preview` is True: the function should call
    `would_send(message)` instead of sending, and the preview prints those messages as JSON
    (state writes are kept in memory only).
    """

    def __init__(
        self,
        sensor_name: str,
        contexts: Sequence[RunStatusSensorContext],
        state: SensorStateStore,
        logger: logging.Logger | None = None,
        preview: list[Any] | None = None,
    ) -> None:
        self.sensor_name = sensor_name
        self.preview = preview is not None
        self._sent = preview
        self.contexts = list(contexts)
        self.state = state
        self.log = logger or logging.getLogger(f"runsense.sensor.{sensor_name}")
        self._results: dict[int, Any] = {}

    def set_result(self, context: RunStatusSensorContext, result: Any) -> None:
        """What this run's reaction amounts to (as a per-run function's return value would)."""
        self._results[id(context)] = result

    def would_send(self, message: Any) -> None:
        """In a preview, record `message` (JSON-able) as what this page would send."""
        if self._sent is None:
            raise RuntimeError("would_send() is for previews: send for real unless page.preview")
        self._sent.append(message)

    def result_for(self, context: RunStatusSensorContext) -> Any:
        return self._results.get(id(context))

    def __len__(self) -> int:
        return len(self.contexts)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.contexts)


def run_status_page_sensor(
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
) -> Callable[[Callable[[SensorPage], Any]], RunStatusSensorDefinition]:
    """Like `run_status_sensor`, but `fn(page: SensorPage)` is called once per page of runs (up
    to 1,000), so it can send one digest instead of many messages, or thread replies using
    `page.state`."""

    def decorate(fn: Callable[[SensorPage], Any]) -> RunStatusSensorDefinition:
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
            page_fn=True,
        )

    return decorate


def run_overdue_sensor(
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
    """Decorate `fn(context)` to be called once per RUN_OVERDUE event: a run still QUEUED after
    its `runsense/max_queue_time`, or in progress after its `runsense/max_runtime` (seconds).
    The context adds `phase` ("QUEUED"/"STARTED") and `overdue_seconds`."""

    def decorate(fn: SensorFn) -> RunStatusSensorDefinition:
        return RunStatusSensorDefinition(
            fn,
            RunStatus.STARTED,
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
            event_types=(EventType.RUN_OVERDUE,),
        )

    return decorate
