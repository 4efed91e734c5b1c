"""runsense: jobs made of ops, and run status sensors that react when their runs end.

The public API mirrors Dagster's run status sensors, so `from dagster import ...` snippets work
with only the import line changed. Names are imported on first use (PEP 562), so `runsense --help`
does not pay for SQLite, logging, smtplib or slack_sdk.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Definitions": "definitions",
    "JobDefinition": "jobs",
    "OpDefinition": "jobs",
    "job": "jobs",
    "op": "jobs",
    "RunsenseError": "errors",
    "DagsterRunStatus": "runs",
    "RunRecord": "runs",
    "RunStatus": "runs",
    "CodeLocationSelector": "sensors",
    "DefaultSensorStatus": "sensors",
    "PermanentReactionError": "sensors",
    "RunFailureSensorContext": "sensor_context",
    "RunRequest": "sensors",
    "RunStatusSensorContext": "sensor_context",
    "RunStatusSensorDefinition": "sensors",
    "SkipReason": "sensors",
    "build_run_status_sensor_context": "sensor_context",
    "run_failure_sensor": "sensors",
    "run_status_sensor": "sensors",
    "make_slack_on_run_failure_sensor": "slack",
    "EnvVar": "secrets",
    "make_email_on_run_failure_sensor": "email_alerts",
    "run_overdue_sensor": "page_sensors",
    "run_status_page_sensor": "page_sensors",
    "SensorPage": "page_sensors",
    "SensorStateStore": "sensor_state",
    "RunOverdueSensorContext": "sensor_context",
    "Incident": "records",
}

__all__ = [
    "CodeLocationSelector",
    "DagsterRunStatus",
    "DefaultSensorStatus",
    "Definitions",
    "EnvVar",
    "Incident",
    "JobDefinition",
    "OpDefinition",
    "PermanentReactionError",
    "RunFailureSensorContext",
    "RunOverdueSensorContext",
    "RunRecord",
    "RunRequest",
    "RunStatus",
    "RunStatusSensorContext",
    "RunStatusSensorDefinition",
    "RunsenseError",
    "SensorPage",
    "SensorStateStore",
    "SkipReason",
    "__version__",
    "build_run_status_sensor_context",
    "job",
    "make_email_on_run_failure_sensor",
    "make_slack_on_run_failure_sensor",
    "op",
    "run_failure_sensor",
    "run_overdue_sensor",
    "run_status_page_sensor",
    "run_status_sensor",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'runsense_cli' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from .definitions import Definitions
    from .email_alerts import make_email_on_run_failure_sensor
    from .errors import RunsenseError
    from .jobs import JobDefinition, OpDefinition, job, op
    from .page_sensors import SensorPage, run_overdue_sensor, run_status_page_sensor
    from .records import Incident
    from .runs import DagsterRunStatus, RunRecord, RunStatus
    from .secrets import EnvVar
    from .sensor_context import RunOverdueSensorContext
    from .sensor_state import SensorStateStore
    from .sensors import (
        CodeLocationSelector,
        DefaultSensorStatus,
        PermanentReactionError,
        RunFailureSensorContext,
        RunRequest,
        RunStatusSensorContext,
        RunStatusSensorDefinition,
        SkipReason,
        build_run_status_sensor_context,
        run_failure_sensor,
        run_status_sensor,
    )
    from .slack import make_slack_on_run_failure_sensor
