"""Shared test helpers: a project source with jobs and sensors, and a logical database dump."""

from __future__ import annotations

import sqlite3
from pathlib import Path

PROJECT = """
import os
from runsense_cli import (
    DagsterRunStatus, Definitions, RunRequest, SkipReason, job, op,
    run_failure_sensor, run_status_sensor,
)

@op
def ok_op():
    return 1

@job
def ok_job():
    ok_op()

@op
def boom():
    raise ValueError("boom")

@job
def bad_job():
    boom()

@op(config_schema={"job_name": str})
def status_report(context):
    context.log.info("reporting " + context.op_config["job_name"])

@job
def status_reporting_job():
    status_report()

@run_status_sensor(run_status=DagsterRunStatus.SUCCESS, request_job=status_reporting_job)
def report_status_sensor(context):
    if context.dagster_run.job_name != status_reporting_job.name:
        run_config = {"ops": {"status_report": {"config": {"job_name": context.dagster_run.job_name}}}}
        return RunRequest(run_key=None, run_config=run_config)
    return SkipReason("Don't report status of status_reporting_job")

@run_failure_sensor
def on_failure(context):
    return None

@run_status_sensor(run_status=DagsterRunStatus.FAILURE, max_retries=0)
def always_raises(context):
    if os.environ.get("RUNSENSE_TEST_FIXED"):
        return None
    raise RuntimeError("sensor broke")

defs = Definitions(jobs=[ok_job, bad_job], sensors=[report_status_sensor, on_failure, always_raises])
"""


def db_dump(home: Path) -> list[str] | None:
    """The database's content as SQL, or None when there is no database file."""
    path = home / "runsense.db"
    if not path.exists():
        return None
    connection = sqlite3.connect(path)
    try:
        return list(connection.iterdump())
    finally:
        connection.close()
