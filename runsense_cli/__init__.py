"""runsense: jobs made of ops, and run status sensors that react when their runs end.

The public API mirrors Dagster's run status sensors, so `from dagster import ...` snippets work
with only the import line changed.
"""

from .definitions import Definitions, JobDefinition, OpDefinition, job, op
from .errors import RunsenseError
from .runs import DagsterRunStatus, RunRecord, RunStatus
from .sensors import (
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

__version__ = "0.1.0"

__all__ = [
    "DagsterRunStatus",
    "DefaultSensorStatus",
    "Definitions",
    "JobDefinition",
    "OpDefinition",
    "PermanentReactionError",
    "RunFailureSensorContext",
    "RunRecord",
    "RunRequest",
    "RunStatus",
    "RunStatusSensorContext",
    "RunStatusSensorDefinition",
    "RunsenseError",
    "SkipReason",
    "__version__",
    "build_run_status_sensor_context",
    "job",
    "make_slack_on_run_failure_sensor",
    "op",
    "run_failure_sensor",
    "run_status_sensor",
]


def __getattr__(name: str) -> object:
    # slack_sdk is imported only by projects that use the Slack sensor.
    if name == "make_slack_on_run_failure_sensor":
        from .slack import make_slack_on_run_failure_sensor

        return make_slack_on_run_failure_sensor
    raise AttributeError(f"module 'runsense_cli' has no attribute {name!r}")
