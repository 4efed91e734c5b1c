"""Issue 11, overdue runs: one RUN_OVERDUE per run and phase, and run_overdue_sensor."""

from __future__ import annotations

import threading
import time

from runsense_cli import Definitions, job, op
from runsense_cli.evaluation import SensorEvaluator
from runsense_cli.execution import execute_run, start_run
from runsense_cli.overdue import mark_overdue_runs
from runsense_cli.page_sensors import run_overdue_sensor
from runsense_cli.records import SensorStatus
from runsense_cli.runs import EventType, RunStatus
from runsense_cli.storage import open_storage


@op
def slow():
    time.sleep(1.6)


@job(tags={"runsense/max_runtime": "1"})
def slow_job():
    slow()


@op
def quick():
    return 1


@job(tags={"runsense/max_queue_time": "0"})
def queued_job():
    quick()


def test_a_slow_job_gets_one_overdue_event_and_still_succeeds():
    seen = []

    @run_overdue_sensor()
    def late(context):
        seen.append((context.phase, context.overdue_seconds, context.dagster_run.job_name))

    with open_storage() as storage:
        evaluator = SensorEvaluator(storage, Definitions(jobs=[slow_job], sensors=[late]))
        evaluator.register_sensors()
        storage.set_sensor_status(evaluator.state(late).sensor_id, SensorStatus.RUNNING)

        def work() -> None:
            with open_storage() as own:
                execute_run(own, slow_job, start_run(own, slow_job, launched_by="test"))

        worker = threading.Thread(target=work)
        worker.start()
        while worker.is_alive():
            mark_overdue_runs(storage, time.time())
            time.sleep(0.1)
        worker.join()
        [run] = storage.list_runs("slow_job")
        assert run.status == RunStatus.SUCCESS
        overdue = [
            e for e in storage.events_for_run(run.run_id) if e.event_type == EventType.RUN_OVERDUE
        ]
        assert len(overdue) == 1 and "over its limit of 1s" in overdue[0].message
        evaluator.tick(late)
        [(phase, seconds, name)] = seen
        assert (phase, name) == ("STARTED", "slow_job") and seconds >= 1


def test_a_run_left_queued_past_its_queue_time_is_marked_queued():
    with open_storage() as storage:
        run = storage.create_run(
            "queued_job",
            "loc",
            {},
            {"runsense/max_queue_time": "5"},
            status=RunStatus.QUEUED,
            now=100.0,
        )
        assert mark_overdue_runs(storage, 104.0) == []
        assert mark_overdue_runs(storage, 106.0) == [run.run_id]
        assert mark_overdue_runs(storage, 107.0) == []
        event = storage.status_event_for_run(run.run_id, EventType.RUN_OVERDUE)
        assert storage.overdue_at_event(event.event_id).phase == "QUEUED"


CANCEL_PROJECT = """
import time
from runsense_cli import Definitions, job, op

@op
def sleepy():
    time.sleep(30)

@job(tags={"runsense/max_runtime": "1", "runsense/max_runtime_action": "cancel"})
def bounded_job():
    sleepy()

defs = Definitions(jobs=[bounded_job])
"""


def test_max_runtime_action_cancel_cancels_the_overdue_run(home, project, tmp_path):
    """SPEC §11: with `runsense/max_runtime_action=cancel` an overdue run is cancelled (one
    RUN_OVERDUE, then CANCELING and CANCELED), through the daemon and a real worker."""
    import subprocess

    from tests.processes import cli, query, start_daemon, stop, wait_for_log, wait_until

    path = project(CANCEL_PROJECT)
    queued = cli(home, path, "run", "bounded_job", "--queue")
    assert queued.returncode == 0, queued.stderr
    run_id = queued.stdout.strip()
    log = tmp_path / "daemon.log"
    daemon = start_daemon(home, path, log, "--interval", "0.2")
    try:
        wait_for_log(log, "daemon started")
        wait_until(
            lambda: (
                query(home, "SELECT status FROM runs WHERE run_id = ?", run_id) == [("CANCELED",)]
            ),
            timeout=20,
            what="the overdue run to be cancelled",
        )
    finally:
        daemon.send_signal(15)
        try:
            daemon.wait(10)
        except subprocess.TimeoutExpired:
            stop(daemon)
    types = [t for (t,) in query(home, "SELECT event_type FROM events WHERE run_id = ?", run_id)]
    assert types.count("RUN_OVERDUE") == 1 and types.count("RUN_CANCELED") == 1
    assert "RUN_FAILURE" not in types and "RUN_SUCCESS" not in types
