"""The daemon and run workers as real processes: reactions, signals, one daemon per home, dead workers."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest

from tests.processes import cli, query, start_daemon, wait_for_log, wait_until

pytestmark = pytest.mark.slow

PROJECT = """
import time
from runsense_cli import (
    DefaultSensorStatus, Definitions, RunRequest, RunStatus, job, op,
    run_failure_sensor, run_status_sensor,
)

@op
def quick():
    return 1

@job
def quick_job():
    quick()

@op
def sleepy():
    time.sleep(60)

@job
def sleepy_job():
    sleepy()

@run_status_sensor(run_status=RunStatus.SUCCESS, monitored_jobs=[quick_job],
                   default_status=DefaultSensorStatus.RUNNING)
def on_quick(context):
    return None

@run_status_sensor(run_status=RunStatus.STARTED, monitored_jobs=[quick_job], request_job=sleepy_job,
                   default_status=DefaultSensorStatus.RUNNING)
def start_sleepy(context):
    if context.dagster_run.tags.get("sleepy") == "yes":
        return RunRequest(run_key=context.dagster_run.run_id)

@run_failure_sensor(default_status=DefaultSensorStatus.RUNNING)
def on_failure(context):
    return None

defs = Definitions(jobs=[quick_job, sleepy_job], sensors=[on_quick, start_sleepy, on_failure])
"""


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    path = tmp_path / "daemon_project.py"
    path.write_text(PROJECT)
    return path


@pytest.fixture
def daemon(home, proj, tmp_path):
    """A running daemon with a short pass interval; stopped (SIGKILL if need be) after the test."""
    log = tmp_path / "daemon.log"
    assert cli(home, proj, "sensor", "list").returncode == 0  # registers RUNNING sensors now
    process = start_daemon(home, proj, log, "--interval", "0.1")
    wait_for_log(log, "daemon started")
    yield process, log
    if process.poll() is None:
        process.kill()
        process.wait()
    # Workers of runs still in progress (the sleepy ones) would outlive the test.
    in_progress = "SELECT worker_pid FROM runs WHERE status IN ('STARTING', 'STARTED')"
    for (pid,) in query(home, in_progress):
        with contextlib.suppress(ProcessLookupError, TypeError):
            os.kill(pid, signal.SIGKILL)


def test_the_daemon_reacts_to_a_cli_run_within_a_second(home, proj, daemon):
    """Given a daemon, when `runsense run` succeeds, then its reaction is stored within 1 s."""
    result = cli(home, proj, "run", "quick_job")
    assert result.returncode == 0, result.stderr
    rows = wait_until(
        lambda: query(
            home,
            "SELECT e.timestamp, r.created_at FROM reactions r JOIN sensors s ON s.id = r.sensor_id"
            " JOIN events e ON e.id = r.event_id WHERE s.name = 'on_quick'",
        ),
        timeout=10,
    )
    [(ended, reacted)] = rows
    assert 0 <= reacted - ended < 1.0


def test_sigterm_stops_the_daemon_within_5s_with_exit_0(daemon):
    process, log = daemon
    process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    assert process.wait(timeout=5) == 0
    assert time.monotonic() - started < 5
    assert "daemon stopping" in log.read_text()


def test_sigint_stops_the_daemon_with_exit_0(daemon):
    process, _ = daemon
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=5) == 0


def test_a_second_daemon_exits_2_naming_the_first(home, proj, daemon):
    process, _ = daemon
    second = cli(home, proj, "daemon")
    assert second.returncode == 2
    assert f"already running on this home (pid {process.pid})" in second.stderr
    assert "Traceback" not in second.stderr


def test_a_killed_run_worker_fails_its_run_and_fires_failure_sensors(home, proj, daemon):
    """Given a requested run in a worker, when the worker is SIGKILLed, then FAILURE and a reaction."""
    assert cli(home, proj, "run", "quick_job", "--tag", "sleepy=yes").returncode == 0
    [(run_id, pid)] = wait_until(
        lambda: query(
            home,
            "SELECT run_id, worker_pid FROM runs WHERE job_name = 'sleepy_job' AND status = 'STARTED'",
        )
    )
    os.kill(pid, signal.SIGKILL)
    [(status,)] = wait_until(
        lambda: query(
            home, "SELECT status FROM runs WHERE run_id = ? AND status = 'FAILURE'", run_id
        )
    )
    assert status == "FAILURE"
    [(message,)] = query(
        home, "SELECT message FROM events WHERE run_id = ? AND event_type = 'RUN_FAILURE'", run_id
    )
    assert f"Run worker (pid {pid}) was killed by SIGKILL" in message
    wait_until(
        lambda: query(
            home,
            "SELECT 1 FROM reactions r JOIN sensors s ON s.id = r.sensor_id"
            " WHERE s.name = 'on_failure' AND r.run_id = ?",
            run_id,
        )
    )


def test_workers_outlive_a_stopped_daemon_and_are_adopted_by_the_next(home, proj, daemon, tmp_path):
    process, _ = daemon
    assert cli(home, proj, "run", "quick_job", "--tag", "sleepy=yes").returncode == 0
    [(run_id, pid)] = wait_until(
        lambda: query(
            home,
            "SELECT run_id, worker_pid FROM runs WHERE job_name = 'sleepy_job' AND status = 'STARTED'",
        )
    )
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=5) == 0
    os.kill(pid, 0)  # the worker still runs
    log = tmp_path / "second.log"
    second = start_daemon(home, proj, log, "--interval", "0.1")
    try:
        wait_for_log(log, "daemon started")
        time.sleep(0.5)
        assert query(home, "SELECT status FROM runs WHERE run_id = ?", run_id) == [("STARTED",)]
        os.kill(pid, signal.SIGKILL)  # now it dies while adopted
        wait_until(
            lambda: query(
                home, "SELECT 1 FROM runs WHERE run_id = ? AND status = 'FAILURE'", run_id
            )
        )
    finally:
        second.kill()
        second.wait()
