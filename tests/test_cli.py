"""The command line through Typer's CliRunner: what a user sees, exit codes, stored state.

Run workers started by `sensor tick` are real subprocesses (`python -m runsense_cli _worker`).
"""

from __future__ import annotations

import json
import logging
import os
import stat
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from runsense_cli import __version__
from runsense_cli.cli import app
from tests.helpers import PROJECT, db_dump

runner = CliRunner()

RUN_FIELDS = {
    "run_id", "job_name", "status", "location", "tags", "run_config",
    "created_at", "start_time", "end_time", "parent_run_id", "root_run_id",
}  # fmt: skip
EVENT_FIELDS = {"event_id", "event_type", "timestamp", "message", "step_key"}
SENSOR_FIELDS = {"name", "location", "run_status", "status", "cursor", "lag", "last_tick"}
TICK_FIELDS = {
    "tick_id", "sensor", "status", "started_at", "duration_s", "events_scanned",
    "reactions", "run_ids", "skip_reasons", "errors", "cursor_before", "cursor_after",
    "runs_requested", "skipped", "failures",
}  # fmt: skip
FAILURE_FIELDS = {"sensor", "event_id", "run_id", "attempts", "state", "next_attempt_at", "error"}


@pytest.fixture
def proj(project) -> Path:
    return project(PROJECT)


def rs(proj: Path, *args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, ["-f", str(proj), *args], env=env)


def ok(result) -> str:
    """The stdout of a command that must have succeeded."""
    assert result.exit_code == 0, result.output
    return result.stdout


def as_json(result):
    """The one JSON document a `--json` command printed; nothing else may be on stdout."""
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def runs_of(proj: Path) -> list[dict]:
    return as_json(rs(proj, "runs", "list", "--json"))


def sensors_of(proj: Path) -> dict[str, dict]:
    return {s["name"]: s for s in as_json(rs(proj, "sensor", "list", "--json"))}


def utc(text: str) -> datetime:
    """Parse a `--json` time, which must be ISO 8601 in UTC with a `Z`."""
    assert text.endswith("Z"), text
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert moment.utcoffset() == timedelta(0)
    return moment


def error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


# -- run -----------------------------------------------------------------------------------


def test_run_shows_each_op_start_and_end_in_order_and_exits_0(proj):
    out = ok(rs(proj, "run", "ok_job"))
    lines = [line.strip() for line in out.splitlines()]
    starts = [i for i, line in enumerate(lines) if line.startswith(("▶", "✔"))]
    assert [lines[i].split()[:2] for i in starts] == [
        ["▶", "ok_op"], ["✔", "ok_op"], ["▶", "double"], ["✔", "double"],
    ]  # fmt: skip
    [run] = runs_of(proj)
    assert run["run_id"][:8] in lines[0] and "ok_job" in lines[0]
    assert lines[-1].startswith(f"Run {run['run_id'][:8]} SUCCESS in ")
    assert run["status"] == "SUCCESS" and run["tags"]["runsense/launched_by"] == "cli"


def test_a_failing_run_exits_1_naming_the_op_and_error_without_traceback(proj):
    result = rs(proj, "run", "bad_job")
    assert result.exit_code == 1
    assert "✘ boom failed: ValueError: boom" in result.stdout
    assert "op 'boom' raised ValueError: boom" in result.stdout
    assert "Traceback" not in result.output
    assert runs_of(proj)[0]["status"] == "FAILURE"


def test_a_failing_run_with_verbose_shows_the_op_traceback(proj):
    result = rs(proj, "-v", "run", "bad_job")
    assert result.exit_code == 1
    assert "Traceback" in result.stdout and 'raise ValueError("boom")' in result.stdout


CONFIGURED = """
from runsense_cli import Definitions, job, op

@op(config_schema={"name": str, "count": int})
def first(context):
    context.log.info(f"first {context.op_config['name']} x{context.op_config['count']}")

@op(config_schema=float)
def second(context):
    context.log.info(f"second {context.op_config}")

@job
def configured():
    first()
    second()

defs = Definitions(jobs=[configured])
"""


@pytest.mark.parametrize("suffix", ["json", "toml"])
def test_config_file(project, tmp_path, suffix):
    path = tmp_path / f"run.{suffix}"
    if suffix == "json":
        path.write_text(
            json.dumps(
                {"ops": {"first": {"config": {"name": "a", "count": 2}}, "second": {"config": 1.5}}}
            )
        )
    else:
        path.write_text('[ops.first.config]\nname = "a"\ncount = 2\n[ops.second]\nconfig = 1.5\n')
    proj = project(CONFIGURED)
    out = ok(rs(proj, "run", "configured", "--config", str(path)))
    assert "first a x2" in out and "second 1.5" in out
    assert runs_of(proj)[0]["run_config"] == {
        "ops": {"first": {"config": {"name": "a", "count": 2}}, "second": {"config": 1.5}}
    }


def test_config_json_alone_and_deep_merged_over_the_file(project, tmp_path):
    proj = project(CONFIGURED)
    whole = (
        '{"ops": {"first": {"config": {"name": "inline", "count": 1}}, "second": {"config": 0}}}'
    )
    assert "first inline x1" in ok(rs(proj, "run", "configured", "--config-json", whole))
    path = tmp_path / "base.toml"
    path.write_text('[ops.first.config]\nname = "file"\ncount = 1\n[ops.second]\nconfig = 2.0\n')
    override = '{"ops": {"first": {"config": {"count": 9}}}}'
    out = ok(rs(proj, "run", "configured", "--config", str(path), "--config-json", override))
    assert "first file x9" in out and "second 2.0" in out
    assert runs_of(proj)[0]["run_config"]["ops"] == {
        "first": {"config": {"name": "file", "count": 9}},
        "second": {"config": 2.0},
    }


def test_tags_are_stored_on_the_run(proj):
    ok(rs(proj, "run", "ok_job", "--tag", "team=data", "-t", "expr=a=b", "--tag", "empty="))
    tags = runs_of(proj)[0]["tags"]
    assert tags["team"] == "data" and tags["expr"] == "a=b" and tags["empty"] == ""


def test_home_option_wins_over_the_environment_and_is_private(proj, tmp_path, home):
    other = tmp_path / "other-home"
    ok(rs(proj, "--home", str(other), "run", "ok_job"))
    assert not home.exists()
    assert stat.S_IMODE(other.stat().st_mode) == 0o700
    assert stat.S_IMODE((other / "runsense.db").stat().st_mode) == 0o600
    assert len(as_json(rs(proj, "--home", str(other), "runs", "list", "--json"))) == 1


def test_version_and_help():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout == f"runsense {__version__}\n"
    result = runner.invoke(app, ["--help"])
    for command in ("run", "jobs", "runs", "sensor", "daemon"):
        assert f"  {command} " in result.stdout


def test_verbose_shows_the_traceback_of_a_broken_module(project):
    broken = project("import nothing_here_at_all\n")
    quiet = runner.invoke(app, ["-f", str(broken), "jobs"])
    loud = runner.invoke(app, ["-f", str(broken), "-v", "jobs"])
    assert quiet.exit_code == loud.exit_code == 2
    assert "Traceback" not in quiet.output
    assert quiet.stderr.startswith("Error: importing") and "nothing_here_at_all" in quiet.stderr
    assert "Traceback" in loud.stderr and "import nothing_here_at_all" in loud.stderr
    assert loud.stderr.strip().splitlines()[-1] == quiet.stderr.strip()


# -- jobs ----------------------------------------------------------------------------------


def test_jobs_table_and_json(proj):
    table = ok(rs(proj, "jobs"))
    assert "ok_op → double" in table and "bad_job" in table
    assert "status_reporting_job" in table  # a sensor's request_job is added to the jobs
    jobs = {j["name"]: j for j in as_json(rs(proj, "jobs", "--json"))}
    assert set(jobs) == {"ok_job", "bad_job", "status_reporting_job"}
    assert jobs["ok_job"]["ops"] == ["ok_op", "double"]
    assert jobs["ok_job"]["location"] == proj.stem


# -- runs ----------------------------------------------------------------------------------


@pytest.fixture
def far_from_utc():
    """Local time 5:30 ahead of UTC, so a local time passed off as UTC shows."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "XYZ-5:30"
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()


def test_runs_list_json_has_exactly_the_spec_fields_in_utc(proj, far_from_utc):
    before = datetime.now(timezone.utc)
    ok(rs(proj, "run", "ok_job"))
    result = rs(proj, "runs", "list", "--json")
    [run] = as_json(result)
    assert result.stderr == ""
    assert set(run) == RUN_FIELDS
    assert len(run["run_id"]) == 36 and run["location"] == proj.stem
    created, started, ended = (utc(run[k]) for k in ("created_at", "start_time", "end_time"))
    assert before - timedelta(seconds=1) <= created <= started <= ended
    assert ended <= datetime.now(timezone.utc) + timedelta(seconds=1)  # UTC, not local time
    assert run["parent_run_id"] is None and run["run_config"] == {}


def test_runs_list_filters_and_limit(proj):
    for job in ("ok_job", "bad_job", "ok_job"):
        rs(proj, "run", job)
    runs = runs_of(proj)
    assert [r["job_name"] for r in runs] == ["ok_job", "bad_job", "ok_job"]  # newest first
    mine = as_json(rs(proj, "runs", "list", "--job", "ok_job", "--json"))
    assert [r["run_id"] for r in mine] == [runs[0]["run_id"], runs[2]["run_id"]]
    failed = as_json(rs(proj, "runs", "list", "--status", "failure", "--json"))
    assert [r["run_id"] for r in failed] == [runs[1]["run_id"]]
    both = as_json(rs(proj, "runs", "list", "--job", "ok_job", "--status", "FAILURE", "--json"))
    assert both == []
    limited = as_json(rs(proj, "runs", "list", "--limit", "2", "--json"))
    assert [r["run_id"] for r in limited] == [r["run_id"] for r in runs[:2]]


def test_runs_list_table_shows_short_id_job_status_and_trigger(proj):
    rs(proj, "sensor", "start", "report_status_sensor")
    ok(rs(proj, "run", "ok_job"))
    ok(rs(proj, "sensor", "tick"))
    runs = runs_of(proj)
    table = ok(rs(proj, "runs", "list"))
    rows = [line for line in table.splitlines() if any(r["run_id"][:8] in line for r in runs)]
    assert len(rows) == 2
    requested, manual = rows  # newest first
    assert runs[0]["run_id"][:8] in requested and "status_reporting_job" in requested
    assert "SUCCESS" in requested and "sensor report_status_sensor" in requested
    assert runs[1]["run_id"][:8] in manual and "ok_job" in manual and "cli" in manual
    assert runs[0]["run_id"] not in table  # ids are shortened


def test_runs_list_on_a_fresh_home_creates_no_database(proj, home):
    assert "No runs yet" in ok(rs(proj, "runs", "list"))
    assert as_json(rs(proj, "runs", "list", "--json")) == []
    assert not (home / "runsense.db").exists()


def test_runs_show_by_unique_prefix_with_its_event_log(proj):
    rs(proj, "run", "bad_job", "--tag", "team=data")
    [run] = runs_of(proj)
    out = ok(rs(proj, "runs", "show", run["run_id"][:5]))
    assert f"Run {run['run_id']}" in out and "FAILURE" in out and "job: bad_job" in out
    assert "team=data" in out
    for event in ("STARTING", "STEP_START", "STEP_FAILURE"):
        assert event in out
    assert "Error in boom:" in out and 'raise ValueError("boom")' in out


def test_runs_show_json_adds_events(proj):
    rs(proj, "run", "bad_job")
    [run] = runs_of(proj)
    result = rs(proj, "runs", "show", run["run_id"][:6], "--json")
    document = as_json(result)
    assert {k: document[k] for k in RUN_FIELDS} == run
    assert set(document) == RUN_FIELDS | {"events", "reactions", "requested_runs", "incident"}
    events = document["events"]
    assert all(set(e) >= EVENT_FIELDS for e in events)
    ids = [e["event_id"] for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    types = [e["event_type"] for e in events]
    assert types[0] == "RUN_STARTING" and types[-1] == "RUN_FAILURE"
    assert "RUN_START" in types
    [step_failure] = [e for e in events if e["event_type"] == "STEP_FAILURE"]
    assert step_failure["step_key"] == "boom" and "ValueError: boom" in step_failure["message"]
    assert all(utc(e["timestamp"]) for e in events)


def test_runs_show_ambiguous_prefix_is_an_error(proj):
    """Given runs until two share a first character, when shown by it, then it is ambiguous."""
    seen: dict[str, str] = {}
    shared = None
    for _ in range(17):  # 17 uuids: two must share a first hex digit
        ok(rs(proj, "run", "ok_job"))
        newest = runs_of(proj)[0]["run_id"]
        if newest[0] in seen:
            shared = newest[0]
            break
        seen[newest[0]] = newest
    assert shared is not None
    line = error_line(rs(proj, "runs", "show", shared))
    assert f"several runs start with '{shared}'" in line
    assert "Traceback" not in rs(proj, "runs", "show", seen[shared][:30]).output


def test_runs_show_unknown_prefix_is_an_error(proj):
    rs(proj, "run", "ok_job")
    line = error_line(rs(proj, "runs", "show", "zzzz"))
    assert "no run id starts with 'zzzz'" in line


# -- sensor list / start / stop ------------------------------------------------------------


def test_sensor_list_json_fields_and_values(proj):
    assert rs(proj, "run", "bad_job").exit_code == 1
    ok(rs(proj, "sensor", "start", "on_failure"))
    newest = as_json(rs(proj, "runs", "show", runs_of(proj)[0]["run_id"], "--json"))["events"][-1]
    rs(proj, "run", "bad_job")
    sensors = sensors_of(proj)
    assert set(sensors) == {"report_status_sensor", "on_failure", "always_raises"}
    on_failure = sensors["on_failure"]
    assert set(on_failure) >= SENSOR_FIELDS
    assert on_failure["location"] == proj.stem and on_failure["run_status"] == "FAILURE"
    assert on_failure["status"] == "RUNNING" and on_failure["cursor"] == newest["event_id"]
    assert on_failure["lag"] == 1 and on_failure["last_tick"] is None
    assert sensors["report_status_sensor"]["status"] == "STOPPED"
    assert sensors["report_status_sensor"]["run_status"] == "SUCCESS"
    ok(rs(proj, "sensor", "tick", "on_failure"))
    after = sensors_of(proj)["on_failure"]
    assert after["lag"] == 0 and after["last_tick"]["status"] == "SUCCESS"
    assert after["last_tick"]["reactions"] == 1


def test_sensor_list_table(proj):
    rs(proj, "sensor", "start", "on_failure")
    rs(proj, "run", "bad_job")
    rows = {line.split()[1]: line for line in ok(rs(proj, "sensor", "list")).splitlines()[3:-1]}
    assert "FAILURE" in rows["on_failure"] and "RUNNING" in rows["on_failure"]
    assert rows["on_failure"].split("│")[5].strip() == "1"  # events waiting
    assert "STOPPED" in rows["report_status_sensor"] and "SUCCESS" in rows["report_status_sensor"]
    assert "never" in rows["always_raises"]


def test_start_all_and_stop_all(proj):
    out = ok(rs(proj, "sensor", "start", "--all"))
    assert out.count("Started ") == 3
    assert {s["status"] for s in sensors_of(proj).values()} == {"RUNNING"}
    assert "on_failure is already running" in ok(rs(proj, "sensor", "start", "on_failure"))
    rs(proj, "run", "bad_job")
    cursors = {n: s["cursor"] for n, s in sensors_of(proj).items()}
    out = ok(rs(proj, "sensor", "stop", "--all"))
    assert f"Stopped on_failure at event {cursors['on_failure']}." in out
    stopped = sensors_of(proj)
    assert {s["status"] for s in stopped.values()} == {"STOPPED"}
    assert {n: s["cursor"] for n, s in stopped.items()} == cursors  # stopping keeps the cursor
    assert "already stopped" in ok(rs(proj, "sensor", "stop", "on_failure"))
    line = error_line(rs(proj, "sensor", "start", "on_failure", "--all"))
    assert "not both" in line


def test_restart_reports_waiting_events_and_resumes(proj):
    rs(proj, "sensor", "start", "on_failure")
    rs(proj, "sensor", "stop", "on_failure")
    rs(proj, "run", "bad_job")
    rs(proj, "run", "bad_job")
    started = ok(rs(proj, "sensor", "start", "on_failure"))
    assert "2 FAILURE event(s) waiting" in started and "--from-now" in started
    tick = ok(rs(proj, "sensor", "tick", "on_failure"))
    assert "2 event(s), 2 reaction(s)" in tick


def test_start_from_now_skips_what_arrived_while_stopped(proj):
    rs(proj, "sensor", "start", "on_failure")
    rs(proj, "sensor", "stop", "on_failure")
    rs(proj, "run", "bad_job")
    started = ok(rs(proj, "sensor", "start", "on_failure", "--from-now"))
    assert "from now on" in started and "waiting" not in started
    assert sensors_of(proj)["on_failure"]["lag"] == 0
    assert "0 reaction(s)" in ok(rs(proj, "sensor", "tick", "on_failure"))


# -- tick ----------------------------------------------------------------------------------


def test_tick_runs_requested_runs_in_workers_and_waits(proj):
    """Given a started sensor and a success, when ticked, the requested run runs in a worker."""
    ok(rs(proj, "sensor", "start", "report_status_sensor"))
    ok(rs(proj, "run", "ok_job"))
    [monitored] = runs_of(proj)
    result = rs(proj, "sensor", "tick")
    out = ok(result)
    assert "report_status_sensor: SUCCESS · 1 event(s), 1 reaction(s), 1 run(s) requested" in out
    assert "Running 1 requested run(s)" in out
    requested = runs_of(proj)[0]
    assert f"run {requested['run_id'][:8]} status_reporting_job SUCCESS" in out
    assert requested["status"] == "SUCCESS" and requested["end_time"] is not None
    assert requested["tags"]["runsense/sensor"] == "report_status_sensor"
    assert requested["parent_run_id"] == monitored["run_id"]
    assert requested["run_config"] == {"ops": {"status_report": {"config": {"job_name": "ok_job"}}}}
    log = as_json(rs(proj, "runs", "show", requested["run_id"], "--json"))["events"]
    assert any(e["message"] == "reporting ok_job" for e in log)  # the worker ran the op
    # The requested run's own success is skipped by the sensor, with its reason shown.
    again = ok(rs(proj, "sensor", "tick", "report_status_sensor"))
    assert "SKIPPED" in again
    assert "skipped: Don't report status of status_reporting_job" in again


def test_tick_no_wait_launches_workers_and_returns(proj):
    rs(proj, "sensor", "start", "report_status_sensor")
    rs(proj, "run", "ok_job")
    out = ok(rs(proj, "sensor", "tick", "--no-wait"))
    assert "Launched 1 run worker(s)." in out and "Running" not in out
    deadline = time.monotonic() + 30
    while (requested := runs_of(proj)[0])["status"] != "SUCCESS":
        assert requested["status"] in {"QUEUED", "STARTING", "STARTED"}, requested
        assert time.monotonic() < deadline, requested
        time.sleep(0.05)
    assert requested["job_name"] == "status_reporting_job"


class FinishedWorker:
    """Stands in for a run worker's process: the run was done before it was "started"."""

    pid = os.getpid()
    returncode = 0

    def poll(self) -> int:
        return 0

    def wait(self, timeout: float | None = None) -> int:
        return 0


def test_tick_waits_for_every_requested_run_beyond_the_ids_a_tick_keeps(proj, monkeypatch):
    """Given 130 successes waiting, when `sensor tick --json` requests a run for each, then it
    waits for all 130 (a tick keeps only the first 100 ids), and its JSON counts them all."""
    from runsense_cli.identity import ProcessId
    from runsense_cli.launcher import RunLauncher
    from runsense_cli.runs import RunStatus

    def spawn(self, claimed: Any, token: str, take: Any) -> FinishedWorker:
        run = self.storage.register_worker(claimed.run_id, token, str(ProcessId.of()))
        self.storage.set_run_status(run, RunStatus.SUCCESS)
        return FinishedWorker()

    monkeypatch.setattr(RunLauncher, "_spawn", spawn)
    ok(rs(proj, "sensor", "start", "report_status_sensor"))
    for _ in range(130):
        ok(rs(proj, "run", "ok_job"))

    result = rs(proj, "sensor", "tick", "report_status_sensor", "--json")

    [tick] = as_json(result)
    assert (tick["reactions"], tick["runs_requested"], len(tick["run_ids"])) == (130, 130, 100)
    assert "Running 130 requested run(s)" in result.stderr
    assert result.stderr.count(" status_reporting_job SUCCESS in ") == 130
    every = as_json(rs(proj, "runs", "list", "--json", "--limit", "0"))
    statuses = {r["status"] for r in every if r["job_name"] == "status_reporting_job"}
    assert statuses == {"SUCCESS"}


def test_tick_without_running_sensors_says_so(proj):
    out = ok(rs(proj, "sensor", "tick"))
    assert "No running sensors" in out


def test_ticking_a_named_stopped_sensor_is_exit_2(proj):
    rs(proj, "run", "bad_job")
    line = error_line(rs(proj, "sensor", "tick", "on_failure"))
    assert "sensor 'on_failure' is stopped" in line and "runsense sensor start on_failure" in line


def test_tick_of_a_raising_sensor_exits_1_and_moves_on(proj):
    rs(proj, "sensor", "start", "always_raises")
    rs(proj, "run", "bad_job")
    result = rs(proj, "sensor", "tick", "always_raises")
    assert result.exit_code == 1
    assert "always_raises: FAILURE" in result.stdout
    assert "failed: run " in result.stdout and "RuntimeError: sensor broke" in result.stdout
    assert "Traceback" not in result.output
    assert sensors_of(proj)["always_raises"]["lag"] == 0  # no head-of-line blocking


BAD_REQUESTS = """
from runsense_cli import Definitions, RunRequest, job, op, run_failure_sensor

@op
def boom():
    raise ValueError("boom")

@job
def bad_job():
    boom()

@op
def noop():
    pass

@job
def other_job():
    noop()

@run_failure_sensor
def no_target(context):
    return RunRequest()

@run_failure_sensor(request_jobs=[other_job])
def wrong_name(context):
    return RunRequest(job_name="missing_job")

defs = Definitions(jobs=[bad_job], sensors=[no_target, wrong_name])
"""


@pytest.mark.parametrize(
    ("sensor", "message"),
    [
        ("no_target", "sensor 'no_target' returned a RunRequest but has no target job"),
        ("wrong_name", "sensor 'wrong_name' requested unknown job_name 'missing_job'"),
    ],
)
def test_a_request_without_a_usable_target_is_a_failed_reaction(project, sensor, message):
    proj = project(BAD_REQUESTS)
    rs(proj, "sensor", "start", sensor)
    rs(proj, "run", "bad_job")
    result = rs(proj, "sensor", "tick", sensor)
    assert result.exit_code == 1 and message in result.stdout
    assert "Traceback" not in result.output
    [failure] = as_json(rs(proj, "sensor", "failures", sensor, "--json"))
    assert message in failure["error"]
    assert [r["job_name"] for r in runs_of(proj)] == ["bad_job"]  # nothing was requested
    assert sensors_of(proj)[sensor]["lag"] == 0  # never a stuck sensor


# -- preview -------------------------------------------------------------------------------


def test_preview_of_a_past_run_prints_and_stores_nothing(proj, home):
    rs(proj, "run", "ok_job")
    [run] = runs_of(proj)
    before = db_dump(home)
    result = rs(proj, "sensor", "preview", "report_status_sensor", "--run", run["run_id"][:8])
    out = ok(result)
    assert f"run {run['run_id'][:8]} (ok_job, SUCCESS): would request a run of" in out
    assert 'status_reporting_job with config {"ops": {"status_report": {"config": ' in out
    assert '"job_name": "ok_job"' in out
    assert "calls the sensor's function for real" in result.stderr
    assert db_dump(home) == before


def test_preview_of_waiting_events_stores_nothing(proj, home):
    rs(proj, "sensor", "start", "always_raises")
    rs(proj, "run", "bad_job")
    [run] = runs_of(proj)
    before = db_dump(home)
    out = ok(rs(proj, "sensor", "preview", "always_raises"))
    assert f"run {run['run_id'][:8]} (bad_job, FAILURE): would fail" in out
    assert "RuntimeError: sensor broke" in out
    assert db_dump(home) == before
    assert sensors_of(proj)["always_raises"]["lag"] == 1  # still waiting for a real tick


def test_preview_on_a_fresh_home_creates_no_database(proj, home):
    result = rs(proj, "sensor", "preview", "on_failure")
    assert ok(result) == ""  # stdout holds only previews; the note goes to stderr
    assert "No FAILURE events waiting for on_failure" in result.stderr
    assert not (home / "runsense.db").exists()


# -- cursor --------------------------------------------------------------------------------


def test_cursor_show_set_and_from_now(proj):
    rs(proj, "sensor", "start", "on_failure")
    start = sensors_of(proj)["on_failure"]["cursor"]
    rs(proj, "run", "bad_job")
    shown = ok(rs(proj, "sensor", "cursor", "on_failure"))
    assert f"on_failure: cursor {start}," in shown and "1 FAILURE event(s) waiting" in shown
    moved = ok(rs(proj, "sensor", "cursor", "on_failure", "--from-now"))
    newest = sensors_of(proj)["on_failure"]["cursor"]
    assert newest > start
    assert f"Moved on_failure's cursor from {start} to {newest}." in moved
    assert "0 FAILURE event(s) waiting" in moved
    ok(rs(proj, "sensor", "cursor", "on_failure", "--set", str(start)))
    assert sensors_of(proj)["on_failure"]["cursor"] == start
    assert "1 FAILURE event(s) waiting" in ok(rs(proj, "sensor", "cursor", "on_failure"))


def test_cursor_set_beyond_the_newest_event_is_refused(proj, home):
    rs(proj, "sensor", "start", "on_failure")
    before = db_dump(home)
    line = error_line(rs(proj, "sensor", "cursor", "on_failure", "--set", "999"))
    assert "event 999 does not exist yet" in line
    line = error_line(rs(proj, "sensor", "cursor", "on_failure", "--set", "1", "--from-now"))
    assert "not both" in line
    assert db_dump(home) == before


# -- ticks / failures / retry ---------------------------------------------------------------


def test_ticks_table_and_json(proj):
    rs(proj, "sensor", "start", "on_failure")
    rs(proj, "run", "bad_job")
    ok(rs(proj, "sensor", "tick", "on_failure"))
    ok(rs(proj, "sensor", "tick", "on_failure"))
    ticks = as_json(rs(proj, "sensor", "ticks", "on_failure", "--json"))
    assert len(ticks) == 2 and all(set(t) >= TICK_FIELDS for t in ticks)
    newest, first = ticks  # newest first
    assert newest["tick_id"] > first["tick_id"]
    assert first["sensor"] == "on_failure" and first["status"] == "SUCCESS"
    assert first["events_scanned"] == 1 and first["reactions"] == 1 and first["run_ids"] == []
    assert first["cursor_after"] > first["cursor_before"]
    assert newest["status"] == "SKIPPED" and newest["reactions"] == 0
    assert newest["cursor_before"] == first["cursor_after"]
    assert isinstance(first["duration_s"], float) and utc(first["started_at"])
    assert as_json(rs(proj, "sensor", "ticks", "on_failure", "--limit", "1", "--json")) == [newest]
    table = ok(rs(proj, "sensor", "ticks", "on_failure"))
    assert f"{first['cursor_before']}→{first['cursor_after']}" in table
    assert "SUCCESS" in table and "SKIPPED" in table


def park_a_failure(proj: Path) -> dict:
    rs(proj, "sensor", "start", "always_raises")
    rs(proj, "run", "bad_job")
    assert rs(proj, "sensor", "tick", "always_raises").exit_code == 1
    [failure] = as_json(rs(proj, "sensor", "failures", "--json"))
    return failure


def test_failures_json_and_table(proj):
    failure = park_a_failure(proj)
    run = runs_of(proj)[0]
    assert set(failure) == FAILURE_FIELDS
    [status_event] = [
        e
        for e in as_json(rs(proj, "runs", "show", run["run_id"], "--json"))["events"]
        if e["event_type"] == "RUN_FAILURE"
    ]
    assert failure["sensor"] == "always_raises" and failure["run_id"] == run["run_id"]
    assert failure["event_id"] == status_event["event_id"]
    assert failure["attempts"] == 1 and failure["state"] == "DEAD"
    assert failure["next_attempt_at"] is None
    assert "Traceback" in failure["error"] and "RuntimeError: sensor broke" in failure["error"]
    assert as_json(rs(proj, "sensor", "failures", "on_failure", "--json")) == []
    table = ok(rs(proj, "sensor", "failures"))
    assert "always_raises" in table and "DEAD" in table and run["run_id"][:8] in table
    assert "RuntimeError: sensor broke" in table and "sensor retry" in table
    assert "No failed reactions." in ok(rs(proj, "sensor", "failures", "on_failure"))


@pytest.mark.parametrize("how", ["--all", "--event"])
def test_retry_brings_a_parked_reaction_back(proj, how):
    failure = park_a_failure(proj)
    args = ["--all"] if how == "--all" else ["--event", str(failure["event_id"])]
    out = ok(rs(proj, "sensor", "retry", "always_raises", *args))
    assert "Queued 1 reaction(s) of always_raises for retry" in out
    [queued] = as_json(rs(proj, "sensor", "failures", "--json"))
    assert queued["state"] == "RETRYING" and queued["attempts"] == 0
    tick = rs(proj, "sensor", "tick", "always_raises", env={"RUNSENSE_TEST_FIXED": "1"})
    assert "1 reaction(s)" in ok(tick)
    assert as_json(rs(proj, "sensor", "failures", "--json")) == []
    events = as_json(rs(proj, "runs", "show", failure["run_id"], "--json"))["events"]
    assert any('Sensor "always_raises" acted on run status FAILURE' in e["message"] for e in events)


def test_retry_needs_all_or_an_event_that_is_parked(proj):
    failure = park_a_failure(proj)
    assert "give --all or --event ID" in error_line(rs(proj, "sensor", "retry", "always_raises"))
    line = error_line(rs(proj, "sensor", "retry", "always_raises", "--event", "12345"))
    assert "no parked reaction for event 12345" in line
    assert as_json(rs(proj, "sensor", "failures", "--json")) == [failure]


DEFAULT_RUNNING = """
from runsense_cli import DefaultSensorStatus, Definitions, job, op, run_failure_sensor

@op
def boom():
    raise ValueError("boom")

@job
def bad_job():
    boom()

@run_failure_sensor(default_status=DefaultSensorStatus.RUNNING)
def watcher(context):
    return None

defs = Definitions(jobs=[bad_job], sensors=[watcher])
"""


def test_a_default_running_sensor_can_be_ticked_by_name_on_a_fresh_home(project):
    proj = project(DEFAULT_RUNNING)
    assert "watcher: SKIPPED · 0 event(s)" in ok(rs(proj, "sensor", "tick", "watcher"))
    rs(proj, "run", "bad_job")
    assert "watcher: SUCCESS · 1 event(s), 1 reaction(s)" in ok(
        rs(proj, "sensor", "tick", "watcher")
    )


TALKER = """
from runsense_cli import Definitions, job, op, run_failure_sensor

@op
def boom():
    raise ValueError("boom")

@job
def bad_job():
    boom()

@run_failure_sensor
def talker(context):
    context.log.info("talker saw %s", context.dagster_run.job_name)

defs = Definitions(jobs=[bad_job], sensors=[talker])
"""


def test_sensor_logs_go_to_stderr_of_each_command(project, home):
    """What a sensor logs reaches the command's stderr, from its tick process, each time."""
    from tests.processes import cli

    proj = project(TALKER)
    rs(proj, "sensor", "start", "talker")
    for _ in range(2):
        rs(proj, "run", "bad_job")
        result = cli(home, proj, "sensor", "tick")
        assert result.returncode == 0 and "reaction" in result.stdout
        assert "INFO talker saw bad_job" in result.stderr
        assert "Logging error" not in result.stderr and "talker saw" not in result.stdout


def test_preview_shows_the_sensor_logs(project, monkeypatch):
    proj = project(TALKER)
    rs(proj, "run", "bad_job")
    run_id = runs_of(proj)[0]["run_id"]
    # As in a fresh process: no earlier command of this one has set up the sensor log handler.
    monkeypatch.setattr(logging.getLogger("runsense.sensor"), "handlers", [])
    result = rs(proj, "sensor", "preview", "talker", "--run", run_id)
    assert "would write" in ok(result)
    assert "INFO talker saw bad_job" in result.stderr
