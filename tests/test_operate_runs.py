"""Operating runs (SPEC §12) through real processes: queue, cancel, logs, rerun, delete, prune."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.processes import (
    RUNSENSE,
    cli,
    env_for,
    kill_workers_in_progress,
    pid_running,
    query,
    start_daemon,
    stop,
    wait_for_log,
    wait_until,
)

PROJECT = """
import signal, time
from runsense_cli import (
    DagsterRunStatus, DefaultSensorStatus, Definitions, job, op, run_status_sensor,
)

@op
def nap(context):
    print("napping", flush=True)
    time.sleep(120)

@job
def sleepy():
    nap()

@op
def stubborn(context):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(120)

@job
def stubborn_job():
    stubborn()

@op(config_schema={"who": str})
def hello(context):
    print(f"hello {context.op_config['who']}", flush=True)
    context.log.info("logged after the print")

@job(tags={"team": "data"})
def hello_job():
    hello()

@op
def boom():
    raise ValueError("boom")

@job
def failing_job():
    boom()

@run_status_sensor(
    run_status=DagsterRunStatus.CANCELED, default_status=DefaultSensorStatus.RUNNING
)
def on_cancel(context):
    pass

defs = Definitions(jobs=[sleepy, stubborn_job, hello_job, failing_job], sensors=[on_cancel])
"""
HELLO = ["--config-json", '{"ops": {"hello": {"config": {"who": "ops"}}}}']


@pytest.fixture
def proj(tmp_path: Path, home: Path):
    path = tmp_path / "proj" / "opsdefs.py"
    path.parent.mkdir()
    path.write_text(PROJECT)
    yield path
    kill_workers_in_progress(home)


@pytest.fixture
def daemon(home: Path, proj: Path, tmp_path: Path):
    log = tmp_path / "daemon.log"
    process = start_daemon(home, proj, log)
    wait_for_log(log, "daemon started")
    yield log
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(10)
    finally:
        stop(process)


def status_of(home: Path, run_id: str) -> str:
    return query(home, "SELECT status FROM runs WHERE run_id = ?", run_id)[0][0]


def wait_status(home: Path, run_id: str, status: str, timeout: float = 20.0) -> None:
    wait_until(lambda: status_of(home, run_id) == status, timeout, what=f"{run_id} {status}")


def events(home: Path, run_id: str, event_type: str) -> int:
    sql = "SELECT count(*) FROM events WHERE run_id = ? AND event_type = ?"
    return query(home, sql, run_id, event_type)[0][0]


def queue(home: Path, proj: Path, job: str, *args: str) -> str:
    done = cli(home, proj, "run", job, "--queue", *args)
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.strip()
    assert len(run_id) == 36 and done.stdout.count("\n") == 1  # the full id, alone
    return run_id


def test_run_queue_creates_a_queued_run_with_its_project(home, proj):
    run_id = queue(home, proj, "hello_job", *HELLO)
    assert status_of(home, run_id) == "QUEUED"
    origin = json.loads(query(home, "SELECT origin FROM runs WHERE run_id = ?", run_id)[0][0])
    assert origin["module"] == "opsdefs"
    as_json = cli(home, proj, "run", "hello_job", "--queue", "--json", *HELLO)
    document = json.loads(as_json.stdout)
    assert document["status"] == "QUEUED" and document["job_name"] == "hello_job"


def test_cancel_a_run_in_progress_interrupts_its_op_and_fires_canceled_sensors_once(
    home, proj, daemon
):
    run_id = queue(home, proj, "sleepy")
    wait_status(home, run_id, "STARTED")
    pid = query(home, "SELECT worker_pid FROM runs WHERE run_id = ?", run_id)[0][0]
    started = time.monotonic()
    done = cli(home, proj, "runs", "cancel", run_id[:8])
    assert done.returncode == 0, done.stderr
    assert f"Run {run_id[:8]} CANCELED" in done.stdout
    assert time.monotonic() - started < 8  # interrupted, not waited out
    assert status_of(home, run_id) == "CANCELED"
    message = query(
        home, "SELECT message FROM events WHERE run_id = ? AND event_type = 'RUN_CANCELED'", run_id
    )
    assert message == [('Run canceled during step "nap" (stopped by SIGTERM).',)]
    wait_until(lambda: not pid_running(pid), what="worker gone")
    wait_for_log(daemon, "tick on_cancel: SUCCESS events=1")
    show = json.loads(cli(home, proj, "runs", "show", run_id, "--json").stdout)
    assert [r["sensor"] for r in show["reactions"]] == ["on_cancel"]
    assert events(home, run_id, "RUN_CANCELED") == 1


def test_a_worker_that_ignores_sigterm_is_killed_after_the_grace_and_ends_canceled(
    home, proj, daemon
):
    run_id = queue(home, proj, "stubborn_job")
    wait_status(home, run_id, "STARTED")
    time.sleep(0.5)  # the op has installed its SIG_IGN
    done = cli(home, proj, "runs", "cancel", run_id, "--no-wait", "--json")
    assert json.loads(done.stdout)[0]["status"] == "CANCELING"
    time.sleep(5)
    assert status_of(home, run_id) == "CANCELING"  # SIGTERM ignored, grace not over
    wait_status(home, run_id, "CANCELED", timeout=15)
    assert events(home, run_id, "RUN_CANCELED") == 1
    assert events(home, run_id, "RUN_FAILURE") == 0
    wait_for_log(daemon, f"run {run_id} CANCELED")


def started_run(home: Path) -> str | None:
    """The id of a STARTED run, once the process under test has created the database."""
    if not (home / "runsense.db").exists():
        return None
    try:
        rows = query(home, "SELECT run_id FROM runs WHERE status = 'STARTED'")
    except sqlite3.OperationalError:  # the schema is still being created
        return None
    return rows[0][0] if rows else None


def test_cancel_stops_a_foreground_run(home, proj):
    process = subprocess.Popen(
        [*RUNSENSE, "-f", str(proj), "run", "sleepy"],
        env=env_for(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        run_id = wait_until(lambda: started_run(home))
        assert cli(home, proj, "runs", "cancel", run_id).returncode == 0
        output, _ = process.communicate(timeout=15)
    finally:
        stop(process)
    assert process.returncode == 1
    assert "CANCELED" in output and "canceled during op 'nap'" in output
    assert status_of(home, run_id) == "CANCELED"


def test_cancel_queued_runs_at_once(home, proj):
    first = queue(home, proj, "hello_job", *HELLO)
    second = queue(home, proj, "hello_job", *HELLO)
    done = cli(home, proj, "runs", "cancel", first, "--json")
    assert [(r["run_id"], r["status"]) for r in json.loads(done.stdout)] == [(first, "CANCELED")]
    done = cli(home, proj, "runs", "cancel", "--all-queued")
    assert done.stdout.strip() == f"Run {second[:8]} CANCELED"
    assert status_of(home, second) == "CANCELED"
    assert "No queued runs" in cli(home, proj, "runs", "cancel", "--all-queued").stdout


def test_logs_interleave_worker_output_and_events_and_follow_exits_by_status(home, proj, daemon):
    good = queue(home, proj, "hello_job", *HELLO)
    followed = cli(home, proj, "runs", "logs", good, "--follow")
    assert followed.returncode == 0, followed.stderr
    lines = followed.stdout.splitlines()
    kinds = [line.split()[1] for line in lines]
    assert kinds.index("RUN_START") < kinds.index("output") < kinds.index("RUN_SUCCESS")
    assert any(line.endswith("output  hello ops") for line in lines)
    bad = queue(home, proj, "failing_job")
    assert cli(home, proj, "runs", "logs", bad, "--follow").returncode == 1
    again = cli(home, proj, "runs", "logs", good)
    assert again.returncode == 0 and again.stdout == followed.stdout


def test_rerun_copies_job_config_and_user_tags_with_lineage(home, proj):
    first = cli(home, proj, "run", "hello_job", *HELLO, "--tag", "owner=me", "--json")
    original = json.loads(first.stdout)
    assert "hello ops" in first.stderr  # what the op prints stays off the JSON document
    done = cli(home, proj, "runs", "rerun", original["run_id"][:8], "--json")
    assert done.returncode == 0, done.stderr
    rerun = json.loads(done.stdout)
    assert rerun["status"] == "SUCCESS" and rerun["run_config"] == original["run_config"]
    assert rerun["tags"]["owner"] == "me" and rerun["tags"]["team"] == "data"
    assert rerun["tags"]["runsense/rerun_of"] == original["run_id"]
    assert rerun["parent_run_id"] == rerun["root_run_id"] == original["run_id"]
    queued = cli(home, proj, "runs", "rerun", original["run_id"], "--queue").stdout.strip()
    assert status_of(home, queued) == "QUEUED"


def test_delete_refuses_runs_in_progress_and_removes_logs(home, proj, daemon):
    done_id = queue(home, proj, "hello_job", *HELLO)
    wait_status(home, done_id, "SUCCESS")
    log = home / "logs" / f"{done_id}.log"
    assert log.exists()
    busy = queue(home, proj, "sleepy")
    wait_status(home, busy, "STARTED")
    refused = cli(home, proj, "runs", "delete", done_id, busy)
    assert refused.returncode != 0 and "not finished" in refused.stderr
    assert status_of(home, done_id) == "SUCCESS"
    deleted = cli(home, proj, "runs", "delete", done_id)
    assert deleted.returncode == 0 and "Deleted 1 run(s)." in deleted.stdout
    assert not log.exists() and not query(home, "SELECT 1 FROM runs WHERE run_id=?", done_id)
    assert cli(home, proj, "runs", "cancel", busy).returncode == 0


def test_prune_dry_run_then_prune(home, proj):
    cli(home, proj, "sensor", "stop", "on_cancel")  # no running sensor holds events back
    run_id = json.loads(cli(home, proj, "run", "hello_job", *HELLO, "--json").stdout)["run_id"]
    time.sleep(1.1)
    dry = cli(home, proj, "prune", "--older-than", "1s", "--dry-run", "--json")
    assert json.loads(dry.stdout)["run_ids"] == [run_id]
    assert status_of(home, run_id) == "SUCCESS"
    real = cli(home, proj, "prune", "--older-than", "1s")
    assert real.stdout.startswith("Deleted 1 run(s), 6 event(s)")
    assert not query(home, "SELECT 1 FROM runs")
    bad = cli(home, proj, "prune", "--older-than", "soon")
    assert bad.returncode == 2 and "'soon' is not an age" in bad.stderr


def test_daemon_prunes_by_retention_setting(home, proj, tmp_path):
    (proj.parent / "runsense.toml").write_text('module = "opsdefs"\nretention = "1s"\n')
    cli(home, proj, "sensor", "stop", "on_cancel")
    run_id = json.loads(cli(home, proj, "run", "hello_job", *HELLO, "--json").stdout)["run_id"]
    time.sleep(1.1)
    log = tmp_path / "retention.log"
    handle = open(log, "ab")  # noqa: SIM115
    process = subprocess.Popen(
        [*RUNSENSE, "daemon"], cwd=proj.parent, env=env_for(home), stdout=handle, stderr=handle
    )
    handle.close()
    try:
        wait_for_log(log, "pruned 1 run(s)")
        assert not query(home, "SELECT 1 FROM runs WHERE run_id = ?", run_id)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)
    bad = proj.parent / "runsense.toml"
    bad.write_text('module = "opsdefs"\nretention = "forever"\n')
    done = subprocess.run(
        [*RUNSENSE, "daemon"], cwd=proj.parent, env=env_for(home), capture_output=True, text=True
    )
    assert done.returncode == 2 and "retention" in done.stderr
    assert os.path.exists(log)
