"""`runsense status` as a health check, and the daemon reloading the project (SPEC §12)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.processes import cli, start_daemon, stop, wait_for_log, wait_until

PROJECT = """
from runsense_cli import DagsterRunStatus, DefaultSensorStatus, Definitions, job, op
from runsense_cli import run_status_sensor

@op
def one():
    pass

@job
def one_job():
    one()

@run_status_sensor(run_status=DagsterRunStatus.SUCCESS, default_status=DefaultSensorStatus.RUNNING)
def first_sensor(context):
    context.log.info("first saw it")
{extra}
defs = Definitions(jobs=[one_job], sensors=[{sensors}])
"""
SECOND = """
@run_status_sensor(run_status=DagsterRunStatus.SUCCESS, default_status=DefaultSensorStatus.RUNNING)
def second_sensor(context):
    context.log.info("second saw it")
"""


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    path = tmp_path / "proj" / "statusdefs.py"
    path.parent.mkdir()
    path.write_text(PROJECT.format(extra="", sensors="first_sensor"))
    return path


def status(home: Path, proj: Path) -> tuple[int, dict]:
    done = cli(home, proj, "status", "--json")
    return done.returncode, json.loads(done.stdout)


def test_status_exits_1_when_sensors_run_without_a_daemon_and_shows_reloads(home, proj, tmp_path):
    code, report = status(home, proj)
    assert code == 1 and report["healthy"] is False and report["daemons"] == []
    assert [s["name"] for s in report["sensors"]] == ["first_sensor"]
    listed = cli(home, proj, "sensor", "list")
    assert listed.stderr.count("\n") == 1 and "No runsense daemon is running" in listed.stderr

    log = tmp_path / "daemon.log"
    daemon = start_daemon(home, proj, log)
    try:
        wait_for_log(log, "daemon started")
        code, report = wait_until(lambda: (r := status(home, proj))[1]["daemons"] and r)
        assert code == 0 and report["healthy"] is True
        (only,) = report["daemons"]
        assert only["alive"] and only["pid"] == daemon.pid and only["code_current"] is True
        assert "No runsense daemon" not in cli(home, proj, "sensor", "list").stderr

        # A syntax error: the old code keeps running, one line says so, status shows it.
        proj.write_text(PROJECT.format(extra="def broken(:\n", sensors="first_sensor"))
        wait_for_log(log, "reload failed, keeping the code loaded before", timeout=5)
        assert cli(home, proj, "run", "one_job").returncode == 2  # the project is broken
        code, report = status(home, proj)  # status still answers, from the database
        assert code == 0 and "syntax error" in report["daemons"][0]["reload_error"]
        assert report["daemons"][0]["alive"]
        proj.write_text(
            PROJECT.format(extra="", sensors="first_sensor").replace("pass", "return 1")
        )
        # A new sensor is picked up without a restart, within 2 s.
        proj.write_text(PROJECT.format(extra=SECOND, sensors="first_sensor, second_sensor"))
        wait_for_log(log, "project reloaded; sensors: first_sensor, second_sensor", timeout=5)
        assert cli(home, proj, "run", "one_job").returncode == 0
        wait_for_log(log, "second saw it")
        code, report = status(home, proj)
        assert report["daemons"][0]["code_current"] is True
        assert report["daemons"][0]["reload_error"] is None
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(10)
        finally:
            stop(daemon)
    assert log.read_text().count("reload failed") == 1
