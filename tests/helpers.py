"""Shared test helpers: a small project with jobs and sensors, and database snapshots.

- `PROJECT`: the source of a user module (write it with conftest's `project` fixture). Jobs:
  `ok_job` (ops `ok_op` → `double`), `bad_job` (op `boom` raises `ValueError: boom`), and
  `status_reporting_job` (op `status_report`, config `{"job_name": str}`, not in `jobs=` but added
  as the request job of `report_status_sensor`). Sensors, all STOPPED by default:
  `report_status_sensor` (the seed's: SUCCESS → requests `status_reporting_job`, skips its own
  runs), `on_failure` (returns None), and `always_raises` (FAILURE, `max_retries=0`, raises
  `RuntimeError: sensor broke` unless `RUNSENSE_TEST_FIXED` is set in the environment).
- `db_dump(home)`: the database's logical content (SQL dump plus `user_version`), or None.
- `db_snapshot(home)`: `db_dump`, or the raw bytes when the file is not a readable database, so a
  test can assert that a command left even a corrupt file alone.
"""

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

@op
def double(n):
    return n * 2

@job
def ok_job():
    double(ok_op())

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
    """The database as SQL statements plus its schema version, or None when there is no file.

    `iterdump()` leaves out `PRAGMA user_version`, so it is added as the first line.
    """
    path = home / "runsense.db"
    if not path.exists():
        return None
    connection = sqlite3.connect(path)
    try:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        return [f"PRAGMA user_version = {version}", *connection.iterdump()]
    finally:
        connection.close()


def db_snapshot(home: Path) -> list[str] | bytes | None:
    """`db_dump(home)`, or the file's bytes when SQLite cannot read it (a corrupt database)."""
    try:
        return db_dump(home)
    except sqlite3.DatabaseError:
        return (home / "runsense.db").read_bytes()


def claim(storage, run_id: str):
    """Take a QUEUED run the way a launcher and its worker do (claim, then register); the run."""
    import os

    from runsense_cli.identity import ProcessId

    [(_, token)] = storage.claim_queued_runs("test/1/1", 1, [run_id])
    run = storage.register_worker(run_id, token, str(ProcessId.of(os.getpid())))
    assert run is not None
    return run
