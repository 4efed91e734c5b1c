"""SPEC §9 reliability: kill -9 during a drain, concurrent runs, a raising sensor under the daemon."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from runsense_cli.runs import RunStatus
from runsense_cli.storage import Storage
from tests.processes import RUNSENSE, cli, env_for, query, start_daemon, wait_for_log, wait_until

pytestmark = pytest.mark.slow

DRAIN_PROJECT = """
import time
from runsense_cli import DefaultSensorStatus, Definitions, RunRequest, RunStatus, job, op, run_status_sensor

@op
def step():
    return 1

@job
def source_job():
    step()

@job
def target_job():
    step()

def slow():
    # Slow enough that the drain spans many daemon lives: kills land mid-page.
    time.sleep(0.003)

@run_status_sensor(run_status=RunStatus.SUCCESS, monitored_jobs=[source_job], request_job=target_job,
                   default_status=DefaultSensorStatus.RUNNING)
def keyed(context):
    slow()
    return RunRequest(run_key=context.dagster_run.run_id)

@run_status_sensor(run_status=RunStatus.SUCCESS, monitored_jobs=[source_job], request_job=target_job,
                   default_status=DefaultSensorStatus.RUNNING)
def unkeyed(context):
    slow()
    return RunRequest()

@run_status_sensor(run_status=RunStatus.SUCCESS, monitored_jobs=[source_job],
                   default_status=DefaultSensorStatus.RUNNING)
def quiet(context):
    slow()
    return None

defs = Definitions(jobs=[source_job, target_job], sensors=[keyed, unkeyed, quiet])
"""


DAEMON_ARGS = ("--interval", "0.05", "--max-concurrent-runs", "1", "--page-size", "50")


def test_kill_9_during_a_drain_loses_and_doubles_nothing(tmp_path: Path, home: Path):
    """Given 1,000 waiting events for three sensors, when the daemon is SIGKILLed at ≥ 20 random
    moments and restarted, then every event has exactly one reaction per sensor, and each
    requesting sensor created exactly one run per event."""
    seed = int(os.environ.get("RUNSENSE_TEST_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    print(f"\nreliability seed: {seed} (replay with RUNSENSE_TEST_SEED={seed})")
    project = tmp_path / "drain_project.py"
    project.write_text(DRAIN_PROJECT)
    assert cli(home, project, "sensor", "list").returncode == 0  # sensors start now
    # Fill the run slot with a run of this (live) process, so requested runs stay queued: the
    # test is about reactions and requested runs, not about executing 2,000 workers.
    storage = Storage.open(home)
    blocker = storage.create_run(
        "target_job", "drain_project", status=RunStatus.STARTING, worker_pid=os.getpid()
    )
    storage.set_run_status(blocker, RunStatus.STARTED)
    sys_path_project(tmp_path)
    import drain_project

    drain_project.defs.set_location("drain_project")
    for _ in range(1000):
        drain_project.source_job.execute_in_process(home=str(home))

    kills = mid_drain = 0
    log = tmp_path / "daemon.log"
    while kills < 20 or (mid_drain < 15 and kills < 40):
        daemon = start_daemon(home, project, log, *DAEMON_ARGS)
        time.sleep(rng.uniform(0.2, 0.8))
        mid_drain += _lag(home) > 0
        daemon.send_signal(signal.SIGKILL)
        daemon.wait()
        kills += 1
    daemon = start_daemon(home, project, log, *DAEMON_ARGS)
    try:
        wait_for_log(log, "daemon started")
        wait_until(lambda: _lag(home) == 0, timeout=60, every=0.2)
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=10) == 0

    sources = {r for (r,) in query(home, "SELECT run_id FROM runs WHERE job_name = 'source_job'")}
    duplicates = lost = 0
    for sensor in ("keyed", "unkeyed", "quiet"):
        rows = query(
            home,
            "SELECT r.run_id, count(*) FROM reactions r JOIN sensors s ON s.id = r.sensor_id"
            " WHERE s.name = ? GROUP BY r.run_id",
            sensor,
        )
        duplicates += sum(n - 1 for _, n in rows if n > 1)
        lost += len(sources - {run_id for run_id, _ in rows})
    for sensor in ("keyed", "unkeyed"):
        rows = query(
            home,
            "SELECT parent_run_id, count(*) FROM runs WHERE json_extract(tags, '$.\"runsense/sensor\"') = ?"
            " GROUP BY parent_run_id",
            sensor,
        )
        duplicates += sum(n - 1 for _, n in rows if n > 1)
        lost += len(sources - {parent for parent, _ in rows})
    writes = query(
        home,
        "SELECT run_id, count(*) FROM events WHERE event_type = 'SENSOR_REACTION' GROUP BY run_id",
    )
    duplicates += sum(n - 1 for _, n in writes if n > 1)
    lost += len(sources - {run_id for run_id, _ in writes})
    print(
        f"kills: {kills} ({mid_drain} mid-drain), events checked: {len(sources)} x 3 sensors, duplicates: {duplicates}, lost: {lost}"
    )
    assert len(sources) == 1000 and mid_drain >= 15
    assert (duplicates, lost) == (0, 0)


def _lag(home: Path) -> int:
    [(newest,)] = query(home, "SELECT max(id) FROM events WHERE event_type = 'RUN_SUCCESS'")
    [(slowest,)] = query(home, "SELECT min(cursor) FROM sensors")
    return max(0, newest - slowest)


def sys_path_project(directory: Path) -> None:
    import sys

    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))


CONCURRENT_PROJECT = """
from runsense_cli import DefaultSensorStatus, Definitions, RunStatus, job, op, run_status_sensor

@op
def a(context):
    context.log.info("working")
    return 1

@op
def b(x):
    return x + 1

@job
def two_ops():
    b(a())

@run_status_sensor(run_status=RunStatus.SUCCESS, default_status=DefaultSensorStatus.RUNNING)
def count_successes(context):
    return None

defs = Definitions(jobs=[two_ops], sensors=[count_successes])
"""


def test_eight_concurrent_runs_while_the_daemon_ticks(tmp_path: Path, home: Path):
    project = tmp_path / "concurrent_project.py"
    project.write_text(CONCURRENT_PROJECT)
    assert cli(home, project, "sensor", "list").returncode == 0
    log = tmp_path / "daemon.log"
    daemon = start_daemon(home, project, log, "--interval", "0.05")
    try:
        wait_for_log(log, "daemon started")
        for _ in range(3):
            runs = [
                subprocess.Popen(
                    [*RUNSENSE, "-f", str(project), "run", "two_ops"],
                    env=env_for(home),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for _ in range(8)
            ]
            outputs = [run.communicate(timeout=60) for run in runs]
            assert [run.returncode for run in runs] == [0] * 8
            assert not any("locked" in out + err for out, err in outputs)
        wait_until(lambda: query(home, "SELECT count(*) FROM reactions")[0][0] == 24, timeout=10)
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=10) == 0
    assert "locked" not in log.read_text()
    sequences = query(
        home,
        "SELECT group_concat(event_type, ' ') FROM (SELECT run_id, event_type FROM events"
        " WHERE event_type != 'SENSOR_REACTION' ORDER BY id) GROUP BY run_id",
    )
    assert len(sequences) == 24
    expected = (
        "RUN_STARTING RUN_START STEP_START LOG STEP_SUCCESS STEP_START STEP_SUCCESS RUN_SUCCESS"
    )
    assert {s for (s,) in sequences} == {expected}


RAISING_PROJECT = """
import os
from runsense_cli import DefaultSensorStatus, Definitions, RunStatus, job, op, run_status_sensor, run_failure_sensor

@op
def fail():
    raise RuntimeError("job broke")

@job
def failing_job():
    fail()

@run_failure_sensor(default_status=DefaultSensorStatus.RUNNING, max_retries=2, retry_delay_seconds=0.2)
def flaky_alert(context):
    if not os.path.exists(os.environ["FIXED_FLAG"]):
        raise ConnectionError("alerting service down")

@run_failure_sensor(default_status=DefaultSensorStatus.RUNNING)
def steady(context):
    return None

defs = Definitions(jobs=[failing_job], sensors=[flaky_alert, steady])
"""


def test_a_raising_sensor_is_retried_then_parked_while_others_keep_going(
    tmp_path: Path, home: Path
):
    project = tmp_path / "raising_project.py"
    project.write_text(RAISING_PROJECT)
    flag = tmp_path / "fixed"
    os.environ["FIXED_FLAG"] = str(flag)
    try:
        assert cli(home, project, "sensor", "list").returncode == 0
        log = tmp_path / "daemon.log"
        daemon = start_daemon(home, project, log, "--interval", "0.05")
        try:
            wait_for_log(log, "daemon started")
            assert cli(home, project, "run", "failing_job").returncode == 1
            failures_sql = (
                "SELECT r.state, r.attempts FROM reactions r JOIN sensors s ON s.id = r.sensor_id"
                " WHERE s.name = ?"
            )
            wait_until(
                lambda: query(home, failures_sql, "flaky_alert") == [("DEAD", 3)], timeout=15
            )
            assert query(home, failures_sql, "steady") == [("SUCCESS", 1)]
            # attempts were spaced by the back-off: 0.2 s then 0.4 s
            [(ticks,)] = query(
                home,
                "SELECT count(*) FROM ticks t JOIN sensors s ON s.id = t.sensor_id"
                " WHERE s.name = 'flaky_alert' AND t.status = 'FAILURE'",
            )
            assert ticks == 3
            # the others keep going while it is parked
            assert cli(home, project, "run", "failing_job").returncode == 1
            wait_until(lambda: len(query(home, failures_sql, "steady")) == 2)
            flag.write_text("yes")
            listed = cli(home, project, "sensor", "failures", "--json")
            assert '"state": "DEAD"' in listed.stdout
            retried = cli(home, project, "sensor", "retry", "flaky_alert", "--all")
            assert retried.returncode == 0, retried.stderr
            wait_until(
                lambda: (
                    [state for state, _ in query(home, failures_sql, "flaky_alert")]
                    == ["SUCCESS", "SUCCESS"]
                ),
                timeout=15,
            )
        finally:
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=10) == 0
    finally:
        os.environ.pop("FIXED_FLAG", None)
