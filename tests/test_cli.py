"""The command line through Typer's CliRunner: what a user sees, exit codes, stored state."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from runsense_cli.cli import app
from runsense_cli.storage import SCHEMA_VERSION
from tests.helpers import PROJECT, db_dump

runner = CliRunner()


@pytest.fixture
def proj(project) -> Path:
    return project(PROJECT)


def rs(proj: Path, *args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, ["-f", str(proj), *args], env=env)


def test_run_shows_each_op_and_exits_0(proj):
    result = rs(proj, "run", "ok_job", "--tag", "team=data")
    assert result.exit_code == 0, result.output
    assert "▶ ok_op" in result.stdout and "✔ ok_op" in result.stdout
    assert "SUCCESS" in result.stdout
    [run] = json.loads(rs(proj, "runs", "list", "--json").stdout)
    assert run["tags"]["team"] == "data" and run["status"] == "SUCCESS"


def test_a_failing_run_exits_1_and_names_the_op_and_error(proj):
    result = rs(proj, "run", "bad_job")
    assert result.exit_code == 1
    assert "✘ boom failed: ValueError: boom" in result.stdout
    assert "op 'boom' raised ValueError: boom" in result.stdout


def test_config_file_and_inline_json_are_merged(proj, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('[ops.status_report.config]\njob_name = "from-file"\n')
    result = rs(proj, "run", "status_reporting_job", "--config", str(config))
    assert result.exit_code == 0, result.output
    inline = '{"ops": {"status_report": {"config": {"job_name": "inline"}}}}'
    result = rs(
        proj, "run", "status_reporting_job", "--config", str(config), "--config-json", inline
    )
    assert result.exit_code == 0, result.output
    runs = json.loads(rs(proj, "runs", "list", "--json").stdout)
    names = [r["run_config"]["ops"]["status_report"]["config"]["job_name"] for r in runs]
    assert names == ["inline", "from-file"]


def test_runs_list_json_fields_and_filters(proj):
    rs(proj, "run", "ok_job")
    rs(proj, "run", "bad_job")
    runs = json.loads(rs(proj, "runs", "list", "--json").stdout)
    assert [r["job_name"] for r in runs] == ["bad_job", "ok_job"]
    assert set(runs[0]) >= {
        "run_id", "job_name", "status", "location", "tags", "run_config",
        "created_at", "start_time", "end_time", "parent_run_id", "root_run_id",
    }  # fmt: skip
    assert runs[0]["created_at"].endswith("Z") and len(runs[0]["run_id"]) == 36
    failed = json.loads(rs(proj, "runs", "list", "--status", "failure", "--json").stdout)
    assert [r["job_name"] for r in failed] == ["bad_job"]
    assert len(json.loads(rs(proj, "runs", "list", "--limit", "1", "--json").stdout)) == 1
    table = rs(proj, "runs", "list").stdout
    assert runs[0]["run_id"][:8] in table and "FAILURE" in table and "cli" in table


def test_runs_show_by_prefix_with_events(proj):
    rs(proj, "run", "bad_job")
    [run] = json.loads(rs(proj, "runs", "list", "--json").stdout)
    shown = rs(proj, "runs", "show", run["run_id"][:6])
    assert shown.exit_code == 0
    assert "STEP_FAILURE" in shown.stdout and "ValueError: boom" in shown.stdout
    document = json.loads(rs(proj, "runs", "show", run["run_id"][:6], "--json").stdout)
    assert [e["event_type"] for e in document["events"]][-1] == "RUN_FAILURE"
    assert set(document["events"][0]) >= {
        "event_id",
        "event_type",
        "timestamp",
        "message",
        "step_key",
    }


def test_jobs_lists_jobs_and_ops(proj):
    result = rs(proj, "jobs", "--json")
    jobs = {j["name"]: j["ops"] for j in json.loads(result.stdout)}
    assert jobs["ok_job"] == ["ok_op"] and "status_reporting_job" in jobs


def test_sensor_start_tick_and_requested_runs_in_workers(proj):
    """Given a started sensor and a success, when ticked, then the requested run runs in a worker."""
    assert rs(proj, "sensor", "start", "report_status_sensor").exit_code == 0
    rs(proj, "run", "ok_job")
    result = rs(proj, "sensor", "tick", "report_status_sensor")
    assert result.exit_code == 0, result.output
    assert "1 run(s) requested" in result.stdout
    assert "status_reporting_job SUCCESS" in result.stdout
    runs = json.loads(rs(proj, "runs", "list", "--json").stdout)
    requested = next(r for r in runs if r["job_name"] == "status_reporting_job")
    assert requested["status"] == "SUCCESS"
    assert requested["tags"]["runsense/sensor"] == "report_status_sensor"
    ticks = json.loads(rs(proj, "sensor", "ticks", "report_status_sensor", "--json").stdout)
    assert set(ticks[0]) >= {
        "tick_id", "sensor", "status", "started_at", "duration_s", "events_scanned",
        "reactions", "run_ids", "skip_reasons", "errors", "cursor_before", "cursor_after",
    }  # fmt: skip
    assert ticks[0]["run_ids"] == [requested["run_id"]]


def test_sensor_list_json_and_lag(proj):
    rs(proj, "sensor", "start", "on_failure")
    rs(proj, "run", "bad_job")
    sensors = {s["name"]: s for s in json.loads(rs(proj, "sensor", "list", "--json").stdout)}
    assert sensors["on_failure"]["status"] == "RUNNING" and sensors["on_failure"]["lag"] == 1
    assert sensors["report_status_sensor"]["status"] == "STOPPED"
    assert set(sensors["on_failure"]) >= {
        "name",
        "location",
        "run_status",
        "status",
        "cursor",
        "lag",
        "last_tick",
    }


def test_stop_then_start_reports_waiting_events_and_from_now_skips(proj):
    rs(proj, "sensor", "start", "on_failure")
    rs(proj, "sensor", "stop", "on_failure")
    rs(proj, "run", "bad_job")
    rs(proj, "run", "bad_job")
    started = rs(proj, "sensor", "start", "on_failure")
    assert "2 FAILURE event(s) waiting" in started.stdout
    rs(proj, "sensor", "stop", "--all")
    rs(proj, "sensor", "start", "on_failure", "--from-now")
    tick = rs(proj, "sensor", "tick", "on_failure")
    assert "0 reaction(s)" in tick.stdout


def test_ticking_a_stopped_sensor_is_an_error(proj):
    result = rs(proj, "sensor", "tick", "on_failure")
    assert result.exit_code == 2
    assert "sensor 'on_failure' is stopped" in result.stderr


def test_failures_and_retry(proj):
    rs(proj, "sensor", "start", "always_raises")
    rs(proj, "run", "bad_job")
    tick = rs(proj, "sensor", "tick", "always_raises")
    assert tick.exit_code == 1 and "RuntimeError: sensor broke" in tick.stdout
    [failure] = json.loads(rs(proj, "sensor", "failures", "--json").stdout)
    assert failure["state"] == "DEAD" and failure["attempts"] == 1
    assert "RuntimeError: sensor broke" in failure["error"]
    assert rs(proj, "sensor", "retry", "always_raises").exit_code == 2
    retried = rs(proj, "sensor", "retry", "always_raises", "--event", str(failure["event_id"]))
    assert retried.exit_code == 0 and "Queued 1 reaction" in retried.stdout
    tick = rs(proj, "sensor", "tick", "always_raises", env={"RUNSENSE_TEST_FIXED": "1"})
    assert tick.exit_code == 0, tick.output
    assert json.loads(rs(proj, "sensor", "failures", "--json").stdout) == []


def test_preview_prints_and_stores_nothing(proj, home):
    rs(proj, "run", "ok_job")
    [run] = json.loads(rs(proj, "runs", "list", "--json").stdout)
    before = db_dump(home)
    result = rs(proj, "sensor", "preview", "report_status_sensor", "--run", run["run_id"][:8])
    assert result.exit_code == 0, result.output
    assert "would request a run of status_reporting_job" in result.stdout
    assert '"job_name": "ok_job"' in result.stdout
    assert "function for real" in result.stderr
    assert db_dump(home) == before


def test_cursor_show_set_and_from_now(proj):
    rs(proj, "sensor", "start", "on_failure")
    rs(proj, "run", "bad_job")
    shown = rs(proj, "sensor", "cursor", "on_failure")
    assert "1 FAILURE event(s) waiting" in shown.stdout
    moved = rs(proj, "sensor", "cursor", "on_failure", "--from-now")
    assert "0 FAILURE event(s) waiting" in moved.stdout
    assert rs(proj, "sensor", "cursor", "on_failure", "--set", "1").exit_code == 0
    assert "1 FAILURE event(s) waiting" in rs(proj, "sensor", "cursor", "on_failure").stdout


def test_version_and_help():
    assert runner.invoke(app, ["--version"]).stdout.startswith("runsense ")
    result = runner.invoke(app, ["--help"])
    for command in ("run", "jobs", "runs", "sensor", "daemon"):
        assert f"  {command}" in result.stdout


def test_verbose_shows_the_traceback_of_a_broken_module(project):
    broken = project("import nothing_here_at_all\n")
    quiet = runner.invoke(app, ["-f", str(broken), "jobs"])
    loud = runner.invoke(app, ["-f", str(broken), "-v", "jobs"])
    assert quiet.exit_code == loud.exit_code == 2
    assert "Traceback" not in quiet.output and "Traceback" in loud.stderr


def test_newer_database_is_refused(proj, home):
    rs(proj, "run", "ok_job")
    connection = sqlite3.connect(home / "runsense.db")
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.close()
    result = rs(proj, "runs", "list")
    assert result.exit_code == 2 and "newer than this runsense" in result.stderr
